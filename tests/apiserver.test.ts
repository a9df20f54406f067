/** The embedded Kubernetes-compatible API over real HTTPS sockets: semantics, watches, restarts, bad input. */
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { apiserverMigrations, startApiServer, type ApiServer, type StoreEvent } from "../lib/kube/apiserver/index.ts";
import { openRawWatch } from "../lib/kube/apiserver/watch-client.ts";

type Json = Record<string, any>;

interface Harness {
  dir: string;
  store: Store<any>;
  server: ApiServer;
  req(method: string, path: string, body?: unknown, opts?: { token?: string | null; contentType?: string; raw?: string | Uint8Array; accept?: string }): Promise<{ status: number; body: Json; headers: Headers }>;
  watch(path: string): Promise<Watch>;
}

interface Watch {
  status: number;
  next(timeoutMs?: number): Promise<Json>;
  close(): void;
}

const log = createLogger({ level: "error" });
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(dir?: string, extra: { eventWindow?: number; bookmarkIntervalMs?: number; maxBodyBytes?: number } = {}): Promise<Harness> {
  const d = dir ?? mkdtempSync(join(tmpdir(), "outpost-apiserver-"));
  if (!dir) dirs.push(d);
  const store = await openStore<any>(join(d, "cloudcore.db"), apiserverMigrations);
  const server = await startApiServer({ store, host: "127.0.0.1", port: 0, dataDir: d, log, ...extra });
  const tls = { ca: server.caCert };
  const req: Harness["req"] = async (method, path, body, opts = {}) => {
    const headers: Record<string, string> = { Accept: opts.accept ?? "application/json" };
    const token = opts.token === undefined ? server.adminToken : opts.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload: string | Uint8Array | undefined = opts.raw;
    if (payload === undefined && body !== undefined) payload = JSON.stringify(body);
    if (payload !== undefined) headers["Content-Type"] = opts.contentType ?? "application/json";
    const res = await fetch(server.url + path, { method, headers, body: payload, tls } as RequestInit);
    const text = await res.text();
    let parsed: Json;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { text };
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  const watch = async (path: string): Promise<Watch> => {
    const ctrl = new AbortController();
    const res = await fetch(server.url + path, { headers: { Authorization: `Bearer ${server.adminToken}` }, signal: ctrl.signal, tls } as RequestInit);
    if (res.status !== 200) {
      const body = (await res.json()) as Json;
      return { status: res.status, next: async () => body, close: () => {} };
    }
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = "";
    const queue: Json[] = [];
    const next = async (timeoutMs = 5000): Promise<Json> => {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0) {
        const nl = buf.indexOf("\n");
        if (nl >= 0) {
          queue.push(JSON.parse(buf.slice(0, nl)));
          buf = buf.slice(nl + 1);
          continue;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new Error("watch: timed out waiting for an event");
        const r = await Promise.race([reader.read(), Bun.sleep(left).then(() => null)]);
        if (r === null) throw new Error("watch: timed out waiting for an event");
        if (r.done) throw new Error("watch: stream ended");
        buf += dec.decode(r.value, { stream: true });
      }
      return queue.shift()!;
    };
    return { status: 200, next, close: () => ctrl.abort() };
  };
  return { dir: d, store, server, req, watch };
}

async function stop(h: Harness): Promise<void> {
  await h.server.close();
  await h.store.close();
}

const cm = (name: string, data: Json = { a: "1" }, labels?: Json) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, ...(labels ? { labels } : {}) }, data });
const pod = (name: string, extra: { nodeName?: string; labels?: Json; grace?: number } = {}) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, ...(extra.labels ? { labels: extra.labels } : {}) },
  spec: { ...(extra.nodeName ? { nodeName: extra.nodeName } : {}), ...(extra.grace !== undefined ? { terminationGracePeriodSeconds: extra.grace } : {}), containers: [{ name: "main", image: "busybox:1.36", command: ["sleep", "1000"] }] },
});

let h: Harness;
beforeEach(async () => {
  h = await start();
});
afterEach(async () => {
  await stop(h);
});

describe("auth, health, discovery", () => {
  test("health and version need no token; everything else does", async () => {
    for (const p of ["/healthz", "/readyz", "/livez"]) expect((await h.req("GET", p, undefined, { token: null })).status).toBe(200);
    const v = await h.req("GET", "/version", undefined, { token: null });
    expect(v.body.gitVersion).toBe("v1.32.0-outpost");
    const r = await h.req("GET", "/api/v1/namespaces", undefined, { token: null });
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ kind: "Status", apiVersion: "v1", status: "Failure", reason: "Unauthorized", code: 401 });
    expect((await h.req("GET", "/api/v1/namespaces", undefined, { token: "wrong" })).status).toBe(401);
  });

  test("read-only token may read and watch but not write", async () => {
    const ro = { token: h.server.readonlyToken };
    expect((await h.req("GET", "/api/v1/namespaces/default/configmaps", undefined, ro)).status).toBe(200);
    const w = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("x"), ro);
    expect(w.status).toBe(403);
    expect(w.body.reason).toBe("Forbidden");
    expect((await h.req("DELETE", "/api/v1/namespaces/default", undefined, ro)).status).toBe(403);
  });

  test("kubeconfig carries the server URL, CA and admin token", () => {
    const kc = readFileSync(join(h.dir, "kubeconfig"), "utf8");
    expect(kc).toContain(h.server.url);
    expect(kc).toContain(h.server.adminToken);
    expect(kc).toContain("certificate-authority-data:");
  });

  test("seeded namespaces and installed device CRDs", async () => {
    const ns = await h.req("GET", "/api/v1/namespaces");
    const names = ns.body.items.map((i: Json) => i.metadata.name);
    for (const n of ["default", "kube-system", "kube-node-lease"]) expect(names).toContain(n);
    const g = await h.req("GET", "/apis/devices.kubeedge.io/v1beta1");
    const res = g.body.resources.map((r: Json) => r.name);
    expect(res).toEqual(expect.arrayContaining(["devices", "devicemodels", "devicestatuses", "devicestatuses/status", "devices/status"]));
    const agg = await h.req("GET", "/apis", undefined, { accept: "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json" });
    expect(agg.headers.get("content-type")).toContain("as=APIGroupDiscoveryList");
    expect(agg.body.items.map((i: Json) => i.metadata.name)).toContain("devices.kubeedge.io");
    const legacy = await h.req("GET", "/apis");
    expect(legacy.body.kind).toBe("APIGroupList");
    const core = await h.req("GET", "/api/v1");
    expect(core.body.resources.find((r: Json) => r.name === "pods").shortNames).toEqual(["po"]);
  });
});

