/**
 * EventBus with real brokers: the embedded aedes broker (TCP, port 0) and a mosquitto process.
 * The twin group is a stand-in module here, so what the EventBus forwards, refuses and uploads is
 * seen on its own; the full twin path is in devicetwin.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect } from "node:net";
import { join } from "node:path";
import { connectAsync, type MqttClient } from "mqtt";
import { EventBus } from "../lib/edge/eventbus/index.ts";
import { createLogger } from "../lib/log.ts";
import { newMessage, type Message } from "../lib/message.ts";
import { Metrics } from "../lib/metrics.ts";
import { Router } from "../lib/router.ts";
import { requireTool } from "./helpers/daemons.ts";
import { Collector } from "./helpers/collector.ts";
import { startMosquitto } from "./helpers/mosquitto.ts";

const log = createLogger({ level: process.env.OUTPOST_TEST_LOGS ? "debug" : "error" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Got {
  topic: string;
  text: string;
  json?: any;
}

interface Bus {
  router: Router;
  bus: EventBus;
  twin: Collector<Message>;
  upstream: Collector<Message>;
  metrics: Metrics;
  stop(): Promise<void>;
}

async function startBus(mqtt: string): Promise<Bus> {
  const router = new Router(log);
  const twin = new Collector<Message>();
  const upstream = new Collector<Message>();
  const metrics = new Metrics();
  router.register({ name: "websocket", group: "hub", start() {}, stop() {}, handle: (m: Message) => upstream.push(m) });
  router.register({ name: "twin", group: "twin", start() {}, stop() {}, handle: (m: Message) => twin.push(m) });
  const bus = new EventBus({ mqtt, listen: "127.0.0.1:0", metrics });
  router.register(bus);
  await router.startAll();
  return { router, bus, twin, upstream, metrics, stop: () => router.stopAll() };
}

async function app(url: string, topics = ["$hw/events/#", "apps/#"]): Promise<{ client: MqttClient; got: Collector<Got> }> {
  const client = await connectAsync(url, { reconnectPeriod: 0 });
  const got = new Collector<Got>();
  client.on("message", (topic, payload) => {
    const text = payload.toString();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    got.push({ topic, text, json });
  });
  await client.subscribeAsync(topics, { qos: 1 });
  return { client, got };
}

const D = "$hw/events/device/default/lamp";

/** The behaviour every broker mode must show. */
function commonTests(ctx: () => { b: Bus; url: string }) {
  test("valid twin requests reach the twin group decoded, with the topic as resource", async () => {
    const { b, url } = ctx();
    const a = await app(url);
    try {
      await a.client.publishAsync(`${D}/twin/update`, JSON.stringify({ event_id: "e1", timestamp: 1, twin: { power: { expected: { value: "on" } } } }), { qos: 1 });
      const m = await b.twin.wait((x) => x.route.resource === `${D}/twin/update`);
      expect(m.route.operation).toBe("publish");
      expect(m.content).toEqual({ event_id: "e1", timestamp: 1, twin: { power: { expected: { value: "on" } } } });
      await a.client.publishAsync(`${D}/state/update`, JSON.stringify({ event_id: "s", state: "online" }), { qos: 1 });
      await b.twin.wait((x) => x.route.resource === `${D}/state/update`);
      await a.client.publishAsync("$hw/events/node/n1/membership/get", JSON.stringify({ event_id: "m" }), { qos: 1 });
      await b.twin.wait((x) => x.route.resource === "$hw/events/node/n1/membership/get");
    } finally {
      await a.client.endAsync();
    }
  });

  test("malformed requests are answered with KubeEdge's error result and never reach the twin", async () => {
    const { b, url } = ctx();
    const a = await app(url);
    const twinBefore = b.twin.items.length;
    try {
      const cases: [string, string, string, string][] = [
        [`${D}/twin/update`, "{oops", `${D}/twin/update/result`, ""],
        [`${D}/twin/update`, JSON.stringify({ event_id: "no-twin" }), `${D}/twin/update/result`, "no-twin"],
        [`${D}/twin/update`, JSON.stringify({ event_id: "num", twin: { t: { actual: { value: 3 } } } }), `${D}/twin/update/result`, "num"],
        [`${D}/twin/update`, JSON.stringify({ event_id: "key", twin: { "bad key": { actual: { value: "1" } } } }), `${D}/twin/update/result`, "key"],
        [`${D}/twin/get`, JSON.stringify({ event_id: 7 }), `${D}/twin/get/result`, ""],
        [`${D}/state/update`, JSON.stringify({ event_id: "st" }), `${D}/state/update/result`, "st"],
        ["$hw/events/node/n1/membership/get", "]]", "$hw/events/node/n1/membership/get/result", ""],
      ];
      for (const [topic, body, resultTopic, eventId] of cases) {
        await a.client.publishAsync(topic, body, { qos: 1 });
        const r = await a.got.wait((g) => g.topic === resultTopic && g.json?.event_id === eventId && g.json?.code === 400);
        expect(typeof r.json.reason).toBe("string");
        expect(r.json.reason.length).toBeGreaterThan(0);
        expect(typeof r.json.timestamp).toBe("number");
      }
      const numErr = a.got.items.find((g) => g.json?.event_id === "num" && g.json?.code === 400)!;
      expect(numErr.json.reason).toContain("twin.t.actual.value");
      await sleep(100);
      expect(b.twin.items.length).toBe(twinBefore);
      expect(b.metrics.value("outpost_eventbus_rejected_total")).toBe(cases.length);
      // Still working afterwards.
      await a.client.publishAsync(`${D}/twin/get`, JSON.stringify({ event_id: "fine" }), { qos: 1 });
      await b.twin.wait((x) => x.route.resource === `${D}/twin/get` && (x.content as any).event_id === "fine");
    } finally {
      await a.client.endAsync();
    }
  });

  test("uploads go to the cloud as op upload, group user, resource = topic", async () => {
    const { b, url } = ctx();
    const a = await app(url);
    try {
      await a.client.publishAsync("$hw/events/upload/sensors/room1", "raw reading 42", { qos: 1 });
      const m = await b.upstream.wait((x) => x.route.resource === "$hw/events/upload/sensors/room1");
      expect(m.route).toMatchObject({ operation: "upload", group: "user" });
      expect(m.content).toBe("raw reading 42");
      await a.client.publishAsync("SYS/dis/upload_records", JSON.stringify({ records: [1] }), { qos: 1 });
      const r = await b.upstream.wait((x) => x.route.resource === "SYS/dis/upload_records");
      expect(JSON.parse(r.content as string)).toEqual({ records: [1] });
    } finally {
      await a.client.endAsync();
    }
  });

  test("router publish messages reach MQTT subscribers (objects as JSON, strings as they are)", async () => {
    const { b, url } = ctx();
    const a = await app(url);
    try {
      b.router.send("eventbus", newMessage({ source: "twin", group: "bus", operation: "publish", resource: `${D}/twin/update/delta` }, { event_id: "d", delta: { power: "on" } }));
      const d = await a.got.wait((g) => g.topic === `${D}/twin/update/delta`);
      expect(d.json).toEqual({ event_id: "d", delta: { power: "on" } });
      b.router.send("eventbus", newMessage({ source: "router_eventbus", group: "user", operation: "publish", resource: "apps/hello" }, "plain text"));
      const t = await a.got.wait((g) => g.topic === "apps/hello");
      expect(t.text).toBe("plain text");
    } finally {
      await a.client.endAsync();
    }
  });

  test("subscribe adds a topic whose messages go up; unsubscribe drops it", async () => {
    const { b, url } = ctx();
    const a = await app(url);
    try {
      b.router.send("eventbus", newMessage({ source: "test", group: "bus", operation: "subscribe", resource: "factory/+/alarm" }, null));
      await sleep(200);
      await a.client.publishAsync("factory/line1/alarm", "overheat", { qos: 1 });
      const m = await b.upstream.wait((x) => x.route.resource === "factory/line1/alarm");
      expect(m.content).toBe("overheat");
      b.router.send("eventbus", newMessage({ source: "test", group: "bus", operation: "unsubscribe", resource: "factory/+/alarm" }, null));
      await sleep(200);
      await a.client.publishAsync("factory/line2/alarm", "again", { qos: 1 });
      await sleep(300);
      expect(b.upstream.items.some((x) => x.route.resource === "factory/line2/alarm")).toBe(false);
    } finally {
      await a.client.endAsync();
    }
  });
}

