/**
 * Fuzzing the embedded API's bodies (issue 7): in process, ≥ 100,000 hostile objects and patches
 * through the validation and patch functions the HTTP layer uses (validateObject, the four patch
 * kinds, selectors); then a live server taking thousands of generated hostile requests. Unlike the
 * fixed-body random test in apiserver.test.ts, bodies here are generated mutations of real objects.
 * Replay: FUZZ_SEED=<seed> bun test tests/fuzz-api.test.ts
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { createLogger } from "../lib/log.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { apiserverMigrations, startApiServer, type ApiServer } from "../lib/kube/apiserver/index.ts";
import { ApiError } from "../lib/kube/apiserver/errors.ts";
import { applyPatch, jsonPatch, mergePatch, strategicMergePatch } from "../lib/kube/apiserver/patch.ts";
import { BUILTINS, crdToResourceType, type ResourceType } from "../lib/kube/apiserver/resources.ts";
import { parseFieldSelector, parseLabelSelector } from "../lib/kube/apiserver/selectors.ts";
import { checkObjectShape, validateObject } from "../lib/kube/apiserver/validate.ts";
import type { KObject } from "../lib/kube/apiserver/types.ts";
import { assertNoPollution, cases, clone, deepText, fuzzLoop, fuzzLoopAsync, seedFor, type Gen, type Json } from "./helpers/fuzz.ts";

// ---- valid objects of every kind to mutate ---------------------------------------------------

const OBJECTS: Record<string, Json> = {
  Pod: { apiVersion: "v1", kind: "Pod", metadata: { name: "p", namespace: "default", labels: { app: "web", "example.com/tier": "front" }, annotations: { note: "x" } }, spec: { nodeName: "edge-1", restartPolicy: "Always", terminationGracePeriodSeconds: 30, containers: [{ name: "c", image: "nginx", command: ["sleep"], env: [{ name: "A", value: "1" }], ports: [{ containerPort: 80, protocol: "TCP" }], volumeMounts: [{ name: "v", mountPath: "/v" }] }], volumes: [{ name: "v" }], nodeSelector: { a: "b" } } },
  ConfigMap: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "cm", namespace: "default" }, data: { a: "1", b: "two" } },
  Secret: { apiVersion: "v1", kind: "Secret", metadata: { name: "s", namespace: "default" }, type: "Opaque", data: { k: "dmFsdWU=" } },
  Node: { apiVersion: "v1", kind: "Node", metadata: { name: "edge-1", labels: { "node-role.kubernetes.io/edge": "" } }, spec: { unschedulable: false, taints: [{ key: "k", effect: "NoSchedule" }] }, status: { conditions: [{ type: "Ready", status: "True" }] } },
  Service: { apiVersion: "v1", kind: "Service", metadata: { name: "svc", namespace: "default" }, spec: { ports: [{ port: 80 }], selector: { app: "web" }, type: "ClusterIP" } },
  Lease: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "edge-1", namespace: "kube-node-lease" }, spec: { holderIdentity: "edge-1", leaseDurationSeconds: 40, renewTime: "2026-01-01T00:00:00.000000Z" } },
  Event: { apiVersion: "v1", kind: "Event", metadata: { name: "e", namespace: "default" }, involvedObject: { kind: "Pod", name: "p" }, reason: "Started", message: "m", type: "Normal", count: 1 },
  Endpoints: { apiVersion: "v1", kind: "Endpoints", metadata: { name: "svc", namespace: "default" }, subsets: [{ addresses: [{ ip: "10.0.0.1" }] }] },
  Namespace: { apiVersion: "v1", kind: "Namespace", metadata: { name: "ns-a" } },
  CustomResourceDefinition: {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: "widgets.example.com" },
    spec: { group: "example.com", names: { plural: "widgets", kind: "Widget" }, scope: "Namespaced", versions: [{ name: "v1", served: true, storage: true, schema: { openAPIV3Schema: { type: "object", properties: { spec: { type: "object", properties: { size: { type: "integer", minimum: 0 } } } } } } }] },
  },
  Device: {
    apiVersion: "devices.kubeedge.io/v1beta1",
    kind: "Device",
    metadata: { name: "thermo-1", namespace: "default", labels: { room: "kitchen" } },
    spec: { deviceModelRef: { name: "thermo-model" }, nodeName: "edge-1", protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: 502 } }, properties: [{ name: "temperature", desired: { value: "20" }, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 0 } }, reportCycle: 1000, collectCycle: 500 }] },
  },
  DeviceModel: { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "thermo-model", namespace: "default" }, spec: { protocol: "modbus", properties: [{ name: "temperature", type: "FLOAT", accessMode: "ReadOnly" }] } },
};

const TYPES: ResourceType[] = [...BUILTINS];
for (const f of ["devices.kubeedge.io_devices.yaml", "devices.kubeedge.io_devicemodels.yaml", "devices.kubeedge.io_devicestatuses.yaml"]) {
  const t = crdToResourceType(parseYaml(readFileSync(join(import.meta.dir, "..", "schemas", "crds", f), "utf8")) as KObject);
  if (t) TYPES.push(t);
}
const typeOf = (kind: string) => TYPES.find((t) => t.kind === kind)!;

function depthOf(v: unknown, d = 0): number {
  if (v === null || typeof v !== "object" || d > 200) return d;
  let m = d;
  for (const c of Object.values(v)) m = Math.max(m, depthOf(c, d + 1));
  return m;
}

/** Runs `fn`; returns "ok" or the ApiError's code; anything else thrown fails the case. */
function outcome(what: string, fn: () => unknown): number | "ok" {
  try {
    fn();
    return "ok";
  } catch (e) {
    if (!(e instanceof ApiError)) throw new Error(`${what} threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)} (not an ApiError)`);
    if (e.code < 400 || e.code >= 500) throw new Error(`${what} gave ${e.code} ${e.message}`);
    const status = e.toStatus() as { kind?: string; code?: number };
    if (status.kind !== "Status" || status.code !== e.code) throw new Error(`${what}: error without a proper Status`);
    return e.code;
  }
}

