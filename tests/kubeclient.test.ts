/** The project's Kubernetes client against the real embedded API, in-process over HTTPS. */
import { afterAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createLogger } from "../lib/log.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { apiserverMigrations, startApiServer, type ApiServer } from "../lib/kube/apiserver/index.ts";
import {
  InformerFactory,
  KubeApiError,
  KubeClient,
  KubeConfigError,
  KubeTransportError,
  Resources,
  backoffDelay,
  byNodeName,
  inClusterConfig,
  loadKubeConfig,
  parseKubeConfig,
  type KubeObject,
  type WatchEvent,
} from "../lib/kube/client/index.ts";

const log = createLogger({ level: "error" });
const dirs: string[] = [];
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix = "outpost-kubeclient-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

interface Api {
  dir: string;
  store: Store<any>;
  server: ApiServer;
  client: KubeClient;
}

async function startApi(opts: { dir?: string; store?: Store<any>; port?: number; eventWindow?: number; bookmarkIntervalMs?: number } = {}): Promise<Api> {
  const dir = opts.dir ?? tempDir();
  const store = opts.store ?? (await openStore<any>(join(dir, "cloudcore.db"), apiserverMigrations));
  const server = await startApiServer({ store, host: "127.0.0.1", port: opts.port ?? 0, dataDir: dir, log, eventWindow: opts.eventWindow, bookmarkIntervalMs: opts.bookmarkIntervalMs });
  const client = new KubeClient(loadKubeConfig(join(dir, "kubeconfig")), { timeoutMs: 10_000 });
  return { dir, store, server, client };
}

async function stopApi(a: Api, closeStore = true): Promise<void> {
  a.client.close();
  await a.server.close();
  if (closeStore) await a.store.close();
}

async function until(cond: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected the promise to reject");
}

const names = (items: KubeObject[]) => items.map((o) => o.metadata?.name).sort();

const pod = (name: string, node: string, labels: Record<string, string> = {}) => ({
  metadata: { name, labels },
  spec: {
    nodeName: node,
    containers: [
      { name: "main", image: "busybox:1", command: ["sleep", "3600"] },
      { name: "side", image: "nginx:1" },
    ],
  },
});

// One API for the request/response tests.
let shared: Api;
const sharedApi = async () => {
  if (!shared) {
    shared = await startApi();
    cleanups.push(() => stopApi(shared));
  }
  return shared;
};

