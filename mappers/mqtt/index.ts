/**
 * MQTT mapper: devices that speak JSON over a broker. Each property names the topic the device
 * publishes on and where its value sits in the JSON payload (`jsonPath`); desired values are
 * published to the property's `writeTopic`, shaped by `writeTemplate`.
 *
 * - One MQTT client per device (mqtt.js, imported only when an MQTT device is opened). It
 *   reconnects by itself (every second) and re-subscribes; health() follows the connection.
 * - subscribe() pushes every new value (the preferred path); read() answers the last value seen on
 *   the topic, or waits up to `readTimeout` for the first one; it fails while the broker is away.
 * - Payloads must be JSON (a bare number, string or boolean is JSON too). A payload that is not
 *   is ignored with a warning (at most one line per topic every 10 s, counting the rest).
 * - jsonPath: `data.temperature`, `$.data.temperature`, `data.items[0].value`, `data.items.0.value`,
 *   `['odd key']`; empty or `$` = the whole payload. Objects and arrays are returned as JSON text.
 * - writeTemplate: JSON with a `{{value}}` placeholder. A bare `{{value}}` becomes the value as JSON
 *   (`21.5`, `true`, `"on"`); a quoted `"{{value}}"` becomes the value as a JSON string (`"21.5"`).
 *   Default: `{"value": <value>}`. Bytes are written as base64 text.
 */
import * as v from "valibot";
import type { IClientOptions, MqttClient } from "mqtt";
import { defineMapper, type DeviceDriver, type DriverContext, type PropertySpec, type RawValue } from "../plugin.ts";
import type { Logger } from "../../lib/log.ts";

// ---------------------------------------------------------------------------------------------
// JSON paths, topic filters, templates

export type PathSegment = string | number;

/** Parses a jsonPath into segments; null when it is not one. */
export function parseJsonPath(path: string): PathSegment[] | null {
  let s = path.trim();
  if (s.startsWith("$")) s = s.slice(1);
  const out: PathSegment[] = [];
  const token = /^(?:\.?([^.[\]'"\s]+)|\[(\d+)\]|\[(?:'([^']*)'|"([^"]*)")\])/;
  while (s.length > 0) {
    const m = token.exec(s);
    if (!m) return null;
    if (m[1] !== undefined) out.push(/^\d+$/.test(m[1]) ? Number(m[1]) : m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else out.push(m[3] ?? m[4]!);
    s = s.slice(m[0].length);
  }
  return out;
}

/** The value at `path` in a parsed document; undefined when absent (or null). */
export function valueAt(doc: unknown, path: PathSegment[]): RawValue | undefined {
  let cur: unknown = doc;
  for (const seg of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    if (Array.isArray(cur)) {
      if (typeof seg !== "number") return undefined;
      cur = cur[seg];
    } else cur = (cur as Record<string, unknown>)[String(seg)];
  }
  if (cur === null || cur === undefined) return undefined;
  if (typeof cur === "number" || typeof cur === "string" || typeof cur === "boolean") return cur;
  return JSON.stringify(cur);
}

/** MQTT topic filter matching (`+` one level, `#` the rest; `$`-topics only by explicit filters). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  if (t[0]!.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function jsonValue(value: RawValue): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** The payload a desired value is published as. */
export function renderTemplate(template: string | undefined, value: RawValue): string {
  const j = jsonValue(value);
  if (template === undefined) return JSON.stringify({ value: j });
  return template.replaceAll('"{{value}}"', JSON.stringify(String(j))).replaceAll("{{value}}", JSON.stringify(j));
}

// ---------------------------------------------------------------------------------------------
// Schemas

const num = v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+(\.\d+)?$/), v.transform(Number))]), v.number());
const int = v.pipe(num, v.integer());
const ms = v.pipe(int, v.minValue(1));
const bool = v.union([v.boolean(), v.pipe(v.picklist(["true", "false"]), v.transform((s) => s === "true"))]);

