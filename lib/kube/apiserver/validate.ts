/**
 * Input validation: object and metadata shapes (valibot), names, labels, per-kind specs of the
 * built-in types, and CRD openAPIV3Schema checks with pruning of unknown fields.
 */
import * as v from "valibot";
import { errors, show } from "./errors.ts";
import type { ResourceType } from "./resources.ts";
import { isRecord, type KObject } from "./types.ts";

export interface Cause {
  field: string;
  message: string;
  reason?: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

export function isDnsLabel(s: string): boolean {
  return s.length <= 63 && DNS_LABEL.test(s);
}
export function isDnsSubdomain(s: string): boolean {
  return s.length <= 253 && DNS_SUBDOMAIN.test(s);
}

function checkQualifiedKey(key: string): string | null {
  const slash = key.lastIndexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : "";
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (slash >= 0 && !isDnsSubdomain(prefix)) return "prefix part must be a DNS subdomain";
  if (!name || name.length > 63 || !QUALIFIED_NAME.test(name)) return "name part must consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, at most 63 characters";
  return null;
}

const str = v.string();
const optStr = v.optional(v.nullable(v.string()));
const strMap = v.optional(v.nullable(v.record(v.string(), v.string())));
const optInt = v.optional(v.nullable(v.pipe(v.number(), v.integer())));

const MetaSchema = v.looseObject({
  name: v.optional(str),
  generateName: v.optional(str),
  namespace: v.optional(str),
  uid: v.optional(str),
  resourceVersion: v.optional(str),
  generation: v.optional(v.number()),
  creationTimestamp: v.optional(v.nullable(str)),
  deletionTimestamp: v.optional(v.nullable(str)),
  deletionGracePeriodSeconds: optInt,
  labels: strMap,
  annotations: strMap,
  finalizers: v.optional(v.nullable(v.array(str))),
  ownerReferences: v.optional(
    v.nullable(
      v.array(
        v.looseObject({
          apiVersion: str,
          kind: str,
          name: str,
          uid: str,
          controller: v.optional(v.nullable(v.boolean())),
          blockOwnerDeletion: v.optional(v.nullable(v.boolean())),
        }),
      ),
    ),
  ),
});

const ObjectSchema = v.looseObject({
  apiVersion: v.optional(str),
  kind: v.optional(str),
  metadata: v.optional(MetaSchema),
});

const EnvVar = v.looseObject({ name: str, value: optStr, valueFrom: v.optional(v.nullable(v.looseObject({}))) });
const Container = v.looseObject({
  name: str,
  image: optStr,
  command: v.optional(v.nullable(v.array(str))),
  args: v.optional(v.nullable(v.array(str))),
  workingDir: optStr,
  env: v.optional(v.nullable(v.array(EnvVar))),
  envFrom: v.optional(v.nullable(v.array(v.looseObject({})))),
  ports: v.optional(v.nullable(v.array(v.looseObject({ containerPort: v.pipe(v.number(), v.integer()), name: optStr, protocol: optStr })))),
  volumeMounts: v.optional(v.nullable(v.array(v.looseObject({ name: str, mountPath: str })))),
});
const PodSpec = v.looseObject({
  containers: v.pipe(v.array(Container), v.minLength(1, "must have at least one container")),
  initContainers: v.optional(v.nullable(v.array(Container))),
  nodeName: optStr,
  restartPolicy: v.optional(v.picklist(["Always", "OnFailure", "Never"])),
  terminationGracePeriodSeconds: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0)))),
  volumes: v.optional(v.nullable(v.array(v.looseObject({ name: str })))),
  nodeSelector: strMap,
});

