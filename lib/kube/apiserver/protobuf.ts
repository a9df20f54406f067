/**
 * Decoding of Kubernetes protobuf request bodies for the few built-in kinds kubectl's typed
 * clients send that way (`kubectl create configmap|secret|namespace|service`). The body is the
 * `k8s\0` magic + runtime.Unknown{typeMeta, raw}; raw is the typed object. Unknown fields are
 * skipped. Responses are always JSON (clients accept it).
 */
import { errors } from "./errors.ts";
import type { KObject } from "./types.ts";

type Kind = "string" | "bytes" | "int" | "bool" | "time" | "msg" | "smap" | "bmap" | "intorstr";
interface Field {
  name: string;
  kind: Kind;
  repeated?: boolean;
  msg?: Schema;
}
type Schema = Record<number, Field>;

const f = (name: string, kind: Kind, opts: { repeated?: boolean; msg?: Schema } = {}): Field => ({ name, kind, ...opts });

const OwnerReference: Schema = { 1: f("kind", "string"), 3: f("name", "string"), 4: f("uid", "string"), 5: f("apiVersion", "string"), 6: f("controller", "bool"), 7: f("blockOwnerDeletion", "bool") };
const ObjectMeta: Schema = {
  1: f("name", "string"),
  2: f("generateName", "string"),
  3: f("namespace", "string"),
  5: f("uid", "string"),
  6: f("resourceVersion", "string"),
  7: f("generation", "int"),
  8: f("creationTimestamp", "time"),
  9: f("deletionTimestamp", "time"),
  10: f("deletionGracePeriodSeconds", "int"),
  11: f("labels", "smap"),
  12: f("annotations", "smap"),
  13: f("ownerReferences", "msg", { repeated: true, msg: OwnerReference }),
  14: f("finalizers", "string", { repeated: true }),
};
const ServicePort: Schema = { 1: f("name", "string"), 2: f("protocol", "string"), 3: f("port", "int"), 4: f("targetPort", "intorstr"), 5: f("nodePort", "int"), 6: f("appProtocol", "string") };

const KINDS: Record<string, Schema> = {
  ConfigMap: { 1: f("metadata", "msg", { msg: ObjectMeta }), 2: f("data", "smap"), 3: f("binaryData", "bmap"), 4: f("immutable", "bool") },
  Secret: { 1: f("metadata", "msg", { msg: ObjectMeta }), 2: f("data", "bmap"), 3: f("type", "string"), 4: f("stringData", "smap"), 5: f("immutable", "bool") },
  Namespace: {
    1: f("metadata", "msg", { msg: ObjectMeta }),
    2: f("spec", "msg", { msg: { 1: f("finalizers", "string", { repeated: true }) } }),
    3: f("status", "msg", { msg: { 1: f("phase", "string") } }),
  },
  Service: {
    1: f("metadata", "msg", { msg: ObjectMeta }),
    2: f("spec", "msg", {
      msg: {
        1: f("ports", "msg", { repeated: true, msg: ServicePort }),
        2: f("selector", "smap"),
        3: f("clusterIP", "string"),
        4: f("type", "string"),
        5: f("externalIPs", "string", { repeated: true }),
        7: f("sessionAffinity", "string"),
        10: f("externalName", "string"),
      },
    }),
  },
};

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    throw new Error("varint too long");
  }
  bytes(): Uint8Array {
    const len = this.varint();
    if (this.pos + len > this.buf.length) throw new Error("truncated field");
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

const text = (b: Uint8Array) => new TextDecoder("utf-8", { fatal: false }).decode(b);

function decodeMessage(buf: Uint8Array, schema: Schema): Record<string, unknown> {
  const r = new Reader(buf);
  const out: Record<string, unknown> = {};
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    const spec = schema[field];
    if (!spec) {
      r.skip(wire);
      continue;
    }
    let value: unknown;
    switch (spec.kind) {
      case "string":
        value = text(r.bytes());
        break;
      case "bytes":
        value = Buffer.from(r.bytes()).toString("base64");
        break;
      case "int":
        value = r.varint();
        break;
      case "bool":
        value = r.varint() !== 0;
        break;
      case "time": {
        const t = decodeMessage(r.bytes(), { 1: f("seconds", "int"), 2: f("nanos", "int") });
        value = new Date(Number(t.seconds ?? 0) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
        break;
      }
      case "msg":
        value = decodeMessage(r.bytes(), spec.msg!);
        break;
      case "intorstr": {
        const v = decodeMessage(r.bytes(), { 1: f("type", "int"), 2: f("intVal", "int"), 3: f("strVal", "string") });
        value = v.type === 1 ? (v.strVal ?? "") : (v.intVal ?? 0);
        break;
      }
      case "smap":
      case "bmap": {
        const e = decodeMessage(r.bytes(), { 1: f("k", "string"), 2: f("v", spec.kind === "smap" ? "string" : "bytes") });
        const m = (out[spec.name] ??= {}) as Record<string, unknown>;
        m[String(e.k ?? "")] = e.v ?? "";
        continue;
      }
    }
    if (spec.repeated) ((out[spec.name] ??= []) as unknown[]).push(value);
    else if (value === "" || value === 0 || value === false) delete out[spec.name]; // Go's zero value = omitted
    else out[spec.name] = value;
  }
  return out;
}

export const PROTOBUF = "application/vnd.kubernetes.protobuf";

/** Decodes a protobuf body sent for `kind`; 415 for kinds this server does not decode. */
export function decodeProtobuf(buf: Uint8Array, kind: string, apiVersion: string): KObject {
  const schema = KINDS[kind];
  if (!schema) throw errors.unsupportedMediaType(`${PROTOBUF} (for ${kind})`);
  if (buf.length < 4 || buf[0] !== 0x6b || buf[1] !== 0x38 || buf[2] !== 0x73 || buf[3] !== 0) throw errors.badRequest("protobuf body without the k8s envelope");
  try {
    const unknown = decodeMessage(buf.subarray(4), { 1: f("typeMeta", "msg", { msg: { 1: f("apiVersion", "string"), 2: f("kind", "string") } }), 2: f("raw", "bytes") });
    const raw = Buffer.from(String(unknown.raw ?? ""), "base64");
    const tm = (unknown.typeMeta ?? {}) as { apiVersion?: string; kind?: string };
    const obj = decodeMessage(raw, schema);
    return { apiVersion: tm.apiVersion || apiVersion, kind: tm.kind || kind, ...obj } as KObject;
  } catch (e) {
    throw errors.badRequest(`malformed protobuf body: ${(e as Error).message}`);
  }
}