const BROKER_SCHEMES = ["mqtt:", "mqtts:", "tcp:", "ssl:", "tls:", "ws:", "wss:"];
const brokerURL = v.pipe(
  v.string(),
  v.trim(),
  v.check((s) => {
    try {
      const u = new URL(s);
      return BROKER_SCHEMES.includes(u.protocol) && u.hostname !== "";
    } catch {
      return false;
    }
  }, "must be a broker URL such as mqtt://127.0.0.1:1883 (mqtt, mqtts, tcp, ssl, ws or wss)"),
);

export const MqttProtocolSchema = v.pipe(
  v.object({
    brokerURL: v.optional(brokerURL),
    /** KubeEdge's sample spelling: ip + port (port defaults to 1883). */
    ip: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1, "must not be empty"))),
    port: v.optional(v.pipe(int, v.minValue(1), v.maxValue(65535))),
    clientId: v.optional(v.pipe(v.string(), v.minLength(1, "must not be empty"), v.maxLength(256))),
    username: v.optional(v.string()),
    password: v.optional(v.string()),
    /** Seconds, as MQTT's keep alive; 0 turns it off. */
    keepAlive: v.optional(v.pipe(int, v.minValue(0), v.maxValue(65535)), 60),
    /** How long the first connection may take, milliseconds. */
    connectTimeout: v.optional(ms, 5_000),
    /** How long read() waits for a first value on a topic, milliseconds. */
    readTimeout: v.optional(ms, 5_000),
  }),
  v.forward(
    v.partialCheck([["brokerURL"], ["ip"]], (p) => p.brokerURL !== undefined || p.ip !== undefined, "brokerURL (or ip and port) is required"),
    ["brokerURL"],
  ),
);

const topic = v.pipe(v.string(), v.minLength(1, "must not be empty"), v.maxLength(65535), v.check((t) => !t.includes("\0"), "must not contain NUL"));

export const MqttVisitorSchema = v.object({
  /** Where the device publishes this property (may be a filter with + and #). */
  topic: v.pipe(
    topic,
    v.check((t) => t.split("/").every((l, i, all) => (l.includes("#") ? l === "#" && i === all.length - 1 : !l.includes("+") || l === "+")), "is not a valid topic filter"),
  ),
  jsonPath: v.optional(v.pipe(v.string(), v.check((s) => parseJsonPath(s) !== null, "must be a path such as data.temperature, $.data.temperature or data.items[0]")), ""),
  /** Where desired values are published; without it the property cannot be written. */
  writeTopic: v.optional(v.pipe(topic, v.check((t) => !t.includes("+") && !t.includes("#"), "must not contain wildcards"))),
  writeTemplate: v.optional(v.pipe(v.string(), v.check((s) => s.includes("{{value}}"), "must contain the {{value}} placeholder"))),
  qos: v.optional(v.pipe(int, v.picklist([0, 1, 2], "must be 0, 1 or 2")), 0),
  retain: v.optional(bool, false),
});

export type MqttProtocol = v.InferOutput<typeof MqttProtocolSchema>;
export type MqttVisitor = v.InferOutput<typeof MqttVisitorSchema>;
type Prop = PropertySpec<MqttVisitor>;

export function brokerUrlOf(p: MqttProtocol): string {
  if (p.brokerURL) return p.brokerURL;
  const host = p.ip!.includes(":") && !p.ip!.startsWith("[") ? `[${p.ip}]` : p.ip;
  return `mqtt://${host}:${p.port ?? 1883}`;
}

// ---------------------------------------------------------------------------------------------
// Driver

type Subscriber = (value: RawValue) => void;

class MqttDriver implements DeviceDriver<MqttVisitor> {
  private readonly last = new Map<string, RawValue>();
  private readonly subscribers = new Map<string, Set<Subscriber>>();
  private readonly waiters = new Map<string, Set<Subscriber>>();
  private readonly paths = new Map<string, PathSegment[]>();
  private readonly badPayloads = new Map<string, { at: number; suppressed: number }>();
  private closed = false;

