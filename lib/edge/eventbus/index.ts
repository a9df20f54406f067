/**
 * EventBus (module `eventbus`, group `bus`): the edge's MQTT side, as KubeEdge's.
 *
 *  - `internal`: an embedded aedes broker listening on `listen` (default 127.0.0.1:1883, port 0 =
 *    pick one; `address` tells which), used in process (no client loop-back);
 *  - `mqtt://host:port`: a client of an external broker (e.g. mosquitto), KubeEdge's clean session.
 *
 * It subscribes KubeEdge's topics. Device and membership requests are checked (JSON + shape) and
 * handed to the twin group with the decoded payload as content and the topic as resource; bad ones
 * are answered here with KubeEdge's error result `{event_id, timestamp, code: 400, reason}` on the
 * matching result topic. `$hw/events/upload/#` and `SYS/dis/upload_records` go up to the cloud
 * (op `upload`, group `user`, resource = topic). Router messages with op `publish` (resource =
 * topic) are published; `subscribe` / `unsubscribe` add or drop extra topics, forwarded up too.
 */
import { createServer, type Server } from "node:net";
// each mode imports its own stack when it starts: the mqtt client (and its socks/lru-cache/worker-timers) only for an external broker
import type { Aedes, AedesPublishPacket } from "aedes";
import type { MqttClient } from "mqtt";
import * as v from "valibot";
import { MembershipGetSchema, StateUpdateSchema, TwinGetSchema, TwinUpdateSchema, describeIssues, type ErrorResult } from "../../../schemas/devices.ts";
import { parseListen } from "../../config.ts";
import { dialAddress } from "../../daemon.ts";
import { newMessage, type Message } from "../../message.ts";
import type { Logger } from "../../log.ts";
import type { Metrics } from "../../metrics.ts";
import type { Module, ModuleContext } from "../../router.ts";
import { NodeAction, TWIN_SUBSCRIPTIONS, TwinAction, deviceTopic, isUploadTopic, nodeTopic, parseDeviceTopic, parseNodeTopic } from "../devicetwin/topics.ts";

export interface EventBusOptions {
  /** `internal` (embedded broker, the default) or `mqtt://HOST:PORT` (external broker). */
  mqtt?: string;
  /** Embedded broker address HOST:PORT (default 127.0.0.1:1883; port 0 = any free port). */
  listen?: string;
  /** QoS for publishes and subscriptions (KubeEdge: 0 internal, 1 with an external broker). */
  qos?: 0 | 1;
  /** Upstream module (default `websocket`). */
  hubModule?: string;
  /** Group that receives device-twin requests (default `twin`). */
  twinGroup?: string;
  /**
   * Hands device-twin requests straight to the twin (edgecore passes its DeviceTwin), a drained
   * slice at a time, so the twin can store a burst in one transaction. Default: the router.
   */
  twin?: { handleBatch(msgs: Message[]): void };
  /** Largest payload accepted for a twin request, bytes (default 1 MiB). */
  maxPayloadBytes?: number;
  /** MQTT messages waiting for the twin; past this a burst is shed (default INBOUND_LIMIT). */
  inboundLimit?: number;
  metrics?: Metrics;
  log?: Logger;
}

type Check = { resultAction: string; schema: v.GenericSchema; node?: boolean };

/** Which requests are checked here, and where their error result goes. */
const DEVICE_CHECKS: Record<string, Check> = {
  [TwinAction.update]: { resultAction: TwinAction.updateResult, schema: TwinUpdateSchema },
  [TwinAction.get]: { resultAction: TwinAction.getResult, schema: TwinGetSchema },
  [TwinAction.stateUpdate]: { resultAction: TwinAction.stateUpdateResult, schema: StateUpdateSchema },
};

/** MQTT messages waiting for the twin; past this a burst is shed (counted and logged). Default of --eventbus-queue-limit. */
export const INBOUND_LIMIT = 100_000;

export class EventBus implements Module {
  readonly name = "eventbus";
  readonly group = "bus";

  private ctx?: ModuleContext;
  private log?: Logger;
  private broker?: Aedes;
  private server?: Server;
  private client?: MqttClient;
  private boundPort = 0;
  private readonly extraTopics = new Set<string>();
  /**
   * The broker's delivery callback. Handling a message publishes more (results, documents, deltas),
   * and doing that inside the broker's emitter nests emits; holding the callback instead fills the
   * emitter's concurrency slots, and its backlog then drains by recursion. Either way a burst
   * overflowed the stack inside aedes. So the message is queued, the broker is released at once,
   * and the queue is worked off on later turns, in order and in bounded slices.
   */
  private readonly inbound: [string, Buffer][] = [];
  private draining = false;
  private droppedInbound = 0;
  /** Messages the embedded broker has handed over (for stop()). */
  private delivered = 0;
  private readonly deliver = (packet: AedesPublishPacket, cb: () => void) => {
    this.delivered++;
    if (this.inbound.length >= (this.opts.inboundLimit ?? INBOUND_LIMIT)) {
      this.counters?.dropped.inc();
      if (this.droppedInbound++ % 1000 === 0) this.log?.warn("mqtt inbound queue full, message dropped", { topic: packet.topic, dropped: this.droppedInbound });
    } else this.inbound.push([packet.topic, typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload]);
    if (!this.draining) {
      this.draining = true;
      setImmediate(this.drainInbound);
    }
    cb();
  };
  /** Twin requests of the slice being drained, for `opts.twin`. */
  private slice?: Message[];
  private readonly drainInbound = () => {
    this.drainSlice();
    if (this.inbound.length > 0) setImmediate(this.drainInbound);
    else this.draining = false;
  };
  /** Works off up to 500 queued messages; their twin requests go to the twin together. */
  private drainSlice(): void {
    const batch: Message[] = (this.slice = []);
    try {
      for (let n = 0; n < 500 && this.inbound.length > 0; n++) {
        const [topic, payload] = this.inbound.shift()!;
        this.onMessage(topic, payload);
      }
    } finally {
      this.slice = undefined;
    }
    if (batch.length) this.handToTwin(batch);
  }
  private readonly counters;

