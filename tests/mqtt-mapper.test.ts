/**
 * The MQTT mapper's driver against real brokers: aedes in-process and Debian's mosquitto as a
 * process. A simulated JSON device (an mqtt client) publishes readings and records desired values.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import * as v from "valibot";
import { Aedes } from "aedes";
import { connectAsync, type MqttClient } from "mqtt";
import mqttMapper, { parseJsonPath, renderTemplate, topicMatches, valueAt, type MqttVisitor } from "../mappers/mqtt/index.ts";
import type { DeviceDriver, PropertySpec, RawValue } from "../mappers/plugin.ts";
import { createLogger } from "../lib/log.ts";
import { eventually, freePort, requireTool } from "./helpers/daemons.ts";
import { startMosquitto, type Mosquitto } from "./helpers/mosquitto.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A broker that can be stopped and started again on the same port. */
interface Broker {
  url: string;
  port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
}

function aedesBroker(port: number): Broker {
  let broker: Aedes | undefined;
  let server: Server | undefined;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    async start() {
      broker = await Aedes.createBroker();
      server = createServer(broker.handle as never);
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject);
        server!.listen(port, "127.0.0.1", () => resolve());
      });
    },
    async stop() {
      const b = broker;
      const s = server;
      broker = undefined;
      server = undefined;
      if (b) await new Promise<void>((r) => b.close(() => r()));
      if (s) await new Promise<void>((r) => s.close(() => r()));
    },
  };
}

const brokers: Mosquitto[] = [];
afterAll(async () => {
  await Promise.all(brokers.map((m) => m.stop()));
});

function mosquittoBroker(port: number): Broker {
  let m: Mosquitto | undefined;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    async start() {
      m = await startMosquitto(port);
      brokers.push(m);
    },
    async stop() {
      await m?.stop();
      m = undefined;
    },
  };
}

/** The simulated device: publishes JSON readings, records what is published to its set topic. */
class JsonDevice {
  readonly desired: { topic: string; payload: string; retain: boolean; qos: number }[] = [];
  private constructor(readonly client: MqttClient) {}

  static async connect(url: string): Promise<JsonDevice> {
    const client = await connectAsync(url, { clientId: `sim-device-${Math.random().toString(16).slice(2, 8)}`, reconnectPeriod: 200 });
    const dev = new JsonDevice(client);
    client.on("message", (topic, payload, packet) => dev.desired.push({ topic, payload: payload.toString(), retain: packet.retain, qos: packet.qos }));
    await client.subscribeAsync({ "devices/thermo/set/#": { qos: 1 } });
    return dev;
  }

  async publish(topic: string, payload: unknown, raw = false): Promise<void> {
    await this.client.publishAsync(topic, raw ? String(payload) : JSON.stringify(payload), { qos: 1 });
  }