describe("kubeconfig", () => {
  test("the API's own kubeconfig: server, token and CA; the client authenticates with them", async () => {
    const a = await sharedApi();
    const cfg = loadKubeConfig(join(a.dir, "kubeconfig"));
    expect(cfg.server).toBe(a.server.url);
    expect(cfg.token).toBe(a.server.adminToken);
    expect(cfg.caPem).toBe(a.server.caCert!);
    expect(cfg.namespace).toBe("default");
    expect(cfg.insecure).toBeUndefined();
    const ns = await a.client.list(Resources.namespaces);
    expect(names(ns.items)).toEqual(["default", "kube-node-lease", "kube-public", "kube-system"]);
    // the read-only kubeconfig authenticates too, but cannot write
    const ro = KubeClient.fromKubeconfig(join(a.dir, "kubeconfig-readonly"));
    expect((await ro.get(Resources.namespaces, "default")).metadata?.name).toBe("default");
    const err = await rejection(ro.create(Resources.configmaps, { metadata: { name: "ro" } }));
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err.code).toBe(403);
    ro.close();
    // without the CA the server's certificate is not trusted
    const noCa = new KubeClient({ server: a.server.url, token: a.server.adminToken }, { timeoutMs: 5000 });
    const tlsErr = await rejection(noCa.list(Resources.namespaces));
    expect(tlsErr).toBeInstanceOf(KubeTransportError);
    noCa.close();
    // insecure-skip-tls-verify accepts it; a wrong token is a 401 Status
    const bad = new KubeClient({ server: a.server.url, token: "nope", insecure: true });
    const unauth = await rejection(bad.list(Resources.namespaces));
    expect(unauth).toBeInstanceOf(KubeApiError);
    expect(unauth.code).toBe(401);
    expect(unauth.reason).toBe("Unauthorized");
    bad.close();
  });

  test("client certificate and key, as data and as files relative to the kubeconfig; tokenFile; context choice", () => {
    const dir = tempDir();
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const keyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    const certPem = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
    const caPem = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";
    mkdirSync(join(dir, "pki"));
    writeFileSync(join(dir, "pki", "client.crt"), certPem);
    writeFileSync(join(dir, "pki", "client.key"), keyPem);
    writeFileSync(join(dir, "pki", "ca.crt"), caPem);
    writeFileSync(join(dir, "tok"), "file-token\n");
    const b64 = (s: string) => Buffer.from(s).toString("base64");
    writeFileSync(
      join(dir, "config"),
      `apiVersion: v1
kind: Config
current-context: data
clusters:
- name: c1
  cluster:
    server: https://k8s.example:6443/
    certificate-authority-data: ${b64(caPem)}
    tls-server-name: api.internal
- name: c2
  cluster:
    server: https://10.1.2.3:443
    certificate-authority: pki/ca.crt
contexts:
- name: data
  context: {cluster: c1, user: u-data, namespace: edge}
- name: files
  context: {cluster: c2, user: u-files}
users:
- name: u-data
  user:
    client-certificate-data: ${b64(certPem)}
    client-key-data: ${b64(keyPem)}
- name: u-files
  user:
    client-certificate: pki/client.crt
    client-key: pki/client.key
    tokenFile: tok
`,
    );
    const a = loadKubeConfig(join(dir, "config"));
    expect(a).toEqual({ server: "https://k8s.example:6443", caPem, certPem, keyPem, tlsServerName: "api.internal", namespace: "edge" });
    const b = loadKubeConfig(join(dir, "config"), { context: "files" });
    expect(b.server).toBe("https://10.1.2.3:443");
    expect(b.caPem).toBe(caPem);
    expect(b.certPem).toBe(certPem);
    expect(b.keyPem).toBe(keyPem);
    expect(b.token).toBe("file-token");
    expect(b.tokenFile).toBe(resolve(dir, "tok"));
    expect(b.namespace).toBeUndefined();
  });

  test("invalid kubeconfigs fail with errors naming the field", () => {
    const field = (text: string, context?: string): string => {
      try {
        parseKubeConfig(text, { context });
      } catch (e) {
        expect(e).toBeInstanceOf(KubeConfigError);
        return (e as KubeConfigError).field;
      }
      throw new Error("expected a KubeConfigError");
    };
    const base = (cluster: string, user = "token: t") =>
      `current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster:\n${cluster}\nusers:\n- name: u\n  user:\n    ${user}\n`;
    expect(field(base("    certificate-authority-data: AAAA"))).toBe("clusters[0].cluster.server");
    expect(field(base("    server: not a url"))).toBe("clusters[0].cluster.server");
    expect(field(base("    server: https://h\n    insecure-skip-tls-verify: maybe"))).toBe("clusters[0].cluster.insecure-skip-tls-verify");
    expect(field(base("    server: https://h\n    certificate-authority-data: bm90IHBlbQ=="))).toBe("clusters[0].cluster.certificate-authority-data");
    expect(field(base("    server: https://h\n    certificate-authority: /nonexistent/ca.crt"))).toBe("clusters[0].cluster.certificate-authority");
    expect(field(base("    server: https://h", "exec: {command: aws}"))).toBe("users[0].user.exec");
    expect(field(base("    server: https://h", `client-certificate-data: ${Buffer.from("-----BEGIN CERTIFICATE-----\n").toString("base64")}`))).toBe("users[0].user.client-key");
    expect(field(base("    server: https://h", "token: [1, 2]"))).toBe("users[0].user.token");
    expect(field("clusters: []\n")).toBe("current-context");
    expect(field(base("    server: https://h"), "other")).toBe("contexts");
    expect(field("current-context: x\ncontexts:\n- name: x\n  context: {cluster: missing}\n")).toBe("contexts[0].context.cluster");
    expect(field("clusters: {a: 1}\n")).toBe("clusters");
    expect(field(": : :\n  - [")).toBe("(root)");
    // a valid one for contrast
    expect(parseKubeConfig(base("    server: https://h\n    insecure-skip-tls-verify: true")).insecure).toBe(true);
  });

  test("in-cluster config from a service-account directory and the service env; the client works with it", async () => {
    const a = await sharedApi();
    const root = tempDir();
    writeFileSync(join(root, "token"), `${a.server.adminToken}\n`);
    writeFileSync(join(root, "ca.crt"), a.server.caCert!);
    writeFileSync(join(root, "namespace"), "kube-system\n");
    const env = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(a.server.port) };
    const cfg = inClusterConfig(root, env);
    expect(cfg).toEqual({ server: a.server.url, token: a.server.adminToken, tokenFile: join(root, "token"), caPem: a.server.caCert!, namespace: "kube-system" });
    const c = new KubeClient(cfg);
    expect(c.defaultNamespace).toBe("kube-system");
    await c.create(Resources.configmaps, { metadata: { name: "in-cluster" }, data: { a: "1" } });
    expect((await a.client.get(Resources.configmaps, "in-cluster", "kube-system")).data).toEqual({ a: "1" });
    c.close();
    expect(inClusterConfig(root, { KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" }).server).toBe("https://[fd00::1]:443");
    const missing = (env: Record<string, string>, r = root): string => {
      try {
        inClusterConfig(r, env);
      } catch (e) {
        expect(e).toBeInstanceOf(KubeConfigError);
        return (e as KubeConfigError).field;
      }
      throw new Error("expected a KubeConfigError");
    };
    expect(missing({ KUBERNETES_SERVICE_PORT: "443" })).toBe("KUBERNETES_SERVICE_HOST");
    expect(missing({ KUBERNETES_SERVICE_HOST: "h" })).toBe("KUBERNETES_SERVICE_PORT");
    expect(missing({ KUBERNETES_SERVICE_HOST: "h", KUBERNETES_SERVICE_PORT: "x" })).toBe("KUBERNETES_SERVICE_PORT");
    expect(missing(env, tempDir())).toBe("token");
  });
});

describe("REST", () => {
  test("create, get, list, update with optimistic concurrency (409 as a typed error), delete", async () => {
    const { client } = await sharedApi();
    const cm = Resources.configmaps;
    const created = await client.create(cm, { metadata: { name: "crud", labels: { app: "x" } }, data: { a: "1" } });
    expect(created.kind).toBe("ConfigMap");
    expect(created.metadata?.namespace).toBe("default");
    expect(created.metadata?.uid).toBeString();
    const got = await client.get(cm, "crud");
    expect(got.data).toEqual({ a: "1" });

    const updated = await client.update(cm, { ...got, data: { a: "2" } });
    expect(updated.data).toEqual({ a: "2" });
    expect(Number(updated.metadata!.resourceVersion)).toBeGreaterThan(Number(got.metadata!.resourceVersion));

    // a PUT carrying the old resourceVersion loses
    const conflict = await rejection(client.update(cm, { ...got, data: { a: "3" } }));
    expect(conflict).toBeInstanceOf(KubeApiError);
    expect(conflict.code).toBe(409);
    expect(conflict.reason).toBe("Conflict");
    expect(conflict.status.kind).toBe("Status");
    expect(conflict.status.status).toBe("Failure");
    expect(conflict.status.details?.name).toBe("crud");
    expect((await client.get(cm, "crud")).data).toEqual({ a: "2" });

    const dup = await rejection(client.create(cm, { metadata: { name: "crud" } }));
    expect(dup.code).toBe(409);
    expect(dup.reason).toBe("AlreadyExists");

    // delete preconditions: a wrong uid or resourceVersion is a conflict, the right ones delete
    const pre = await rejection(client.delete(cm, "crud", { preconditions: { uid: "not-the-uid" } }));
    expect(pre.code).toBe(409);
    const preRv = await rejection(client.delete(cm, "crud", { preconditions: { resourceVersion: got.metadata!.resourceVersion! } }));
    expect(preRv.code).toBe(409);
    await client.delete(cm, "crud", { preconditions: { uid: created.metadata!.uid!, resourceVersion: updated.metadata!.resourceVersion! }, propagationPolicy: "Background" });
    const nf = await rejection(client.get(cm, "crud"));
    expect(nf).toBeInstanceOf(KubeApiError);
    expect(nf.code).toBe(404);
    expect(nf.reason).toBe("NotFound");

    // generateName, and cluster-scoped resources
    const gen = await client.create(cm, { metadata: { generateName: "gen-" } });
    expect(gen.metadata!.name).toMatch(/^gen-.+/);
    const ns = await client.create(Resources.namespaces, { metadata: { name: "client-ns" } });
    expect(ns.metadata?.namespace).toBeUndefined();
    expect((await client.get(Resources.namespaces, "client-ns")).metadata?.uid).toBe(ns.metadata!.uid!);
  });

  test("delete with a grace period leaves a terminating pod; gracePeriodSeconds 0 removes it", async () => {
    const { client } = await sharedApi();
    const pods = KubeClient.core("pods");
    expect(pods).toEqual(Resources.pods);
    await client.create(pods, pod("graceful", "edge-9"));
    const del = await client.delete(pods, "graceful", { gracePeriodSeconds: 30 });
    expect(del.metadata?.deletionTimestamp).toBeString();
    expect(del.metadata?.deletionGracePeriodSeconds).toBe(30);
    expect((await client.get(pods, "graceful")).metadata?.deletionTimestamp).toBeString();
    await client.delete(pods, "graceful", { gracePeriodSeconds: 0 });
    expect((await rejection(client.get(pods, "graceful"))).code).toBe(404);
  });

  test("merge, strategic-merge and JSON patches", async () => {
    const { client } = await sharedApi();
    const pods = Resources.pods;
    await client.create(pods, pod("patched", "edge-1", { app: "web", tier: "front" }));

    // merge patch: maps merge, null deletes a key
    const m = await client.patch(pods, "patched", { metadata: { labels: { tier: null, extra: "yes" } } }, "merge");
    expect(m.metadata?.labels).toEqual({ app: "web", extra: "yes" });

    // strategic merge: containers merge by name (the other container survives)
    const s = await client.patch<any>(pods, "patched", { spec: { containers: [{ name: "main", image: "busybox:2" }] } }, "strategic");
    expect(s.spec.containers.map((c: any) => `${c.name}=${c.image}`)).toEqual(["main=busybox:2", "side=nginx:1"]);

    // JSON patch: test + replace + add
    const j = await client.patch<any>(
      pods,
      "patched",
      [
        { op: "test", path: "/metadata/labels/app", value: "web" },
        { op: "replace", path: "/metadata/labels/app", value: "api" },
        { op: "add", path: "/metadata/annotations", value: { note: "json" } },
      ],
      "json",
    );
    expect(j.metadata.labels.app).toBe("api");
    expect(j.metadata.annotations).toEqual({ note: "json" });
    // a failing test op changes nothing
    const failed = await rejection(client.patch(pods, "patched", [{ op: "test", path: "/metadata/labels/app", value: "web" }, { op: "remove", path: "/metadata/labels" }], "json"));
    expect(failed).toBeInstanceOf(KubeApiError);
    expect(failed.code).toBeGreaterThanOrEqual(400);
    expect((await client.get(pods, "patched")).metadata?.labels?.app).toBe("api");
    // a merge patch with a stale resourceVersion conflicts
    const stale = await rejection(client.patch(pods, "patched", { metadata: { resourceVersion: "1", labels: { x: "y" } } }, "merge"));
    expect(stale.code).toBe(409);
    // the wrong body shape for a patch type is refused before sending
    expect(() => client.patch(pods, "patched", { a: 1 }, "json")).toThrow(TypeError);
  });

  test("status subresource: get, update and patch touch only the status", async () => {
    const { client } = await sharedApi();
    const pods = Resources.pods;
    const p = await client.create<any>(pods, pod("with-status", "edge-1"));
    const st = await client.getStatus<any>(pods, "with-status");
    expect(st.metadata.name).toBe("with-status");

    const up = await client.updateStatus<any>(pods, { ...st, spec: { ...st.spec, nodeName: "elsewhere" }, status: { phase: "Running", podIP: "10.0.0.5" } });
    expect(up.status.phase).toBe("Running");
    expect(up.spec.nodeName).toBe("edge-1"); // the status endpoint ignores spec
    // the main resource ignores status
    const main = await client.update<any>(pods, { ...up, status: { phase: "Failed" }, metadata: { ...up.metadata, labels: { touched: "1" } } });
    expect(main.status.phase).toBe("Running");
    expect(main.metadata.labels).toEqual({ touched: "1" });
    // stale status update conflicts
    const conflict = await rejection(client.updateStatus(pods, { ...p, status: { phase: "Pending" } }));
    expect(conflict.code).toBe(409);

    const patched = await client.patchStatus<any>(pods, "with-status", { status: { conditions: [{ type: "Ready", status: "True" }] } }, "merge");
    expect(patched.status.phase).toBe("Running");
    expect(patched.status.conditions).toEqual([{ type: "Ready", status: "True" }]);
    const jp = await client.patchStatus<any>(pods, "with-status", [{ op: "replace", path: "/status/phase", value: "Succeeded" }], "json");
    expect(jp.status.phase).toBe("Succeeded");

    // a custom resource with a status subresource (devices.kubeedge.io/v1beta1 Device)
    const devRef = KubeClient.resource("devices.kubeedge.io", "v1beta1", "devices", true);
    const dev = await client.create<any>(devRef, {
      apiVersion: "devices.kubeedge.io/v1beta1",
      kind: "Device",
      metadata: { name: "thermo" },
      spec: { deviceModelRef: { name: "thermo-model" }, nodeName: "edge-1", protocol: { protocolName: "modbus" } },
    });
    expect(dev.kind).toBe("Device");
    const ds = await client.patchStatus<any>(Resources.devices, "thermo", { status: { twins: [{ propertyName: "t", reported: { value: "21" } }] } }, "merge");
    expect(ds.status.twins[0].reported.value).toBe("21");
    const specOnly = await client.patch<any>(Resources.devices, "thermo", { spec: { nodeName: "edge-2" }, status: { twins: [] } }, "merge");
    expect(specOnly.spec.nodeName).toBe("edge-2");
    expect(specOnly.status.twins).toHaveLength(1);
  });

  test("label and field selectors; limit/continue paging", async () => {
    const { client } = await sharedApi();
    await client.create(Resources.namespaces, { metadata: { name: "sel" } });
    const pods = Resources.pods;
    await client.create(pods, pod("s1", "edge-a", { app: "web", tier: "front" }), { namespace: "sel" });
    await client.create(pods, pod("s2", "edge-a", { app: "web", tier: "db" }), { namespace: "sel" });
    await client.create(pods, pod("s3", "edge-b", { app: "cache" }), { namespace: "sel" });
    await client.create(pods, pod("s4", "edge-b", {}), { namespace: "sel" });

    const q = async (o: { labelSelector?: string; fieldSelector?: string }) => names((await client.list(pods, { namespace: "sel", ...o })).items);
    expect(await q({})).toEqual(["s1", "s2", "s3", "s4"]);
    expect(await q({ labelSelector: "app=web" })).toEqual(["s1", "s2"]);
    expect(await q({ labelSelector: "app=web,tier!=db" })).toEqual(["s1"]);
    expect(await q({ labelSelector: "app in (web,cache)" })).toEqual(["s1", "s2", "s3"]);
    expect(await q({ labelSelector: "!app" })).toEqual(["s4"]);
    expect(await q({ fieldSelector: "spec.nodeName=edge-b" })).toEqual(["s3", "s4"]);
    expect(await q({ fieldSelector: "spec.nodeName=edge-a", labelSelector: "tier=db" })).toEqual(["s2"]);
    expect(await q({ fieldSelector: "metadata.name!=s1,spec.nodeName=edge-a" })).toEqual(["s2"]);
    // all namespaces
    const across = await client.list(pods, { fieldSelector: "spec.nodeName=edge-b" });
    expect(across.items.every((p) => p.metadata?.namespace === "sel")).toBe(true);
    expect(across.items).toHaveLength(2);
    // paging
    const p1 = await client.list(pods, { namespace: "sel", limit: 3 });
    expect(p1.items).toHaveLength(3);
    expect(p1.metadata.continue).toBeString();
    const p2 = await client.list(pods, { namespace: "sel", limit: 3, continue: p1.metadata.continue });
    expect(names([...p1.items, ...p2.items])).toEqual(["s1", "s2", "s3", "s4"]);
    expect(p2.metadata.continue).toBeFalsy();
    const all = await client.listAll(pods, { namespace: "sel", limit: 1 });
    expect(names(all.items)).toEqual(["s1", "s2", "s3", "s4"]);
    expect(Number(all.metadata.resourceVersion)).toBeGreaterThan(0);
    // a malformed selector is a 400 Status
    const bad = await rejection(client.list(pods, { labelSelector: "app in (" }));
    expect(bad.code).toBe(400);
  });

  test("bounded response size and request timeouts", async () => {
    const a = await sharedApi();
    const small = new KubeClient(loadKubeConfig(join(a.dir, "kubeconfig")), { maxResponseBytes: 300 });
    const big = await rejection(small.list(Resources.namespaces));
    expect(big).toBeInstanceOf(KubeTransportError);
    expect(big.errno).toBe("ERESPONSETOOLARGE");
    small.close();

    // a server that accepts and never answers
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const c = new KubeClient({ server: `http://127.0.0.1:${(silent.address() as AddressInfo).port}` }, { timeoutMs: 300 });
    const t0 = Date.now();
    const err = await rejection(c.get(Resources.pods, "x"));
    expect(err).toBeInstanceOf(KubeTransportError);
    expect(err.errno).toBe("ETIMEDOUT");
    expect(Date.now() - t0).toBeLessThan(3000);
    c.close();
    silent.closeAllConnections();
    silent.close();
  });

  test("keep-alive: sequential requests reuse one connection", async () => {
    let connections = 0;
    let requests = 0;
    const srv = createServer((req, res) => {
      requests++;
      req.resume();
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ kind: "Namespace", apiVersion: "v1", metadata: { name: "default" } }));
    });
    srv.on("connection", () => connections++);
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const c = new KubeClient({ server: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, token: "t" });
    for (let i = 0; i < 5; i++) expect((await c.get(Resources.namespaces, "default")).metadata?.name).toBe("default");
    expect(requests).toBe(5);
    expect(connections).toBe(1);
    c.close();
    srv.closeAllConnections();
    srv.close();
  });
});