  constructor(private readonly opts: EventBusOptions = {}) {
    this.log = opts.log;
    const m = opts.metrics;
    this.counters = m
      ? {
          received: m.counter("outpost_eventbus_received_total", "MQTT messages the EventBus received"),
          published: m.counter("outpost_eventbus_published_total", "MQTT messages the EventBus published"),
          rejected: m.counter("outpost_eventbus_rejected_total", "device-twin requests refused as malformed"),
          dropped: m.counter("outpost_eventbus_dropped_total", "MQTT messages dropped because the EventBus inbound queue was full").with({}),
        }
      : undefined;
  }

  /** `internal` or the external broker URL. */
  get mode(): "internal" | "external" {
    return !this.opts.mqtt || this.opts.mqtt === "internal" ? "internal" : "external";
  }

  /** Where MQTT clients connect: `host:port` of the embedded broker, or the external broker URL. */
  get address(): string {
    if (this.mode === "external") return this.opts.mqtt!;
    const l = parseListen(this.opts.listen ?? "127.0.0.1:1883");
    return dialAddress(l, this.boundPort || l.port);
  }

  /** The embedded broker's real port (after start). */
  get port(): number {
    return this.boundPort;
  }

  async start(ctx: ModuleContext): Promise<void> {
    this.ctx = ctx;
    this.log = this.opts.log ?? ctx.log;
    if (this.mode === "internal") await this.startInternal();
    else await this.startExternal(this.opts.mqtt!);
  }

