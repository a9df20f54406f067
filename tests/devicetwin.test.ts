/**
 * DeviceTwin with real parts: edgecore.db on disk, the router, the EventBus with an embedded aedes
 * broker or a real mosquitto process, and an MQTT app using the `mqtt` client. "The cloud" is a
 * router message as MetaManager forwards it; upstream messages are caught by a stand-in `websocket`
 * module.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectAsync, type MqttClient } from "mqtt";
import { checkTwinValue, parseDevice, parseDeviceModel, validate, TwinUpdateSchema } from "../schemas/devices.ts";
import { DeviceTwin, deviceTwinMigrations } from "../lib/edge/devicetwin/index.ts";
import { EventBus } from "../lib/edge/eventbus/index.ts";
import { edgeMigrations } from "../lib/edge/store.ts";
import { createLogger } from "../lib/log.ts";
import { newMessage, type Message } from "../lib/message.ts";
import { Router } from "../lib/router.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { openSqlite } from "../lib/runtime/index.ts";
import { eventually, requireTool } from "./helpers/daemons.ts";
import { Collector } from "./helpers/collector.ts";
import { startMosquitto } from "./helpers/mosquitto.ts";

const NODE = "edge-1";
const log = createLogger({ level: process.env.OUTPOST_TEST_LOGS ? "debug" : "error" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- harness ------------------------------------------------------------------------------

interface Got {
  topic: string;
  payload: any;
}

interface Edge {
  store: Store<any>;
  router: Router;
  twin: DeviceTwin;
  bus: EventBus;
  upstream: Collector<Message>;
  stop(): Promise<void>;
}

/**
 * `direct`: wired as edgecore wires them — the twin publishes straight into the EventBus and the
 * bus hands twin requests straight to the twin (a drained burst per transaction); else both go
 * through the router.
 */
async function startEdge(opts: { db: string; mqtt: string; coalesceMs?: number; direct?: boolean }): Promise<Edge> {
  const store = await openStore<any>(opts.db, { ...edgeMigrations, ...deviceTwinMigrations });
  const router = new Router(log);
  const upstream = new Collector<Message>();
  router.register({ name: "websocket", group: "hub", start() {}, stop() {}, handle: (m: Message) => upstream.push(m) });
  const bus = new EventBus({ mqtt: opts.mqtt, listen: "127.0.0.1:0", ...(opts.direct ? { twin: { handleBatch: (m: Message[]) => twin.handleBatch(m) } } : {}) });
  const twin = new DeviceTwin({ store, nodeName: NODE, ...(opts.coalesceMs !== undefined ? { coalesceMs: opts.coalesceMs } : {}), ...(opts.direct ? { publisher: bus } : {}) });
  router.register(twin);
  router.register(bus);
  await router.startAll();
  return {
    store,
    router,
    twin,
    bus,
    upstream,
    async stop() {
      await router.stopAll();
      await store.close();
    },
  };
}

async function app(url: string): Promise<{ client: MqttClient; got: Collector<Got>; pub: (topic: string, body: unknown) => Promise<void> }> {
  const client = await connectAsync(url, { reconnectPeriod: 0 });
  const got = new Collector<Got>();
  client.on("message", (topic, payload) => {
    let body: any = payload.toString();
    try {
      body = JSON.parse(body);
    } catch {
      // kept as text
    }
    got.push({ topic, payload: body });
  });
  await client.subscribeAsync(["$hw/events/device/#", "$hw/events/node/#"], { qos: 1 });
  return { client, got, pub: async (topic, body) => void (await client.publishAsync(topic, typeof body === "string" ? body : JSON.stringify(body), { qos: 1 })) };
}

/** "The cloud": what MetaManager forwards to the twin. */
function cloud(router: Router, operation: string, resource: string, content: unknown): void {
  router.sendToGroup("twin", newMessage({ source: "edgecontroller", group: "resource", operation, resource }, content));
}

const MODEL = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "DeviceModel",
  metadata: { name: "thermo-model", namespace: "default" },
  spec: {
    protocol: "modbus",
    properties: [
      { name: "temperature", type: "FLOAT", accessMode: "ReadOnly", unit: "C" },
      { name: "setpoint", type: "INT", accessMode: "ReadWrite", minimum: "0", maximum: "100" },
      { name: "label", type: "STRING", accessMode: "ReadWrite" },
    ],
  },
};

function device(name: string, desired: { setpoint?: string; label?: string } = {}, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: "devices.kubeedge.io/v1beta1",
    kind: "Device",
    metadata: { name, namespace: "default", uid: `uid-${name}` },
    spec: {
      deviceModelRef: { name: "thermo-model" },
      nodeName: NODE,
      protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: "5502", slaveID: 1 } },
      properties: [
        { name: "temperature", visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 0, limit: 1, scale: 0.1 } }, collectCycle: 500, reportCycle: 1000, reportToCloud: true },
        { name: "setpoint", desired: { value: desired.setpoint ?? "" }, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 1 } } },
        { name: "label", desired: { value: desired.label ?? "" }, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 2 } } },
      ],
      ...extra,
    },
  };
}