describe("objects", () => {
  test("create, get, list, update with optimistic concurrency, delete", async () => {
    const c = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("one"));
    expect(c.status).toBe(201);
    expect(c.body.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(c.body.metadata.creationTimestamp).toMatch(/Z$/);
    const rv1 = Number(c.body.metadata.resourceVersion);
    expect(rv1).toBeGreaterThan(0);
    const dup = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("one"));
    expect(dup.status).toBe(409);
    expect(dup.body.reason).toBe("AlreadyExists");
    const l = await h.req("GET", "/api/v1/namespaces/default/configmaps");
    expect(l.body.kind).toBe("ConfigMapList");
    expect(Number(l.body.metadata.resourceVersion)).toBeGreaterThanOrEqual(rv1);
    const upd = { ...c.body, data: { a: "2" } };
    const u = await h.req("PUT", "/api/v1/namespaces/default/configmaps/one", upd);
    expect(u.status).toBe(200);
    expect(Number(u.body.metadata.resourceVersion)).toBeGreaterThan(rv1);
    const stale = await h.req("PUT", "/api/v1/namespaces/default/configmaps/one", { ...upd, data: { a: "3" } });
    expect(stale.status).toBe(409);
    expect(stale.body.reason).toBe("Conflict");
    const noRv = { ...upd, metadata: { ...c.body.metadata, resourceVersion: undefined }, data: { a: "4" } };
    expect((await h.req("PUT", "/api/v1/namespaces/default/configmaps/one", noRv)).status).toBe(200);
    const d = await h.req("DELETE", "/api/v1/namespaces/default/configmaps/one");
    expect(d.status).toBe(200);
    const g = await h.req("GET", "/api/v1/namespaces/default/configmaps/one");
    expect(g.status).toBe(404);
    expect(g.body).toMatchObject({ kind: "Status", reason: "NotFound", code: 404, message: 'configmaps "one" not found' });
  });

  test("generateName, generation bumps only on spec changes, no-op updates keep the RV", async () => {
    const c = await h.req("POST", "/api/v1/namespaces/default/pods", { ...pod(""), metadata: { generateName: "web-" } });
    expect(c.status).toBe(201);
    expect(c.body.metadata.name).toMatch(/^web-[a-z0-9]{5}$/);
    expect(c.body.metadata.generation).toBe(1);
    const name = c.body.metadata.name;
    const lab = await h.req("PATCH", `/api/v1/namespaces/default/pods/${name}`, { metadata: { labels: { a: "b" } } }, { contentType: "application/merge-patch+json" });
    expect(lab.body.metadata.generation).toBe(1);
    const img = await h.req("PATCH", `/api/v1/namespaces/default/pods/${name}`, { spec: { containers: [{ name: "main", image: "busybox:1.37" }] } }, { contentType: "application/strategic-merge-patch+json" });
    expect(img.body.metadata.generation).toBe(2);
    expect(img.body.spec.containers[0].command).toEqual(["sleep", "1000"]);
    const same = await h.req("PATCH", `/api/v1/namespaces/default/pods/${name}`, { metadata: { labels: { a: "b" } } }, { contentType: "application/merge-patch+json" });
    expect(same.body.metadata.resourceVersion).toBe(img.body.metadata.resourceVersion);
  });

  test("an update that changes nothing (keys reordered) keeps the resourceVersion", async () => {
    const c = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("same", { a: "1", b: "2" }, { x: "1", y: "2" }));
    const reordered = { data: { b: "2", a: "1" }, metadata: { labels: { y: "2", x: "1" }, name: "same", resourceVersion: c.body.metadata.resourceVersion }, kind: "ConfigMap", apiVersion: "v1" };
    const u = await h.req("PUT", "/api/v1/namespaces/default/configmaps/same", reordered);
    expect(u.status).toBe(200);
    expect(u.body.metadata.resourceVersion).toBe(c.body.metadata.resourceVersion);
  });

  test("namespaces: missing namespace is 404, deleting one removes its contents", async () => {
    const missing = await h.req("POST", "/api/v1/namespaces/nope/configmaps", cm("x"));
    expect(missing.status).toBe(404);
    expect((await h.req("POST", "/api/v1/namespaces", { metadata: { name: "team" } })).status).toBe(201);
    expect((await h.req("POST", "/api/v1/namespaces/team/configmaps", cm("x"))).status).toBe(201);
    expect((await h.req("DELETE", "/api/v1/namespaces/team")).status).toBe(200);
    expect((await h.req("GET", "/api/v1/namespaces/team/configmaps/x")).status).toBe(404);
    expect((await h.req("GET", "/api/v1/namespaces/team")).status).toBe(404);
    expect((await h.req("DELETE", "/api/v1/namespaces/default")).status).toBe(403);
  });

  test("secrets: stringData becomes base64 data", async () => {
    const s = await h.req("POST", "/api/v1/namespaces/default/secrets", { metadata: { name: "s" }, stringData: { pw: "hunter2" } });
    expect(s.status).toBe(201);
    expect(s.body.data.pw).toBe(Buffer.from("hunter2").toString("base64"));
    expect(s.body.type).toBe("Opaque");
    expect(s.body.stringData).toBeUndefined();
  });

  test("leases, events, services, endpoints, nodes round-trip", async () => {
    const lease = await h.req("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", { metadata: { name: "edge-1" }, spec: { holderIdentity: "edge-1", leaseDurationSeconds: 40 } });
    expect(lease.status).toBe(201);
    expect(lease.body.apiVersion).toBe("coordination.k8s.io/v1");
    const ev = await h.req("POST", "/api/v1/namespaces/default/events", { metadata: { name: "e.1" }, involvedObject: { kind: "Pod", name: "p" }, reason: "Started", message: "hi", type: "Normal" });
    expect(ev.status).toBe(201);
    const svc = await h.req("POST", "/api/v1/namespaces/default/services", { metadata: { name: "svc" }, spec: { selector: { app: "x" }, ports: [{ port: 80 }] } });
    expect(svc.status).toBe(201);
    expect(svc.body.spec.clusterIP).toMatch(/^10\.96\./);
    const ep = await h.req("PUT", "/api/v1/namespaces/default/endpoints/svc", { metadata: { name: "svc" }, subsets: [] });
    expect(ep.status).toBe(201);
    const node = await h.req("POST", "/api/v1/nodes", { metadata: { name: "edge-1", labels: { "node-role.kubernetes.io/edge": "" } }, status: { conditions: [{ type: "Ready", status: "True" }] } });
    expect(node.status).toBe(201);
    expect(node.body.status.conditions[0].type).toBe("Ready");
  });
});

