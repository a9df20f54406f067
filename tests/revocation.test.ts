/**
 * Issue 7: a node whose Node object is deleted is revoked. Real cloudcore and edgecore processes:
 * the session is closed, reconnects are refused (403, reason="revoked") also after a cloudcore
 * restart, the node cannot re-register its Node, its pending outbox is discarded; creating the Node
 * again lifts the revocation; a new join with a token admits the node while its old certificate
 * stays refused.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, rmSync } from "node:fs";
import { join } from "node:path";
import { KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { eventually, joinToken, metric, startCloud, startEdge, tmpDir, type Cloud, type Daemon, type Edge } from "./helpers/daemons.ts";
import { rawUpgrade } from "./helpers/hubs.ts";

const NODE = "edge-revoked";
const running: Daemon[] = [];
const dirs: string[] = [];
let cloud: Cloud;
let edge: Edge;
let client: KubeClient;
const fast = ["--reconnect-base-ms", "100", "--reconnect-max-ms", "500", "--ping-interval-ms", "300", "--pong-timeout-ms", "700"];

const refusedRevoked = async () => (await metric(cloud.endpoints.metrics, "outpost_cloudhub_refused_connections_total", { reason: "revoked" })) ?? 0;
const nodeExists = async () => client.get(Resources.nodes, NODE).then(() => true, () => false);
const ready = async () => {
  const n = await client.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(Resources.nodes, NODE).catch(() => undefined);
  return n?.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
};

/** The hub's answer to a WebSocket upgrade made with the credentials in `dir` (status line). */
async function handshake(dir: string): Promise<string> {
  const { sock, first } = await rawUpgrade(cloud.endpoints.hub, dir, NODE);
  sock.destroy();
  return String(first).split("\r\n")[0]!;
}

beforeAll(async () => {
  cloud = await startCloud({ args: ["--outbox-retry-ms", "1000"] });
  running.push(cloud.daemon);
  dirs.push(cloud.dataDir);
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  edge = await startEdge({ node: NODE, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: fast });
  running.push(edge.daemon);
  dirs.push(edge.dataDir);
  await edge.daemon.waitFor(/connected to cloud/);
  await eventually(ready, 15_000, "Node Ready");
});

afterAll(async () => {
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
  client?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("deleting the Node revokes the node: session closed, reconnects refused, no re-registration, outbox discarded", async () => {
  // something pending for the node while it is away, to see the outbox discarded
  await edge.daemon.stop("SIGTERM");
  await client.create(Resources.configmaps, { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "cfg", namespace: "default" }, data: { a: "1" } } as KubeObject, { namespace: "default" });
  await client.create(Resources.pods, { apiVersion: "v1", kind: "Pod", metadata: { name: "p1", namespace: "default" }, spec: { nodeName: NODE, containers: [{ name: "c", image: "busybox", command: ["sleep", "1"], envFrom: [{ configMapRef: { name: "cfg" } }] }] } } as KubeObject, { namespace: "default" });
  await eventually(async () => ((await metric(cloud.endpoints.metrics, "outpost_cloud_outbox_pending", { node: NODE })) ?? 0) >= 2, 10_000, "outbox holds the pod and its configmap");
  edge = await startEdge({ node: NODE, dataDir: edge.dataDir, args: fast });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/connected to cloud/);
  await eventually(ready, 10_000, "Node Ready again");

  const before = await refusedRevoked();
  await client.delete(Resources.nodes, NODE);
  await cloud.daemon.waitFor(/revoked, its session closed/);
  await edge.daemon.waitFor(/link to cloud lost/);
  expect(await metric(cloud.endpoints.metrics, "outpost_cloud_outbox_pending", { node: NODE })).toBe(0);
  // the edge redials every ≤ 0.5 s and is refused each time
  await eventually(async () => (await refusedRevoked()) >= before + 3, 15_000, "three refused reconnects");
  expect(cloud.daemon.output.some((l) => l.includes("connection refused") && l.includes("revoked") && l.includes(NODE))).toBe(true);
  await edge.daemon.waitFor(/cloud refused the hub connection.*403/);
  expect(await nodeExists()).toBe(false);
  expect(await client.get(Resources.leases, NODE, "kube-node-lease").then(() => true, () => false)).toBe(false);
  expect(await handshake(edge.dataDir)).toMatch(/^HTTP\/1\.1 403/);

  // the revocation survives a restart of cloudcore
  await cloud.daemon.stop("SIGTERM");
  const e = cloud.endpoints;
  cloud = await startCloud({ dataDir: cloud.dataDir, ports: { hub: e.hub, https: e.https, metrics: e.metrics, api: e.api!.replace(/^https?:\/\//, "") } });
  running.push(cloud.daemon);
  await eventually(async () => (await refusedRevoked()) >= 2, 15_000, "refused after the restart");
  expect(await nodeExists()).toBe(false);
  // nor may it renew its certificate with the revoked one
  await edge.daemon.stop("SIGTERM");
  const renew = await import("../lib/pki/edgecreds.ts").then((m) => m.renewIfDue({ httpsAddr: cloud.endpoints.https, nodeName: NODE, dataDir: edge.dataDir, log: { info() {}, warn() {}, error() {}, debug() {} } as never, renewAtFraction: 0 }).then(() => "renewed", (err: Error) => err.message));
  expect(renew).toMatch(/403.*revoked/);
});

test("creating the Node again lifts the revocation and the node reconnects", async () => {
  edge = await startEdge({ node: NODE, dataDir: edge.dataDir, args: fast, waitReady: false });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/cloud refused the hub connection/);
  await client.create(Resources.nodes, { apiVersion: "v1", kind: "Node", metadata: { name: NODE } } as KubeObject);
  await cloud.daemon.waitFor(/revocation lifted/);
  await edge.daemon.waitFor(/connected to cloud/, 15_000);
  await eventually(ready, 15_000, "Node Ready after being created again");
});

test("a new join after the deletion admits the node; its old certificate stays refused", async () => {
  const old = tmpDir("revoked-old-creds");
  dirs.push(old);
  cpSync(join(edge.dataDir, "certs"), join(old, "certs"), { recursive: true });
  await client.delete(Resources.nodes, NODE);
  await cloud.daemon.waitForNew(/revoked, its session closed/);
  await edge.daemon.stop("SIGTERM");
  rmSync(join(edge.dataDir, "certs"), { recursive: true });
  edge = await startEdge({ node: NODE, dataDir: edge.dataDir, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: fast });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/connected to cloud/, 15_000);
  await eventually(ready, 15_000, "the rejoined node registered its Node");
  expect(await handshake(old)).toMatch(/^HTTP\/1\.1 403/);
  expect(await handshake(edge.dataDir)).toMatch(/^HTTP\/1\.1 101/);
});
