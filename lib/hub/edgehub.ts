/**
 * EdgeHub: the edge's lean, reconnecting link to CloudHub. Mutual TLS with the node's stored
 * credentials, keepalives as KubeEdge sends them, WebSocket ping/pong to notice a dead link in
 * seconds, exponential back-off with jitter, and a bounded queue while disconnected. Status and
 * twin reports go through a persisted, acked queue instead (lib/edge/upstream.ts) when one is given.
 */
import { WebSocket } from "ws";
import { EventEmitter } from "node:events";
import { FrameError, encodeFrame, newMessage, parseFrame, Op, type Message } from "../message.ts";
import { DEFAULT_PROJECT_ID, edgeGroupFor } from "./constants.ts";
import type { Module, Router } from "../router.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { reliableKey, type UpstreamQueue } from "../edge/upstream.ts";

export interface EdgeHubOptions {
  /** Hub address `host:port`. */
  server: string;
  nodeName: string;
  projectId?: string;
  credentials: () => { caPem: string; certPem: string; keyPem: string };
  log: Logger;
  metrics: Metrics;
  heartbeatMs: number;
  /** WebSocket ping period and how long a pong may take before the link counts as dead. */
  pingIntervalMs: number;
  pongTimeoutMs: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  queueLimit: number;
  maxFrameBytes: number;
  /** Persisted queue for the messages that must reach the cloud (acked); others stay in memory. */
  reliable?: UpstreamQueue;
  /** On stop: how long to wait for the cloud to ack what is pending in `reliable` (default 2000 ms). */
  shutdownAckMs?: number;
}

export interface EdgeHubEvents {
  connected: [];
  disconnected: [reason: string];
  /** Every valid downstream message, after the router got it. */
  message: [msg: Message];
}

export class EdgeHub extends EventEmitter<EdgeHubEvents> implements Module {
  readonly name = "websocket";
  readonly group = "hub";
  private ws?: WebSocket;
  private router?: Router;
  private stopped = false;
  private attempt = 0;
  private readonly queue: string[] = [];
  private timers: ReturnType<typeof setTimeout>[] = [];
  private redial?: ReturnType<typeof setTimeout>;
  private lastPong = 0;
  private readonly messagesIn;
  private readonly messagesOut;
  private readonly dropped;
  private readonly badFrames;
  connected = false;

  constructor(private readonly opts: EdgeHubOptions) {
    super();
    const m = opts.metrics;
    m.gauge("outpost_edgehub_connected", "1 while the hub link is up.", () => (this.connected ? 1 : 0));
    m.gauge("outpost_edgehub_queue_length", "Upstream messages waiting for the link.", () => this.queue.length);
    const messages = m.counter("outpost_edgehub_messages_total", "Hub messages by direction (in = cloud to edge).");
    this.messagesIn = messages.with({ direction: "in" });
    this.messagesOut = messages.with({ direction: "out" });
    this.dropped = m.counter("outpost_edgehub_dropped_total", "Upstream messages dropped because the queue was full.");
    this.badFrames = m.counter("outpost_edgehub_bad_frames_total", "Downstream frames dropped as malformed.");
  }

  start({ router }: { router: Router }): void {
    this.router = router;
    this.dial();
  }

  /** A time (ms since epoch) stop() must not wait past; edgecore sets it so its whole shutdown stays within 5 s. */
  stopDeadline?: number;

  /**
   * Stops dialling; while the link is up, first waits (bounded by shutdownAckMs and stopDeadline)
   * for the cloud to ack the pending statuses and twin reports, so a clean stop leaves nothing to
   * resend. What is still unacked stays in edgecore.db and goes at the next start.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.redial);
    const reliable = this.opts.reliable;
    const deadline = Math.min(Date.now() + (this.opts.shutdownAckMs ?? 2000), this.stopDeadline ?? Infinity);
    if (reliable && reliable.size > 0 && this.isUp()) {
      const pending = reliable.size;
      while (reliable.size > 0 && this.isUp() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      this.opts.log.info("shutdown: pending reports", { before: pending, unacked: reliable.size });
    }
    this.clearLinkTimers();
    this.ws?.close(1001, "edgecore stopping");
  }

  /** Messages from edge modules to the cloud. */
  handle(msg: Message): void {
    this.send(msg);
  }

  /**
   * Sends now when connected, else queues: reports that must arrive in the persisted queue (sent
   * again until acked), keepalives nowhere, the rest in memory (bounded: oldest dropped first).
   */
  send(msg: Message): void {
    const reliable = this.opts.reliable;
    const key = reliable ? reliableKey(msg) : null;
    if (reliable && key !== null) {
      const out = reliable.put(key, msg);
      if (out && this.isUp()) this.write(out);
      return;
    }
    const frame = encodeFrame(msg);
    if (this.isUp()) {
      this.ws!.send(frame);
      this.messagesOut.inc();
      return;
    }
    if (msg.route.operation === Op.keepalive) return; // a stale keepalive means nothing later
    if (this.queue.length >= this.opts.queueLimit) {
      this.queue.shift();
      this.dropped.inc();
    }
    this.queue.push(frame);
  }