describe("selectors and paging", () => {
  test("label selectors, field selectors, limit/continue", async () => {
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("a", { nodeName: "n1", labels: { app: "web", tier: "fe" } }));
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("b", { nodeName: "n2", labels: { app: "web", tier: "be" } }));
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("c", { labels: { app: "db" } }));
    const names = async (q: string) => (await h.req("GET", `/api/v1/namespaces/default/pods?${q}`)).body.items.map((i: Json) => i.metadata.name);
    const ls = (s: string) => `labelSelector=${encodeURIComponent(s)}`;
    const fs = (s: string) => `fieldSelector=${encodeURIComponent(s)}`;
    expect(await names(ls("app=web"))).toEqual(["a", "b"]);
    expect(await names(ls("app==web,tier=fe"))).toEqual(["a"]);
    expect(await names(ls("app!=web"))).toEqual(["c"]);
    expect(await names(ls("tier in (fe,be)"))).toEqual(["a", "b"]);
    expect(await names(ls("tier notin (fe)"))).toEqual(["b", "c"]);
    expect(await names(ls("tier"))).toEqual(["a", "b"]);
    expect(await names(ls("!tier"))).toEqual(["c"]);
    expect(await names(fs("spec.nodeName=n2"))).toEqual(["b"]);
    expect(await names(fs("spec.nodeName="))).toEqual(["c"]);
    expect(await names(fs("metadata.name!=a,status.phase=Pending"))).toEqual(["b", "c"]);
    expect(await names(fs("metadata.namespace=default"))).toHaveLength(3);
    const bad = await h.req("GET", `/api/v1/namespaces/default/pods?${ls("app in (")}`);
    expect(bad.status).toBe(400);
    const all = await h.req("GET", "/api/v1/pods?limit=2");
    expect(all.body.items).toHaveLength(2);
    expect(all.body.metadata.continue).toBeTruthy();
    const rest = await h.req("GET", `/api/v1/pods?limit=2&continue=${encodeURIComponent(all.body.metadata.continue)}`);
    expect(rest.body.items.map((i: Json) => i.metadata.name)).toEqual(["c"]);
    expect(rest.body.metadata.continue).toBeUndefined();
  });

  test("Table output for kubectl, with CRD printer columns", async () => {
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("a", { nodeName: "n1" }));
    const t = await h.req("GET", "/api/v1/namespaces/default/pods", undefined, { accept: "application/json;as=Table;v=v1;g=meta.k8s.io,application/json" });
    expect(t.body.kind).toBe("Table");
    expect(t.body.columnDefinitions.map((c: Json) => c.name)).toContain("Status");
    expect(t.body.rows[0].cells[0]).toBe("a");
    await h.req("POST", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses", { metadata: { name: "d" } });
    await h.req("PATCH", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses/d/status", { status: { state: "online", lastOnlineTime: "2026-01-01T00:00:00Z" } }, { contentType: "application/merge-patch+json" });
    const ds = await h.req("GET", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses", undefined, { accept: "application/json;as=Table;v=v1;g=meta.k8s.io" });
    expect(ds.body.columnDefinitions.map((c: Json) => c.name)).toEqual(["Name", "State", "LastOnlineTime", "Age"]);
    expect(ds.body.rows[0].cells.slice(0, 3)).toEqual(["d", "online", "2026-01-01T00:00:00Z"]);
  });
});

