/**
 * Fuzzing the device-twin MQTT side (issue 7): the `$hw/events/...` payload schemas in process with
 * ≥ 100,000 hostile payloads, then a real EventBus (embedded aedes) + DeviceTwin on edgecore.db
 * taking thousands of hostile publishes from a real MQTT client.
 * Replay: FUZZ_SEED=<seed> bun test tests/fuzz-mqtt.test.ts
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectAsync, type MqttClient } from "mqtt";
import type * as v from "valibot";
import {
  MembershipGetSchema,
  MembershipUpdateSchema,
  StateUpdateSchema,
  TWIN_KEY_RE,
  TWIN_VALUE_RE,
  TwinGetSchema,
  TwinUpdateSchema,
  TwinValueTypes,
  checkTwinValue,
  validate,
} from "../schemas/devices.ts";
import { DeviceTwin, deviceTwinMigrations } from "../lib/edge/devicetwin/index.ts";
import { EventBus } from "../lib/edge/eventbus/index.ts";
import { edgeMigrations } from "../lib/edge/store.ts";
import { createLogger } from "../lib/log.ts";
import { newMessage, type Message } from "../lib/message.ts";
import { Metrics } from "../lib/metrics.ts";
import { Router } from "../lib/router.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { eventually } from "./helpers/daemons.ts";
import { assertNoPollution, cases, deepText, fuzzLoop, fuzzLoopAsync, seedFor, type Gen, type Json } from "./helpers/fuzz.ts";

const NODE = "fuzz-node";
const log = createLogger({ level: process.env.OUTPOST_TEST_LOGS ? "debug" : "error" });

const TWIN_UPDATE: Json = {
  event_id: "ev-1",
  timestamp: 1700000000000,
  twin: {
    setpoint: { expected: { value: "21", metadata: { timestamp: 1700000000000 } }, metadata: { type: "int" }, optional: false, expected_version: { cloud: 1, edge: 2 } },
    label: { actual: { value: "kitchen" }, metadata: { type: "string" }, actual_version: { cloud: 0, edge: 3 } },
    gone: null,
  },
};
const STATE_UPDATE: Json = { event_id: "ev-2", timestamp: 1700000000000, state: "online" };
const GET: Json = { event_id: "ev-3", timestamp: 1700000000000 };
const MEMBERSHIP_UPDATE: Json = {
  event_id: "ev-4",
  timestamp: 1,
  added_devices: [{ id: "default/d1", name: "d1", state: "online", attributes: { a: { value: "1", optional: true, metadata: { type: "string" } } }, twin: { t: { expected: { value: "1" } } } }],
  removed_devices: [],
};

interface Target {
  name: string;
  schema: v.GenericSchema;
  base: Json;
}
const TARGETS: Target[] = [
  { name: "TwinUpdateSchema", schema: TwinUpdateSchema, base: TWIN_UPDATE },
  { name: "StateUpdateSchema", schema: StateUpdateSchema, base: STATE_UPDATE },
  { name: "TwinGetSchema", schema: TwinGetSchema, base: GET },
  { name: "MembershipGetSchema", schema: MembershipGetSchema, base: GET },
  { name: "MembershipUpdateSchema", schema: MembershipUpdateSchema, base: MEMBERSHIP_UPDATE },
];

/** A hostile payload document: a mutation of a valid one, or anything at all. */
function hostileDoc(g: Gen, base: Json): Json {
  const k = g.int(10);
  if (k < 7) return g.mutate(base).doc;
  if (k < 9) return g.value();
  return g.mutate(g.mutate(base).doc).doc;
}

/** What an accepted twin update must look like, whatever came in. */
function checkTwinMap(twin: unknown): void {
  if (typeof twin !== "object" || twin === null || Array.isArray(twin)) throw new Error("twin is not an object");
  if (Object.getPrototypeOf(twin) !== Object.prototype) throw new Error("twin map has a foreign prototype");
  for (const [key, t] of Object.entries(twin)) {
    if (!TWIN_KEY_RE.test(key)) throw new Error(`accepted twin key ${JSON.stringify(key)}`);
    if (t === null) continue;
    for (const side of ["expected", "actual"] as const) {
      const val = (t as Record<string, { value?: unknown } | null | undefined>)[side]?.value;
      if (val !== undefined && val !== null && val !== "" && (typeof val !== "string" || !TWIN_VALUE_RE.test(val))) throw new Error(`accepted twin value ${JSON.stringify(val)}`);
    }
  }
}