  private isUp(): boolean {
    return this.connected && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Writes a message of the reliable queue and notes it as sent in this connection. */
  private write(msg: Message): void {
    this.ws!.send(encodeFrame(msg));
    this.messagesOut.inc();
    this.opts.reliable?.sent(msg);
  }

  private dial(): void {
    if (this.stopped) return;
    const { server, nodeName } = this.opts;
    const project = this.opts.projectId ?? DEFAULT_PROJECT_ID;
    let creds;
    try {
      creds = this.opts.credentials();
    } catch (e) {
      this.opts.log.error("cannot load node credentials", { err: String(e) });
      return this.scheduleRedial();
    }
    const ws = new WebSocket(`wss://${server}/${project}/${nodeName}/events`, {
      headers: { node_id: nodeName, project_id: project, Connectionuse: "msg" },
      ca: creds.caPem,
      cert: creds.certPem,
      key: creds.keyPem,
      handshakeTimeout: 10_000,
      maxPayload: this.opts.maxFrameBytes,
      perMessageDeflate: false,
    });
    this.ws = ws;
    ws.on("open", () => this.onOpen(ws));
    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => this.onData(data));
    ws.on("pong", () => (this.lastPong = Date.now()));
    ws.on("error", (err: Error) => this.opts.log.debug("hub link error", { err: err.message }));
    ws.on("unexpected-response", (_req: unknown, res: { statusCode?: number }) => {
      this.opts.log.warn("cloud refused the hub connection", { status: res.statusCode });
      ws.terminate();
    });
    ws.on("close", (code: number, reason: Buffer) => this.onClose(ws, code, String(reason ?? "")));
  }

  /**
   * Dials a new link (with the credentials as they are now, e.g. a renewed certificate) while the
   * current one stays up; when the new one is open the old one is closed (the cloud replaces the
   * node's session). No gap without a link.
   */
  reconnect(reason: string): void {
    if (this.stopped) return;
    if (!this.isUp()) return; // a dial is under way or scheduled, and it loads the credentials afresh
    this.opts.log.info("re-dialling the cloud", { reason });
    this.retiring = this.ws;
    this.dial();
  }

  private retiring?: WebSocket;

  private onOpen(ws: WebSocket): void {
    if (ws !== this.ws) return;
    this.clearLinkTimers(); // a replaced link's timers
    if (this.retiring) {
      this.retiring.close(1000, "replaced by a new link");
      this.retiring = undefined;
    }
    this.connected = true;
    this.attempt = 0;
    this.lastPong = Date.now();
    this.opts.log.info("connected to cloud", { server: this.opts.server, node: this.opts.nodeName });
    this.send(newMessage({ source: "websocket", group: "resource", operation: Op.keepalive, resource: "node" }, "ping"));
    for (const msg of this.opts.reliable?.connected() ?? []) this.write(msg);
    for (const frame of this.queue.splice(0)) {
      ws.send(frame);
      this.messagesOut.inc();
    }
    const reliable = this.opts.reliable;
    if (reliable)
      this.timers.push(
        setInterval(() => {
          if (this.isUp()) for (const msg of reliable.due()) this.write(msg);
        }, Math.min(1000, reliable.retryMs)),
      );
    this.timers.push(setInterval(() => this.send(newMessage({ source: "websocket", group: "resource", operation: Op.keepalive, resource: "node" }, "ping")), this.opts.heartbeatMs));
    this.timers.push(
      setInterval(() => {
        if (Date.now() - this.lastPong > this.opts.pingIntervalMs + this.opts.pongTimeoutMs) {
          this.opts.log.warn("no pong from cloud in time, dropping the link");
          ws.terminate();
          return;
        }
        ws.ping();
      }, this.opts.pingIntervalMs),
    );
    this.emit("connected");
  }

  private onData(data: Buffer | ArrayBuffer | Buffer[]): void {
    const text = Buffer.isBuffer(data) ? data.toString("utf8") : Array.isArray(data) ? Buffer.concat(data).toString("utf8") : Buffer.from(data).toString("utf8");
    if (text.length < 4 && text.trim() === "") return;
    let msg: Message;
    try {
      msg = parseFrame(text);
    } catch (e) {
      this.badFrames.inc();
      this.opts.log.warn("malformed frame from cloud dropped", { err: e instanceof FrameError ? e.message : String(e) });
      return;
    }
    this.messagesIn.inc();
    const group = edgeGroupFor(msg.route.group);
    if (msg.route.operation === Op.response && msg.header.parent_msg_id && this.opts.reliable?.ack(msg.header.parent_msg_id)) {
      // the cloud has a report of ours: it left the persisted queue
    } else if (this.router?.resolveReply(msg)) {
      // a reply a module was waiting for
    } else if (group) this.router?.sendToGroup(group, msg);
    else this.opts.log.debug("downstream message for no module", { group: msg.route.group, resource: msg.route.resource });
    this.emit("message", msg);
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.ws) return;
    const was = this.connected;
    this.connected = false;
    this.clearLinkTimers();
    if (was) {
      this.opts.log.warn("link to cloud lost", { code, reason });
      this.emit("disconnected", reason || String(code));
    }
    this.scheduleRedial();
  }

  private scheduleRedial(): void {
    if (this.stopped) return;
    const { reconnectBaseMs: base, reconnectMaxMs: max } = this.opts;
    const ceiling = Math.min(max, base * 1.5 ** this.attempt++);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.redial = setTimeout(() => this.dial(), delay);
  }

  private clearLinkTimers(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }
}