const T = (id: string, action: string) => `$hw/events/device/${id}/${action}`;
const edgeUpdated = (id: string) => (m: Message) => m.route.resource === `device/${id}/twin/edge_updated`;

// ---- broker-independent twin behaviour, once per broker ------------------------------------

const hasMosquitto = requireTool("/usr/sbin/mosquitto", "the external-broker twin tests run against Debian's mosquitto");
const brokers: { name: string; setup: () => Promise<{ mqtt: string; stop: () => Promise<void> }> }[] = [
  { name: "embedded aedes", setup: async () => ({ mqtt: "internal", stop: async () => {} }) },
  ...(hasMosquitto
    ? [
        {
          name: "mosquitto",
          setup: async () => {
            const m = await startMosquitto();
            return { mqtt: m.url, stop: m.stop };
          },
        },
      ]
    : []),
];

for (const broker of brokers) {
  describe(`device twin over MQTT (${broker.name})`, () => {
    let b: { mqtt: string; stop: () => Promise<void> };
    let edge: Edge;
    let a: Awaited<ReturnType<typeof app>>;
    const dir = mkdtempSync(join(tmpdir(), "outpost-twin-"));

    beforeAll(async () => {
      b = await broker.setup();
      // aedes: answers go through the router; mosquitto: straight into the EventBus.
      // edgecore's wiring with the embedded broker, the router path with mosquitto
      edge = await startEdge({ db: join(dir, "edgecore.db"), mqtt: b.mqtt, direct: b.mqtt === "internal" });
      a = await app(b.mqtt === "internal" ? `mqtt://${edge.bus.address}` : b.mqtt);
      cloud(edge.router, "insert", "default/devicemodel/thermo-model", MODEL);
      cloud(edge.router, "insert", "default/device/thermo-1", device("thermo-1", { setpoint: "21" }));
      await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/updated`);
    });
    afterAll(async () => {
      await a?.client.endAsync();
      await edge?.stop();
      await b?.stop();
    });

    test("a Device from the cloud creates typed twins with the desired values as expected", () => {
      const d = edge.twin.getDevice("default/thermo-1")!;
      expect(d).toBeDefined();
      expect(d.twins.setpoint!.expected!.value).toBe("21");
      expect(d.twins.setpoint!.expected_version).toEqual({ cloud: 1, edge: 0 });
      expect(d.twins.setpoint!.metadata!.type).toBe("int");
      expect(d.twins.temperature!.metadata!.type).toBe("float");
      expect(d.twins.temperature!.expected).toBeUndefined();
      expect(d.twins.label!.optional).toBe(false);
      expect(d.protocol!.configData!.ip).toBe("127.0.0.1");
      expect(d.properties.find((p) => p.name === "temperature")!.visitors!.configData!.register).toBe("HoldingRegister");
      expect(d.properties.find((p) => p.name === "setpoint")!.accessMode).toBe("ReadWrite");
    });

    test("an app sets a twin via twin/update and gets result, document and delta", async () => {
      const from = a.got.mark();
      await a.pub(T("default/thermo-1", "twin/update"), { event_id: "ev-1", timestamp: Date.now(), twin: { label: { expected: { value: "kitchen" }, metadata: { type: "string" } } } });
      const result = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result"), from);
      expect(result.payload.event_id).toBe("ev-1");
      expect(result.payload.code).toBeUndefined();
      expect(result.payload.twin.label.expected.value).toBe("kitchen");
      expect(result.payload.twin.label.expected_version).toBeUndefined();
      const doc = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/document"), from);
      expect(doc.payload.twin.label.last).toEqual({ optional: false, metadata: { type: "string" } });
      expect(doc.payload.twin.label.current.expected.value).toBe("kitchen");
      const delta = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/delta"), from);
      expect(delta.payload.delta).toEqual({ setpoint: "21", label: "kitchen" });
      expect(delta.payload.twin.label.expected.value).toBe("kitchen");
      // The edge changed a desired value: the cloud hears about it with the edge version bumped.
      const up = await edge.upstream.wait(edgeUpdated("default/thermo-1"));
      expect(up.route).toMatchObject({ source: "twin", group: "resource", operation: "update" });
      expect((up.content as any).twin.label.expected_version).toEqual({ cloud: 0, edge: 1 });
    });

    test("twin/get returns the twin document", async () => {
      const from = a.got.mark();
      await a.pub(T("default/thermo-1", "twin/get"), { event_id: "get-1", timestamp: Date.now() });
      const r = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/get/result"), from);
      expect(r.payload.event_id).toBe("get-1");
      expect(Object.keys(r.payload.twin).sort()).toEqual(["label", "setpoint", "temperature"]);
      expect(r.payload.twin.setpoint.expected.value).toBe("21");
      expect(r.payload.twin.setpoint.expected_version).toBeUndefined();
    });

    test("a reported value from an app reaches the cloud as edge_updated with the right versions", async () => {
      const up0 = edge.upstream.mark();
      const from = a.got.mark();
      await a.pub(T("default/thermo-1", "twin/update"), { event_id: "ev-2", twin: { temperature: { actual: { value: "23.5" } }, setpoint: { actual: { value: "21" } } } });
      const r = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result"), from);
      expect(r.payload.twin.temperature.actual.value).toBe("23.5");
      const up = await edge.upstream.wait(edgeUpdated("default/thermo-1"), up0, 2000);
      const twin = (up.content as any).twin;
      expect(twin.temperature.actual.value).toBe("23.5");
      expect(twin.temperature.actual_version).toEqual({ cloud: 0, edge: 1 });
      expect(typeof twin.temperature.actual.metadata.timestamp).toBe("number");
      expect(twin.setpoint.actual_version).toEqual({ cloud: 0, edge: 1 });
      expect(twin.temperature.metadata.type).toBe("float");
      // setpoint reached its desired value: it is no longer in the delta.
      const delta = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/delta"), from);
      expect(delta.payload.delta).toEqual({ label: "kitchen" });
    });

    test("bad payloads get KubeEdge's error result, and the twin keeps working", async () => {
      const from = a.got.mark();
      const res = (id: string) => (g: Got) => g.topic === T(id, "twin/update/result") && g.payload.event_id === id.split("/")[1];
      await a.pub(T("default/thermo-1", "twin/update"), "{not json");
      const notJson = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.code === 400, from);
      expect(notJson.payload.reason).toMatch(/Unmarshal/);
      const f2 = a.got.mark();
      await a.pub(T("default/thermo-1", "twin/update"), { event_id: "bad-type", twin: { temperature: { actual: { value: 5 } } } });
      const wrongType = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.event_id === "bad-type", f2);
      expect(wrongType.payload).toMatchObject({ code: 400 });
      expect(wrongType.payload.reason).toContain("twin.temperature.actual.value");
      await a.pub(T("default/thermo-1", "twin/update"), { event_id: "bad-value", twin: { setpoint: { expected: { value: "warm" } } } });
      const badValue = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.event_id === "bad-value", f2);
      expect(badValue.payload).toMatchObject({ code: 400 });
      expect(badValue.payload.reason).toContain("not int");
      // keys a JS object treats specially are refused by name, not dropped silently
      await a.pub(T("default/thermo-1", "twin/update"), `{"event_id":"proto","twin":{"__proto__":{"actual":{"value":"1"}}}}`);
      const proto = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.event_id === "proto");
      expect(proto.payload).toMatchObject({ code: 400 });
      expect(proto.payload.reason).toContain("reserved");
      await a.pub(T("default/ghost", "twin/update"), { event_id: "ghost", twin: { x: { actual: { value: "1" } } } });
      const unknown = await a.got.wait(res("default/ghost"), f2);
      expect(unknown.payload).toMatchObject({ code: 404, event_id: "ghost" });
      await a.pub(T("default/ghost", "twin/get"), { event_id: "ghost-get" });
      const unknownGet = await a.got.wait((g) => g.topic === T("default/ghost", "twin/get/result"), f2);
      expect(unknownGet.payload.code).toBe(404);
      // Nothing of the bad updates was applied, and a good one still works.
      expect(edge.twin.getDevice("default/thermo-1")!.twins.setpoint!.expected!.value).toBe("21");
      await a.pub(T("default/thermo-1", "twin/update"), { event_id: "good", twin: { temperature: { actual: { value: "24" } } } });
      const good = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.event_id === "good", f2);
      expect(good.payload.code).toBeUndefined();
      expect(edge.twin.getDevice("default/thermo-1")!.twins.temperature!.actual!.value).toBe("24");
    });

    test("device state: result on MQTT and state/update upstream", async () => {
      const from = a.got.mark();
      const up0 = edge.upstream.mark();
      await a.pub(T("default/thermo-1", "state/update"), { event_id: "st-1", timestamp: Date.now(), state: "Online" });
      const r = await a.got.wait((g) => g.topic === T("default/thermo-1", "state/update/result"), from);
      expect(r.payload.device.name).toBe("thermo-1");
      expect(r.payload.device.state).toBe("Online");
      expect(r.payload.device.lastOnlineTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      const up = await edge.upstream.wait((m) => m.route.resource === "device/default/thermo-1/state/update", up0);
      expect(up.route).toMatchObject({ source: "twin", group: "resource", operation: "update" });
      expect((up.content as any).device).toEqual(r.payload.device);
      await a.pub(T("default/thermo-1", "state/update"), { event_id: "st-2", state: "sleeping" });
      const bad = await a.got.wait((g) => g.topic === T("default/thermo-1", "state/update/result") && g.payload.event_id === "st-2", from);
      expect(bad.payload.code).toBe(400);
    });

    test("membership/get lists the node's devices", async () => {
      const from = a.got.mark();
      await a.pub(`$hw/events/node/${NODE}/membership/get`, { event_id: "m-1" });
      const r = await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/get/result`, from);
      expect(r.payload.event_id).toBe("m-1");
      expect(r.payload.devices.map((d: any) => d.id)).toEqual(["default/thermo-1"]);
      expect(r.payload.devices[0].name).toBe("thermo-1");
    });
  });
}

