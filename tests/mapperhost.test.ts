/**
 * The mapper host in process with the real pieces around it: MetaManager and DeviceTwin on a real
 * edgecore.db, a Modbus device process, and an MQTT device on a real (aedes) broker.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { Aedes } from "aedes";
import { connect, type MqttClient } from "mqtt";
import { Router } from "../lib/router.ts";
import { newMessage, Op } from "../lib/message.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { edgeMigrations, type EdgeDb } from "../lib/edge/store.ts";
import { MetaManager } from "../lib/edge/metamanager.ts";
import { DeviceTwin, deviceTwinMigrations } from "../lib/edge/devicetwin/index.ts";
import { MapperHost, PluginRegistry } from "../lib/edge/mapperhost/index.ts";
import { toTwinValue, fromTwinValue } from "../lib/edge/mapperhost/convert.ts";
import { Daemon, ROOT, eventually, freePort, tmpDir } from "./helpers/daemons.ts";
import { quietLog, recorder } from "./helpers/hubs.ts";

let store: Store<EdgeDb>;
let router: Router;
let twin: DeviceTwin;
let host: MapperHost;
let modbusPort: number;
let modbusDevice: Daemon;
let broker: Aedes;
let brokerServer: Server;
let brokerPort: number;
let sensor: MqttClient;
const procs: Daemon[] = [];
const hub = recorder("websocket", "hub");

const startModbus = async () => {
  const d = new Daemon(spawn(process.execPath, [join(ROOT, "tests/devices/modbus-device.ts"), "--tcp", `127.0.0.1:${modbusPort}`], { stdio: ["ignore", "pipe", "pipe"] }), "modbus-device");
  procs.push(d);
  await d.waitFor(/modbus device listening/);
  return d;
};
const startBroker = async () => {
  broker = await Aedes.createBroker();
  brokerServer = createServer(broker.handle);
  await new Promise<void>((r) => brokerServer.listen(brokerPort, "127.0.0.1", () => r()));
};
const stopBroker = async () => {
  await new Promise<void>((r) => broker.close(() => r()));
  await new Promise<void>((r) => brokerServer.close(() => r()));
};

const deviceMsg = (name: string, spec: Record<string, unknown>) =>
  newMessage({ source: "devicecontroller", group: "resource", operation: Op.insert, resource: `default/device/${name}` }, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name, namespace: "default", uid: `uid-${name}`, resourceVersion: "1" }, spec: { nodeName: "n1", ...spec } }, { resourceversion: "1" });
const modelMsg = (name: string, properties: Record<string, unknown>[]) =>
  newMessage({ source: "devicecontroller", group: "resource", operation: Op.insert, resource: `default/devicemodel/${name}` }, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name, namespace: "default", resourceVersion: "1" }, spec: { properties } }, { resourceversion: "1" });
const reported = (id: string, prop: string) => twin.getDevice(id)?.properties.find((p) => p.name === prop)?.reported;
const state = (id: string) => twin.getDevice(id)?.state;

const httpBodies: string[] = [];
let httpServer: ReturnType<typeof Bun.serve>;
let httpPort: number;

beforeAll(async () => {
  httpServer = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: async (req) => (httpBodies.push(`${new URL(req.url).pathname} ${await req.text()}`), new Response("ok")) });
  httpPort = httpServer.port!;
  modbusPort = await freePort();
  brokerPort = await freePort();
  modbusDevice = await startModbus();
  await startBroker();
  store = await openStore<EdgeDb>(join(tmpDir("mapperhost"), "edgecore.db"), { ...edgeMigrations, ...deviceTwinMigrations });
  router = new Router(quietLog);
  const meta = new MetaManager(store.db);
  twin = new DeviceTwin({ store, nodeName: "n1", log: quietLog });
  for (const m of [meta, twin, hub, recorder("eventbus", "bus"), recorder("edged", "edged")]) router.register(m);
  await router.startAll();
  host = new MapperHost({ twin, meta, registry: new PluginRegistry(), log: quietLog });
  host.start();

  router.send("metamanager", modelMsg("thermo-model", [
    { name: "temperature", type: "FLOAT", accessMode: "ReadOnly", minimum: "0", maximum: "20" },
    { name: "setpoint", type: "FLOAT", accessMode: "ReadWrite" },
    { name: "broken", type: "INT", accessMode: "ReadOnly" },
  ]));
  router.send("metamanager", deviceMsg("thermo", {
    deviceModelRef: { name: "thermo-model" },
    protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: modbusPort, timeout: 300 } },
    properties: [
      { name: "temperature", collectCycle: 100, reportCycle: 100, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 0, scale: 0.1, dataType: "int" } } },
      { name: "setpoint", collectCycle: 100, reportCycle: 100, desired: { value: "18.5" }, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 1, scale: 0.1 } } },
      { name: "broken", visitors: { protocolName: "modbus", configData: { register: "NoSuchRegister", offset: 0 } } },
    ],
  }));
  router.send("metamanager", modelMsg("air-model", [{ name: "co2", type: "INT", accessMode: "ReadOnly" }]));
  router.send("metamanager", deviceMsg("air", {
    deviceModelRef: { name: "air-model" },
    protocol: { protocolName: "mqtt", configData: { brokerURL: `mqtt://127.0.0.1:${brokerPort}` } },
    properties: [{ name: "co2", visitors: { protocolName: "mqtt", configData: { topic: "sensors/air", jsonPath: "data.co2" } } }],
  }));
  router.send("metamanager", deviceMsg("pusher", {
    protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: modbusPort } },
    properties: [{
      name: "pressure", collectCycle: 200, reportCycle: 200,
      visitors: { protocolName: "modbus", configData: { register: "InputRegister", offset: 0 } },
      pushMethod: { http: { hostName: "127.0.0.1", port: httpPort, requestPath: "/ingest" }, mqtt: { address: `tcp://127.0.0.1:${brokerPort}`, topic: "push/pressure", qos: 0 } },
    }],
  }));
  router.send("metamanager", deviceMsg("ghost", {
    protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: 1, timeout: 200 } },
    properties: [{ name: "x", collectCycle: 100, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 0 } } }],
  }));
  router.send("metamanager", deviceMsg("misconfigured", { protocol: { protocolName: "modbus", configData: { communicateMode: "CARRIER-PIGEON" } }, properties: [] }));
  sensor = connect(`mqtt://127.0.0.1:${brokerPort}`, { reconnectPeriod: 200 });
  await new Promise((r) => sensor.on("connect", r));
});
afterAll(async () => {
  httpServer.stop(true);
  await host.stop();
  sensor.end(true);
  await stopBroker().catch(() => {});
  await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  await store.close();
});

describe("type conversion", () => {
  test("by model type, clamped to min/max", () => {
    expect(toTwinValue(25.3, "float", { minimum: "0", maximum: "20" })).toBe("20");
    expect(toTwinValue(21.499999, "float")).toBe("21.5");
    expect(toTwinValue(7.6, "int")).toBe("8");
    expect(toTwinValue(0, "boolean")).toBe("false");
    expect(toTwinValue(new Uint8Array([104, 105]), "string")).toBe("hi");
    expect(toTwinValue(new Uint8Array([1, 2]), "bytes")).toBe("AQI=");
    expect(() => toTwinValue("warm", "float")).toThrow(/not a number/);
    expect(fromTwinValue("true", "boolean")).toBe(true);
    expect(() => fromTwinValue("maybe", "boolean")).toThrow(/not a boolean/);
  });
});

describe("mapper host", () => {
  test("polls a Modbus device, clamps to the model's maximum, writes the desired value with a read-back", async () => {
    await eventually(() => reported("default/thermo", "temperature") === "20", 5000, "temperature clamped to maximum 20");
    await modbusDevice.waitFor(/"event":"write","register":"holding","addr":1,"value":185/, 5000);
    await eventually(() => reported("default/thermo", "setpoint") === "18.5", 5000, "setpoint read back");
    expect(state("default/thermo")).toBe("ok");
    expect(twin.getDevice("default/thermo")!.properties.find((p) => p.name === "broken")?.reported).toBeUndefined();
  });

  test("push methods: values are POSTed over http and published over mqtt", async () => {
    const pushed: string[] = [];
    const sub = connect(`mqtt://127.0.0.1:${brokerPort}`);
    await new Promise((r) => sub.on("connect", r));
    sub.on("message", (_t, p) => pushed.push(String(p)));
    await sub.subscribeAsync("push/pressure");
    await eventually(() => httpBodies.some((b) => /^\/ingest pressure=1013&time=\d{4}-\d\d-\d\d\+\d\d%3A\d\d%3A\d\d$/.test(b)), 5000, "http push");
    await eventually(() => pushed.some((p) => /^time is \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  pressure: 1013$/.test(p)), 5000, "mqtt push");
    sub.end(true);
  });

  test("a device that cannot be reached or is misconfigured does not stall the others", async () => {
    await eventually(() => state("default/ghost") === "disconnected", 5000, "ghost disconnected");
    await eventually(() => state("default/misconfigured") === "unhealthy", 5000, "bad protocol config → unhealthy");
    const before = Number(reported("default/thermo", "setpoint"));
    expect(before).toBe(18.5);
    // thermo keeps being polled while ghost keeps failing
    twin.reportValue("default/thermo", "setpoint", "0"); // overwrite; the next poll must restore the device's value
    await eventually(() => reported("default/thermo", "setpoint") === "18.5", 3000, "still polled");
  });

  test("an MQTT device pushes values; a broker outage shows as disconnected and recovers", async () => {
    sensor.publish("sensors/air", JSON.stringify({ data: { co2: 412 } }));
    await eventually(() => reported("default/air", "co2") === "412", 5000, "co2 pushed");
    await stopBroker();
    await eventually(() => state("default/air") === "disconnected", 8000, "air disconnected");
    await startBroker();
    await eventually(() => state("default/air") === "ok", 15_000, "air ok again");
    await eventually(() => sensor.connected, 5000, "sensor reconnected");
    sensor.publish("sensors/air", JSON.stringify({ data: { co2: 650 } }));
    await eventually(() => reported("default/air", "co2") === "650", 10_000, "values flow again");
  });

  test("device power-off and power-on: disconnected, then values again", async () => {
    await modbusDevice.stop("SIGKILL");
    await eventually(() => state("default/thermo") === "disconnected", 8000, "thermo disconnected");
    modbusDevice = await startModbus();
    await eventually(() => state("default/thermo") === "ok", 15_000, "thermo ok again");
    await modbusDevice.waitFor(/"event":"write","register":"holding","addr":1,"value":185/, 5000); // desired re-applied
  });

  test("deleting the Device stops its driver", async () => {
    router.send("metamanager", newMessage({ source: "devicecontroller", group: "resource", operation: Op.delete, resource: "default/device/thermo" }, null));
    await eventually(() => twin.getDevice("default/thermo") === undefined, 3000, "twin gone");
    // thermo is the only device reading holding registers (pusher reads an input register)
    const holdingReads = () => modbusDevice.output.filter((l) => l.includes('"event":"read","register":"holding"')).length;
    await Bun.sleep(500);
    const reads = holdingReads();
    await Bun.sleep(600);
    expect(holdingReads()).toBe(reads); // no more requests for thermo
  });
});