function hostileObject(g: Gen, base: Json): Json {
  const k = g.int(12);
  if (k < 8) return g.mutate(base).doc;
  if (k < 10) {
    // names and labels: the most common hand-made mistakes
    const o = clone(base) as Record<string, any>;
    const md = (o.metadata ??= {});
    if (g.chance(0.5)) md.name = g.pick(["", "UPPER", "-a", "a-", "a_b", "a".repeat(254), "ü", "a..b", ".", "a/b", g.string()]);
    if (g.chance(0.5)) md.labels = { [g.pick(["", "a/b/c", "-x", "x".repeat(64), "example.com/", "EXAMPLE.com/a", g.shortString(10)])]: g.pick(["", "v".repeat(64), "-v", "v v", g.string()]) };
    if (g.chance(0.3)) md.annotations = { big: "x".repeat(g.pick([10, 300_000])) };
    return o;
  }
  if (k === 10) return g.value();
  return g.mutate(g.mutate(base).doc).doc;
}

function hostileJsonPatch(g: Gen, target: Json): Json {
  const ops: Json[] = [];
  const n = g.int(5);
  const ptrs = ["", "/", "/metadata", "/metadata/name", "/metadata/labels/a", "/spec", "/spec/containers/0", "/spec/containers/-", "/spec/containers/99", "/data/a", "/a~1b", "/~2", "/metadata/__proto__", "/metadata/__proto__/polluted", "/constructor/prototype/polluted", "/spec/containers/01", "/spec/containers/-1"];
  for (let i = 0; i < n; i++) {
    const op: Record<string, Json> = { op: g.chance(0.9) ? g.pick(["add", "remove", "replace", "move", "copy", "test"]) : g.string(), path: g.chance(0.85) ? g.pick(ptrs) : (g.value() as Json) };
    if (g.chance(0.8)) op.value = g.chance(0.5) ? (g.value(2) as Json) : (clone(target) as Json);
    if (g.chance(0.4)) op.from = g.pick(ptrs);
    ops.push(g.chance(0.9) ? op : g.value(2));
  }
  return g.chance(0.9) ? ops : g.value();
}

// ---- in process ------------------------------------------------------------------------------