describe("EventBus with the embedded aedes broker", () => {
  let b: Bus;
  beforeAll(async () => {
    b = await startBus("internal");
  });
  afterAll(async () => {
    await b?.stop();
  });

  test("port 0 picks a free port and reports it", () => {
    expect(b.bus.mode).toBe("internal");
    expect(b.bus.port).toBeGreaterThan(0);
    expect(b.bus.address).toBe(`127.0.0.1:${b.bus.port}`);
  });

  commonTests(() => ({ b, url: `mqtt://${b.bus.address}` }));

  test("garbage on the TCP port and oversized requests do not hurt the broker", async () => {
    await new Promise<void>((resolve) => {
      const s = tcpConnect(b.bus.port, "127.0.0.1", () => {
        s.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x01, 0x02]));
        s.write(Buffer.from("GET / HTTP/1.1\r\n\r\n"));
      });
      s.on("error", () => resolve());
      s.on("close", () => resolve());
      setTimeout(() => (s.destroy(), resolve()), 500);
    });
    const a = await app(`mqtt://${b.bus.address}`);
    try {
      await a.client.publishAsync(`${D}/twin/update`, JSON.stringify({ event_id: "big", twin: { k: { actual: { value: "x".repeat(2 << 20) } } } }), { qos: 1 });
      const r = await a.got.wait((g) => g.topic === `${D}/twin/update/result` && g.json?.code === 400 && g.json?.reason.includes("larger"));
      expect(r.json.event_id).toBe("");
      await a.client.publishAsync(`${D}/twin/get`, JSON.stringify({ event_id: "after-garbage" }), { qos: 1 });
      await b.twin.wait((x) => (x.content as any)?.event_id === "after-garbage");
    } finally {
      await a.client.endAsync();
    }
  });

  test("a burst of 5,000 requests is delivered in order without overflowing anything", async () => {
    const a = await app(`mqtt://${b.bus.address}`, ["nothing/#"]);
    try {
      const before = b.twin.items.length;
      for (let i = 0; i < 5000; i++) a.client.publish(`${D}/twin/update`, JSON.stringify({ event_id: `burst-${i}`, twin: { n: { actual: { value: String(i) } } } }));
      await b.twin.wait((x) => (x.content as any)?.event_id === "burst-4999", 0, 20_000);
      const ids = b.twin.items.slice(before).map((x) => (x.content as any).event_id as string).filter((id) => id.startsWith("burst-"));
      expect(ids.length).toBe(5000);
      expect(ids.slice(0, 3)).toEqual(["burst-0", "burst-1", "burst-2"]);
    } finally {
      await a.client.endAsync();
    }
  });

  test("a busy port is reported as an error at start", async () => {
    const other = new EventBus({ listen: `127.0.0.1:${b.bus.port}` });
    const router = new Router(log);
    router.register(other);
    await expect(router.startAll()).rejects.toThrow(/EADDRINUSE/);
    await other.stop();
  });
});

