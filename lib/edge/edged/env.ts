/**
 * Environment of a container, resolved as kubelet does: `envFrom` sources first (configMapRef /
 * secretRef, with prefix), then `env` in order (value with `$(VAR)` expansion, or valueFrom
 * configMapKeyRef / secretKeyRef / fieldRef). A missing non-optional source is a ConfigError, which
 * the pod worker reports as CreateContainerConfigError and retries.
 */
import type { Container, FieldRefT, Pod } from "./pod.ts";

export class ConfigError extends Error {}

/** Reads a stored object (the MetaManager's view, possibly overlaid with fresher messages). */
export type ObjectGetter = (type: string, namespace: string, name: string) => Promise<unknown | null>;

export interface PodEnvContext {
  pod: Pod;
  nodeName: string;
  /** Node IP: with the process runtime the pod shares the host network. */
  podIP: string;
  hostIP: string;
  get: ObjectGetter;
}

const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

/** Bytes of every key of a ConfigMap (data + binaryData) or Secret (data base64-decoded + stringData). */
export function objectData(obj: unknown, kind: "configmap" | "secret"): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  if (!obj || typeof obj !== "object") return out;
  const o = obj as { data?: unknown; binaryData?: unknown; stringData?: unknown };
  const each = (rec: unknown, f: (s: string) => Buffer) => {
    if (rec && typeof rec === "object") for (const [k, val] of Object.entries(rec)) if (typeof val === "string") out.set(k, f(val));
  };
  if (kind === "configmap") {
    each(o.data, (s) => Buffer.from(s, "utf8"));
    each(o.binaryData, (s) => Buffer.from(s, "base64"));
  } else {
    each(o.data, (s) => Buffer.from(s, "base64"));
    each(o.stringData, (s) => Buffer.from(s, "utf8"));
  }
  return out;
}

/** kubelet's `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, the rest stays. */
export function expandVars(s: string, lookup: (name: string) => string | undefined): string {
  if (!s.includes("$")) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch !== "$" || i + 1 >= s.length) {
      out += ch;
      continue;
    }
    const next = s[i + 1];
    if (next === "$") {
      out += "$";
      i++;
    } else if (next === "(") {
      const end = s.indexOf(")", i + 2);
      if (end < 0) {
        out += s.slice(i);
        break;
      }
      const name = s.slice(i + 2, end);
      const val = lookup(name);
      out += val ?? `$(${name})`;
      i = end;
    } else {
      out += ch;
    }
  }
  return out;
}

/** The value of a downward-API field path (env fieldRef and downwardAPI volume items). */
export function fieldValue(ref: FieldRefT, ctx: Omit<PodEnvContext, "get">): string {
  const { pod } = ctx;
  const p = ref.fieldPath;
  const md = pod.metadata;
  const sel = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(p);
  if (sel) return (sel[1] === "labels" ? md.labels : md.annotations)?.[sel[2]!] ?? "";
  switch (p) {
    case "metadata.name":
      return md.name;
    case "metadata.namespace":
      return md.namespace;
    case "metadata.uid":
      return md.uid;
    case "metadata.labels":
    case "metadata.annotations": {
      const rec = (p === "metadata.labels" ? md.labels : md.annotations) ?? {};
      return Object.keys(rec)
        .sort()
        .map((k) => `${k}=${JSON.stringify(rec[k])}`)
        .join("\n");
    }
    case "spec.nodeName":
      return ctx.nodeName;
    case "spec.serviceAccountName":
      return pod.spec.serviceAccountName ?? "default";
    case "status.podIP":
    case "status.podIPs":
      return ctx.podIP;
    case "status.hostIP":
    case "status.hostIPs":
      return ctx.hostIP;
    default:
      throw new ConfigError(`fieldRef ${JSON.stringify(p)} is not supported`);
  }
}

/** The container's own variables (without the runtime's base environment), in definition order. */
export async function resolveEnv(container: Container, ctx: PodEnvContext): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  const ns = ctx.pod.metadata.namespace;
  const source = async (kind: "configmap" | "secret", name: string, optional: boolean): Promise<Map<string, Buffer> | null> => {
    const obj = await ctx.get(kind, ns, name);
    if (obj == null) {
      if (optional) return null;
      throw new ConfigError(`${kind} "${name}" not found`);
    }
    return objectData(obj, kind);
  };
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref) continue;
    const data = await source(from.configMapRef ? "configmap" : "secret", ref.name, ref.optional === true);
    if (!data) continue;
    for (const [k, val] of data) {
      const key = `${from.prefix ?? ""}${k}`;
      if (ENV_NAME.test(key)) env[key] = val.toString("utf8");
    }
  }
  for (const e of container.env ?? []) {
    const vf = e.valueFrom;
    if (!vf) {
      env[e.name] = expandVars(e.value ?? "", (n) => env[n]);
      continue;
    }
    const keyRef = vf.configMapKeyRef ?? vf.secretKeyRef;
    if (keyRef) {
      const kind = vf.configMapKeyRef ? "configmap" : "secret";
      const data = await source(kind, keyRef.name, keyRef.optional === true);
      if (!data) continue;
      const val = data.get(keyRef.key);
      if (val === undefined) {
        if (keyRef.optional === true) continue;
        throw new ConfigError(`couldn't find key ${keyRef.key} in ${kind === "configmap" ? "ConfigMap" : "Secret"} ${ns}/${keyRef.name}`);
      }
      env[e.name] = val.toString("utf8");
    } else if (vf.fieldRef) {
      env[e.name] = fieldValue(vf.fieldRef, ctx);
    } else if (vf.resourceFieldRef) {
      throw new ConfigError(`env ${e.name}: resourceFieldRef is not supported by the process runtime`);
    } else {
      throw new ConfigError(`env ${e.name}: valueFrom names no source`);
    }
  }
  return env;
}