describe("fuzz: API body validation in process", () => {
  test("≥ 100,000 hostile objects and patches: only 4xx ApiErrors (with a Status), never anything else", () => {
    const seed = seedFor("api-inproc", 0xa91);
    const n = cases(100_000);
    const kinds = Object.keys(OBJECTS);
    const tally: Record<string, number> = {};
    const note = (k: string) => (tally[k] = (tally[k] ?? 0) + 1);
    fuzzLoop("api bodies", seed, n, (g, i) => {
      const kind = g.pick(kinds);
      const t = typeOf(kind);
      const base = OBJECTS[kind]!;
      const version = t.versions[0]!;
      const step = i % 5;
      let body: unknown;
      if (step < 2) body = hostileObject(g, base);
      else {
        const target = clone(base) as Json;
        const which = (["merge", "strategic", "json"] as const)[step - 2]!;
        const pt = which === "merge" && g.chance(0.3) ? "apply" : which;
        const patch = pt === "json" ? hostileJsonPatch(g, base) : hostileObject(g, base);
        if (depthOf(patch) > 100) return void note("too-deep"); // http.ts refuses these before any patch code runs
        const r = outcome(`${pt} patch of ${kind}`, () => {
          body = pt === "json" ? jsonPatch(target, patch) : pt === "merge" ? mergePatch(target, patch) : pt === "strategic" ? strategicMergePatch(kind, target, patch) : applyPatch(kind, target, patch);
        });
        note(`${pt}:${r}`);
        if (r !== "ok") return;
      }
      if (depthOf(body) > 100) return void note("too-deep");
      const r = outcome(`validate ${kind}`, () => validateObject(t, checkObjectShape(body), version, { strict: g.chance(0.2) }));
      note(`validate:${r}`);
      if (i % 10_000 === 0) assertNoPollution();
    });
    assertNoPollution();
    console.log(`API bodies: ${n} cases (seed ${seed}) ${JSON.stringify(tally)}`);
    for (const kind of kinds) expect(outcome(kind, () => validateObject(typeOf(kind), clone(OBJECTS[kind]) as KObject, typeOf(kind).versions[0]!))).toBe("ok"); // valid still valid
    expect(tally["validate:422"]).toBeGreaterThan(1000);
    expect(tally["validate:ok"]).toBeGreaterThan(1000);
  }, 60_000);

  test("100,000 label and field selectors: a selector or a 400, nothing else", () => {
    const seed = seedFor("selectors", 0x5e1);
    const n = cases(100_000);
    const atoms = ["a", "b=c", "a!=b", "a==b", "x in (a,b)", "x notin (a)", "!a", "a,", ",", "(", ")", "in", "=", "!", " ", "example.com/k", "metadata.name=x", "spec.nodeName!=", "a=b=c", "ü", "\u0000", "%", "\\"];
    fuzzLoop("selectors", seed, n, (g) => {
      let s = "";
      const parts = g.int(6);
      for (let k = 0; k < parts; k++) s += g.chance(0.8) ? g.pick(atoms) : g.shortString(6);
      if (g.chance(0.01)) s = "a=b,".repeat(10_000);
      outcome("label selector", () => parseLabelSelector(s));
      outcome("field selector", () => parseFieldSelector(s));
    });
  }, 60_000);
});

// ---- live ------------------------------------------------------------------------------------

const log = createLogger({ level: "error" });