describe("watch", () => {
  test("list then watch from the list RV sees add, modify, delete in order", async () => {
    const l = await h.req("GET", "/api/v1/namespaces/default/configmaps");
    const w = await h.watch(`/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${l.body.metadata.resourceVersion}`);
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("w"));
    await h.req("PATCH", "/api/v1/namespaces/default/configmaps/w", { data: { a: "2" } }, { contentType: "application/merge-patch+json" });
    await h.req("DELETE", "/api/v1/namespaces/default/configmaps/w");
    const evs = [await w.next(), await w.next(), await w.next()];
    expect(evs.map((e) => e.type)).toEqual(["ADDED", "MODIFIED", "DELETED"]);
    expect(evs[1]!.object.data.a).toBe("2");
    const rvs = evs.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs[0]! < rvs[1]! && rvs[1]! < rvs[2]!).toBe(true);
    w.close();
  });

  test("resume from an older RV replays what was missed; no RV starts with the current state", async () => {
    const a = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("r1"));
    const rv = a.body.metadata.resourceVersion;
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("r2"));
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("r3"));
    const w = await h.watch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${rv}`);
    expect((await w.next()).object.metadata.name).toBe("r2");
    expect((await w.next()).object.metadata.name).toBe("r3");
    w.close();
    const w2 = await h.watch(`/api/v1/namespaces/default/configmaps?watch=true`);
    const names = [(await w2.next()).object.metadata.name, (await w2.next()).object.metadata.name, (await w2.next()).object.metadata.name];
    expect(names.sort()).toEqual(["r1", "r2", "r3"]);
    w2.close();
  });

  test("410 Gone when the RV is older than the event window", async () => {
    await stop(h);
    h = await start(undefined, { eventWindow: 20 });
    const first = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("g0"));
    for (let i = 1; i < 40; i++) await h.req("POST", "/api/v1/namespaces/default/configmaps", cm(`g${i}`));
    const w = await h.watch(`/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${first.body.metadata.resourceVersion}`);
    expect(w.status).toBe(410);
    const st = await w.next();
    expect(st).toMatchObject({ kind: "Status", code: 410, reason: "Expired" });
    const l = await h.req("GET", "/api/v1/namespaces/default/configmaps");
    expect(l.body.items).toHaveLength(40);
    const ok = await h.watch(`/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${l.body.metadata.resourceVersion}`);
    expect(ok.status).toBe(200);
    ok.close();
  });

  test("bookmarks when allowed; selector watches turn label changes into ADDED/DELETED", async () => {
    await stop(h);
    h = await start(undefined, { bookmarkIntervalMs: 100 });
    const rv = (await h.req("GET", "/api/v1/namespaces/default/configmaps")).body.metadata.resourceVersion;
    const w = await h.watch(`/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&labelSelector=app%3Dx&resourceVersion=${rv}`);
    const bm = await w.next();
    expect(bm.type).toBe("BOOKMARK");
    expect(Number(bm.object.metadata.resourceVersion)).toBeGreaterThanOrEqual(Number(rv));
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("s", {}, { app: "y" }));
    await h.req("PATCH", "/api/v1/namespaces/default/configmaps/s", { metadata: { labels: { app: "x" } } }, { contentType: "application/merge-patch+json" });
    await h.req("PATCH", "/api/v1/namespaces/default/configmaps/s", { metadata: { labels: { app: "z" } } }, { contentType: "application/merge-patch+json" });
    const seen: string[] = [];
    while (seen.length < 2) {
      const e = await w.next();
      if (e.type !== "BOOKMARK") seen.push(e.type);
    }
    expect(seen).toEqual(["ADDED", "DELETED"]);
    w.close();
  });

  test("a thousand watchers all get the event", async () => {
    const rv = (await h.req("GET", "/api/v1/namespaces/default/configmaps")).body.metadata.resourceVersion;
    const got: string[] = [];
    const ws = Array.from({ length: 1000 }, () => {
      const w = openRawWatch(h.server.url, `/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${rv}`, h.server.adminToken, h.server.caCert);
      w.onEvent = (e) => got.push(`${e.type} ${e.object.metadata.name}`);
      return w;
    });
    expect((await Promise.all(ws.map((w) => w.status))).every((s) => s === 200)).toBe(true);
    for (let i = 0; i < 200 && h.server.watchCount() < 1000; i++) await Bun.sleep(10);
    expect(h.server.watchCount()).toBe(1000);
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("fan"));
    for (let i = 0; i < 500 && got.length < 1000; i++) await Bun.sleep(10);
    expect(got.length).toBe(1000);
    expect(got.every((g) => g === "ADDED fan")).toBe(true);
    for (const w of ws) w.close();
    for (let i = 0; i < 200 && h.server.watchCount() > 0; i++) await Bun.sleep(10);
    expect(h.server.watchCount()).toBe(0);
  }, 30_000);

  test("in-process change feed", async () => {
    const seen: StoreEvent[] = [];
    const off = h.server.events.subscribe((e) => seen.push(e));
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("feed"));
    off();
    expect(seen.map((e) => `${e.type} ${e.resource} ${e.name}`)).toEqual(["ADDED configmaps feed"]);
    expect(seen[0]!.rv).toBe(h.server.events.currentResourceVersion());
  });
});

describe("status subresource", () => {
  test("pod: main writes keep status, /status writes keep spec", async () => {
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("p", { nodeName: "n1" }));
    const cur = (await h.req("GET", "/api/v1/namespaces/default/pods/p")).body;
    const main = await h.req("PUT", "/api/v1/namespaces/default/pods/p", { ...cur, status: { phase: "Running" } });
    expect(main.body.status.phase).toBe("Pending");
    const st = await h.req("PUT", "/api/v1/namespaces/default/pods/p/status", { ...main.body, spec: { ...main.body.spec, nodeName: "other" }, status: { phase: "Running", podIP: "10.0.0.1" } });
    expect(st.status).toBe(200);
    expect(st.body.status.phase).toBe("Running");
    expect(st.body.spec.nodeName).toBe("n1");
    const p = await h.req("PATCH", "/api/v1/namespaces/default/pods/p/status", { status: { conditions: [{ type: "Ready", status: "True" }] } }, { contentType: "application/strategic-merge-patch+json" });
    expect(p.body.status.podIP).toBe("10.0.0.1");
    expect(p.body.status.conditions).toHaveLength(1);
  });

  test("node status and CRD status (Device, DeviceStatus)", async () => {
    await h.req("POST", "/api/v1/nodes", { metadata: { name: "n1" } });
    const ns = await h.req("PATCH", "/api/v1/nodes/n1/status", { status: { conditions: [{ type: "Ready", status: "True" }] } }, { contentType: "application/merge-patch+json" });
    expect(ns.body.status.conditions[0].status).toBe("True");
    const ign = await h.req("PATCH", "/api/v1/nodes/n1", { status: { conditions: [] } }, { contentType: "application/merge-patch+json" });
    expect(ign.body.status.conditions).toHaveLength(1);
    const dev = await h.req("POST", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices", {
      apiVersion: "devices.kubeedge.io/v1beta1",
      kind: "Device",
      metadata: { name: "d1" },
      spec: { nodeName: "n1", protocol: { protocolName: "modbus" } },
      status: { reportToCloud: true },
    });
    expect(dev.status).toBe(201);
    expect(dev.body.status).toBeUndefined();
    const ds = await h.req("PUT", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/d1/status", { ...dev.body, spec: { nodeName: "x" }, status: { reportToCloud: true, reportCycle: 1000 } });
    expect(ds.body.status.reportCycle).toBe(1000);
    expect(ds.body.spec.nodeName).toBe("n1");
    expect(ds.body.metadata.generation).toBe(1);
  });
});

describe("deletion", () => {
  test("finalizers keep an object until they are removed", async () => {
    await h.req("POST", "/api/v1/namespaces/default/configmaps", { ...cm("f"), metadata: { name: "f", finalizers: ["example.com/hold"] } });
    const d = await h.req("DELETE", "/api/v1/namespaces/default/configmaps/f");
    expect(d.status).toBe(200);
    expect(d.body.metadata.deletionTimestamp).toBeTruthy();
    expect((await h.req("GET", "/api/v1/namespaces/default/configmaps/f")).status).toBe(200);
    await h.req("PATCH", "/api/v1/namespaces/default/configmaps/f", { metadata: { finalizers: null } }, { contentType: "application/merge-patch+json" });
    expect((await h.req("GET", "/api/v1/namespaces/default/configmaps/f")).status).toBe(404);
  });

  test("a scheduled pod waits for a grace-0 delete; an unscheduled one goes at once", async () => {
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("edge", { nodeName: "n1", grace: 45 }));
    const d = await h.req("DELETE", "/api/v1/namespaces/default/pods/edge", { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: "Background" });
    expect(d.status).toBe(200);
    expect(d.body.metadata.deletionGracePeriodSeconds).toBe(45);
    const left = Date.parse(d.body.metadata.deletionTimestamp) - Date.now();
    expect(left).toBeGreaterThan(40_000);
    expect((await h.req("GET", "/api/v1/namespaces/default/pods/edge")).status).toBe(200);
    const again = await h.req("DELETE", "/api/v1/namespaces/default/pods/edge");
    expect(again.body.metadata.deletionTimestamp).toBe(d.body.metadata.deletionTimestamp);
    expect((await h.req("DELETE", "/api/v1/namespaces/default/pods/edge?gracePeriodSeconds=0")).status).toBe(200);
    expect((await h.req("GET", "/api/v1/namespaces/default/pods/edge")).status).toBe(404);
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("loose"));
    await h.req("DELETE", "/api/v1/namespaces/default/pods/loose");
    expect((await h.req("GET", "/api/v1/namespaces/default/pods/loose")).status).toBe(404);
  });

  test("a scheduled pod whose grace period ran out stays Terminating until its node deletes it", async () => {
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("short", { nodeName: "n1", grace: 1 }));
    await h.req("DELETE", "/api/v1/namespaces/default/pods/short");
    expect((await h.req("GET", "/api/v1/namespaces/default/pods/short")).status).toBe(200);
    await Bun.sleep(2600);
    const still = await h.req("GET", "/api/v1/namespaces/default/pods/short");
    expect(still.status).toBe(200); // the process may still be running on the node
    expect(still.body.metadata.deletionTimestamp).toBeTruthy();
    expect((await h.req("DELETE", "/api/v1/namespaces/default/pods/short?gracePeriodSeconds=0")).status).toBe(200);
    expect((await h.req("GET", "/api/v1/namespaces/default/pods/short")).status).toBe(404);
  });

  test("preconditions and owner-reference garbage collection", async () => {
    const dev = await h.req("POST", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices", { metadata: { name: "d" }, spec: {} });
    const pre = await h.req("DELETE", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/d", { preconditions: { uid: "nope" } });
    expect(pre.status).toBe(409);
    await h.req("POST", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses", {
      metadata: { name: "d", ownerReferences: [{ apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", name: "d", uid: dev.body.metadata.uid }] },
    });
    await h.req("DELETE", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/d");
    for (let i = 0; i < 50; i++) {
      if ((await h.req("GET", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses/d")).status === 404) break;
      await Bun.sleep(20);
    }
    expect((await h.req("GET", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses/d")).status).toBe(404);
  });
});

describe("patch types", () => {
  test("strategic merge by name, $patch delete, JSON patch, merge patch, apply", async () => {
    await h.req("POST", "/api/v1/namespaces/default/pods", {
      metadata: { name: "sm" },
      spec: { containers: [{ name: "a", image: "x:1", env: [{ name: "E1", value: "1" }], ports: [{ containerPort: 80 }] }, { name: "b", image: "y:1" }], volumes: [{ name: "v", emptyDir: {} }] },
    });
    const p = `/api/v1/namespaces/default/pods/sm`;
    const smp = "application/strategic-merge-patch+json";
    let r = await h.req("PATCH", p, { spec: { containers: [{ name: "a", env: [{ name: "E2", value: "2" }], ports: [{ containerPort: 81 }] }] } }, { contentType: smp });
    expect(r.body.spec.containers).toHaveLength(2);
    expect(r.body.spec.containers[0].env.map((e: Json) => e.name)).toEqual(["E1", "E2"]);
    expect(r.body.spec.containers[0].ports.map((e: Json) => e.containerPort)).toEqual([80, 81]);
    r = await h.req("PATCH", p, { spec: { containers: [{ name: "b", $patch: "delete" }], volumes: [{ name: "w", emptyDir: {} }] } }, { contentType: smp });
    expect(r.body.spec.containers.map((c: Json) => c.name)).toEqual(["a"]);
    expect(r.body.spec.volumes.map((c: Json) => c.name)).toEqual(["v", "w"]);
    r = await h.req("PATCH", p, [{ op: "replace", path: "/spec/containers/0/image", value: "x:2" }, { op: "add", path: "/metadata/labels", value: { k: "v" } }], { contentType: "application/json-patch+json" });
    expect(r.body.spec.containers[0].image).toBe("x:2");
    expect(r.body.metadata.labels).toEqual({ k: "v" });
    const failed = await h.req("PATCH", p, [{ op: "test", path: "/spec/containers/0/image", value: "nope" }], { contentType: "application/json-patch+json" });
    expect(failed.status).toBe(422);
    r = await h.req("PATCH", p, { spec: { containers: [{ name: "only", image: "z" }] } }, { contentType: "application/merge-patch+json" });
    expect(r.body.spec.containers.map((c: Json) => c.name)).toEqual(["only"]);
    const stale = await h.req("PATCH", p, { metadata: { resourceVersion: "1" }, data: {} }, { contentType: "application/merge-patch+json" });
    expect(stale.status).toBe(409);
    const crSmp = await h.req("PATCH", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/x", {}, { contentType: smp });
    expect([404, 415]).toContain(crSmp.status);
    const ap = await h.req("PATCH", "/api/v1/namespaces/default/configmaps/applied?fieldManager=test", undefined, {
      contentType: "application/apply-patch+yaml",
      raw: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v\n",
    });
    expect(ap.status).toBe(201);
    const ap2 = await h.req("PATCH", "/api/v1/namespaces/default/configmaps/applied?fieldManager=test", undefined, {
      contentType: "application/apply-patch+yaml",
      raw: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k2: v2\n",
    });
    expect(ap2.body.data).toEqual({ k: "v", k2: "v2" });
  });
});

describe("custom resources", () => {
  test("a new CRD is served, validated, pruned and removed with its objects", async () => {
    const crd = {
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: "widgets.example.com" },
      spec: {
        group: "example.com",
        scope: "Cluster",
        names: { plural: "widgets", kind: "Widget", shortNames: ["wd"] },
        versions: [
          {
            name: "v1",
            served: true,
            storage: true,
            schema: { openAPIV3Schema: { type: "object", properties: { spec: { type: "object", required: ["size"], properties: { size: { type: "integer", minimum: 1 }, color: { type: "string", enum: ["red", "blue"] } } } } } },
          },
        ],
      },
    };
    const c = await h.req("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd);
    expect(c.status).toBe(201);
    expect(c.body.status.conditions.find((x: Json) => x.type === "Established").status).toBe("True");
    const disc = await h.req("GET", "/apis/example.com/v1");
    expect(disc.body.resources[0]).toMatchObject({ name: "widgets", namespaced: false, kind: "Widget", shortNames: ["wd"] });
    const w = await h.req("POST", "/apis/example.com/v1/widgets", { apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "w1" }, spec: { size: 3, extra: "dropped" } });
    expect(w.status).toBe(201);
    expect(w.body.spec).toEqual({ size: 3 });
    const strict = await h.req("POST", "/apis/example.com/v1/widgets?fieldValidation=Strict", { metadata: { name: "w2" }, spec: { size: 3, extra: 1 } });
    expect(strict.status).toBe(400);
    const bad = await h.req("POST", "/apis/example.com/v1/widgets", { metadata: { name: "w3" }, spec: { size: "big", color: "green" } });
    expect(bad.status).toBe(422);
    expect(bad.body.reason).toBe("Invalid");
    expect(bad.body.details.causes.map((x: Json) => x.field)).toEqual(expect.arrayContaining(["spec.size", "spec.color"]));
    const missing = await h.req("POST", "/apis/example.com/v1/widgets", { metadata: { name: "w4" }, spec: {} });
    expect(missing.status).toBe(422);
    expect((await h.req("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")).status).toBe(200);
    expect((await h.req("GET", "/apis/example.com/v1/widgets")).status).toBe(404);
    await h.req("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd);
    expect((await h.req("GET", "/apis/example.com/v1/widgets")).body.items).toHaveLength(0);
  });

  test("v1alpha2 device objects are accepted", async () => {
    const r = await h.req("POST", "/apis/devices.kubeedge.io/v1alpha2/namespaces/default/devices", {
      apiVersion: "devices.kubeedge.io/v1alpha2",
      kind: "Device",
      metadata: { name: "old" },
      spec: { protocol: { modbus: { slaveID: 1 } }, propertyVisitors: [{ propertyName: "t", modbus: { register: "CoilRegister", offset: 2, limit: 1 } }] },
    });
    expect(r.status).toBe(201);
    expect(r.body.spec.propertyVisitors[0].modbus.offset).toBe(2);
  });
});

describe("restart", () => {
  test("data, tokens and resourceVersions survive; watches resume across the restart", async () => {
    const dir = h.dir;
    const token = h.server.adminToken;
    const c = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("keep"));
    const rvBefore = Number(c.body.metadata.resourceVersion);
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("keep2"));
    await stop(h);
    h = await start(dir);
    expect(h.server.adminToken).toBe(token);
    expect((await h.req("GET", "/api/v1/namespaces/default/configmaps/keep")).body.data).toEqual({ a: "1" });
    const w = await h.watch(`/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${rvBefore}`);
    const e = await w.next();
    expect(e.object.metadata.name).toBe("keep2");
    const n = await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("after"));
    expect(Number(n.body.metadata.resourceVersion)).toBeGreaterThan(Number(e.object.metadata.resourceVersion));
    expect((await w.next()).object.metadata.name).toBe("after");
    w.close();
    // Only the installed-once CRDs and seeded namespaces: nothing duplicated.
    expect((await h.req("GET", "/api/v1/namespaces")).body.items.filter((i: Json) => i.metadata.name === "default")).toHaveLength(1);
  });

  test("garbage collection finds dependents stored before the restart, and not those whose owner reference was removed", async () => {
    const dir = h.dir;
    const devs = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices";
    const sts = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses";
    const owner = await h.req("POST", devs, { metadata: { name: "gc-owner" }, spec: {} });
    const ref = { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", name: "gc-owner", uid: owner.body.metadata.uid };
    expect((await h.req("POST", sts, { metadata: { name: "gc-dep", ownerReferences: [ref] } })).status).toBe(201);
    expect((await h.req("POST", sts, { metadata: { name: "gc-released", ownerReferences: [ref] } })).status).toBe(201);
    await stop(h);
    h = await start(dir);
    // released after the restart: the index must follow the update
    const rel = await h.req("PATCH", `${sts}/gc-released`, [{ op: "remove", path: "/metadata/ownerReferences" }], { contentType: "application/json-patch+json" });
    expect(rel.status).toBe(200);
    expect((await h.req("DELETE", `${devs}/gc-owner`)).status).toBe(200);
    for (let i = 0; i < 50 && (await h.req("GET", `${sts}/gc-dep`)).status !== 404; i++) await Bun.sleep(20);
    expect((await h.req("GET", `${sts}/gc-dep`)).status).toBe(404);
    expect((await h.req("GET", `${sts}/gc-released`)).status).toBe(200);
  });
});

describe("bad input", () => {
  test("malformed bodies, unknown kinds, wrong types, oversized bodies: Status errors, server unharmed", async () => {
    const expectStatus = (r: { status: number; body: Json }, code: number, reason: string) => {
      expect(r.status).toBe(code);
      expect(r.body).toMatchObject({ kind: "Status", apiVersion: "v1", status: "Failure", code, reason });
      expect(typeof r.body.message).toBe("string");
    };
    const base = "/api/v1/namespaces/default/configmaps";
    expect((await h.req("POST", base, cm("x"))).status).toBe(201);
    expectStatus(await h.req("POST", base, undefined, { raw: "{not json" }), 400, "BadRequest");
    expectStatus(await h.req("POST", base, undefined, { raw: "metadata: [unclosed", contentType: "application/yaml" }), 400, "BadRequest");
    expectStatus(await h.req("POST", base, undefined, { raw: "42" }), 400, "BadRequest");
    expectStatus(await h.req("POST", base, undefined, { raw: "" }), 400, "BadRequest");
    expectStatus(await h.req("POST", base, { kind: "Pod", metadata: { name: "x" } }), 400, "BadRequest");
    expectStatus(await h.req("POST", base, { metadata: { name: "Not_Valid" } }), 422, "Invalid");
    expectStatus(await h.req("POST", base, { metadata: {} }), 422, "Invalid");
    expectStatus(await h.req("POST", base, { metadata: { name: "t", labels: { a: 1 } } }), 422, "Invalid");
    expectStatus(await h.req("POST", base, { metadata: { name: "t" }, data: { a: 1 } }), 422, "Invalid");
    expectStatus(await h.req("POST", base, { metadata: "nope" }), 422, "Invalid");
    expectStatus(await h.req("POST", "/api/v1/namespaces/default/pods", { metadata: { name: "p" }, spec: { containers: "x" } }), 422, "Invalid");
    expectStatus(await h.req("POST", "/api/v1/namespaces/default/pods", { metadata: { name: "p" }, spec: { containers: [] } }), 422, "Invalid");
    expectStatus(await h.req("GET", "/api/v1/namespaces/default/gizmos"), 404, "NotFound");
    expectStatus(await h.req("GET", "/apis/nope.example.com/v1/things"), 404, "NotFound");
    expectStatus(await h.req("GET", "/api/v2/pods"), 404, "NotFound");
    expectStatus(await h.req("GET", "/nonsense"), 404, "NotFound");
    expectStatus(await h.req("PATCH", `${base}/x`, { a: 1 }, { contentType: "text/plain" }), 415, "UnsupportedMediaType");
    expectStatus(await h.req("PATCH", `${base}/missing`, { a: 1 }, { contentType: "application/merge-patch+json" }), 404, "NotFound");
    expectStatus(await h.req("PATCH", `${base}/x`, { a: 1 }, { contentType: "application/json-patch+json" }), 400, "BadRequest");
    expectStatus(await h.req("PUT", base, cm("x")), 405, "MethodNotAllowed");
    expectStatus(await h.req("GET", `${base}?watch=1&resourceVersion=abc`), 400, "BadRequest");
    expectStatus(await h.req("GET", `${base}?limit=x`), 400, "BadRequest");
    expectStatus(await h.req("GET", `${base}?continue=garbage`), 400, "BadRequest");
    const big = JSON.stringify(cm("big", { blob: "x".repeat(4 * 1024 * 1024) }));
    expectStatus(await h.req("POST", base, undefined, { raw: big }), 413, "RequestEntityTooLarge");
    expectStatus(await h.req("PUT", `${base}/x`, { ...cm("y") }), 400, "BadRequest");
    const deep = '{"metadata":{"name":"deep"},"data":' + '{"a":'.repeat(5000) + '"x"' + "}".repeat(5000) + "}";
    expectStatus(await h.req("POST", base, undefined, { raw: deep }), 400, "BadRequest");
    expectStatus(await h.req("POST", base, undefined, { raw: "a: &a [1]\nb: *a\n", contentType: "application/yaml" }), 422, "Invalid");
    expectStatus(await h.req("POST", base, undefined, { raw: "\u0000\u0001garbage", contentType: "application/vnd.kubernetes.protobuf" }), 400, "BadRequest");
    expectStatus(await h.req("POST", "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices", undefined, { raw: "k8s\u0000", contentType: "application/vnd.kubernetes.protobuf" }), 415, "UnsupportedMediaType");
    expect((await h.req("GET", "/healthz")).status).toBe(200);
    const ok = await h.req("POST", base, cm("after-bad-input"));
    expect(ok.status).toBe(201);
  });
});

describe("random input", () => {
  test("random methods, paths, media types and bodies never get a 5xx and always a Status", async () => {
    let seed = Number(process.env.APISERVER_FUZZ_SEED ?? 12345);
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const pick = <T,>(xs: T[]): T => xs[rnd(xs.length)]!;
    const paths = [
      "/api/v1/namespaces/default/configmaps",
      "/api/v1/namespaces/default/configmaps/x",
      "/api/v1/namespaces/default/pods/p/status",
      "/api/v1/nodes/n",
      "/api/v1/namespaces/default",
      "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/d",
      "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses/d/status",
      "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
      "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/l",
      "/api/v1/namespaces/default/configmaps?labelSelector=%28%28&fieldSelector=%3D%3D",
      "/api/v1/namespaces/%ZZ/pods",
      "/apis//v1/x",
    ];
    const types = ["application/json", "application/yaml", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml", "application/vnd.kubernetes.protobuf", "text/plain"];
    const bodies = [
      "{}",
      "[]",
      "null",
      '{"metadata":{"name":"x"},"spec":{"containers":[{"name":"c"}]}}',
      '{"metadata":{"name":"x","labels":{"a":{"b":1}}}}',
      '[{"op":"remove","path":"/metadata"}]',
      '[{"op":"move","from":"/spec","path":"/spec/x"}]',
      '{"metadata":{"name":"x","finalizers":[1]}}',
      '{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"a.b"},"spec":{"group":"b","names":{"plural":"a","kind":"A"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"array"}}}}}]}}',
      "- a\n- : b",
      "k8s\u0000\u000a\u00ff\u00ff",
      "\ud800",
    ];
    await h.req("POST", "/api/v1/namespaces/default/configmaps", cm("x"));
    await h.req("POST", "/api/v1/namespaces/default/pods", pod("p", { nodeName: "n" }));
    for (let i = 0; i < 300; i++) {
      const method = pick(["GET", "POST", "PUT", "PATCH", "DELETE"]);
      const path = pick(paths);
      const withBody = method !== "GET";
      let raw = pick(bodies);
      if (rnd(4) === 0) raw = raw.slice(0, rnd(raw.length + 1));
      const r = await h.req(method, path, undefined, withBody ? { raw, contentType: pick(types) } : {});
      if (r.status >= 500 || (r.status >= 400 && r.body.kind !== "Status")) throw new Error(`${method} ${path} ${raw} -> ${r.status} ${JSON.stringify(r.body)}`);
    }
    expect((await h.req("GET", "/readyz")).status).toBe(200);
    expect((await h.req("GET", "/api/v1/namespaces/default/configmaps")).status).toBe(200);
  });
});