// ---- twin rules, restart, coalescing (embedded broker) ----------------------------------------

describe("device twin rules", () => {
  let edge: Edge | undefined;
  let a: Awaited<ReturnType<typeof app>> | undefined;
  afterEach(async () => {
    await a?.client.endAsync();
    await edge?.stop();
    a = undefined;
    edge = undefined;
  });

  async function fresh(coalesceMs?: number) {
    const dir = mkdtempSync(join(tmpdir(), "outpost-twin-"));
    const db = join(dir, "edgecore.db");
    edge = await startEdge({ db, mqtt: "internal", ...(coalesceMs !== undefined ? { coalesceMs } : {}) });
    a = await app(`mqtt://${edge.bus.address}`);
    cloud(edge.router, "insert", "default/devicemodel/thermo-model", MODEL);
    cloud(edge.router, "insert", "default/device/thermo-1", device("thermo-1", { setpoint: "21" }));
    await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/updated`);
    return { db, edge: edge!, a: a! };
  }

  test("cloud wins for desired: a Device update overrides an edge-set expected and bumps the cloud version", async () => {
    const { edge, a } = await fresh();
    const desired: [string, string, string][] = [];
    edge.twin.onDesired((d, p, v) => desired.push([d, p, v]));
    await sleep(10);
    desired.length = 0;
    await a.pub(T("default/thermo-1", "twin/update"), { event_id: "e", twin: { setpoint: { expected: { value: "30" } } } });
    await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result"));
    expect(edge.twin.getDevice("default/thermo-1")!.twins.setpoint!.expected_version).toEqual({ cloud: 1, edge: 1 });
    expect(desired).toContainEqual(["default/thermo-1", "setpoint", "30"]);
    const from = a.got.mark();
    cloud(edge.router, "update", "default/device/thermo-1", device("thermo-1", { setpoint: "25" }));
    const delta = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/delta"), from);
    expect(delta.payload.delta.setpoint).toBe("25");
    const t = edge.twin.getDevice("default/thermo-1")!.twins.setpoint!;
    expect(t.expected!.value).toBe("25");
    expect(t.expected_version).toEqual({ cloud: 2, edge: 1 });
    expect(desired).toContainEqual(["default/thermo-1", "setpoint", "25"]);
    // The same Device again (a resync) does not undo a later edge change.
    await a.pub(T("default/thermo-1", "twin/update"), { event_id: "e2", twin: { setpoint: { expected: { value: "26" } } } });
    await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.event_id === "e2");
    cloud(edge.router, "update", "default/device/thermo-1", device("thermo-1", { setpoint: "25" }));
    await sleep(50);
    expect(edge.twin.getDevice("default/thermo-1")!.twins.setpoint!.expected!.value).toBe("26");
  });

  test("version checks on cloud syncs: older versions are refused and the edge's value is sent up", async () => {
    const { edge, a } = await fresh();
    // Edge reports twice: actual version {cloud 0, edge 2}.
    edge.twin.reportValue("default/thermo-1", "temperature", "20.0");
    edge.twin.reportValue("default/thermo-1", "temperature", "20.5");
    await sleep(250);
    const up0 = edge.upstream.mark();
    // A stale cloud sync (edge version 1 < 2) must not overwrite the reported value.
    cloud(edge.router, "update", "membership", { added_devices: [{ id: "default/thermo-1", name: "thermo-1", twin: { temperature: { actual: { value: "99" }, actual_version: { cloud: 0, edge: 1 }, metadata: { type: "float" } } } }], removed_devices: [] });
    const refused = await edge.upstream.wait(edgeUpdated("default/thermo-1"), up0, 2000);
    expect((refused.content as any).twin.temperature.actual.value).toBe("20.5");
    expect((refused.content as any).twin.temperature.actual_version).toEqual({ cloud: 0, edge: 2 });
    expect(edge.twin.getDevice("default/thermo-1")!.twins.temperature!.actual!.value).toBe("20.5");
    // A sync with newer versions is taken as it is.
    const from = a.got.mark();
    cloud(edge.router, "update", "device/default/thermo-1/twin/cloud_updated", { event_id: "c", twin: { temperature: { actual: { value: "19.5" }, actual_version: { cloud: 1, edge: 2 }, metadata: { type: "float" } } } });
    await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/document"), from);
    const t = edge.twin.getDevice("default/thermo-1")!.twins.temperature!;
    expect(t.actual!.value).toBe("19.5");
    expect(t.actual_version).toEqual({ cloud: 1, edge: 2 });
    // And a cloud sync whose cloud version is older than the local one is refused.
    const up1 = edge.upstream.mark();
    cloud(edge.router, "update", "device/default/thermo-1/twin/cloud_updated", { event_id: "c2", twin: { temperature: { actual: { value: "1" }, actual_version: { cloud: 0, edge: 5 } } } });
    const refused2 = await edge.upstream.wait(edgeUpdated("default/thermo-1"), up1, 2000);
    expect((refused2.content as any).twin.temperature.actual.value).toBe("19.5");
  });

  test("optional twins can be deleted by apps; a Device's twins cannot; type 'deleted' deletes too", async () => {
    const { edge, a } = await fresh();
    await a.pub(T("default/thermo-1", "twin/update"), { event_id: "add", twin: { note: { actual: { value: "hello" } }, extra: { expected: { value: "1" }, metadata: { type: "int" } } } });
    const added = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/result") && g.payload.event_id === "add");
    expect(added.payload.twin.note.optional).toBe(true);
    expect(added.payload.twin.note.metadata.type).toBe("string");
    await a.pub(T("default/thermo-1", "twin/update"), { event_id: "del", twin: { note: null, temperature: null, extra: { metadata: { type: "deleted" } } } });
    const doc = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/update/document") && g.payload.event_id === "del");
    expect(doc.payload.twin.note).toEqual({ last: expect.objectContaining({ actual: expect.objectContaining({ value: "hello" }) }), current: null });
    expect(doc.payload.twin.temperature).toBeUndefined();
    const from = a.got.mark();
    await a.pub(T("default/thermo-1", "twin/get"), { event_id: "g" });
    const got = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/get/result"), from);
    expect(Object.keys(got.payload.twin).sort()).toEqual(["label", "setpoint", "temperature"]);
    // A deleted twin keeps its versions, so a re-add continues them.
    expect(edge.twin.getDevice("default/thermo-1")!.twins.note!.actual_version).toEqual({ cloud: 0, edge: 2 });
  });

  test("restart: a new module on the same DB keeps devices, twins and versions, and replays writable desired values", async () => {
    const { db, edge: first } = await fresh();
    cloud(first.router, "update", "default/device/thermo-1", device("thermo-1", { setpoint: "22", label: "hall" }));
    await sleep(50);
    expect(first.twin.reportValue("default/thermo-1", "temperature", 21.25, { timestamp: 1234 })).toEqual({ ok: true });
    first.twin.reportState("default/thermo-1", "ok");
    await a!.client.endAsync();
    a = undefined;
    await first.stop();
    edge = undefined;

    edge = await startEdge({ db, mqtt: "internal" });
    const d = edge.twin.getDevice("default/thermo-1")!;
    expect(d.twins.temperature!.actual).toEqual({ value: "21.25", metadata: { timestamp: 1234 } });
    expect(d.twins.temperature!.actual_version).toEqual({ cloud: 0, edge: 1 });
    expect(d.twins.setpoint!.expected!.value).toBe("22");
    expect(d.twins.setpoint!.expected_version).toEqual({ cloud: 2, edge: 0 });
    expect(d.state).toBe("ok");
    expect(d.lastOnline).not.toBe("");
    expect(d.model?.metadata.name).toBe("thermo-model");
    expect(d.properties.find((p) => p.name === "setpoint")!.accessMode).toBe("ReadWrite");
    const desired: string[] = [];
    edge.twin.onDesired((_d, p, v) => desired.push(`${p}=${v}`));
    await sleep(10);
    expect(desired.sort()).toEqual(["label=hall", "setpoint=22"]);
    // MQTT still answers for it.
    a = await app(`mqtt://${edge.bus.address}`);
    await a.pub(T("default/thermo-1", "twin/get"), { event_id: "after-restart" });
    const r = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/get/result"));
    expect(r.payload.twin.temperature.actual.value).toBe("21.25");
  });

  test("coalescing: 100 reports in 100 ms give a few edge_updated messages and the last value wins", async () => {
    const { edge } = await fresh(200);
    await sleep(250);
    const up0 = edge.upstream.mark();
    const started = Date.now();
    for (let i = 1; i <= 100; i++) {
      expect(edge.twin.reportValue("default/thermo-1", "temperature", `${20 + i / 10}`)).toEqual({ ok: true });
      if (i % 10 === 0) await sleep(10);
    }
    const elapsed = Date.now() - started;
    await sleep(450);
    const msgs = edge.upstream.since(up0, edgeUpdated("default/thermo-1"));
    expect(msgs.length).toBeGreaterThanOrEqual(1);
    expect(msgs.length).toBeLessThanOrEqual(Math.ceil(elapsed / 200) + 1);
    const last = msgs.at(-1)!.content as any;
    expect(last.twin.temperature.actual.value).toBe("30");
    expect(last.twin.temperature.actual_version).toEqual({ cloud: 0, edge: 100 });
    // Timestamps of consecutive messages are at least the coalescing window apart.
    for (let i = 1; i < msgs.length; i++) expect(msgs[i]!.header.timestamp - msgs[i - 1]!.header.timestamp).toBeGreaterThanOrEqual(195);
    expect(edge.twin.getDevice("default/thermo-1")!.twins.temperature!.actual!.value).toBe("30");
  });

  test("a deleted Device takes its twins and topics with it", async () => {
    const { edge, a } = await fresh();
    const from = a.got.mark();
    cloud(edge.router, "delete", "default/device/thermo-1", device("thermo-1"));
    const m = await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/updated`, from);
    expect(m.payload.removed_devices[0].id).toBe("default/thermo-1");
    expect(edge.twin.getDevice("default/thermo-1")).toBeUndefined();
    await a.pub(T("default/thermo-1", "twin/get"), { event_id: "gone" });
    const r = await a.got.wait((g) => g.topic === T("default/thermo-1", "twin/get/result"), from);
    expect(r.payload.code).toBe(404);
    const rows = edge.store.raw.prepare("SELECT count(*) AS n FROM device_twin WHERE deviceid = ?").all(["default/thermo-1"]) as { n: number }[];
    expect(rows[0]!.n).toBe(0);
    expect(edge.twin.reportValue("default/thermo-1", "temperature", "1")).toMatchObject({ ok: false, code: 404 });
  });

  test("a model arriving after its Device types the twins; membership messages add and remove devices", async () => {
    const { edge, a } = await fresh();
    const lateDevice = device("late", { setpoint: "7" });
    lateDevice.spec.deviceModelRef = { name: "late-model" };
    cloud(edge.router, "insert", "default/device/late", lateDevice);
    await sleep(50);
    expect(edge.twin.getDevice("default/late")!.twins.setpoint!.metadata!.type).toBe("string");
    cloud(edge.router, "insert", "default/devicemodel/late-model", { ...MODEL, metadata: { name: "late-model", namespace: "default" } });
    await sleep(50);
    const late = edge.twin.getDevice("default/late")!;
    expect(late.twins.setpoint!.metadata!.type).toBe("int");
    expect(late.twins.setpoint!.expected!.value).toBe("7");
    expect(late.twins.setpoint!.expected_version).toEqual({ cloud: 1, edge: 0 });
    // KubeEdge-style membership (content may be a JSON string).
    const from = a.got.mark();
    cloud(edge.router, "update", "membership", JSON.stringify({ added_devices: [{ id: "factory/press-1", name: "press-1", attributes: { vendor: { value: "acme", metadata: { type: "string" } } }, twin: { pressure: { expected: { value: "5" }, expected_version: { cloud: 3, edge: 0 }, metadata: { type: "int" }, optional: false } } }], removed_devices: [] }));
    const added = await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/updated` && g.payload.added_devices.length > 0, from);
    expect(added.payload.added_devices[0].id).toBe("factory/press-1");
    const p = edge.twin.getDevice("factory/press-1")!;
    expect(p.attributes.vendor!.value).toBe("acme");
    expect(p.twins.pressure!.expected!.value).toBe("5");
    expect(p.twins.pressure!.expected_version).toEqual({ cloud: 3, edge: 0 });
    await a.pub(`$hw/events/node/${NODE}/membership/get`, { event_id: "mm" });
    const list = await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/get/result` && g.payload.event_id === "mm", from);
    expect(list.payload.devices.find((d: any) => d.id === "factory/press-1").attributes.vendor.value).toBe("acme");
    cloud(edge.router, "update", "membership", { added_devices: [], removed_devices: [{ id: "factory/press-1" }] });
    await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/updated` && g.payload.removed_devices.length > 0, from);
    expect(edge.twin.getDevice("factory/press-1")).toBeUndefined();
  });

  test("a burst is stored in batches: every result is announced only after its value is in edgecore.db; a bad request in a batch fails alone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "outpost-twin-"));
    const db = join(dir, "edgecore.db");
    edge = await startEdge({ db, mqtt: "internal", direct: true });
    a = await app(`mqtt://${edge.bus.address}`);
    cloud(edge.router, "insert", "default/devicemodel/thermo-model", MODEL);
    cloud(edge.router, "insert", "default/device/thermo-1", device("thermo-1", { setpoint: "21" }));
    await a.got.wait((g) => g.topic === `$hw/events/node/${NODE}/membership/updated`);
    // a second connection sees only committed data: check it at the moment each result is published
    const reader = await openSqlite(db);
    const stored = reader.prepare("SELECT actual FROM device_twin WHERE deviceid = ? AND name = ?");
    const N = 300;
    let announcedBeforeStored = 0;
    const results = new Map<string, any>();
    const bus = edge.bus;
    const publish = bus.publish.bind(bus);
    bus.publish = (topic: string, payload: any) => {
      if (topic === T("default/thermo-1", "twin/update/result") && !payload.code) {
        const row = stored.all(["default/thermo-1", "temperature"])[0] as { actual: string } | undefined;
        if (!row || Number(row.actual) < Number(String(payload.event_id).slice(1))) announcedBeforeStored++;
      }
      return publish(topic, payload);
    };
    a.client.on("message", (topic, payload) => {
      if (topic !== T("default/thermo-1", "twin/update/result")) return;
      const body = JSON.parse(String(payload));
      results.set(body.event_id, body);
    });
    for (let i = 0; i < N; i++) {
      const value = i === 150 ? "hot" : String(i);
      a.client.publish(T("default/thermo-1", "twin/update"), JSON.stringify({ event_id: `b${i}`, twin: { temperature: { actual: { value } } } }), { qos: 0 });
    }
    await eventually(() => results.size === N, 10_000, "every result");
    reader.close();
    expect(announcedBeforeStored).toBe(0);
    expect(results.get("b150").code).toBe(400);
    expect([...results.values()].filter((r) => r.code).length).toBe(1);
    expect(edge.twin.getDevice("default/thermo-1")!.twins.temperature!.actual!.value).toBe(String(N - 1));
  });

  test("Outpost's cloud messages: membership and desired deltas without versions win like a Device update, are acked, stale resends are ignored", async () => {
    const { edge, a } = await fresh();
    const fromCloud = (resource: string, content: unknown, rv: string) => {
      const m = newMessage({ source: "devicecontroller", group: "twin", operation: "update", resource }, content, { resourceversion: rv });
      edge.router.sendToGroup("twin", m);
      return m.header.msg_id;
    };
    const acked = (id: string) => (m: Message) => m.route.operation === "response" && m.header.parent_msg_id === id;
    const up0 = edge.upstream.mark();
    const withRv = (rv: string, setpoint: string) => ({ ...device("thermo-9", { setpoint }), metadata: { name: "thermo-9", namespace: "default", uid: "uid-thermo-9", resourceVersion: rv } });
    // a new device: membership (with desired values, no versions), then the object
    const m0 = a.got.mark();
    const mid = fromCloud(
      "membership",
      { added_devices: [{ id: "default/thermo-9", name: "thermo-9", twin: { setpoint: { expected: { value: "12" }, metadata: { type: "int" }, optional: false }, label: { expected: { value: "" }, metadata: { type: "string" }, optional: false } } }], removed_devices: [] },
      "100",
    );
    await edge.upstream.wait(acked(mid), up0);
    expect(edge.twin.getDevice("default/thermo-9")!.twins.setpoint!.expected!.value).toBe("12");
    // a property without a desired value gets its twin, and no document (nothing changed for apps)
    expect(edge.twin.getDevice("default/thermo-9")!.twins.label).toBeDefined();
    expect(edge.twin.getDevice("default/thermo-9")!.twins.label!.expected).toBeUndefined();
    await a.got.wait((g) => g.topic === T("default/thermo-9", "twin/update/document"), m0);
    expect(a.got.items.slice(m0).some((g) => g.topic === T("default/thermo-9", "twin/update/document") && "label" in g.payload.twin)).toBe(false);
    cloud(edge.router, "insert", "default/device/thermo-9", withRv("100", "12"));
    await sleep(30);
    // an app sets a desired value on the edge; the cloud's delta then wins
    await a.pub(T("default/thermo-9", "twin/update"), { event_id: "x", twin: { setpoint: { expected: { value: "40" } } } });
    await a.got.wait((g) => g.topic === T("default/thermo-9", "twin/update/result"));
    const from = a.got.mark();
    const did = fromCloud("device/default/thermo-9/twin/cloud_updated", { event_id: "d", timestamp: 1, twin: { setpoint: { expected: { value: "15" }, metadata: { type: "int" }, optional: false } } }, "105");
    await edge.upstream.wait(acked(did), up0);
    const delta = await a.got.wait((g) => g.topic === T("default/thermo-9", "twin/update/delta"), from);
    expect(delta.payload.delta.setpoint).toBe("15");
    expect(edge.twin.getDevice("default/thermo-9")!.twins.setpoint!.expected!.value).toBe("15");
    expect(edge.twin.getDevice("default/thermo-9")!.object!.metadata.resourceVersion).toBe("105");
    // stale resends (older resourceVersions) of the object and of a delta change nothing, but are acked
    cloud(edge.router, "update", "default/device/thermo-9", withRv("100", "12"));
    const sid = fromCloud("device/default/thermo-9/twin/cloud_updated", { event_id: "s", timestamp: 1, twin: { setpoint: { expected: { value: "13" } } } }, "103");
    await edge.upstream.wait(acked(sid), up0);
    expect(edge.twin.getDevice("default/thermo-9")!.twins.setpoint!.expected!.value).toBe("15");
    // a value that does not fit the type is refused (the twin keeps its value); the message is still acked
    const bid = fromCloud("device/default/thermo-9/twin/cloud_updated", { event_id: "b", timestamp: 1, twin: { setpoint: { expected: { value: "hot" } } } }, "106");
    await edge.upstream.wait(acked(bid), up0);
    expect(edge.twin.getDevice("default/thermo-9")!.twins.setpoint!.expected!.value).toBe("15");
    // a stale membership removal does not remove the device; a current one does
    fromCloud("membership", { added_devices: [], removed_devices: [{ id: "default/thermo-9" }] }, "101");
    await sleep(30);
    expect(edge.twin.getDevice("default/thermo-9")).toBeDefined();
    const rid = fromCloud("membership", { added_devices: [], removed_devices: [{ id: "default/thermo-9" }] }, "110");
    await edge.upstream.wait(acked(rid), up0);
    expect(edge.twin.getDevice("default/thermo-9")).toBeUndefined();
  });

  test("invalid Devices from the cloud are skipped; devices of other nodes are not held", async () => {
    const { edge } = await fresh();
    cloud(edge.router, "insert", "default/device/broken", { metadata: { name: "broken", namespace: "default" }, spec: { properties: [{ name: "x", reportCycle: "fast" }] } });
    cloud(edge.router, "insert", "default/device/elsewhere", device("elsewhere", {}, { nodeName: "edge-2" }));
    cloud(edge.router, "insert", "default/device/thermo-2", device("thermo-2", { setpoint: "hot" }));
    await sleep(50);
    expect(edge.twin.getDevice("default/broken")).toBeUndefined();
    expect(edge.twin.getDevice("default/elsewhere")).toBeUndefined();
    // A desired value that does not fit the model type is not taken; the twin exists without it.
    const d2 = edge.twin.getDevice("default/thermo-2")!;
    expect(d2.twins.setpoint!.expected).toBeUndefined();
    expect(edge.twin.listDevices().map((d) => d.id).sort()).toEqual(["default/thermo-1", "default/thermo-2"]);
  });
});

