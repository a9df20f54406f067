/**
 * CloudHub: accepts edge nodes over WebSocket on mutual TLS (KubeEdge's wire format), keeps one
 * session per node, routes upstream messages into the cloud router and sends downstream ones.
 */
import tls from "node:tls";
import { EventEmitter } from "node:events";
import { readRequest, writeResponse, HttpParseError } from "../net/http1.ts";
import { WsConnection, CloseCode } from "./wsconn.ts";
import { FrameError, encodeFrame, parseFrame, nodeResource, splitNodeResource, Op, type Message } from "../message.ts";
import { NODE_CN_PREFIX, NODES_ORG, NODE_NAME_RE, cloudGroupFor } from "./constants.ts";
import type { Router, Module } from "../router.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Listen } from "../config.ts";
import { TokenBucket } from "./ratelimit.ts";

export interface CloudHubOptions {
  listen: Listen;
  tls: { certPem: string; keyPem: string; caPem: string };
  log: Logger;
  metrics: Metrics;
  maxFrameBytes: number;
  /** A session without any message for this long is closed (KubeEdge: 30 s). */
  keepaliveTimeoutMs: number;
  /** Unsent bytes a session may hold before its node counts as a slow consumer (default 4 × maxFrameBytes). */
  maxBufferedBytes?: number;
  /**
   * Checked after the certificate and node_id match: a reason to refuse this node's certificate
   * (`reason="revoked"`), or null to admit it. cloudcore plugs in NodeRevocation here.
   */
  admit?: (node: string, cert: { notBefore: Date; notAfter: Date }) => string | null;
  /**
   * Messages a second each session may send, and the burst it may save up. Past it the hub stops
   * reading that socket until the bucket refills (TCP back-pressure: nothing is dropped). Unset or
   * rate 0: no limit.
   */
  rateLimit?: { rate: number; burst: number };
}

export interface Session {
  node: string;
  conn: WsConnection;
  remote: string;
  connectedAt: number;
  lastSeen: number;
  /** When the session's client certificate expires (ms): the session is closed then. */
  certNotAfter: number;
  /** Per-session rate limit (absent when off) and whether reading is paused for it. */
  bucket?: TokenBucket;
  throttled?: boolean;
}

export interface CloudHubEvents {
  connected: [node: string];
  disconnected: [node: string];
  /** An edge acknowledged the cloud message `parentId` (`operation: response`); the outbox listens. */
  ack: [node: string, parentId: string];
  /** Every valid upstream message, after the router got it (tests, benches). */
  message: [node: string, msg: Message];
}

export class CloudHub extends EventEmitter<CloudHubEvents> implements Module {
  readonly name = "cloudhub";
  readonly group = "cloudhub";
  private server?: tls.Server;
  private router?: Router;
  private readonly sessions = new Map<string, Session>();
  private sweeper?: ReturnType<typeof setInterval>;
  private readonly messagesIn;
  private readonly messagesOut;
  private readonly refusals;
  private readonly badFrames;
  private readonly slowConsumers;
  private readonly throttledMessages;
  port = 0;

  constructor(private readonly opts: CloudHubOptions) {
    super();
    const m = opts.metrics;
    m.gauge("outpost_cloudhub_connected_nodes", "Edge nodes with an open hub session.", () => this.sessions.size);
    const messages = m.counter("outpost_cloudhub_messages_total", "Hub messages by direction (in = edge to cloud).");
    this.messagesIn = messages.with({ direction: "in" });
    this.messagesOut = messages.with({ direction: "out" });
    this.refusals = m.counter("outpost_cloudhub_refused_connections_total", "Connections refused, by reason.");
    this.slowConsumers = m.counter("outpost_cloudhub_slow_consumers_total", "Sessions closed because the node did not read its messages.");
    this.throttledMessages = m.counter("outpost_cloudhub_throttled_total", "Times an edge session found its rate-limit bucket empty; each pauses reading it until a batch of tokens is back.").with({});
    this.badFrames = m.counter("outpost_cloudhub_bad_frames_total", "Upstream frames dropped as malformed.");
  }