const kindSchemas: Record<string, v.GenericSchema> = {
  Pod: v.looseObject({ spec: PodSpec, status: v.optional(v.nullable(v.looseObject({ phase: optStr }))) }),
  ConfigMap: v.looseObject({ data: strMap, binaryData: strMap, immutable: v.optional(v.nullable(v.boolean())) }),
  Secret: v.looseObject({ data: strMap, stringData: strMap, type: optStr, immutable: v.optional(v.nullable(v.boolean())) }),
  Node: v.looseObject({
    spec: v.optional(v.nullable(v.looseObject({ unschedulable: v.optional(v.nullable(v.boolean())), taints: v.optional(v.nullable(v.array(v.looseObject({ key: str, effect: str })))) }))),
    status: v.optional(v.nullable(v.looseObject({ conditions: v.optional(v.nullable(v.array(v.looseObject({ type: str, status: str })))) }))),
  }),
  Service: v.looseObject({
    spec: v.optional(v.nullable(v.looseObject({ ports: v.optional(v.nullable(v.array(v.looseObject({ port: v.pipe(v.number(), v.integer()) })))), selector: strMap, type: optStr }))),
  }),
  Lease: v.looseObject({
    spec: v.optional(
      v.nullable(
        v.looseObject({
          holderIdentity: optStr,
          leaseDurationSeconds: optInt,
          acquireTime: optStr,
          renewTime: optStr,
          leaseTransitions: optInt,
        }),
      ),
    ),
  }),
  Event: v.looseObject({ involvedObject: v.optional(v.nullable(v.looseObject({}))), reason: optStr, message: optStr, type: optStr, count: optInt }),
  Endpoints: v.looseObject({ subsets: v.optional(v.nullable(v.array(v.looseObject({})))) }),
  CustomResourceDefinition: v.looseObject({
    spec: v.looseObject({
      group: v.pipe(str, v.minLength(1)),
      names: v.looseObject({ plural: v.pipe(str, v.minLength(1)), kind: v.pipe(str, v.minLength(1)), singular: optStr, listKind: optStr, shortNames: v.optional(v.nullable(v.array(str))) }),
      scope: v.picklist(["Namespaced", "Cluster"]),
      versions: v.pipe(v.array(v.looseObject({ name: v.pipe(str, v.minLength(1)), served: v.boolean(), storage: v.boolean() })), v.minLength(1)),
    }),
  }),
};

function issuesToCauses(issues: readonly v.BaseIssue<unknown>[]): Cause[] {
  return issues.map((i) => {
    const field = (i.path ?? [])
      .map((p) => p.key)
      .reduce<string>((acc, k) => (typeof k === "number" ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), "");
    return { field: field || "<root>", message: i.message, reason: "FieldValueInvalid" };
  });
}

/** Checks the shape of a decoded body; throws 400 when it is not an object at all. */
export function checkObjectShape(body: unknown): KObject {
  if (!isRecord(body)) throw errors.badRequest("the request body must be a JSON or YAML object");
  return body as KObject;
}