describe("device schemas", () => {
  test("invalid objects name the field", () => {
    const bad = parseDevice({ metadata: { name: "d" }, spec: { properties: [{ name: "a" }, { name: "b", collectCycle: "1s" }] } });
    expect(bad).toEqual({ ok: false, error: expect.stringContaining("spec.properties.1.collectCycle") });
    const dup = parseDevice({ metadata: { name: "d" }, spec: { properties: [{ name: "a" }, { name: "a" }] } });
    expect(dup.ok).toBe(false);
    const model = parseDeviceModel({ metadata: { name: "m" }, spec: { properties: [{ name: "p", type: "LONG" }] } });
    expect(model).toEqual({ ok: false, error: expect.stringContaining("spec.properties.0.type") });
    expect(parseDevice(JSON.stringify(device("x"))).ok).toBe(true);
    expect(parseDevice({ metadata: {} }).ok).toBe(false);
  });

  test("every v1beta1 field is accepted and kept", () => {
    const full = {
      metadata: { name: "full", namespace: "ns" },
      spec: {
        deviceModelRef: { name: "m" },
        nodeName: "n",
        protocol: { protocolName: "opcua", configData: { url: "opc.tcp://h:4840", timeout: 1000 } },
        methods: [{ name: "reset", description: "reset it", propertyNames: ["a"] }],
        stateReport: { reportToCloud: true, reportCycle: 5000 },
        properties: [
          {
            name: "a",
            desired: { value: "1", metadata: { type: "int" } },
            visitors: { protocolName: "opcua", configData: { nodeID: "ns=2;i=2" } },
            reportCycle: 1000,
            collectCycle: 500,
            reportToCloud: true,
            pushMethod: {
              http: { hostName: "h", port: 80, requestPath: "/p", timeout: 3 },
              mqtt: { address: "tcp://h:1883", topic: "t", qos: 1, retained: false },
              otel: { endpointURL: "http://otel" },
              dbMethod: {
                influxdb2: { influxdb2ClientConfig: { url: "u", org: "o", bucket: "b" }, influxdb2DataConfig: { measurement: "m", tag: { k: "v" }, fieldKey: "f" } },
                redis: { redisClientConfig: { addr: "a", db: 0, poolsize: 5, minIdleConns: 1 } },
                TDEngine: { TDEngineClientConfig: { addr: "a", dbName: "d" } },
                mysql: { mysqlClientConfig: { addr: "a", database: "d", userName: "u" } },
              },
              anomalyDetection: { algorithm: "zscore" },
            },
          },
        ],
      },
      status: { reportToCloud: true, reportCycle: 1000 },
    };
    const r = parseDevice(full);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value).toEqual(full);
  });

  test("twin value types and KubeEdge's key/value rules", () => {
    expect(checkTwinValue("", "anything")).toBeNull();
    expect(checkTwinValue("int", "-12")).toBeNull();
    expect(checkTwinValue("integer", "1.5")).not.toBeNull();
    expect(checkTwinValue("float", "1.5e3")).toBeNull();
    expect(checkTwinValue("float", "abc")).not.toBeNull();
    expect(checkTwinValue("boolean", "true")).toBeNull();
    expect(checkTwinValue("boolean", "yes")).not.toBeNull();
    expect(checkTwinValue("double", "1")).toBe("the value type is not allowed");
    expect(validate(TwinUpdateSchema, { twin: { "bad key!": {} } }).ok).toBe(false);
    expect(validate(TwinUpdateSchema, { twin: { k: { actual: { value: "has space" } } } }).ok).toBe(false);
    expect(validate(TwinUpdateSchema, { twin: { k: { actual: { value: "ok-value_1.2" } } } }).ok).toBe(true);
  });
});