describe("fuzz: device-twin MQTT payload schemas", () => {
  test("≥ 100,000 hostile payloads: validate() never throws; refusals name the field; accepted ones are clean", () => {
    const seed = seedFor("mqtt-schemas", 0x70b1c);
    const n = cases(100_000);
    const accepted: Record<string, number> = {};
    fuzzLoop("twin schemas", seed, n, (g, i) => {
      const t = TARGETS[i % TARGETS.length]!;
      // half the cases go through JSON text, as they do off the wire (own __proto__ keys and all)
      let doc: unknown = hostileDoc(g, t.base);
      if (g.chance(0.5)) {
        const text = g.chance(0.2) ? g.damageText(JSON.stringify(doc)) : JSON.stringify(doc);
        try {
          doc = JSON.parse(text);
        } catch {
          /* damaged past JSON: the EventBus refuses it before any schema; validate the document itself */
        }
      }
      const r = validate(t.schema, doc);
      if (!r.ok) {
        if (typeof r.error !== "string" || r.error.length === 0) throw new Error(`empty refusal for ${t.name}`);
        return;
      }
      accepted[t.name] = (accepted[t.name] ?? 0) + 1;
      const out = r.value as Record<string, unknown>;
      if (typeof out.event_id !== "string" || typeof out.timestamp !== "number") throw new Error(`${t.name}: base fields not normalised`);
      if (t.schema === TwinUpdateSchema) checkTwinMap(out.twin);
      if (t.schema === StateUpdateSchema && typeof out.state !== "string") throw new Error("state is not a string");
      if (t.schema === MembershipUpdateSchema) for (const d of [...((out.added_devices as unknown[]) ?? []), ...((out.removed_devices as unknown[]) ?? [])]) if ((d as { twin?: unknown }).twin) checkTwinMap((d as { twin: unknown }).twin);
      if (i % 10_000 === 0) assertNoPollution();
    });
    assertNoPollution();
    console.log(`twin schemas: ${n} payloads (seed ${seed}), accepted per schema ${JSON.stringify(accepted)}`);
    for (const t of TARGETS) expect(validate(t.schema, t.base).ok).toBe(true); // valid ones still pass
    expect(accepted.TwinUpdateSchema).toBeGreaterThan(0);
  }, 60_000);

  test("100,000 (type, value) pairs: checkTwinValue answers null or a reason, never throws", () => {
    const seed = seedFor("twin-values", 0x7a1e);
    const n = cases(100_000);
    const types: (string | undefined)[] = [...TwinValueTypes, undefined, "", "INT", "double", "__proto__", "bytes"];
    fuzzLoop("checkTwinValue", seed, n, (g) => {
      const type = g.chance(0.9) ? g.pick(types) : g.shortString(8);
      const value = g.pick([() => g.string(), () => String(g.number()), () => g.pick(["1", "-9223372036854775808", "9223372036854775808", "1e5", ".5", "inf", "NaN", "true", "False", "0x1"]), () => "9".repeat(g.int(400))])();
      const r = checkTwinValue(type, value);
      if (r !== null && (typeof r !== "string" || !r)) throw new Error(`bad answer ${String(r)}`);
    });
    expect(checkTwinValue("int", "42")).toBeNull();
    expect(checkTwinValue("int", "9223372036854775808")).toBe("the value is not int or integer");
  }, 60_000);
});

// ---- live: EventBus + DeviceTwin + a real MQTT client ----------------------------------------

