/**
 * What the DeviceController puts on the wire, seen by a real edge link: the embedded API in-process,
 * a real CloudHub and outbox, and an EdgeHub joined with real credentials that records what arrives.
 * KubeEdge's shape: a twin membership message when a device joins or leaves the node, the objects,
 * and only the changed desired values when nothing else changed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DeviceController } from "../lib/cloud/devicecontroller.ts";
import { Outbox, outboxMigrations } from "../lib/cloud/outbox.ts";
import { apiserverMigrations, startApiServer, type ApiServer } from "../lib/kube/apiserver/index.ts";
import { InformerFactory, KubeClient, Resources, loadKubeConfig, type KubeObject } from "../lib/kube/client/index.ts";
import { responseTo, type Message } from "../lib/message.ts";
import { Metrics } from "../lib/metrics.ts";
import type { Module } from "../lib/router.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { eventually, tmpDir } from "./helpers/daemons.ts";
import { joinNode, quietLog, startTestCloud, startTestEdge, type TestCloud, type TestEdge } from "./helpers/hubs.ts";

/** Records what reaches one edge group and acks it, as MetaManager / DeviceTwin do. */
function ackingRecorder(name: string, group: string): Module & { got: Message[] } {
  const got: Message[] = [];
  let send: ((m: Message) => void) | undefined;
  return {
    name,
    group,
    got,
    start(ctx) {
      send = (m) => ctx.router.send("websocket", m);
    },
    stop() {},
    handle(m) {
      got.push(m);
      send?.(responseTo(m, "OK"));
    },
  };
}

let api: ApiServer;
let apiStore: Store<unknown>;
let outboxStore: Store<unknown>;
let client: KubeClient;
let informers: InformerFactory;
let cloud: TestCloud;
let outbox: Outbox;
let controller: DeviceController;
let edgeDir: string;
let edge: TestEdge | undefined;
const meta = ackingRecorder("meta-recorder", "meta");
const twin = ackingRecorder("twin-recorder", "twin");

const model = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "DeviceModel",
  metadata: { name: "thermo-model", namespace: "default" },
  spec: { protocol: "modbus", properties: [{ name: "setpoint", type: "FLOAT", accessMode: "ReadWrite" }, { name: "fan", type: "BOOLEAN", accessMode: "ReadWrite" }] },
};
const device = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "Device",
  metadata: { name: "thermo", namespace: "default" },
  spec: {
    deviceModelRef: { name: "thermo-model" },
    nodeName: "dc-node",
    protocol: { protocolName: "modbus", configData: { communicateMode: "TCP", ip: "127.0.0.1", port: 1502, slaveID: 1 } },
    properties: [
      { name: "setpoint", collectCycle: 1000, desired: { value: "20" }, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 1, limit: 1 } } },
      { name: "fan", collectCycle: 1000, desired: { value: "false" }, visitors: { protocolName: "modbus", configData: { register: "CoilRegister", offset: 0, limit: 1 } } },
    ],
  },
};

const of = (got: Message[], re: RegExp) => got.filter((m) => re.test(m.route.resource) && m.route.operation !== "response");
const content = <T>(m: Message) => (typeof m.content === "string" ? JSON.parse(m.content) : m.content) as T;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  const dir = tmpDir("devicecontroller");
  apiStore = await openStore<unknown>(join(dir, "api.db"), apiserverMigrations);
  api = await startApiServer({ store: apiStore as never, host: "127.0.0.1", port: 0, dataDir: dir, log: quietLog });
  client = new KubeClient(loadKubeConfig(join(dir, "kubeconfig")), { timeoutMs: 10_000 });
  informers = new InformerFactory(client);
  cloud = await startTestCloud({ record: false });
  outboxStore = await openStore<unknown>(join(dir, "outbox.db"), outboxMigrations);
  outbox = new Outbox({ hub: cloud.hub, raw: outboxStore.raw, log: quietLog, metrics: new Metrics(), retryMs: 60_000 });
  outbox.start();
  controller = new DeviceController({ client, informers, hub: cloud.hub, outbox, log: quietLog, coalesceMs: 50 });
  await controller.start({} as never);
  edgeDir = await joinNode(cloud, "dc-node");
  edge = await startTestEdge(`127.0.0.1:${cloud.hub.port}`, "dc-node", edgeDir, {}, [meta, twin]);
  await eventually(() => cloud.hub.isConnected("dc-node"), 10_000, "edge connected");
  await client.create(Resources.devicemodels, model as KubeObject);
  await client.create(Resources.devices, device as KubeObject);
});

afterAll(async () => {
  await edge?.close();
  await controller?.stop();
  outbox?.stop();
  await informers?.stop();
  client?.close();
  await cloud?.close();
  await api?.close();
  await outboxStore?.close();
  await apiStore?.close();
});