  reading(t: number, extra: Record<string, unknown> = {}) {
    return this.publish("devices/thermo/state", { device: "thermo", data: { temperature: t, humidity: 40 + t / 10, meta: { unit: "C" } }, readings: [{ v: t }, { v: t * 2 }], ok: true, ...extra });
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}

const prop = (name: string, visitor: Record<string, unknown>, type: PropertySpec<MqttVisitor>["type"] = "float", accessMode: "ReadWrite" | "ReadOnly" = "ReadOnly"): PropertySpec<MqttVisitor> => ({
  name,
  visitor: v.parse(mqttMapper.visitorSchema, visitor),
  type,
  accessMode,
});

const props = {
  temperature: prop("temperature", { topic: "devices/thermo/state", jsonPath: "data.temperature" }),
  humidity: prop("humidity", { topic: "devices/thermo/state", jsonPath: "$.data.humidity", qos: 1 }),
  unit: prop("unit", { topic: "devices/thermo/state", jsonPath: "data.meta.unit" }, "string"),
  second: prop("second", { topic: "devices/thermo/state", jsonPath: "readings[1].v" }),
  ok: prop("ok", { topic: "devices/thermo/state", jsonPath: "ok" }, "boolean"),
  whole: prop("whole", { topic: "devices/+/counter" }, "int"),
  setpoint: prop("setpoint", { topic: "devices/thermo/setpoint", jsonPath: "value", writeTopic: "devices/thermo/set/setpoint", qos: 1 }, "float", "ReadWrite"),
  mode: prop("mode", { topic: "devices/thermo/mode", writeTopic: "devices/thermo/set/mode", writeTemplate: '{"cmd": "mode", "mode": "{{value}}", "raw": {{value}}}', retain: true }, "string", "ReadWrite"),
  silent: prop("silent", { topic: "devices/thermo/never" }),
};

function capture() {
  const lines: string[] = [];
  const log = createLogger({ level: "debug", write: (l) => lines.push(l) });
  return { lines, log };
}

describe("MQTT mapper helpers", () => {
  test("jsonPath: dotted, $-rooted, indexes, quoted keys; invalid ones are refused", () => {
    expect(parseJsonPath("")).toEqual([]);
    expect(parseJsonPath("$")).toEqual([]);
    expect(parseJsonPath("data.temperature")).toEqual(["data", "temperature"]);
    expect(parseJsonPath("$.data.items[0].value")).toEqual(["data", "items", 0, "value"]);
    expect(parseJsonPath("data.items.1")).toEqual(["data", "items", 1]);
    expect(parseJsonPath("['odd key'].x")).toEqual(["odd key", "x"]);
    expect(parseJsonPath("data..x")).toBeNull();
    expect(parseJsonPath("data[x]")).toBeNull();
    const doc = { data: { t: 1.5, on: false, s: "x", list: [1, { a: 2 }], nil: null } };
    expect(valueAt(doc, ["data", "t"])).toBe(1.5);
    expect(valueAt(doc, ["data", "on"])).toBe(false);
    expect(valueAt(doc, ["data", "list", 1, "a"])).toBe(2);
    expect(valueAt(doc, ["data", "list"])).toBe('[1,{"a":2}]');
    expect(valueAt(doc, ["data", "nil"])).toBeUndefined();
    expect(valueAt(doc, ["data", "missing", "x"])).toBeUndefined();
    expect(valueAt(21.5, [])).toBe(21.5);
  });

  test("topic filters", () => {
    expect(topicMatches("a/b", "a/b")).toBe(true);
    expect(topicMatches("a/+/c", "a/x/c")).toBe(true);
    expect(topicMatches("a/+", "a/x/c")).toBe(false);
    expect(topicMatches("a/#", "a")).toBe(true);
    expect(topicMatches("a/#", "a/x/y")).toBe(true);
    expect(topicMatches("#", "$SYS/x")).toBe(false);
    expect(topicMatches("a/b", "a/b/c")).toBe(false);
  });

  test("write templates", () => {
    expect(renderTemplate(undefined, 21.5)).toBe('{"value":21.5}');
    expect(renderTemplate(undefined, "on")).toBe('{"value":"on"}');
    expect(renderTemplate('{"set": {{value}}}', true)).toBe('{"set": true}');
    expect(renderTemplate('{"set": "{{value}}", "n": {{value}}}', 7)).toBe('{"set": "7", "n": 7}');
    expect(renderTemplate('{"m": "{{value}}"}', 'say "hi"')).toBe('{"m": "say \\"hi\\""}');
    expect(renderTemplate(undefined, Uint8Array.from([1, 2]))).toBe('{"value":"AQI="}');
  });

  test("config errors name the field", () => {
    const path = (schema: v.GenericSchema, input: unknown) => {
      const r = v.safeParse(schema, input);
      expect(r.success).toBe(false);
      return v.getDotPath(r.issues![0]!);
    };
    expect(path(mqttMapper.protocolSchema, {})).toBe("brokerURL");
    expect(path(mqttMapper.protocolSchema, { brokerURL: "http://x:1" })).toBe("brokerURL");
    expect(path(mqttMapper.protocolSchema, { ip: "127.0.0.1", port: 70000 })).toBe("port");
    expect(path(mqttMapper.protocolSchema, { brokerURL: "mqtt://h", keepAlive: "x" })).toBe("keepAlive");
    expect(path(mqttMapper.visitorSchema, {})).toBe("topic");
    expect(path(mqttMapper.visitorSchema, { topic: "a/#/b" })).toBe("topic");
    expect(path(mqttMapper.visitorSchema, { topic: "a", jsonPath: "a..b" })).toBe("jsonPath");
    expect(path(mqttMapper.visitorSchema, { topic: "a", writeTopic: "a/+" })).toBe("writeTopic");
    expect(path(mqttMapper.visitorSchema, { topic: "a", writeTemplate: '{"v": 1}' })).toBe("writeTemplate");
    expect(path(mqttMapper.visitorSchema, { topic: "a", qos: 3 })).toBe("qos");
    expect(v.parse(mqttMapper.visitorSchema, { topic: "a", qos: "1", retain: "true" })).toMatchObject({ qos: 1, retain: true, jsonPath: "" });
    expect(v.parse(mqttMapper.protocolSchema, { ip: "10.0.0.1", port: "1884" })).toMatchObject({ ip: "10.0.0.1", port: 1884, keepAlive: 60 });
  });
});

function brokerSuite(kind: string, make: (port: number) => Broker) {
  describe(`MQTT mapper against ${kind}`, () => {
    let broker: Broker;
    const drivers: DeviceDriver<MqttVisitor>[] = [];
    const devices: JsonDevice[] = [];

    const open = async (protocol: Record<string, unknown>, log = createLogger({ level: "error" }), properties = Object.values(props)) => {
      const d = await mqttMapper.open({ id: "default/thermo", protocol: v.parse(mqttMapper.protocolSchema, protocol), properties }, { log, signal: new AbortController().signal });
      drivers.push(d);
      return d;
    };
    const device = async () => {
      const d = await JsonDevice.connect(broker.url);
      devices.push(d);
      return d;
    };

    afterEach(async () => {
      await Promise.all(drivers.splice(0).map((d) => d.close()));
      await Promise.all(devices.splice(0).map((d) => d.close()));
      await broker?.stop();
    });

    const startBroker = async () => {
      broker = make(await freePort());
      await broker.start();
    };

    test("values arrive through subscribe and read, with nested jsonPaths and topic filters", async () => {
      await startBroker();
      const drv = await open({ brokerURL: broker.url, keepAlive: 10 });
      const dev = await device();
      const temps: RawValue[] = [];
      const counters: RawValue[] = [];
      await drv.subscribe!(props.temperature, (x) => temps.push(x));
      await drv.subscribe!(props.whole, (x) => counters.push(x));
      await dev.reading(21.5);
      await eventually(() => temps.length === 1, 5000, "first temperature");
      expect(await drv.read(props.temperature)).toBe(21.5);
      expect(await drv.read(props.humidity)).toBeCloseTo(42.15);
      expect(await drv.read(props.unit)).toBe("C");
      expect(await drv.read(props.second)).toBe(43);
      expect(await drv.read(props.ok)).toBe(true);
      await dev.reading(22);
      await dev.reading(22.5);
      await eventually(() => temps.length === 3, 5000, "three temperatures");
      expect(temps).toEqual([21.5, 22, 22.5]);
      expect(await drv.read(props.temperature)).toBe(22.5);
      // whole payload as the value, on a + filter
      await dev.publish("devices/thermo/counter", 7);
      await dev.publish("devices/other/counter", 8);
      await eventually(() => counters.length === 2, 5000, "counters");
      expect(counters).toEqual([7, 8]);
      expect(await drv.health!()).toBe("ok");
    });

    test("read waits for the first value, and fails clearly when none comes", async () => {
      await startBroker();
      const drv = await open({ ip: "127.0.0.1", port: broker.port, readTimeout: 2000 });
      const dev = await device();
      const pending = drv.read(props.setpoint);
      await sleep(100);
      await dev.publish("devices/thermo/setpoint", { value: 19 });
      expect(await pending).toBe(19);
      const t0 = Date.now();
      await expect(drv.read(props.silent)).rejects.toThrow("property silent: no value on devices/thermo/never within 2000 ms");
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    });

    test("a malformed payload is ignored with a log line; the next good one is taken", async () => {
      await startBroker();
      const { lines, log } = capture();
      const drv = await open({ brokerURL: broker.url }, log);
      const dev = await device();
      const temps: RawValue[] = [];
      await drv.subscribe!(props.temperature, (x) => temps.push(x));
      await dev.reading(20);
      await eventually(() => temps.length === 1, 5000, "first temperature");
      await dev.publish("devices/thermo/state", '{"data": {"temperature": 99', true);
      await dev.publish("devices/thermo/state", "garbage again", true);
      await dev.reading(23);
      await eventually(() => temps.length === 2, 5000, "temperature after garbage");
      expect(temps).toEqual([20, 23]);
      const warned = lines.filter((l) => l.includes("MQTT payload is not JSON; ignored"));
      expect(warned).toHaveLength(1); // the second one within 10 s is counted, not logged
      expect(warned[0]).toContain("topic=devices/thermo/state");
      expect(warned[0]).toContain('{\\"data\\": {\\"temperature\\": 99');
      // a good payload without the property's path changes nothing
      await dev.publish("devices/thermo/state", { data: {} });
      await dev.reading(24);
      await eventually(() => temps.length === 3, 5000, "temperature after a payload without it");
      expect(temps).toEqual([20, 23, 24]);
    });

    test("write publishes the templated payload to the writeTopic", async () => {
      await startBroker();
      const drv = await open({ brokerURL: broker.url, clientId: `mapper-${kind}` });
      const dev = await device();
      await drv.write!(props.setpoint, 23.5);
      await drv.write!(props.mode, "eco");
      await eventually(() => dev.desired.length === 2, 5000, "two desired values at the device");
      const byTopic = Object.fromEntries(dev.desired.map((d) => [d.topic, d]));
      expect(JSON.parse(byTopic["devices/thermo/set/setpoint"]!.payload)).toEqual({ value: 23.5 });
      expect(JSON.parse(byTopic["devices/thermo/set/mode"]!.payload)).toEqual({ cmd: "mode", mode: "eco", raw: "eco" });
      // retain: a device that subscribes later still gets the mode
      const late = await device();
      await eventually(() => late.desired.some((d) => d.topic === "devices/thermo/set/mode" && d.retain), 5000, "retained mode");
      await expect(drv.write!(props.temperature, 1)).rejects.toThrow(/no writeTopic/);
    });

    test("broker restart: health goes disconnected, then the client reconnects and values flow again", async () => {
      await startBroker();
      const { lines, log } = capture();
      const drv = await open({ brokerURL: broker.url, keepAlive: 2 }, log);
      const temps: RawValue[] = [];
      await drv.subscribe!(props.temperature, (x) => temps.push(x));
      let dev = await device();
      await dev.reading(20);
      await eventually(() => temps.length === 1, 5000, "first temperature");
      await broker.stop();
      await eventually(async () => (await drv.health!()) === "disconnected", 10_000, "health disconnected");
      await expect(drv.write!(props.setpoint, 1)).rejects.toThrow(/not connected to the broker/);
      await expect(drv.read(props.temperature)).rejects.toThrow(/not connected to the broker/); // the last value may be stale
      await broker.start();
      await eventually(async () => (await drv.health!()) === "ok", 15_000, "health ok again");
      expect(await drv.read(props.temperature)).toBe(20);
      expect(lines.some((l) => l.includes("MQTT broker connection lost"))).toBe(true);
      expect(lines.some((l) => l.includes("MQTT broker connection back"))).toBe(true);
      // the subscription was renewed: new readings arrive (the device reconnects too)
      await dev.close();
      devices.splice(devices.indexOf(dev), 1);
      dev = await device();
      await eventually(
        async () => {
          await dev.reading(25);
          return temps.includes(25);
        },
        10_000,
        "temperature after restart",
      );
      await drv.write!(props.setpoint, 21);
      await eventually(() => dev.desired.some((d) => d.payload === '{"value":21}'), 5000, "write after restart");
    });

    test("no broker: open fails with the broker's address", async () => {
      const port = await freePort();
      broker = make(port); // not started
      await expect(open({ brokerURL: `mqtt://127.0.0.1:${port}`, connectTimeout: 1500 })).rejects.toThrow(`MQTT broker mqtt://127.0.0.1:${port}`);
    });
  });
}

brokerSuite("aedes (in-process)", aedesBroker);

const hasMosquitto = requireTool("/usr/sbin/mosquitto", "the MQTT mapper is tested against Debian's mosquitto too");
if (hasMosquitto) brokerSuite("mosquitto (process)", mosquittoBroker);
else describe.skip("MQTT mapper against mosquitto (process)", () => test("skipped: /usr/sbin/mosquitto missing", () => {}));
