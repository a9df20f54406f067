/**
 * The HTTP front: routing of Kubernetes API paths, bearer-token auth, body limits and decoding,
 * content negotiation (JSON, Table, aggregated discovery) and Status errors. Runs on node:http,
 * which both Bun and Node provide.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { parse as parseYaml } from "yaml";
import type { Logger } from "../../log.ts";
import { gvString, type Api, type DeleteOptions, type PatchType } from "./api.ts";
import { authenticate, type Tokens } from "./auth.ts";
import { aggregatedContentType, aggregatedDiscovery, apiGroup, apiGroupList, apiResourceList, apiVersions, openapiV3Doc, openapiV3Index, wantsAggregated } from "./discovery.ts";
import { ApiError, errors, statusObject, successStatus } from "./errors.ts";
import type { Registry, ResourceType } from "./resources.ts";
import { decodeProtobuf, PROTOBUF } from "./protobuf.ts";
import { parseFieldSelector, parseLabelSelector, type Selector } from "./selectors.ts";
import type { ObjectStore } from "./storage.ts";
import { toTable, type IncludeObject } from "./table.ts";
import { isRecord } from "./types.ts";
import { MAX_BODY_BYTES } from "./validate.ts";
import type { WatchHub } from "./watch.ts";

export const GIT_VERSION = "v1.32.0-outpost";

export interface HttpDeps {
  api: Api;
  registry: Registry;
  store: ObjectStore;
  hub: WatchHub;
  tokens: Tokens;
  log: Logger;
  /** host:port clients reach us at (for /api's serverAddressByClientCIDRs). */
  address: () => string;
  maxBodyBytes?: number;
  /** Upper bound for a watch that asked for no timeout (ms). */
  defaultWatchTimeoutMs?: number;
}

const PUBLIC_PATHS = new Set(["/healthz", "/livez", "/readyz", "/version"]);

function send(res: ServerResponse, code: number, body: unknown, contentType = "application/json"): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(code, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(text), "Cache-Control": "no-cache, private" });
  res.end(text);
}

function sendError(res: ServerResponse, err: ApiError): void {
  send(res, err.code, err.toStatus());
}

/** Reads the body up to `limit` bytes; a larger body is drained and answered with 413. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0");
    const chunks: Buffer[] = [];
    let size = 0;
    let over = declared > limit;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      if (!over) chunks.push(c);
      else if (size > limit * 16) {
        reject(errors.tooLarge(limit));
        req.destroy();
      }
    });
    req.on("end", () => (over ? reject(errors.tooLarge(limit)) : resolve(Buffer.concat(chunks))));
    req.on("error", (e) => reject(e));
  });
}

function mediaType(h: string | undefined): string {
  return (h ?? "").split(";")[0]!.trim().toLowerCase();
}

const MAX_DEPTH = 100;

/** Rejects absurdly deep documents before recursive code (clone, patch, validation) sees them. */
function checkDepth(v: unknown): unknown {
  const stack: Array<[unknown, number]> = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (typeof x !== "object" || x === null) continue;
    if (d > MAX_DEPTH) throw errors.badRequest(`the request body is nested more than ${MAX_DEPTH} levels deep`);
    for (const c of Array.isArray(x) ? x : Object.values(x)) if (typeof c === "object" && c !== null) stack.push([c, d + 1]);
  }
  return v;
}

function decode(buf: Buffer, type: string): unknown {
  return checkDepth(decodeText(buf, type));
}