  private async startInternal(): Promise<void> {
    const listen = parseListen(this.opts.listen ?? "127.0.0.1:1883");
    const { Aedes } = await import("aedes");
    const broker = await Aedes.createBroker();
    this.broker = broker;
    broker.on("clientError", (client, err) => this.log?.debug("mqtt client error", { client: client?.id, err: err.message }));
    const server = createServer(broker.handle as never);
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(listen.port, listen.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.boundPort = (server.address() as { port: number }).port;
    for (const t of TWIN_SUBSCRIPTIONS) await new Promise<void>((r) => broker.subscribe(t, this.deliver, r));
    this.log?.info("embedded MQTT broker listening", { address: this.address });
  }

  private async startExternal(url: string): Promise<void> {
    const { connect } = await import("mqtt");
    const client = connect(url, { clientId: `hub-client-sub-${Date.now()}-${Math.random().toString(16).slice(2, 8)}`, clean: true, reconnectPeriod: 1000, connectTimeout: 5000 });
    this.client = client;
    client.on("message", (topic, payload) => this.onMessage(topic, payload));
    client.on("error", (err) => this.log?.warn("mqtt client error", { err: err.message }));
    let ready!: () => void;
    const subscribed = new Promise<void>((r) => (ready = r));
    client.on("connect", () => {
      const topics = [...TWIN_SUBSCRIPTIONS, ...this.extraTopics];
      client.subscribe(topics, { qos: this.opts.qos ?? 1 }, (err) => {
        if (err) this.log?.warn("mqtt subscribe failed", { err: err.message });
        ready();
      });
      this.log?.info("connected to the MQTT broker", { url });
    });
    // Wait for the first connection and subscription a little; the client keeps retrying if the broker is down.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      subscribed,
      new Promise<void>((r) => {
        timer = setTimeout(() => {
          this.log?.warn("MQTT broker not reachable yet; retrying in the background", { url });
          r();
        }, 5000);
      }),
    ]);
    clearTimeout(timer);
  }

  async stop(): Promise<void> {
    // what MQTT clients published before the stop still reaches the twin (bounded: at most 1 s).
    // aedes acks a QoS 1 publish before it delivers it, so a client may hold its PUBACK while the
    // message is still on its way: wait until deliveries have been quiet for 30 ms (≤ 300 ms).
    const until = Date.now() + 1000;
    if (this.broker) {
      const quietBy = Date.now() + 300;
      let seen = -1;
      for (let quiet = 0; quiet < 3 && Date.now() < quietBy; ) {
        quiet = this.delivered === seen ? quiet + 1 : 0;
        seen = this.delivered;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    while (this.inbound.length > 0 && Date.now() < until) this.drainSlice();
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true).catch(() => {});
    const broker = this.broker;
    this.broker = undefined;
    if (broker) await new Promise<void>((r) => broker.close(() => r()));
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  // ---- router → MQTT ----------------------------------------------------------------------

  handle(msg: Message): void {
    const { operation, resource } = msg.route;
    switch (operation) {
      case "publish":
        if (resource) this.publish(resource, msg.content);
        return;
      case "subscribe":
        if (resource) this.subscribe(resource);
        return;
      case "unsubscribe":
        if (resource) this.unsubscribe(resource);
        return;
      default:
        this.log?.debug("bus message not handled", { operation, resource });
    }
  }

  /** Publishes `payload` (string and bytes as they are, anything else as JSON). */
  publish(topic: string, payload: unknown): Promise<void> {
    const body = typeof payload === "string" ? Buffer.from(payload) : payload instanceof Uint8Array ? Buffer.from(payload) : Buffer.from(JSON.stringify(payload ?? null));
    this.counters?.published.inc();
    const qos = this.opts.qos ?? (this.mode === "internal" ? 0 : 1);
    return new Promise((resolve) => {
      if (this.broker) {
        this.broker.publish({ cmd: "publish", topic, payload: body, qos, retain: false, dup: false }, (err) => {
          if (err) this.log?.warn("mqtt publish failed", { topic, err: err.message });
          resolve();
        });
      } else if (this.client) {
        this.client.publish(topic, body, { qos, retain: false }, (err) => {
          if (err) this.log?.warn("mqtt publish failed", { topic, err: err.message });
          resolve();
        });
      } else resolve();
    });
  }

  private subscribe(topic: string): void {
    if (this.extraTopics.has(topic)) return;
    this.extraTopics.add(topic);
    if (this.broker) this.broker.subscribe(topic, this.deliver, () => {});
    else this.client?.subscribe(topic, { qos: this.opts.qos ?? 1 });
  }

  private unsubscribe(topic: string): void {
    if (!this.extraTopics.delete(topic)) return;
    if (this.broker) this.broker.unsubscribe(topic, this.deliver, () => {});
    else this.client?.unsubscribe(topic);
  }

  // ---- MQTT → router ----------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
    this.counters?.received.inc();
    try {
      this.dispatch(topic, payload);
    } catch (e) {
      this.log?.error("mqtt message dropped", { topic, err: String(e) });
    }
  }

  private dispatch(topic: string, payload: Buffer): void {
    const dt = parseDeviceTopic(topic);
    const nt = dt ? null : parseNodeTopic(topic);
    if (dt || nt) {
      const check = dt ? DEVICE_CHECKS[dt.action] : nt?.action === NodeAction.membershipGet ? { resultAction: NodeAction.membershipGetResult, schema: MembershipGetSchema, node: true } : undefined;
      if (!check) {
        // A device/node topic we do not check (e.g. twin/cloud_updated): the twin decides.
        this.toTwin(topic, payload.toString("utf8"));
        return;
      }
      const resultTopic = dt ? deviceTopic(dt.deviceId, check.resultAction) : nodeTopic(nt!.node, check.resultAction);
      const max = this.opts.maxPayloadBytes ?? 1 << 20;
      if (payload.length > max) return this.reject(resultTopic, "", `payload larger than ${max} bytes`);
      let doc: unknown;
      try {
        doc = JSON.parse(payload.toString("utf8"));
      } catch (e) {
        return this.reject(resultTopic, "", `Unmarshal update request body failed, please check the request: ${(e as Error).message}`);
      }
      const r = v.safeParse(check.schema, doc);
      if (!r.success) {
        const id = doc && typeof doc === "object" && typeof (doc as { event_id?: unknown }).event_id === "string" ? (doc as { event_id: string }).event_id : "";
        return this.reject(resultTopic, id, describeIssues(r.issues));
      }
      this.toTwin(topic, r.output);
      return;
    }
    // Uploads and any extra subscription go to the cloud.
    if (isUploadTopic(topic) || this.extraTopics.size) {
      this.ctx?.router.send(this.opts.hubModule ?? "websocket", newMessage({ source: "bus", group: "user", operation: "upload", resource: topic }, payload.toString("utf8")));
    }
  }

  private toTwin(topic: string, content: unknown): void {
    const msg = newMessage({ source: "eventbus", group: "user", operation: "publish", resource: topic }, content);
    if (!this.opts.twin) this.ctx?.router.sendToGroup(this.opts.twinGroup ?? "twin", msg);
    else if (this.slice) this.slice.push(msg);
    else this.handToTwin([msg]);
  }

  private handToTwin(batch: Message[]): void {
    try {
      this.opts.twin!.handleBatch(batch);
    } catch (e) {
      this.log?.error("device-twin requests dropped", { count: batch.length, err: String(e) });
    }
  }

  private reject(resultTopic: string, eventId: string, reason: string): void {
    this.counters?.rejected.inc();
    this.log?.debug("malformed device-twin request refused", { topic: resultTopic, reason });
    void this.publish(resultTopic, { event_id: eventId, timestamp: Date.now(), code: 400, reason } satisfies ErrorResult);
  }
}