  async start({ router }: { router: Router }): Promise<void> {
    this.router = router;
    const { certPem, keyPem, caPem } = this.opts.tls;
    const server = tls.createServer({ cert: certPem, key: keyPem, ca: caPem, requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2" }, (sock) => void this.onSecureConnection(sock));
    server.on("tlsClientError", (err, sock) => {
      this.refuse("tls", `TLS handshake failed from ${sock.remoteAddress}: ${err.message}`);
      sock.destroy();
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.listen.port, this.opts.listen.host, () => resolve());
    });
    const addr = server.address();
    this.port = typeof addr === "object" && addr ? addr.port : this.opts.listen.port;
    this.sweeper = setInterval(() => this.sweep(), Math.min(1000, this.opts.keepaliveTimeoutMs / 3));
    this.sweeper.unref?.();
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    // stop listening first: an edge redials within a fraction of a second and must not land on a
    // hub that is going away
    this.stopping = true;
    const closed = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const s of this.sessions.values()) s.conn.close(CloseCode.goingAway, "cloudcore stopping");
    await closed;
  }

  private stopping = false;

  /** Cloud-internal messages carry `node/<id>/<resource>`: strip the prefix and send. */
  handle(msg: Message): void {
    const target = splitNodeResource(msg.route.resource);
    if (!target) return this.opts.log.warn("message without node/<id>/ prefix dropped", { resource: msg.route.resource });
    this.sendToNode(target.node, { ...msg, route: { ...msg.route, resource: target.resource } });
  }

  /** Closes `node`'s session (policy violation, with `reason`); false when it has none. */
  disconnect(node: string, reason: string): boolean {
    const s = this.sessions.get(node);
    if (!s) return false;
    this.opts.log.warn("closing the session of a node", { node, reason });
    s.conn.close(CloseCode.policy, reason.slice(0, 120));
    return true;
  }

  isConnected(node: string): boolean {
    return this.sessions.has(node);
  }

  connectedNodes(): string[] {
    return [...this.sessions.keys()];
  }

  /**
   * Sends a wire-form message to a node. Returns false when the node has no session. A node that
   * does not read (its unsent bytes pass maxBufferedBytes) is disconnected instead of letting the
   * cloud's memory grow: what it missed is still in the outbox and goes again when it is back.
   */
  sendToNode(node: string, msg: Message): boolean {
    const s = this.sessions.get(node);
    if (!s || !s.conn.isOpen) return false;
    if (s.conn.socket.writableLength > this.maxBuffered) {
      this.slowConsumers.inc();
      this.opts.log.warn("node does not read its messages, disconnecting it", { node, bufferedBytes: s.conn.socket.writableLength });
      s.conn.terminate();
      return false;
    }
    s.conn.send(encodeFrame(msg));
    this.messagesOut.inc();
    return true;
  }

  private get maxBuffered(): number {
    return this.opts.maxBufferedBytes ?? 4 * this.opts.maxFrameBytes;
  }

  private refuse(reason: string, line: string): void {
    this.refusals.inc({ reason });
    this.opts.log.warn(`connection refused: ${line}`);
  }

  private async onSecureConnection(sock: tls.TLSSocket): Promise<void> {
    sock.on("error", () => {});
    if (this.stopping) return void sock.destroy();
    const remote = `${sock.remoteAddress}:${sock.remotePort}`;
    let req;
    try {
      req = await readRequest(sock, { maxBodyBytes: 0, timeoutMs: 10_000 });
    } catch (e) {
      const status = e instanceof HttpParseError ? e.status : 400;
      this.refuse("bad-request", `${remote}: ${(e as Error).message}`);
      if (!sock.destroyed) writeResponse(sock, status, `${(e as Error).message}\n`);
      return;
    }
    const deny = (status: number, reason: string, why: string) => {
      this.refuse(reason, `${remote}: ${why}`);
      writeResponse(sock, status, `${why}\n`);
    };
    if (!sock.authorized && String(sock.authorizationError) === "CERT_HAS_EXPIRED") return deny(401, "cert-expired", "client certificate has expired: join again with a token");
    if (!sock.authorized) return deny(401, "no-client-cert", `client certificate required (${String(sock.authorizationError ?? "none presented")})`);
    if (req.method !== "GET" || req.headers.upgrade?.toLowerCase() !== "websocket") return deny(426, "not-websocket", "WebSocket upgrade required");
    const key = req.headers["sec-websocket-key"];
    if (!key || req.headers["sec-websocket-version"] !== "13") return deny(400, "bad-handshake", "bad WebSocket handshake");
    const node = req.headers["node_id"] ?? pathNode(req.url);
    if (!node || !NODE_NAME_RE.test(node)) return deny(400, "no-node-id", "missing or invalid node_id header");
    const subject = sock.getPeerCertificate().subject as unknown as Record<string, string | string[]> | undefined;
    const cn = first(subject?.CN);
    const org = subject?.O;
    if (cn !== NODE_CN_PREFIX + node || !(Array.isArray(org) ? org.includes(NODES_ORG) : org === NODES_ORG))
      return deny(403, "identity-mismatch", `certificate CN "${cn ?? ""}" does not match node_id "${node}"`);
    const peer = sock.getPeerCertificate();
    const validity = { notBefore: new Date(peer.valid_from), notAfter: new Date(peer.valid_to) };
    if (this.opts.admit) {
      const why = this.opts.admit(node, validity);
      if (why) return deny(403, "revoked", why);
    }

    sock.setNoDelay(true);
    const conn = WsConnection.accept(sock, key, req.rest, this.opts.maxFrameBytes);
    const old = this.sessions.get(node);
    if (old) {
      this.opts.log.info("node reconnected, replacing its old session", { node, remote });
      this.sessions.delete(node);
      old.conn.close(CloseCode.policy, "replaced by a new connection");
    }
    const certNotAfter = Number.isNaN(validity.notAfter.getTime()) ? Infinity : validity.notAfter.getTime();
    const session: Session = { node, conn, remote, connectedAt: Date.now(), lastSeen: Date.now(), certNotAfter };
    const rl = this.opts.rateLimit;
    if (rl && rl.rate > 0) session.bucket = new TokenBucket(rl.rate, Math.max(1, rl.burst));
    this.sessions.set(node, session);
    conn.on("message", (text) => this.onFrame(session, text));
    conn.on("close", (code, reason) => {
      if (this.sessions.get(node) === session) {
        this.sessions.delete(node);
        this.opts.log.info("node disconnected", { node, code, reason });
        this.emit("disconnected", node);
      }
    });
    this.opts.log.info("node connected", { node, remote, certSerial: peer.serialNumber, certNotAfter: Number.isFinite(certNotAfter) ? validity.notAfter.toISOString() : "unknown" });
    this.emit("connected", node);
  }