function decodeText(buf: Buffer, type: string): unknown {
  const text = buf.toString("utf8");
  if (text.trim() === "") throw errors.badRequest("the request body is empty");
  if (type === "application/yaml" || type === "application/apply-patch+yaml" || type === "text/yaml" || type === "application/x-yaml") {
    try {
      return parseYaml(text, { maxAliasCount: 100 });
    } catch (e) {
      throw errors.badRequest(`error converting YAML to JSON: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw errors.badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message.slice(0, 200)}`);
  }
}

interface Route {
  t: ResourceType;
  version: string;
  namespace?: string;
  name?: string;
  sub?: string;
  watchPath: boolean;
}

function intParam(q: URLSearchParams, key: string): number | undefined {
  const v = q.get(key);
  if (v === null || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw errors.badRequest(`invalid value for ${key}: ${v}`);
  return n;
}

function boolParam(q: URLSearchParams, key: string): boolean {
  const v = q.get(key);
  return v === "1" || v === "true";
}

function includeObject(q: URLSearchParams): IncludeObject {
  const v = q.get("includeObject");
  return v === "None" || v === "Object" ? v : "Metadata";
}

export function createHandler(d: HttpDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const limit = d.maxBodyBytes ?? MAX_BODY_BYTES;
  return (req, res) => {
    handle(d, limit, req, res).catch((err: unknown) => {
      if (err instanceof ApiError) return sendError(res, err);
      d.log.error("request failed", { method: req.method, url: req.url, error: err instanceof Error ? err.stack ?? err.message : String(err) });
      sendError(res, errors.internal(err instanceof Error ? err.message : String(err)));
    });
  };
}

async function handle(d: HttpDeps, limit: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = (req.method ?? "GET").toUpperCase();
  let url: URL;
  try {
    url = new URL(req.url ?? "/", "http://localhost");
  } catch {
    throw errors.badRequest("malformed request URL");
  }
  const path = url.pathname.replace(/\/+$/, "") || "/";
  const q = url.searchParams;

  if (PUBLIC_PATHS.has(path) || path.startsWith("/healthz/") || path.startsWith("/livez/") || path.startsWith("/readyz/")) {
    if (method !== "GET" && method !== "HEAD") throw errors.methodNotAllowed(method);
    if (path === "/version") return send(res, 200, versionInfo());
    return send(res, 200, "ok", "text/plain; charset=utf-8");
  }

  const role = authenticate(req.headers.authorization, d.tokens);
  if (!role) {
    req.resume();
    throw errors.unauthorized();
  }
  if (role === "readonly" && method !== "GET" && method !== "HEAD") {
    req.resume();
    throw errors.forbidden(`User "outpost:readonly" cannot ${method.toLowerCase()} at path "${path}": read-only token`);
  }

  const segs = path.split("/").filter(Boolean).map(decodeURIComponent);
  const accept = req.headers.accept ?? "";

  if (segs[0] === "openapi") return openapi(d, res, segs);
  if (segs[0] !== "api" && segs[0] !== "apis") throw errors.noRoute();

  // discovery
  if (segs.length === 1) {
    if (method !== "GET") throw errors.methodNotAllowed(method);
    const agg = wantsAggregated(accept);
    if (agg) return send(res, 200, aggregatedDiscovery(d.registry, segs[0] === "api", agg), aggregatedContentType(agg));
    return send(res, 200, segs[0] === "api" ? apiVersions(d.address()) : apiGroupList(d.registry));
  }
  const core = segs[0] === "api";
  const group = core ? "" : segs[1]!;
  if (!core && segs.length === 2) {
    const g = d.registry.groups().find((x) => x.name === group);
    if (!g || method !== "GET") throw errors.noRoute();
    return send(res, 200, apiGroup(g.name, g.versions));
  }
  const version = core ? segs[1]! : segs[2]!;
  const rest = segs.slice(core ? 2 : 3);
  if (rest.length === 0) {
    const list = method === "GET" ? apiResourceList(d.registry, group, version) : undefined;
    if (!list) throw errors.noRoute();
    return send(res, 200, list);
  }
  const route = parseRoute(d.registry, group, version, rest);
  if (!route) throw errors.noRoute();
  return resource(d, limit, req, res, method, q, accept, route);
}

function parseRoute(reg: Registry, group: string, version: string, rest: string[]): Route | null {
  let watchPath = false;
  if (rest[0] === "watch") {
    watchPath = true;
    rest = rest.slice(1);
  }
  let namespace: string | undefined;
  let resource: string;
  let name: string | undefined;
  let sub: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3 && !(group === "" && rest.length === 3 && (rest[2] === "status" || rest[2] === "finalize"))) {
    namespace = rest[1];
    resource = rest[2]!;
    name = rest[3];
    sub = rest[4];
    if (rest.length > 5) return null;
  } else {
    resource = rest[0]!;
    name = rest[1];
    sub = rest[2];
    if (rest.length > 3) return null;
  }
  const t = reg.lookup(group, version, resource);
  if (!t) return null;
  if (!t.namespaced && namespace !== undefined) return null;
  return { t, version, namespace, name, sub, watchPath };
}

function selectorFrom(q: URLSearchParams, name?: string): Selector {
  const fields = parseFieldSelector(q.get("fieldSelector"));
  if (name) fields.push({ op: "eq", path: "metadata.name", value: name });
  return { labels: parseLabelSelector(q.get("labelSelector")), fields };
}

function writeOpts(q: URLSearchParams): { dryRun: boolean; strict: boolean } {
  const dry = q.getAll("dryRun");
  if (dry.some((x) => x !== "All")) throw errors.badRequest(`unsupported dryRun value (supported: All)`);
  return { dryRun: dry.length > 0, strict: q.get("fieldValidation") === "Strict" };
}

async function resource(d: HttpDeps, limit: number, req: IncomingMessage, res: ServerResponse, method: string, q: URLSearchParams, accept: string, r: Route): Promise<void> {
  const { t, version } = r;
  const ns = r.namespace ?? "";
  const table = accept.includes("as=Table") ? { includeObject: includeObject(q) } : undefined;
  const needNs = () => {
    if (t.namespaced && r.namespace === undefined) throw errors.methodNotAllowed(method);
  };
  if (r.sub !== undefined && r.sub !== "status") throw errors.noRoute();

  if (method === "GET" || method === "HEAD") {
    const watch = r.watchPath || boolParam(q, "watch");
    if (watch) return startWatch(d, res, q, r, table);
    if (r.name) {
      const obj = d.api.get(t, version, ns, r.name);
      if (table) return send(res, 200, toTable(t, version, [obj], { includeObject: table.includeObject, resourceVersion: obj.metadata?.resourceVersion }));
      return send(res, 200, obj);
    }
    const sel = selectorFrom(q);
    const lst = d.api.list(t, version, r.namespace, sel, intParam(q, "limit"), q.get("continue") ?? undefined);
    if (table) return send(res, 200, toTable(t, version, lst.items, { includeObject: table.includeObject, resourceVersion: lst.resourceVersion, continue: lst.continue }));
    return send(res, 200, {
      kind: t.listKind,
      apiVersion: gvString(t.group, version),
      metadata: { resourceVersion: lst.resourceVersion, ...(lst.continue ? { continue: lst.continue, remainingItemCount: lst.remaining } : {}) },
      items: lst.items,
    });
  }

  if (method === "POST") {
    if (r.name) throw errors.methodNotAllowed(method);
    needNs();
    const body = await decodeObjectBody(req, limit, t, version);
    const obj = d.api.create(t, version, ns, body, writeOpts(q));
    return send(res, 201, obj);
  }

  if (method === "PUT") {
    if (!r.name) throw errors.methodNotAllowed(method);
    needNs();
    const body = await decodeObjectBody(req, limit, t, version);
    const out = d.api.update(t, version, ns, r.name, body, r.sub, writeOpts(q));
    return send(res, out.created ? 201 : 200, out.object);
  }

  if (method === "PATCH") {
    if (!r.name) throw errors.methodNotAllowed(method);
    needNs();
    const type = mediaType(req.headers["content-type"]);
    const kinds: Record<string, PatchType> = {
      "application/json-patch+json": "json",
      "application/merge-patch+json": "merge",
      "application/strategic-merge-patch+json": "strategic",
      "application/apply-patch+yaml": "apply",
    };
    const pt = kinds[type];
    if (!pt) throw errors.unsupportedMediaType(type);
    const body = decode(await readBody(req, limit), type);
    if (pt === "apply" && !q.get("fieldManager")) throw errors.badRequest("PATCH requests with apply-patch+yaml require fieldManager");
    const out = d.api.patch(t, version, ns, r.name, pt, body, r.sub, { ...writeOpts(q), force: boolParam(q, "force") });
    return send(res, out.created ? 201 : 200, out.object);
  }

  if (method === "DELETE") {
    if (r.sub) throw errors.methodNotAllowed(method);
    const buf = await readBody(req, limit);
    const opts: DeleteOptions = { ...writeOpts(q) };
    if (buf.length > 0 && buf.toString("utf8").trim() !== "") {
      const body = decode(buf, mediaType(req.headers["content-type"]));
      if (!isRecord(body)) throw errors.badRequest("DeleteOptions must be an object");
      if (body.gracePeriodSeconds !== undefined && body.gracePeriodSeconds !== null) {
        if (typeof body.gracePeriodSeconds !== "number" || !Number.isInteger(body.gracePeriodSeconds)) throw errors.badRequest("gracePeriodSeconds must be an integer");
        opts.gracePeriodSeconds = body.gracePeriodSeconds;
      }
      if (isRecord(body.preconditions)) {
        opts.preconditions = {
          ...(typeof body.preconditions.uid === "string" ? { uid: body.preconditions.uid } : {}),
          ...(typeof body.preconditions.resourceVersion === "string" ? { resourceVersion: body.preconditions.resourceVersion } : {}),
        };
      }
      if (typeof body.propagationPolicy === "string") opts.propagationPolicy = body.propagationPolicy;
      if (Array.isArray(body.dryRun) && body.dryRun.length > 0) opts.dryRun = true;
    }
    const g = intParam(q, "gracePeriodSeconds");
    if (g !== undefined) opts.gracePeriodSeconds = g;
    const pp = q.get("propagationPolicy");
    if (pp) opts.propagationPolicy = pp;
    if (r.name) {
      needNs();
      return send(res, 200, d.api.delete(t, version, ns, r.name, opts));
    }
    const items = d.api.deleteCollection(t, version, r.namespace, selectorFrom(q), opts);
    return send(res, 200, { kind: t.listKind, apiVersion: gvString(t.group, version), metadata: { resourceVersion: String(d.store.currentRV) }, items });
  }

  throw errors.methodNotAllowed(method);
}

/** A whole-object body (POST/PUT): JSON, YAML, or protobuf for the kinds kubectl sends that way. */
async function decodeObjectBody(req: IncomingMessage, limit: number, t: ResourceType, version: string): Promise<unknown> {
  const type = mediaType(req.headers["content-type"]);
  if (type === PROTOBUF && !t.crd) return decodeProtobuf(await readBody(req, limit), t.kind, gvString(t.group, version));
  if (type && type !== "application/json" && type !== "application/yaml" && type !== "text/yaml" && type !== "application/x-yaml") {
    req.resume();
    throw errors.unsupportedMediaType(type);
  }
  return decode(await readBody(req, limit), type);
}

function startWatch(d: HttpDeps, res: ServerResponse, q: URLSearchParams, r: Route, table: { includeObject: IncludeObject } | undefined): void {
  const sel = selectorFrom(q, r.name);
  const rvParam = q.get("resourceVersion");
  const sendInitial = q.get("sendInitialEvents");
  const allowBookmarks = boolParam(q, "allowWatchBookmarks");
  const timeoutSec = intParam(q, "timeoutSeconds");
  const maxMs = d.defaultWatchTimeoutMs ?? 30 * 60_000;
  const timeoutMs = timeoutSec !== undefined && timeoutSec > 0 ? Math.min(timeoutSec * 1000, maxMs * 2) : maxMs;
  const spec = { t: r.t, version: r.version, namespace: r.namespace, sel, allowBookmarks, ...(table ? { table } : {}) };
  const current = d.store.currentRV;
  if (sendInitial === "true") {
    if (!allowBookmarks) throw errors.invalid("meta.k8s.io", "ListOptions", "", [{ field: "allowWatchBookmarks", message: "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true" }]);
    const initial = d.store.list(r.t.group, r.t.resource, r.t.namespaced ? r.namespace : undefined);
    d.hub.start(res, spec, { sinceRV: current, initial, initialEventsEndBookmark: true, timeoutMs });
    return;
  }
  if (rvParam === null || rvParam === "" || rvParam === "0") {
    // No RV (or "any"): the current state as ADDED events, then live changes.
    const initial = d.store.list(r.t.group, r.t.resource, r.t.namespaced ? r.namespace : undefined);
    d.hub.start(res, spec, { sinceRV: current, initial, timeoutMs });
    return;
  }
  if (!/^\d+$/.test(rvParam)) throw errors.badRequest(`invalid resource version: ${rvParam}`);
  const since = Number(rvParam);
  if (since < d.store.oldestResumableRV) throw new ApiError(410, "Expired", `too old resource version: ${since} (${d.store.oldestResumableRV})`);
  d.hub.start(res, spec, { sinceRV: since, timeoutMs });
}

function openapi(d: HttpDeps, res: ServerResponse, segs: string[]): void {
  if (segs[1] !== "v3") throw errors.noRoute();
  if (segs.length === 2) return send(res, 200, openapiV3Index(d.registry));
  let doc: Record<string, unknown> | undefined;
  if (segs[2] === "api" && segs.length === 4) doc = openapiV3Doc(d.registry, "", segs[3]!);
  else if (segs[2] === "apis" && segs.length === 5) doc = openapiV3Doc(d.registry, segs[3]!, segs[4]!);
  if (!doc) throw errors.noRoute();
  send(res, 200, doc);
}

export function versionInfo(): Record<string, string> {
  return {
    major: "1",
    minor: "32",
    gitVersion: GIT_VERSION,
    gitCommit: "0000000000000000000000000000000000000000",
    gitTreeState: "clean",
    buildDate: "2026-01-01T00:00:00Z",
    goVersion: "n/a",
    compiler: "bun",
    platform: `${process.platform}/${process.arch === "x64" ? "amd64" : process.arch}`,
  };
}

export { statusObject, successStatus };