describe("watch", () => {
  test("resumes from a resourceVersion: only later changes, none twice across server-ended streams", async () => {
    const { client } = await sharedApi();
    const cm = Resources.configmaps;
    await client.create(Resources.namespaces, { metadata: { name: "w1" } });
    await client.create(cm, { metadata: { name: "before" } }, { namespace: "w1" });
    const mark = (await client.list(cm, { namespace: "w1" })).metadata.resourceVersion!;
    await client.create(cm, { metadata: { name: "after" } }, { namespace: "w1" });

    const seen: string[] = [];
    const w = client.watch(cm, {
      namespace: "w1",
      resourceVersion: mark,
      timeoutSeconds: 1, // the server ends each stream after 1 s; the loop resumes from its last RV
      onEvent: (ev) => {
        if (ev.type !== "BOOKMARK") seen.push(`${ev.type} ${ev.object.metadata?.name}`);
      },
    });
    cleanups.push(() => w.stop());
    await until(() => seen.length === 1, 5000, "the replayed ADDED");
    expect(seen).toEqual(["ADDED after"]);
    await client.patch(cm, "after", { data: { v: "1" } }, "merge", { namespace: "w1" });
    await until(() => seen.length === 2, 5000, "MODIFIED");
    await until(() => w.connects >= 2, 5000, "a second stream");
    await client.delete(cm, "before", { namespace: "w1" });
    await until(() => seen.length === 3, 5000, "DELETED");
    await until(() => w.connects >= 3, 5000, "a third stream");
    await Bun.sleep(200);
    expect(seen).toEqual(["ADDED after", "MODIFIED after", "DELETED before"]);
    expect(Number(w.resourceVersion)).toBeGreaterThan(Number(mark));
    await w.stop();
    expect(w.stopped).toBe(true);
    expect(w.connected).toBe(false);
  });

  test("BOOKMARKs advance the resume point without changes", async () => {
    const a = await startApi({ bookmarkIntervalMs: 100 });
    cleanups.push(() => stopApi(a));
    const events: WatchEvent[] = [];
    const start = (await a.client.list(Resources.configmaps)).metadata.resourceVersion!;
    await a.client.create(Resources.secrets, { metadata: { name: "unrelated" } });
    const w = a.client.watch(Resources.configmaps, { resourceVersion: start, onEvent: (e) => events.push(e) });
    await until(() => events.some((e) => e.type === "BOOKMARK"), 3000, "a bookmark");
    expect(events.every((e) => e.type === "BOOKMARK")).toBe(true);
    expect(Number(w.resourceVersion)).toBeGreaterThan(Number(start));
    await w.stop();
    await until(() => a.server.watchCount() === 0, 3000, "the server to drop the watch");
  });

  test("HTTP 410 without a relist hook: onExpired, then the current state replays as ADDED", async () => {
    const a = await startApi({ eventWindow: 16 });
    cleanups.push(() => stopApi(a));
    await a.client.create(Resources.configmaps, { metadata: { name: "survivor" } });
    const old = (await a.client.list(Resources.configmaps)).metadata.resourceVersion!;
    for (let i = 0; i < 20; i++) await a.client.create(Resources.secrets, { metadata: { name: `fill-${i}` } });
    let expired = 0;
    const errors: number[] = [];
    const seen: string[] = [];
    const w = a.client.watch(Resources.configmaps, {
      namespace: "default",
      resourceVersion: old,
      onExpired: () => expired++,
      onError: (e) => errors.push((e as KubeApiError).code),
      onEvent: (e) => e.type !== "BOOKMARK" && seen.push(`${e.type} ${e.object.metadata?.name}`),
    });
    await until(() => seen.length === 1, 5000, "replay");
    expect(expired).toBe(1);
    expect(errors).toEqual([410]);
    expect(seen).toEqual(["ADDED survivor"]);
    await w.stop();
  });
});