  private onFrame(session: Session, text: string): void {
    session.lastSeen = Date.now();
    if (session.bucket) this.limitRate(session);
    if (text.length < 4 && text.trim() === "") return; // KubeEdge's edge sends an empty message on shutdown
    let msg: Message;
    try {
      msg = parseFrame(text);
    } catch (e) {
      this.badFrames.inc();
      this.opts.log.warn("malformed frame dropped", { node: session.node, err: e instanceof FrameError ? e.message : String(e) });
      return;
    }
    this.messagesIn.inc();
    if (msg.route.operation === Op.keepalive) return;
    const internal: Message = { ...msg, route: { ...msg.route, resource: nodeResource(session.node, msg.route.resource) } };
    if (msg.route.operation === Op.response && msg.header.parent_msg_id) {
      // an ack of a cloud message: for the outbox (or a waiter), not for the controllers
      this.emit("ack", session.node, msg.header.parent_msg_id);
      this.router?.resolveReply(internal);
    } else this.router?.sendToGroup(cloudGroupFor(msg.route.source, msg.route.operation), internal);
    this.emit("message", session.node, msg);
  }

  /**
   * Spends a token for this message; when the bucket is empty, stops taking frames from this session
   * (the ones already read stay buffered, the socket is paused, the edge's writes back up in TCP)
   * until the bucket holds a small batch again. Nothing is dropped.
   */
  private limitRate(session: Session): void {
    const bucket = session.bucket!;
    const waitMs = bucket.take();
    if (waitMs <= 0) return;
    this.throttledMessages.inc();
    if (session.throttled) return;
    session.throttled = true;
    session.conn.hold();
    // wait for a batch rather than one token: one timer per batch, not per message
    const batch = Math.min(bucket.burst, Math.max(1, bucket.rate / 20));
    setTimeout(() => {
      session.throttled = false;
      session.conn.release();
    }, Math.ceil(waitMs + (batch * 1000) / bucket.rate));
  }

  private sweep(): void {
    const now = Date.now();
    const deadline = now - this.opts.keepaliveTimeoutMs;
    for (const s of this.sessions.values()) {
      if (s.certNotAfter <= now) {
        this.opts.log.warn("client certificate expired, closing session", { node: s.node });
        s.conn.close(CloseCode.policy, "client certificate expired");
        continue;
      }
      if (s.lastSeen < deadline) {
        this.opts.log.warn("no keepalive in time, closing session", { node: s.node });
        s.conn.terminate();
      }
    }
  }
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** `/<projectID>/<node>/events` → node, for clients that omit the node_id header. */
function pathNode(url: string): string | undefined {
  const m = /^\/[^/]+\/([^/]+)\/events(?:\?|$)/.exec(url);
  return m?.[1];
}

