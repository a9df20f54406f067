/**
 * PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes strategic merge
 * patch for the built-in types (lists merged by their patch merge keys, `$patch` directives).
 */
import { ApiError, errors } from "./errors.ts";
import { clone, isRecord } from "./types.ts";

/**
 * Patch bodies are user input: a key like `__proto__` must stay an ordinary field. So fields are
 * read only when they are own properties and written as own data properties; a plain `o[k] = v`
 * would change o's prototype, and walking into `__proto__` would reach Object.prototype itself.
 */
function own(o: Record<string, unknown>, k: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined;
}
function put(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return clone(patch);
  const out: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else put(out, k, mergePatch(own(out, k), v));
  }
  return out;
}

// ---- JSON patch ----

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw errors.badRequest(`json patch: invalid path "${path}"`);
  return path
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function walk(doc: unknown, segs: string[], path: string): unknown {
  let cur = doc;
  for (const s of segs) {
    if (Array.isArray(cur)) cur = /^(0|[1-9]\d*)$/.test(s) ? cur[Number(s)] : undefined;
    else if (isRecord(cur)) cur = own(cur, s);
    else cur = undefined;
    if (cur === undefined) throw new ApiError(422, "Invalid", `json patch: path "${path}" does not exist`);
  }
  return cur;
}

function arrayIndex(arr: unknown[], s: string, path: string, forAdd: boolean): number {
  if (s === "-" && forAdd) return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(s)) throw new ApiError(422, "Invalid", `json patch: invalid array index in "${path}"`);
  const i = Number(s);
  if (i > arr.length || (!forAdd && i === arr.length)) throw new ApiError(422, "Invalid", `json patch: index out of range in "${path}"`);
  return i;
}

function addAt(doc: unknown, path: string, value: unknown): unknown {
  const segs = pointer(path);
  if (segs.length === 0) return value;
  const parent = walk(doc, segs.slice(0, -1), path);
  const last = segs[segs.length - 1]!;
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, path, true), 0, value);
  else if (isRecord(parent)) put(parent, last, value);
  else throw new ApiError(422, "Invalid", `json patch: parent of "${path}" is not a container`);
  return doc;
}

function removeAt(doc: unknown, path: string): { doc: unknown; removed: unknown } {
  const segs = pointer(path);
  if (segs.length === 0) throw new ApiError(422, "Invalid", "json patch: cannot remove the whole document");
  const parent = walk(doc, segs.slice(0, -1), path);
  const last = segs[segs.length - 1]!;
  if (Array.isArray(parent)) {
    const i = arrayIndex(parent, last, path, false);
    return { doc, removed: parent.splice(i, 1)[0] };
  }
  if (isRecord(parent) && Object.prototype.hasOwnProperty.call(parent, last)) {
    const removed = parent[last];
    delete parent[last];
    return { doc, removed };
  }
  throw new ApiError(422, "Invalid", `json patch: path "${path}" does not exist`);
}

export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw errors.badRequest("json patch: the body must be a JSON array of operations");
  let doc = clone(target);
  for (const op of ops) {
    if (!isRecord(op) || typeof op.op !== "string" || typeof op.path !== "string") throw errors.badRequest("json patch: each operation needs op and path");
    const path = op.path;
    switch (op.op) {
      case "add":
        if (!("value" in op)) throw errors.badRequest("json patch: add needs a value");
        doc = addAt(doc, path, clone(op.value));
        break;
      case "remove":
        doc = removeAt(doc, path).doc;
        break;
      case "replace":
        if (!("value" in op)) throw errors.badRequest("json patch: replace needs a value");
        if (pointer(path).length === 0) doc = clone(op.value);
        else {
          doc = removeAt(doc, path).doc;
          doc = addAt(doc, path, clone(op.value));
        }
        break;
      case "move":
      case "copy": {
        if (typeof op.from !== "string") throw errors.badRequest(`json patch: ${op.op} needs from`);
        const v = op.op === "move" ? removeAt(doc, op.from).removed : clone(walk(doc, pointer(op.from), op.from));
        doc = addAt(doc, path, v);
        break;
      }
      case "test": {
        const v = walk(doc, pointer(path), path);
        if (JSON.stringify(v) !== JSON.stringify(op.value)) throw new ApiError(422, "Invalid", `json patch: test failed at "${path}"`);
        break;
      }
      default:
        throw errors.badRequest(`json patch: unknown operation "${op.op}"`);
    }
  }
  return doc;
}

// ---- strategic merge patch ----

type ListStrategy = { mergeKey: string } | "primitive-merge" | "replace";