describe("informers", () => {
  test("two informers for the same resource share one watch; indexes; late subscribers get synthetic adds", async () => {
    const a = await startApi();
    cleanups.push(() => stopApi(a));
    const pods = Resources.pods;
    await a.client.create(pods, pod("p1", "edge-1"));
    await a.client.create(pods, pod("p2", "edge-2"));
    const factory = new InformerFactory(a.client);
    cleanups.push(() => factory.stop());

    const i1 = factory.informer(pods, { indexers: { byNode: byNodeName } });
    const i2 = factory.informer(pods);
    expect(i2).toBe(i1);
    await i1.waitForSync(5000);
    expect(i2.hasSynced()).toBe(true);
    expect(names(i1.list())).toEqual(["p1", "p2"]);
    await until(() => a.server.watchCount() === 1, 3000, "one watch");
    await Bun.sleep(100);
    expect(a.server.watchCount()).toBe(1);
    expect(factory.size).toBe(1);

    // a different selector is a different informer with its own watch
    const edge1 = factory.informer(pods, { fieldSelector: "spec.nodeName=edge-1" });
    expect(edge1).not.toBe(i1);
    await edge1.waitForSync(5000);
    expect(names(edge1.list())).toEqual(["p1"]);
    await until(() => a.server.watchCount() === 2, 3000, "two watches");

    // indexes follow changes
    expect(names(i1.byIndex("byNode", "edge-1"))).toEqual(["p1"]);
    const adds: string[] = [];
    const updates: string[] = [];
    const deletes: string[] = [];
    i1.on("update", (o, n) => updates.push(`${n.metadata?.name}:${(o as any).metadata.labels?.v ?? "-"}->${(n as any).metadata.labels?.v}`));
    i1.on("delete", (o) => deletes.push(o.metadata!.name!));
    await a.client.create(pods, pod("p3", "edge-1"));
    await a.client.patch(pods, "p2", { metadata: { labels: { v: "1" } } });
    await a.client.delete(pods, "p1", { gracePeriodSeconds: 0 });
    await until(() => deletes.length === 1 && i1.size === 2 && updates.length >= 1, 5000, "events");
    expect(names(i1.byIndex("byNode", "edge-1"))).toEqual(["p3"]);
    expect(i1.get("p2")?.metadata?.labels).toEqual({ v: "1" });
    expect(i1.get("p1")).toBeUndefined();
    expect(updates).toEqual(["p2:-->1"]);
    expect(deletes).toEqual(["p1"]);
    // an informer scoped to one namespace looks names up there
    const selNs = factory.informer(pods, { namespace: "kube-system" });
    await a.client.create(pods, pod("sys", "edge-1"), { namespace: "kube-system" });
    await until(() => selNs.get("sys") !== undefined, 3000, "a namespaced informer's get");
    expect(selNs.get("sys", "default")).toBeUndefined();
    expect(i1.get("sys")).toBeUndefined();
    expect(i1.get("sys", "kube-system")?.metadata?.namespace).toBe("kube-system");
    await until(() => edge1.size === 2, 3000, "the selected informer to follow");
    expect(names(edge1.list())).toEqual(["p3", "sys"]);
    expect(names(edge1.list("default"))).toEqual(["p3"]);

    // a late subscriber gets the current contents as adds, then live adds
    i2.on("add", (o) => adds.push(o.metadata!.name!));
    expect(adds.sort()).toEqual(["p2", "p3", "sys"]);
    await a.client.create(pods, pod("p4", "edge-3"));
    await until(() => adds.length === 4, 3000, "a live add");
    expect(adds[3]).toBe("p4");
    expect(i1.list("default")).toHaveLength(3);
    expect(i1.list()).toHaveLength(4);
    expect(i1.list("nowhere")).toHaveLength(0);

    // a throwing handler does not break the informer or other handlers
    const unsub = i1.on("add", () => {
      throw new Error("boom");
    });
    unsub();
    i1.on("update", () => {
      throw new Error("boom");
    });
    await a.client.patch(pods, "p4", { metadata: { labels: { v: "2" } } });
    await until(() => updates.length === 2, 3000, "update after a throwing handler");

    await factory.stop();
    await until(() => a.server.watchCount() === 0, 3000, "watches closed");
    expect(() => factory.informer(pods)).toThrow();
  });

  test("410 → relist: the informer converges and announces what changed while the watch was down", async () => {
    const a1 = await startApi({ eventWindow: 16 });
    const { dir, store } = a1;
    const port = a1.server.port;
    const cm = Resources.configmaps;
    await a1.client.create(cm, { metadata: { name: "x" }, data: { v: "1" } });
    await a1.client.create(cm, { metadata: { name: "y" }, data: { v: "1" } });
    const errors: Array<{ code?: number; errno?: string }> = [];
    const factory = new InformerFactory(a1.client, {
      backoff: { initialMs: 50, maxMs: 200 },
      onError: (e) => errors.push({ code: (e as KubeApiError).code, errno: (e as KubeTransportError).errno }),
    });
    const inf = factory.informer(cm, { namespace: "default" });
    await inf.waitForSync(5000);
    expect(names(inf.list())).toEqual(["x", "y"]);
    expect(inf.lists).toBe(1);
    const events: string[] = [];
    inf.on("update", (_o, n) => events.push(`update ${n.metadata?.name} v=${(n as any).data?.v}`));
    inf.on("delete", (o) => events.push(`delete ${o.metadata?.name}`));
    inf.on("add", (o) => o.metadata?.name === "z" && events.push(`add z`));
    const staleRv = inf.resourceVersion!;

    // the API goes away; meanwhile another instance on the same store changes things
    await a1.server.close();
    a1.client.close();
    const a2 = await startApi({ dir, store });
    await a2.client.delete(cm, "x");
    await a2.client.patch(cm, "y", { data: { v: "2" } });
    await a2.client.create(cm, { metadata: { name: "z" } });
    for (let i = 0; i < 20; i++) await a2.client.create(Resources.secrets, { metadata: { name: `fill-${i}` } });
    await a2.server.close();
    a2.client.close();
    expect(inf.list()).toHaveLength(2); // nothing seen yet

    // back on the original port with a 16-event window: the informer's RV is too old
    const a3 = await startApi({ dir, store, port, eventWindow: 16 });
    cleanups.push(async () => {
      await factory.stop();
      await stopApi(a3);
    });
    await until(() => inf.lists === 2, 10_000, "the relist");
    expect(errors.some((e) => e.code === 410)).toBe(true);
    // first the lost connection (refused or hung up, depending on timing), then the 410
    expect(errors[0]!.errno).toMatch(/^(ECONNREFUSED|ECONNRESET|EWATCHENDED)$/);
    expect(errors.findIndex((e) => e.code === 410)).toBeGreaterThan(0);
    expect(names(inf.list())).toEqual(["y", "z"]);
    expect((inf.get("y") as any).data).toEqual({ v: "2" });
    expect(events.sort()).toEqual(["add z", "delete x", "update y v=2"]);
    expect(Number(inf.resourceVersion)).toBeGreaterThan(Number(staleRv));
    // and it watches again from the relist's RV
    await until(() => inf.watch.connected, 5000, "the watch to reconnect");
    await a3.client.create(cm, { metadata: { name: "after" } });
    await until(() => inf.get("after") !== undefined, 5000, "a live event after the relist");
    expect(a3.server.watchCount()).toBe(1);
  });

  test("ERROR event with code 410 → relist (and a deleted object is announced)", async () => {
    // A scripted API: the first watch answers with an ERROR 410 event, as a real API server does
    // when etcd has compacted past the RV.
    let lists = 0;
    let watches = 0;
    const held: ServerResponse[] = [];
    const item = (name: string, rv: string) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "default", resourceVersion: rv, uid: `uid-${name}` } });
    const fake: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const u = new URL(req.url!, "http://x");
      expect(u.pathname).toBe("/api/v1/namespaces/default/configmaps");
      if (u.searchParams.get("watch") !== "true") {
        lists++;
        const items = lists === 1 ? [item("a", "5"), item("b", "6")] : [item("b", "6"), item("c", "9")];
        res.writeHead(200, { "Content-Type": "application/json" });
        return res.end(JSON.stringify({ kind: "ConfigMapList", apiVersion: "v1", metadata: { resourceVersion: lists === 1 ? "6" : "9" }, items }));
      }
      watches++;
      res.writeHead(200, { "Content-Type": "application/json" });
      if (watches === 1) {
        expect(u.searchParams.get("resourceVersion")).toBe("6");
        expect(u.searchParams.get("allowWatchBookmarks")).toBe("true");
        res.end(`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 6 (8)","reason":"Expired","code":410}}\n`);
        return;
      }
      expect(u.searchParams.get("resourceVersion")).toBe("9");
      held.push(res);
      res.write(`{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"10"}}}\n`);
    });
    await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
    const client = new KubeClient({ server: `http://127.0.0.1:${(fake.address() as AddressInfo).port}` });
    const errors: number[] = [];
    const factory = new InformerFactory(client, { onError: (e) => errors.push((e as KubeApiError).code) });
    const inf = factory.informer(Resources.configmaps, { namespace: "default" });
    const deleted: string[] = [];
    const added: string[] = [];
    inf.on("delete", (o) => deleted.push(o.metadata!.name!));
    inf.on("add", (o) => added.push(o.metadata!.name!));
    await until(() => lists === 2 && watches === 2 && inf.resourceVersion === "10", 5000, "relist and second watch");
    expect(errors).toEqual([410]);
    expect(deleted).toEqual(["a"]);
    expect(added.sort()).toEqual(["a", "b", "c"]);
    expect(names(inf.list())).toEqual(["b", "c"]);
    await factory.stop();
    client.close();
    for (const r of held) r.destroy();
    fake.closeAllConnections();
    fake.close();
  });

  test("back-off while the API is down (bounded, growing), recovery on the same port and store", async () => {
    const a1 = await startApi();
    const { dir, store } = a1;
    const port = a1.server.port;
    const cm = Resources.configmaps;
    await a1.client.create(cm, { metadata: { name: "one" } });
    const failures: Array<{ at: number; attempt: number; delayMs: number }> = [];
    const factory = new InformerFactory(a1.client, {
      backoff: { initialMs: 40, maxMs: 320, factor: 2, jitter: 0.2 },
      onError: (_e, info) => failures.push({ at: Date.now(), attempt: info.attempt, delayMs: info.delayMs }),
    });
    const inf = factory.informer(cm, { namespace: "default" });
    await inf.waitForSync(5000);
    await until(() => inf.watch.connected, 3000, "watch connected");

    await a1.server.close();
    const downAt = Date.now();
    await Bun.sleep(1500);
    const during = failures.filter((f) => f.at >= downAt);
    // 40, 80, 160, 320, 320… (±20%) → about 6–8 attempts in 1.5 s, not hundreds
    expect(during.length).toBeGreaterThanOrEqual(4);
    expect(during.length).toBeLessThanOrEqual(12);
    expect(during.map((f) => f.attempt).slice(0, 4)).toEqual([1, 2, 3, 4]);
    for (const f of during) expect(f.delayMs).toBeLessThanOrEqual(320);
    expect(during[0]!.delayMs).toBeLessThanOrEqual(48);
    expect(during[3]!.delayMs).toBeGreaterThanOrEqual(256);
    for (let i = 1; i < during.length; i++) expect(during[i]!.at - during[i - 1]!.at).toBeGreaterThanOrEqual(during[i - 1]!.delayMs - 5);
    expect(inf.hasSynced()).toBe(true);
    expect(names(inf.list())).toEqual(["one"]); // the cache keeps serving while down

    const a2 = await startApi({ dir, store, port });
    cleanups.push(async () => {
      await factory.stop();
      await stopApi(a2);
      a1.client.close();
    });
    await until(() => inf.watch.connected, 5000, "reconnect");
    await a2.client.create(cm, { metadata: { name: "two" } });
    await until(() => inf.get("two") !== undefined, 5000, "the new object");
    expect(names(inf.list())).toEqual(["one", "two"]);
    expect(inf.lists).toBe(1); // resumed, no relist needed: the store kept its change log
    expect(a2.server.watchCount()).toBe(1);
  });

  test("backoffDelay: exponential, jittered, bounded", () => {
    const o = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelay(n, o, () => 0.5))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(1, o, () => 0)).toBe(50);
    expect(backoffDelay(1, o, () => 0.9999)).toBe(150);
    expect(backoffDelay(8, o, () => 0.9999)).toBe(1000);
    expect(backoffDelay(100, { initialMs: 1, maxMs: 50 }, () => 1)).toBe(50);
  });
});

