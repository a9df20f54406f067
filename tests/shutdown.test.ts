/**
 * Issue 7, graceful shutdown, real processes. Edge: a twin value published on the edge broker and
 * SIGTERM at once; edgecore sends it, waits for the cloud's ack and exits 0 within 5 s with nothing
 * left unacked in edgecore.db, and the value is in the DeviceStatus. Cloud: a report the cloud has
 * received but is still coalescing (500 ms) is written to the API when cloudcore gets SIGTERM, with
 * the edge already gone (so nobody could resend it).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { connectAsync, type MqttClient } from "mqtt";
import { KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { eventually, joinToken, metric, startCloud, startEdge, type Cloud, type Daemon, type Edge } from "./helpers/daemons.ts";

const NODE = "edge-shutdown";
const running: Daemon[] = [];
let cloud: Cloud;
let edge: Edge;
let client: KubeClient;
const edgeArgs = ["--heartbeat", "600", "--node-status-interval", "600", "--reconnect-max-ms", "500"];

async function reported(device: string): Promise<string | undefined> {
  const ds = await client.get<KubeObject & { status?: { twins?: { propertyName: string; reported?: { value: string } }[] } }>(Resources.devicestatuses, device, "default").catch(() => undefined);
  return ds?.status?.twins?.find((t) => t.propertyName === "value")?.reported?.value;
}
const twinUpdate = (app: MqttClient, device: string, value: string) =>
  app.publishAsync(`$hw/events/device/default/${device}/twin/update`, JSON.stringify({ event_id: `e${value}`, timestamp: Date.now(), twin: { value: { actual: { value } } } }), { qos: 1 });

async function startEdgeAndApp(): Promise<MqttClient> {
  edge = await startEdge({ node: NODE, dataDir: edge?.dataDir, ...(edge ? {} : { cloud: cloud.endpoints, token: await joinToken(cloud.dataDir) }), args: edgeArgs });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/connected to cloud/);
  return connectAsync(`mqtt://${edge.endpoints.mqtt}`, { reconnectPeriod: 0 });
}

async function restartCloud(): Promise<void> {
  const e = cloud.endpoints;
  cloud = await startCloud({ dataDir: cloud.dataDir, ports: { hub: e.hub, https: e.https, metrics: e.metrics, api: e.api!.replace(/^https?:\/\//, "") } });
  running.push(cloud.daemon);
  client.close();
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
}

beforeAll(async () => {
  cloud = await startCloud();
  running.push(cloud.daemon);
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  await client.create(Resources.devicemodels, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "m", namespace: "default" }, spec: { properties: [{ name: "value", type: "STRING", accessMode: "ReadOnly" }] } } as KubeObject, { namespace: "default" });
  for (const name of ["d1", "d2"])
    await client.create(Resources.devices, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name, namespace: "default" }, spec: { deviceModelRef: { name: "m" }, nodeName: NODE, properties: [{ name: "value" }] } } as KubeObject, { namespace: "default" });
});

afterAll(async () => {
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
  client?.close();
  for (const d of [cloud?.dataDir, edge?.dataDir]) if (d) rmSync(d, { recursive: true, force: true });
});

test("edgecore on SIGTERM sends a just-published twin value and waits for its ack; exit 0 within 5 s", async () => {
  const app = await startEdgeAndApp();
  // the device is on the edge once a first value makes it to the API
  await eventually(async () => (await twinUpdate(app, "d1", "1"), (await reported("d1")) === "1"), 20_000, "first value in the DeviceStatus");
  await twinUpdate(app, "d1", "42");
  const t0 = performance.now();
  const code = await edge.daemon.stop("SIGTERM");
  const took = performance.now() - t0;
  await app.endAsync(true).catch(() => {});
  expect(code).toBe(0);
  expect(took).toBeLessThan(5000); // CONTRACT: SIGTERM exits within 5 s
  const db = new Database(join(edge.dataDir, "edgecore.db"), { readonly: true });
  const left = (db.query("SELECT count(*) AS n FROM upstream").get() as { n: number }).n;
  db.close();
  expect(left).toBe(0); // acked before exit: nothing to resend

  expect(await reported("d1")).toBe("42");
  expect(edge.daemon.output.some((l) => l.includes("shutdown: pending reports") && l.includes("unacked=0"))).toBe(true);
}, 60_000);

test("cloudcore on SIGTERM writes the DeviceStatus it is still coalescing", async () => {
  const app = await startEdgeAndApp();
  await eventually(async () => (await twinUpdate(app, "d2", "1"), (await reported("d2")) === "1"), 20_000, "first value in the DeviceStatus");
  await Bun.sleep(1000); // past the twin's and the controller's coalescing windows
  const inbound = () => metric(cloud.endpoints.metrics, "outpost_cloudhub_messages_total", { direction: "in" }).then((v) => v ?? 0);
  const m0 = await inbound();
  await twinUpdate(app, "d2", "77");
  await eventually(async () => (await inbound()) > m0, 5000, "the report reached the hub");
  const t = performance.now();
  await edge.daemon.stop("SIGKILL"); // no edge left to resend it
  const code = await cloud.daemon.stop("SIGTERM");
  console.log(`SIGTERM ${Math.round(performance.now() - t)} ms after the report reached the hub (coalescing window 500 ms)`);
  await app.endAsync(true).catch(() => {});
  expect(code).toBe(0);
  expect(cloud.daemon.output.some((l) => l.includes("shutdown took longer"))).toBe(false);
  await restartCloud();
  expect(await reported("d2")).toBe("77");
}, 60_000);