  constructor(
    private readonly client: MqttClient,
    private readonly props: Prop[],
    private readonly protocol: MqttProtocol,
    private readonly log: Logger,
    private readonly deviceId: string,
  ) {
    for (const p of props) this.paths.set(p.name, parseJsonPath(p.visitor.jsonPath) ?? []);
    client.on("message", (t, payload) => this.onMessage(t, payload));
  }

  private onMessage(topic: string, payload: Buffer): void {
    const targets = this.props.filter((p) => topicMatches(p.visitor.topic, topic));
    if (targets.length === 0) return;
    const text = payload.toString("utf8");
    if (text.trim() === "") return; // e.g. a cleared retained message
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      this.malformed(topic, text, e as Error);
      return;
    }
    for (const p of targets) {
      const value = valueAt(doc, this.paths.get(p.name)!);
      if (value === undefined) {
        this.log.debug("MQTT payload has no value at the property's jsonPath", { device: this.deviceId, property: p.name, topic, jsonPath: p.visitor.jsonPath });
        continue;
      }
      this.last.set(p.name, value);
      for (const fn of this.waiters.get(p.name) ?? []) fn(value);
      for (const fn of this.subscribers.get(p.name) ?? []) {
        try {
          fn(value);
        } catch (err) {
          this.log.warn("MQTT value subscriber failed", { device: this.deviceId, property: p.name, err: (err as Error).message });
        }
      }
    }
  }

  private malformed(topic: string, text: string, e: Error): void {
    const now = Date.now();
    const seen = this.badPayloads.get(topic);
    if (seen && now - seen.at < 10_000) {
      seen.suppressed++;
      return;
    }
    this.badPayloads.set(topic, { at: now, suppressed: 0 });
    this.log.warn("MQTT payload is not JSON; ignored", {
      device: this.deviceId,
      topic,
      payload: text.length > 120 ? `${text.slice(0, 120)}…` : text,
      err: e.message,
      ...(seen?.suppressed ? { suppressedSinceLast: seen.suppressed } : {}),
    });
  }

  private property(p: Prop): Prop {
    const known = this.props.find((x) => x.name === p.name);
    if (!known) throw new Error(`property ${p.name} was not given when device ${this.deviceId} was opened`);
    return known;
  }

  read(p: Prop): Promise<RawValue> {
    const prop = this.property(p);
    if (this.closed) return Promise.reject(new Error(`device ${this.deviceId}: driver closed`));
    // offline, the last value may be stale: a failed read lets the host see the device as down
    if (!this.client.connected) return Promise.reject(new Error(`device ${this.deviceId}: not connected to the broker`));
    const have = this.last.get(prop.name);
    if (have !== undefined) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const set = this.waiters.get(prop.name) ?? new Set();
      this.waiters.set(prop.name, set);
      const done = (value: RawValue) => {
        clearTimeout(timer);
        set.delete(done);
        resolve(value);
      };
      const timer = setTimeout(() => {
        set.delete(done);
        const why = this.client.connected ? "" : " (not connected to the broker)";
        reject(new Error(`property ${prop.name}: no value on ${prop.visitor.topic} within ${this.protocol.readTimeout} ms${why}`));
      }, this.protocol.readTimeout);
      set.add(done);
    });
  }

  async write(p: Prop, value: RawValue): Promise<void> {
    const prop = this.property(p);
    const { writeTopic, writeTemplate, qos, retain } = prop.visitor;
    if (!writeTopic) throw new Error(`property ${prop.name}: no writeTopic to publish desired values to`);
    if (!this.client.connected) throw new Error(`device ${this.deviceId}: not connected to the broker`);
    await this.client.publishAsync(writeTopic, renderTemplate(writeTemplate, value), { qos: qos as 0 | 1 | 2, retain });
  }

  async subscribe(p: Prop, onValue: Subscriber): Promise<() => Promise<void>> {
    const prop = this.property(p);
    const set = this.subscribers.get(prop.name) ?? new Set();
    this.subscribers.set(prop.name, set);
    const fn: Subscriber = (x) => onValue(x);
    set.add(fn);
    const last = this.last.get(prop.name);
    if (last !== undefined) queueMicrotask(() => set.has(fn) && onValue(last));
    return async () => void set.delete(fn);
  }

  async health() {
    return this.client.connected ? ("ok" as const) : ("disconnected" as const);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.subscribers.clear();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.client.end(true);
        resolve();
      }, 1000);
      this.client.end(false, {}, () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

async function openDevice(device: { id: string; protocol: MqttProtocol; properties: Prop[] }, ctx: DriverContext): Promise<MqttDriver> {
  const { connect } = await import("mqtt");
  const p = device.protocol;
  const url = brokerUrlOf(p);
  const opts: IClientOptions = {
    clientId: p.clientId ?? `outpost-${device.id.replace(/[^A-Za-z0-9_-]/g, "-")}-${Math.random().toString(16).slice(2, 8)}`,
    username: p.username,
    password: p.password,
    keepalive: p.keepAlive,
    connectTimeout: p.connectTimeout,
    reconnectPeriod: 1000,
    clean: true,
    resubscribe: true,
    queueQoSZero: false,
  };
  const client = connect(url, opts);
  const log = ctx.log;
  await new Promise<void>((resolve, reject) => {
    const finish = (err?: Error) => {
      clearTimeout(timer);
      client.removeListener("connect", onConnect);
      client.removeListener("error", onError);
      ctx.signal.removeEventListener("abort", onAbort);
      if (!err) return resolve();
      client.end(true);
      reject(err);
    };
    const onConnect = () => finish();
    const onError = (e: Error) => finish(new Error(`MQTT broker ${url}: ${e.message}`));
    const onAbort = () => finish(new Error(`closed while connecting to ${url}`));
    const timer = setTimeout(() => finish(new Error(`MQTT broker ${url}: no connection within ${p.connectTimeout} ms`)), p.connectTimeout);
    client.on("connect", onConnect);
    client.on("error", onError);
    ctx.signal.addEventListener("abort", onAbort);
  });
  // after the first connection, errors only show in health() and the log; mqtt.js keeps reconnecting
  let up = true;
  client.on("error", (e) => log.debug("MQTT client error", { device: device.id, err: e.message }));
  client.on("close", () => {
    if (!up) return;
    up = false;
    log.warn("MQTT broker connection lost; reconnecting", { device: device.id, broker: url });
  });
  client.on("connect", () => {
    up = true;
    log.info("MQTT broker connection back", { device: device.id, broker: url });
  });
  const driver = new MqttDriver(client, device.properties, p, log, device.id);
  const topics: Record<string, { qos: 0 | 1 | 2 }> = {};
  for (const prop of device.properties) {
    const q = prop.visitor.qos as 0 | 1 | 2;
    topics[prop.visitor.topic] = { qos: Math.max(topics[prop.visitor.topic]?.qos ?? 0, q) as 0 | 1 | 2 };
  }
  if (Object.keys(topics).length > 0) {
    try {
      const granted = await client.subscribeAsync(topics);
      const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic);
      if (refused.length > 0) throw new Error(`MQTT broker ${url} refused subscriptions to ${refused.join(", ")}`);
    } catch (e) {
      await driver.close();
      throw e;
    }
  }
  log.info("MQTT device connected", { device: device.id, broker: url, topics: Object.keys(topics) });
  return driver;
}

export default defineMapper({
  protocol: "mqtt",
  protocolSchema: MqttProtocolSchema,
  visitorSchema: MqttVisitorSchema,
  open: openDevice,
});