describe("DeviceController on the wire", () => {
  test("a new device: its model, a twin membership message with the desired values, and the Device", async () => {
    await eventually(() => of(twin.got, /^membership$/).length === 1 && of(meta.got, /^default\/device\/thermo$/).length === 1, 10_000, "membership and device");
    const m = of(twin.got, /^membership$/)[0]!;
    expect(m.route.group).toBe("twin");
    const body = content<{ added_devices: { id: string; twin: Record<string, { expected: { value: string }; metadata?: { type: string } }> }[]; removed_devices: unknown[] }>(m);
    expect(body.added_devices).toHaveLength(1);
    expect(body.added_devices[0]!.id).toBe("default/thermo");
    expect(body.added_devices[0]!.twin.setpoint).toMatchObject({ expected: { value: "20" }, metadata: { type: "float" } });
    expect(body.added_devices[0]!.twin.fan).toMatchObject({ expected: { value: "false" }, metadata: { type: "boolean" } });
    expect(body.removed_devices).toEqual([]);
    expect(of(meta.got, /^default\/devicemodel\/thermo-model$/).length).toBeGreaterThanOrEqual(1);
  });

  test("a desired value changes: only that property goes, as twin/cloud_updated, and no Device object", async () => {
    const devicesBefore = of(meta.got, /\/device\//).length;
    await client.patch(Resources.devices, "thermo", [{ op: "replace", path: "/spec/properties/0/desired/value", value: "22.5" }], "json", { namespace: "default" });
    await eventually(() => of(twin.got, /twin\/cloud_updated$/).length === 1, 10_000, "desired delta");
    const d = of(twin.got, /twin\/cloud_updated$/)[0]!;
    expect(d.route.resource).toBe("device/default/thermo/twin/cloud_updated");
    expect(d.route.group).toBe("twin");
    expect(Object.keys(content<{ twin: object }>(d).twin)).toEqual(["setpoint"]);
    expect(content<{ twin: Record<string, { expected: { value: string } }> }>(d).twin.setpoint!.expected.value).toBe("22.5");
    expect(Number(d.header.resourceversion)).toBeGreaterThan(0);
    await sleep(300);
    expect(of(meta.got, /\/device\//).length).toBe(devicesBefore);
  });

  test("anything else in the spec changes: the whole Device goes", async () => {
    const devicesBefore = of(meta.got, /^default\/device\/thermo$/).length;
    const deltasBefore = of(twin.got, /twin\/cloud_updated$/).length;
    await client.patch(Resources.devices, "thermo", [{ op: "replace", path: "/spec/properties/1/collectCycle", value: 2000 }], "json", { namespace: "default" });
    await eventually(() => of(meta.got, /^default\/device\/thermo$/).length === devicesBefore + 1, 10_000, "device object");
    expect(of(twin.got, /twin\/cloud_updated$/).length).toBe(deltasBefore);
  });

  test("edge offline: two desired changes to different properties arrive as one merged delta after reconnect", async () => {
    await edge!.close();
    edge = undefined;
    await eventually(() => !cloud.hub.isConnected("dc-node"), 10_000, "edge gone");
    const before = of(twin.got, /twin\/cloud_updated$/).length;
    await client.patch(Resources.devices, "thermo", [{ op: "replace", path: "/spec/properties/0/desired/value", value: "18" }], "json", { namespace: "default" });
    await client.patch(Resources.devices, "thermo", [{ op: "replace", path: "/spec/properties/1/desired/value", value: "true" }], "json", { namespace: "default" });
    await eventually(() => outbox.pending("dc-node") >= 1, 5000, "pending while offline");
    edge = await startTestEdge(`127.0.0.1:${cloud.hub.port}`, "dc-node", edgeDir, {}, [meta, twin]);
    await eventually(() => of(twin.got, /twin\/cloud_updated$/).length > before, 10_000, "delta after reconnect");
    const merged = of(twin.got, /twin\/cloud_updated$/).slice(before);
    expect(merged).toHaveLength(1);
    const t = content<{ twin: Record<string, { expected: { value: string } }> }>(merged[0]!).twin;
    expect(t.setpoint!.expected.value).toBe("18");
    expect(t.fan!.expected.value).toBe("true");
    await eventually(() => outbox.pending("dc-node") === 0, 10_000, "acked");
  });

  test("the device is deleted: membership removal and the delete", async () => {
    await client.delete(Resources.devices, "thermo", { namespace: "default" });
    await eventually(() => of(meta.got, /^default\/device\/thermo$/).some((m) => m.route.operation === "delete"), 10_000, "device delete");
    const removals = of(twin.got, /^membership$/).filter((m) => content<{ removed_devices: { id: string }[] }>(m).removed_devices.length);
    expect(removals).toHaveLength(1);
    expect(content<{ removed_devices: { id: string }[] }>(removals[0]!).removed_devices[0]!.id).toBe("default/thermo");
  });
});