const MODEL = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "DeviceModel",
  metadata: { name: "fz-model", namespace: "default" },
  spec: { protocol: "modbus", properties: [{ name: "setpoint", type: "INT", accessMode: "ReadWrite" }, { name: "label", type: "STRING", accessMode: "ReadWrite" }, { name: "temp", type: "FLOAT", accessMode: "ReadOnly" }] },
};
const DEVICE = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "Device",
  metadata: { name: "fz-1", namespace: "default", uid: "uid-fz-1" },
  spec: {
    deviceModelRef: { name: "fz-model" },
    nodeName: NODE,
    protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: "5502" } },
    properties: [{ name: "setpoint", desired: { value: "20" } }, { name: "label", desired: { value: "" } }, { name: "temp" }],
  },
};

interface Got {
  topic: string;
  text: string;
  json?: any;
}

describe("fuzz: a live EventBus and DeviceTwin", () => {
  const dir = mkdtempSync(join(tmpdir(), "outpost-fuzz-mqtt-"));
  let store: Store<any>;
  let router: Router;
  let bus: EventBus;
  let twin: DeviceTwin;
  let metrics: Metrics;
  let client: MqttClient;
  const got: Got[] = [];
  const upstream: Message[] = [];

  beforeAll(async () => {
    store = await openStore<any>(join(dir, "edgecore.db"), { ...edgeMigrations, ...deviceTwinMigrations });
    router = new Router(log);
    metrics = new Metrics();
    router.register({ name: "websocket", group: "hub", start() {}, stop() {}, handle: (m: Message) => void upstream.push(m) });
    bus = new EventBus({ mqtt: "internal", listen: "127.0.0.1:0", metrics, log });
    twin = new DeviceTwin({ store, nodeName: NODE, publisher: bus, log });
    router.register(twin);
    router.register(bus);
    await router.startAll();
    client = await connectAsync(`mqtt://${bus.address}`, { reconnectPeriod: 0 });
    client.on("message", (topic, payload) => {
      const text = payload.toString();
      let json: any;
      try {
        json = JSON.parse(text);
      } catch {
        /* text */
      }
      got.push({ topic, text, json });
    });
    await client.subscribeAsync(["$hw/events/device/#", "$hw/events/node/#"], { qos: 0 });
    router.sendToGroup("twin", newMessage({ source: "edgecontroller", group: "resource", operation: "insert", resource: "default/devicemodel/fz-model" }, MODEL));
    router.sendToGroup("twin", newMessage({ source: "edgecontroller", group: "resource", operation: "insert", resource: "default/device/fz-1" }, DEVICE));
    await eventually(() => twin.getDevice("default/fz-1"), 5000, "device known to the twin");
  });
  afterAll(async () => {
    await client?.endAsync(true);
    await router?.stopAll();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const D = (id: string, action: string) => `$hw/events/device/${id}/${action}`;
  /** A device id for the topic: ours, unknown, or odd (no MQTT wildcards, no NUL: those are protocol errors). */
  function deviceId(g: Gen): string {
    const k = g.int(6);
    if (k < 3) return "default/fz-1";
    if (k === 3) return "default/nope";
    const seg = () => (g.chance(0.3) ? g.pick(["__proto__", "constructor", "prototype", "..", "%2F", "ü", "\u{1F600}"]) : g.shortString(20).replace(/[+#/\u0000\ud800-\udfff]/g, "x") || "x");
    return `${seg()}/${seg()}`;
  }

  test("3,000 hostile publishes: broker and twin keep answering; malformed requests get 400 results", async () => {
    const seed = seedFor("live-mqtt", 0x11e7);
    const n = cases(3000);
    const from = got.length;
    const rejected0 = metrics.value("outpost_eventbus_rejected_total") ?? 0;
    const expectRefusal = new Map<string, string>(); // event_id → result topic, for payloads the schema refuses
    let refusedHere = 0;
    const pending: Promise<unknown>[] = [];
    await fuzzLoopAsync("live twin", seed, n, async (g, i) => {
      const action = g.pick(["twin/update", "twin/update", "twin/get", "state/update", "membership/get", "twin/cloud_updated", "upload"]);
      const base = action === "twin/update" ? TWIN_UPDATE : action === "state/update" ? STATE_UPDATE : GET;
      let topic: string;
      if (action === "membership/get") topic = `$hw/events/node/${g.chance(0.8) ? NODE : "other"}/membership/get`;
      else if (action === "upload") topic = `$hw/events/upload/${g.shortString(10).replace(/[+#\u0000\ud800-\udfff]/g, "x") || "x"}`;
      else topic = D(deviceId(g), action);
      const k = g.int(10);
      let payload: string;
      let doc: unknown;
      if (k === 0) payload = g.damageText(JSON.stringify(base));
      else if (k === 1) payload = g.pick(["", "null", "[]", "1", '"x"', deepText(g.pick([100, 5000])), "\u0000", "{"]);
      else {
        doc = hostileDoc(g, base);
        if (doc !== null && typeof doc === "object" && !Array.isArray(doc) && g.chance(0.8)) (doc as Record<string, Json>).event_id = `fz-${i}`;
        payload = JSON.stringify(doc);
      }
      if (payload.length > 200_000) payload = payload.slice(0, 200_000);
      // which ones the EventBus itself must refuse (400 on the result topic)
      const schema = action === "twin/update" ? TwinUpdateSchema : action === "twin/get" ? TwinGetSchema : action === "state/update" ? StateUpdateSchema : action === "membership/get" ? MembershipGetSchema : undefined;
      if (schema) {
        let parsed: unknown;
        let json = true;
        try {
          parsed = JSON.parse(payload);
        } catch {
          json = false;
        }
        if (!json || !validate(schema, parsed).ok) {
          refusedHere++;
          const id = json && parsed && typeof parsed === "object" && typeof (parsed as { event_id?: unknown }).event_id === "string" ? (parsed as { event_id: string }).event_id : "";
          if (id.startsWith("fz-")) expectRefusal.set(id, `${topic}/result`);
        }
      }
      pending.push(client.publishAsync(topic, payload, { qos: 1 }));
      if (pending.length >= 100) await Promise.all(pending.splice(0));
    });
    await Promise.all(pending);

    // The broker and the twin still answer a good request, after all of the above.
    const good = `good-${seed}`;
    client.publish(D("default/fz-1", "twin/update"), JSON.stringify({ event_id: good, timestamp: Date.now(), twin: { label: { expected: { value: "after-fuzz" }, metadata: { type: "string" } } } }), { qos: 1 });
    const ok = await eventually(() => got.find((x) => x.topic === D("default/fz-1", "twin/update/result") && x.json?.event_id === good), 20_000, "result of a good update after the fuzz");
    expect(ok!.json.code).toBeUndefined();
    expect(ok!.json.twin.label.expected.value).toBe("after-fuzz");
    client.publish(`$hw/events/node/${NODE}/membership/get`, JSON.stringify({ event_id: "mg" }), { qos: 1 });
    const members = await eventually(() => got.find((x) => x.topic === `$hw/events/node/${NODE}/membership/get/result` && x.json?.event_id === "mg"), 10_000, "membership answer");
    expect(members!.json.devices.map((d: { id: string }) => d.id)).toContain("default/fz-1");

    // Every refusal by the EventBus is counted, and the sampled ones answered with a 400 result.
    expect((metrics.value("outpost_eventbus_rejected_total") ?? 0) - rejected0).toBe(refusedHere);
    const results = got.slice(from).filter((x) => x.json && typeof x.json.event_id === "string" && expectRefusal.has(x.json.event_id));
    const byId = new Map(results.map((x) => [x.json.event_id as string, x]));
    let checked = 0;
    for (const [id, topic] of expectRefusal) {
      const r = byId.get(id);
      if (!r) throw new Error(`no error result for ${id} on ${topic} (seed ${seed})`);
      expect(r.topic).toBe(topic);
      expect(r.json.code).toBe(400);
      expect(typeof r.json.reason).toBe("string");
      checked++;
    }
    expect(checked).toBeGreaterThan(50);
    // twin state is sane: still one known device with its typed twins
    const d = twin.getDevice("default/fz-1")!;
    expect(d.twins.label?.expected?.value).toBe("after-fuzz");
    assertNoPollution();
    console.log(`live twin: ${n} publishes (seed ${seed}), ${refusedHere} refused by the EventBus, ${checked} error results matched`);
  }, 90_000);
});