const podSpecLists = (p: string): Record<string, ListStrategy> => ({
  [`${p}.containers`]: { mergeKey: "name" },
  [`${p}.initContainers`]: { mergeKey: "name" },
  [`${p}.ephemeralContainers`]: { mergeKey: "name" },
  [`${p}.volumes`]: { mergeKey: "name" },
  [`${p}.imagePullSecrets`]: { mergeKey: "name" },
  [`${p}.hostAliases`]: { mergeKey: "ip" },
  ...Object.fromEntries(
    ["containers", "initContainers", "ephemeralContainers"].flatMap((c) => [
      [`${p}.${c}.env`, { mergeKey: "name" }],
      [`${p}.${c}.ports`, { mergeKey: "containerPort" }],
      [`${p}.${c}.volumeMounts`, { mergeKey: "mountPath" }],
      [`${p}.${c}.volumeDevices`, { mergeKey: "devicePath" }],
      [`${p}.${c}.resizePolicy`, { mergeKey: "resourceName" }],
    ]),
  ),
});

const common: Record<string, ListStrategy> = {
  "metadata.finalizers": "primitive-merge",
  "metadata.ownerReferences": { mergeKey: "uid" },
  "status.conditions": { mergeKey: "type" },
};

const byKind: Record<string, Record<string, ListStrategy>> = {
  Pod: { ...podSpecLists("spec"), "status.podIPs": { mergeKey: "ip" }, "status.hostIPs": { mergeKey: "ip" } },
  Node: { "spec.podCIDRs": "primitive-merge", "status.addresses": { mergeKey: "type" } },
  Service: { "spec.ports": { mergeKey: "port" } },
  Namespace: { "spec.finalizers": "replace" },
};

export function strategicMergePatch(kind: string, target: unknown, patch: unknown): unknown {
  const table = { ...common, ...(byKind[kind] ?? {}) };
  const out = smpValue(target, patch, "", table);
  return out === DELETE ? {} : out;
}

const DELETE = Symbol("delete");

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.filter((x) => !(isRecord(x) && x.$patch === "delete")).map(stripDirectives);
  if (!isRecord(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (k.startsWith("$")) continue;
    put(out, k, stripDirectives(x));
  }
  return out;
}

function smpValue(target: unknown, patch: unknown, path: string, table: Record<string, ListStrategy>): unknown {
  if (!isRecord(patch)) return clone(patch);
  if (patch.$patch === "delete") return DELETE;
  if (patch.$patch === "replace") return stripDirectives(patch);
  const out: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  if (Array.isArray(patch.$retainKeys)) {
    const keep = new Set(patch.$retainKeys.map(String));
    for (const k of Object.keys(out)) if (!keep.has(k)) delete out[k];
  }
  for (const [k, v] of Object.entries(patch)) {
    if (k === "$patch" || k === "$retainKeys" || k.startsWith("$setElementOrder/")) continue;
    if (k.startsWith("$deleteFromPrimitiveList/")) {
      const field = k.slice("$deleteFromPrimitiveList/".length);
      const cur = own(out, field);
      if (Array.isArray(cur) && Array.isArray(v)) put(out, field, cur.filter((x) => !v.some((d) => JSON.stringify(d) === JSON.stringify(x))));
      continue;
    }
    const sub = path ? `${path}.${k}` : k;
    if (v === null) delete out[k];
    else if (Array.isArray(v)) put(out, k, smpList(own(out, k), v, sub, table));
    else if (isRecord(v)) {
      const r = smpValue(own(out, k), v, sub, table);
      if (r === DELETE) delete out[k];
      else put(out, k, r);
    } else put(out, k, v);
  }
  return out;
}

function smpList(target: unknown, patch: unknown[], path: string, table: Record<string, ListStrategy>): unknown[] {
  const strategy = table[path] ?? "replace";
  const orig = Array.isArray(target) ? target : [];
  if (patch.some((x) => isRecord(x) && x.$patch === "replace")) {
    return patch.filter((x) => !(isRecord(x) && x.$patch === "replace")).map(stripDirectives);
  }
  if (strategy === "replace") return stripDirectives(patch) as unknown[];
  if (strategy === "primitive-merge") {
    const out = [...orig];
    for (const x of patch) if (!out.some((y) => JSON.stringify(y) === JSON.stringify(x))) out.push(x);
    return out;
  }
  const key = strategy.mergeKey;
  const out = orig.map((x) => clone(x));
  for (const item of patch) {
    if (!isRecord(item)) continue;
    const idx = out.findIndex((x) => isRecord(x) && x[key] !== undefined && JSON.stringify(x[key]) === JSON.stringify(item[key]));
    if (item.$patch === "delete") {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) {
      const merged = smpValue(out[idx], item, path, table);
      if (merged === DELETE) out.splice(idx, 1);
      else out[idx] = merged;
    } else out.push(stripDirectives(item));
  }
  return out;
}

/**
 * Server-side apply, simplified: the applied configuration is merged into the live object
 * (maps recursively, keyed lists by their merge keys, other lists replaced). Field ownership is
 * not tracked.
 */
export function applyPatch(kind: string, target: unknown, applied: unknown): unknown {
  return strategicMergePatch(kind, target, applied);
}