const hasMosquitto = requireTool("/usr/sbin/mosquitto", "the external-broker EventBus tests run against Debian's mosquitto");

describe.skipIf(!hasMosquitto)("EventBus with an external mosquitto broker", () => {
  let m: Awaited<ReturnType<typeof startMosquitto>>;
  let b: Bus;
  beforeAll(async () => {
    m = await startMosquitto();
    b = await startBus(m.url);
  });
  afterAll(async () => {
    await b?.stop();
    await m?.stop();
  });

  test("reports the broker URL", () => {
    expect(b.bus.mode).toBe("external");
    expect(b.bus.address).toBe(m.url);
  });

  commonTests(() => ({ b, url: m.url }));

  test("a broker restart: the EventBus reconnects and subscribes again", async () => {
    await m.stop();
    await sleep(300);
    m = await startMosquitto(m.port);
    const a = await app(m.url);
    try {
      let seen = false;
      for (let i = 0; i < 50 && !seen; i++) {
        await a.client.publishAsync(`${D}/twin/get`, JSON.stringify({ event_id: `again-${i}` }), { qos: 1 });
        await sleep(200);
        seen = b.twin.items.some((x) => String((x.content as any)?.event_id).startsWith("again-"));
      }
      expect(seen).toBe(true);
    } finally {
      await a.client.endAsync();
    }
  });
});