/** Validates an object about to be stored; throws 422 Invalid with the causes. */
export function validateObject(t: ResourceType, obj: KObject, version: string, opts: { strict?: boolean } = {}): void {
  const causes: Cause[] = [];
  const base = v.safeParse(ObjectSchema, obj);
  if (!base.success) causes.push(...issuesToCauses(base.issues));
  const md = isRecord(obj.metadata) ? obj.metadata : {};
  const name = typeof md.name === "string" ? md.name : "";
  if (base.success) {
    if (!name) causes.push({ field: "metadata.name", message: "Required value: name or generateName is required", reason: "FieldValueRequired" });
    else if (t.nameRule === "label" ? !isDnsLabel(name) : !isDnsSubdomain(name))
      causes.push({
        field: "metadata.name",
        message: `Invalid value: "${name}": a lowercase RFC 1123 ${t.nameRule === "label" ? "label" : "subdomain"} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
      });
    for (const [k, val] of Object.entries(isRecord(md.labels) ? md.labels : {})) {
      const e = checkQualifiedKey(k);
      if (e) causes.push({ field: "metadata.labels", message: `Invalid value: "${k}": ${e}` });
      if (typeof val === "string" && (val.length > 63 || !LABEL_VALUE.test(val)))
        causes.push({ field: "metadata.labels", message: `Invalid value: "${val}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', at most 63 characters` });
    }
    let annSize = 0;
    for (const [k, val] of Object.entries(isRecord(md.annotations) ? md.annotations : {})) {
      const e = checkQualifiedKey(k);
      if (e) causes.push({ field: "metadata.annotations", message: `Invalid value: "${k}": ${e}` });
      annSize += k.length + String(val).length;
    }
    if (annSize > 256 * 1024) causes.push({ field: "metadata.annotations", message: "Too long: must have at most 262144 bytes", reason: "FieldValueTooLong" });
    const ks = kindSchemas[t.kind];
    if (ks && !t.crd) {
      const r = v.safeParse(ks, obj);
      if (!r.success) causes.push(...issuesToCauses(r.issues));
    }
    if (t.kind === "CustomResourceDefinition" && causes.length === 0) causes.push(...validateCrd(obj));
    if (t.kind === "Secret" && isRecord(obj.data)) {
      for (const [k, val] of Object.entries(obj.data)) {
        if (typeof val === "string" && !/^[A-Za-z0-9+/]*={0,2}$/.test(val)) causes.push({ field: `data[${k}]`, message: "Invalid value: must be base64 encoded" });
      }
    }
    if (t.crd) {
      const schema = t.crd.schemas[version];
      if (schema) {
        const unknown: string[] = [];
        checkSchema(obj, schema, "", causes, unknown, true);
        if (opts.strict && unknown.length) throw errors.badRequest(`strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(", ")}`);
      }
    }
  }
  if (causes.length) throw errors.invalid(t.group, t.kind, name || show(md.generateName ?? ""), causes);
}

function validateCrd(obj: KObject): Cause[] {
  const causes: Cause[] = [];
  const spec = obj.spec as Record<string, unknown>;
  const names = spec.names as Record<string, unknown>;
  const expected = `${String(names.plural)}.${String(spec.group)}`;
  if (obj.metadata?.name !== expected) causes.push({ field: "metadata.name", message: `Invalid value: "${obj.metadata?.name}": must be spec.names.plural+"."+spec.group` });
  const versions = spec.versions as Array<Record<string, unknown>>;
  if (versions.filter((x) => x.storage === true).length !== 1) causes.push({ field: "spec.versions", message: "Invalid value: must have exactly one version marked as storage version" });
  return causes;
}

/**
 * Checks `value` against a structural schema, pruning fields the schema does not know (unless
 * x-kubernetes-preserve-unknown-fields), and records type errors as causes.
 */
function checkSchema(value: unknown, schema: unknown, path: string, causes: Cause[], unknown: string[], root = false): void {
  if (!isRecord(schema)) return;
  const at = path || "<root>";
  if (value === null) {
    if (schema.nullable !== true && !root) causes.push({ field: at, message: "Invalid value: \"null\": must not be null" });
    return;
  }
  const type = schema.type;
  const intOrString = schema["x-kubernetes-int-or-string"] === true;
  if (intOrString) {
    if (!(typeof value === "string" || (typeof value === "number" && Number.isInteger(value)))) causes.push({ field: at, message: `Invalid value: must be an integer or a string`, reason: "FieldValueTypeInvalid" });
    return;
  }
  const typeOk = (): boolean => {
    switch (type) {
      case "object":
        return isRecord(value);
      case "array":
        return Array.isArray(value);
      case "string":
        return typeof value === "string";
      case "integer":
        return typeof value === "number" && Number.isInteger(value);
      case "number":
        return typeof value === "number";
      case "boolean":
        return typeof value === "boolean";
      default:
        return true;
    }
  };
  if (!typeOk()) {
    causes.push({ field: at, message: `Invalid value: "${typeof value === "object" ? (Array.isArray(value) ? "array" : "object") : typeof value}": ${at} in body must be of type ${String(type)}`, reason: "FieldValueTypeInvalid" });
    return;
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => e === value)) {
    causes.push({ field: at, message: `Unsupported value: ${JSON.stringify(value)}: supported values: ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`, reason: "FieldValueNotSupported" });
  }
  if (typeof value === "string" && typeof schema.pattern === "string") {
    try {
      if (!new RegExp(schema.pattern, "u").test(value)) causes.push({ field: at, message: `Invalid value: "${value}": should match '${schema.pattern}'` });
    } catch {
      /* a pattern JS cannot compile is not enforced */
    }
  }
  if (typeof value === "number") {
    if (typeof schema.minimum === "number" && value < schema.minimum) causes.push({ field: at, message: `Invalid value: ${value}: should be greater than or equal to ${schema.minimum}` });
    if (typeof schema.maximum === "number" && value > schema.maximum) causes.push({ field: at, message: `Invalid value: ${value}: should be less than or equal to ${schema.maximum}` });
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkSchema(item, schema.items, `${path}[${i}]`, causes, unknown));
    return;
  }
  if (!isRecord(value)) return;
  const props = isRecord(schema.properties) ? schema.properties : undefined;
  const preserve = schema["x-kubernetes-preserve-unknown-fields"] === true;
  if (Array.isArray(schema.required)) {
    for (const r of schema.required) if (value[String(r)] === undefined) causes.push({ field: path ? `${path}.${String(r)}` : String(r), message: "Required value", reason: "FieldValueRequired" });
  }
  for (const [k, item] of Object.entries(value)) {
    const sub = path ? `${path}.${k}` : k;
    if (root && (k === "apiVersion" || k === "kind" || k === "metadata")) continue;
    if (props && k in props) checkSchema(item, props[k], sub, causes, unknown);
    else if (isRecord(schema.additionalProperties)) checkSchema(item, schema.additionalProperties, sub, causes, unknown);
    else if (schema.additionalProperties === true || preserve || (!props && type !== "object")) continue;
    else if (!props && !preserve && type === "object" && schema.additionalProperties === undefined) {
      unknown.push(sub);
      delete value[k];
    } else {
      unknown.push(sub);
      delete value[k];
    }
  }
}

/** Limits for request bodies. */
export const MAX_BODY_BYTES = 3 * 1024 * 1024;