describe("fuzz: a live embedded API", () => {
  const dir = mkdtempSync(join(tmpdir(), "outpost-fuzz-api-"));
  let store: Store<any>;
  let server: ApiServer;
  const BODY_LIMIT = 512 * 1024;
  beforeAll(async () => {
    store = await openStore<any>(join(dir, "cloudcore.db"), apiserverMigrations);
    server = await startApiServer({ store, host: "127.0.0.1", port: 0, dataDir: dir, log, maxBodyBytes: BODY_LIMIT });
  });
  afterAll(async () => {
    await server?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function send(method: string, path: string, body: string | Uint8Array | undefined, contentType: string | undefined): Promise<{ status: number; json: any; text: string }> {
    const headers: Record<string, string> = { Authorization: `Bearer ${server.adminToken}`, Accept: "application/json" };
    if (contentType !== undefined) headers["Content-Type"] = contentType;
    const res = await fetch(server.url + path, { method, headers, body, tls: { ca: server.caCert } } as RequestInit);
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: res.status, json, text };
  }

  const PATHS: Record<string, { collection: string; item: string }> = {
    Pod: { collection: "/api/v1/namespaces/default/pods", item: "/api/v1/namespaces/default/pods/p" },
    ConfigMap: { collection: "/api/v1/namespaces/default/configmaps", item: "/api/v1/namespaces/default/configmaps/cm" },
    Secret: { collection: "/api/v1/namespaces/default/secrets", item: "/api/v1/namespaces/default/secrets/s" },
    Node: { collection: "/api/v1/nodes", item: "/api/v1/nodes/edge-1" },
    Service: { collection: "/api/v1/namespaces/default/services", item: "/api/v1/namespaces/default/services/svc" },
    Lease: { collection: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", item: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1" },
    Event: { collection: "/api/v1/namespaces/default/events", item: "/api/v1/namespaces/default/events/e" },
    Endpoints: { collection: "/api/v1/namespaces/default/endpoints", item: "/api/v1/namespaces/default/endpoints/svc" },
    Namespace: { collection: "/api/v1/namespaces", item: "/api/v1/namespaces/ns-a" },
    CustomResourceDefinition: { collection: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", item: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com" },
    Device: { collection: "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices", item: "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/thermo-1" },
    DeviceModel: { collection: "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicemodels", item: "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicemodels/thermo-model" },
  };

  /** Percent-encodes the UTF-8 bytes (lone surrogates become U+FFFD, as on any wire). */
  const enc = (s: string) => [...Buffer.from(s, "utf8")].map((b) => "%" + b.toString(16).padStart(2, "0")).join("");

  function hostileRequest(g: Gen): { method: string; path: string; body?: string | Uint8Array; type?: string } {
    const kind = g.pick(Object.keys(OBJECTS));
    const base = OBJECTS[kind]!;
    const p = PATHS[kind]!;
    const method = g.chance(0.03) ? "DELETE" : g.pick(["POST", "PUT", "PUT", "PATCH", "PATCH", "PATCH", "PATCH", "GET"]);
    const path = method === "POST" ? p.collection : g.chance(0.9) ? p.item + (g.chance(0.15) ? "/status" : "") : p.item + g.pick(["?dryRun=All", "?fieldValidation=Strict", "?dryRun=Bad", "?gracePeriodSeconds=1e400", "?fieldManager=" + enc(g.shortString(8)), "/../x", "%00"]);
    if (method === "GET") return { method, path: path + g.pick(["", "?labelSelector=" + enc(g.shortString(10)), "?limit=-1", "?limit=1e999", "?continue=" + enc(g.string().slice(0, 200))]) };
    let body: string | Uint8Array;
    let type: string | undefined;
    const b = g.int(14);
    const obj = method === "PATCH" && g.chance(0.35) ? hostileJsonPatch(g, base) : hostileObject(g, base);
    if (b < 6) body = JSON.stringify(obj);
    else if (b === 6) body = g.damageText(JSON.stringify(obj));
    else if (b === 7) body = toYaml(obj, { aliasDuplicateObjects: false });
    else if (b === 8) body = g.pick(['{"metadata":{"name":"n","generation":1e400}}', `{"metadata":{"name":"n"},"spec":{"containers":[{"name":"c","ports":[{"containerPort":${"9".repeat(400)}}]}]}}`, '{"a":1,"a":2,"metadata":{"name":"dup","name":"dup2"}}', '\ufeff{"metadata":{"name":"bom"}}', '{"metadata":{"name":"x"},"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}', "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"]);
    else if (b === 9) body = `{"metadata":{"name":"deep"},"spec":${deepText(g.pick([99, 101, 5000, 100_000]), g.chance(0.5))}}`;
    else if (b === 10) body = "x".repeat(g.pick([BODY_LIMIT + 1, BODY_LIMIT * 3]));
    else if (b === 11) {
      const bytes = new Uint8Array(g.int(400));
      for (let i = 0; i < bytes.length; i++) bytes[i] = g.int(256);
      body = g.chance(0.5) ? bytes : new Uint8Array([0x6b, 0x38, 0x73, 0x00, ...bytes]); // protobuf magic + garbage
      type = "application/vnd.kubernetes.protobuf";
    } else body = g.chance(0.5) ? "" : g.string();
    const patchType = Array.isArray(obj) ? "application/json-patch+json" : g.pick(["application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"]);
    if (g.chance(0.75)) type ??= method === "PATCH" ? patchType : b === 7 ? "application/yaml" : "application/json";
    type ??= method === "PATCH" ? g.pick(["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml", "application/json", "text/plain"]) : g.pick(["application/json", "application/yaml", "text/plain", "application/xml", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "", "APPLICATION/JSON"]);
    if (method === "PATCH" && type === "application/apply-patch+yaml" && !path.includes("?") && g.chance(0.8)) return { method, path: path + "?fieldManager=fuzz", body, type };
    return { method, path, body, type };
  }

  test("3,000 generated hostile requests: never a 5xx, errors are Status objects, good requests work after", async () => {
    const seed = seedFor("api-live", 0x1a11);
    const n = cases(3000);
    const statuses: Record<number, number> = {};
    const seedObjects = async () => {
      for (const kind of Object.keys(OBJECTS)) await send("POST", PATHS[kind]!.collection, JSON.stringify(OBJECTS[kind]), "application/json");
    };
    await seedObjects();
    await fuzzLoopAsync("live API", seed, n / 6, async (g, i) => {
      if (i % 50 === 49) await seedObjects(); // bring back what a DELETE removed (409 for the rest)
      // six at a time: some concurrency, as clients bring it
      const batch = Array.from({ length: 6 }, () => hostileRequest(g));
      const results = await Promise.all(batch.map((r) => send(r.method, r.path, r.body, r.type)));
      results.forEach((res, k) => {
        const r = batch[k]!;
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        const what = `${r.method} ${r.path} [${r.type}] ${typeof r.body === "string" ? r.body.slice(0, 200) : "<bytes>"}`;
        if (res.status >= 500) throw new Error(`${res.status} for ${what}: ${res.text.slice(0, 300)}`);
        if (res.status >= 400 && (res.json?.kind !== "Status" || res.json.code !== res.status)) throw new Error(`${res.status} without a Status for ${what}: ${res.text.slice(0, 200)}`);
        if (res.status < 300 && (typeof res.json !== "object" || res.json === null)) throw new Error(`${res.status} without an object for ${what}`);
      });
    });
    console.log(`live API: ${n} requests (seed ${seed}) by status ${JSON.stringify(statuses)}`);
    expect(statuses[413]).toBeGreaterThan(0);
    expect(statuses[415]).toBeGreaterThan(0);
    expect(statuses[422]).toBeGreaterThan(0);
    expect(statuses[400]).toBeGreaterThan(0);
    // the server still does its job
    const name = `after-fuzz-${seed}`;
    const created = await send("POST", "/api/v1/namespaces/default/configmaps", JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name }, data: { ok: "yes" } }), "application/json");
    expect(created.status).toBe(201);
    const patched = await send("PATCH", `/api/v1/namespaces/default/configmaps/${name}`, JSON.stringify({ data: { more: "1" } }), "application/merge-patch+json");
    expect(patched.status).toBe(200);
    expect(patched.json.data).toEqual({ ok: "yes", more: "1" });
    const ready = await fetch(server.url + "/readyz", { tls: { ca: server.caCert } } as RequestInit);
    expect(ready.status).toBe(200);
    // nothing stored is malformed: every object listed back is an object with a valid name
    const all = await send("GET", "/api/v1/namespaces/default/configmaps", undefined, undefined);
    for (const o of all.json.items) expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    assertNoPollution();
  }, 90_000);

  test("a JSON patch through __proto__ is refused and pollutes nothing (regression)", async () => {
    await send("POST", PATHS.ConfigMap!.collection, JSON.stringify(OBJECTS.ConfigMap), "application/json");
    for (const path of ["/metadata/__proto__/polluted", "/__proto__/polluted", "/constructor/prototype/polluted", "/data/__proto__/polluted"]) {
      const r = await send("PATCH", PATHS.ConfigMap!.item, JSON.stringify([{ op: "add", path, value: "yes" }]), "application/json-patch+json");
      expect(r.status).toBe(422);
      assertNoPollution();
    }
    const merge = await send("PATCH", PATHS.ConfigMap!.item, '{"__proto__":{"polluted":"yes"},"data":{"__proto__":{"polluted":"yes"}}}', "application/merge-patch+json");
    expect(merge.status).toBeLessThan(500);
    assertNoPollution();
    const created = await send("POST", PATHS.Pod!.collection, JSON.stringify({ ...(OBJECTS.Pod as object), metadata: { name: "still-works" } }), "application/json");
    expect(created.status).toBe(201);
  });

  test("values that cannot be turned into strings get a 4xx, not a 500 (regression)", async () => {
    const odd = { toString: [] }; // String() of this throws a TypeError
    const cases: [string, string, Json, string, number][] = [
      ["POST", PATHS.ConfigMap!.collection, { kind: odd, metadata: { name: "a" } }, "application/json", 400],
      ["POST", PATHS.ConfigMap!.collection, { apiVersion: odd, metadata: { name: "a" } }, "application/json", 400],
      ["POST", PATHS.ConfigMap!.collection, { metadata: { generateName: odd } }, "application/json", 422],
      ["POST", PATHS.Namespace!.collection, { metadata: { name: odd } }, "application/json", 422],
      ["PUT", PATHS.ConfigMap!.item, { metadata: { name: odd } }, "application/json", 400],
      ["PATCH", PATHS.ConfigMap!.item, { metadata: { name: odd } }, "application/merge-patch+json", 400],
      ["PATCH", PATHS.ConfigMap!.item + "?fieldManager=t", { metadata: { name: odd } }, "application/apply-patch+yaml", 400],
    ];
    await send("POST", PATHS.ConfigMap!.collection, JSON.stringify(OBJECTS.ConfigMap), "application/json");
    for (const [method, path, body, type, status] of cases) {
      const r = await send(method, path, JSON.stringify(body), type);
      expect(`${method} ${JSON.stringify(body)} -> ${r.status}`).toBe(`${method} ${JSON.stringify(body)} -> ${status}`);
      expect(r.json.kind).toBe("Status");
    }
  });
});