describe("runtimes", () => {
  test("the client works under Node 20 (bundled for node): list, create, watch over TLS with the CA", async () => {
    const a = await sharedApi();
    const root = resolve(import.meta.dir, "..");
    const work = join(root, ".tmp");
    mkdirSync(work, { recursive: true });
    const src = join(work, `kubeclient-node-${process.pid}.ts`);
    const out = join(work, `kubeclient-node-${process.pid}.mjs`);
    writeFileSync(
      src,
      `import { KubeClient, Resources, loadKubeConfig } from ${JSON.stringify(join(root, "lib/kube/client/index.ts"))};
const c = new KubeClient(loadKubeConfig(process.argv[2]));
const ns = await c.list(Resources.namespaces);
const seen = [];
const w = c.watch(Resources.configmaps, { namespace: "kube-public", onEvent: (e) => e.type !== "BOOKMARK" && seen.push(e.type + " " + e.object.metadata.name) });
await c.create(Resources.configmaps, { metadata: { name: "from-node-" + process.version.split(".")[0] } }, { namespace: "kube-public" });
for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
await w.stop();
c.close();
console.log(JSON.stringify({ node: process.version, runtime: typeof Bun === "undefined" ? "node" : "bun", namespaces: ns.items.length, seen }));
`,
    );
    const run = (cmd: string, args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((res) => {
        const p = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        p.stdout.on("data", (d) => (stdout += d));
        p.stderr.on("data", (d) => (stderr += d));
        p.on("close", (code) => res({ code: code ?? -1, stdout, stderr }));
      });
    try {
      const b = await run(process.execPath, ["build", src, "--target", "node", "--format", "esm", "--outfile", out]);
      expect(b.code, b.stderr).toBe(0);
      const r = await run("node", [out, join(a.dir, "kubeconfig")]);
      expect(r.code, r.stderr).toBe(0);
      const result = JSON.parse(r.stdout.trim().split("\n").pop()!);
      expect(result.runtime).toBe("node");
      expect(result.namespaces).toBeGreaterThanOrEqual(4);
      expect(result.seen).toEqual([`ADDED from-node-${result.node.split(".")[0]}`]);
    } finally {
      rmSync(src, { force: true });
      rmSync(out, { force: true });
    }
    expect(readFileSync(join(a.dir, "kubeconfig"), "utf8")).toContain("certificate-authority-data");
  }, 60_000);
});
