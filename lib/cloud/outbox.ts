/**
 * The cloud → edge outbox (KubeEdge's ObjectSync idea, kept in cloudcore.db): every object message
 * for a node is stored keyed by (node, resource) before it is sent, compacted to the latest version
 * per object, and removed only when the edge acknowledges it (`operation: response`,
 * `parent_msg_id` = the sent message's id; MetaManager acks after it stored the object). Unacked
 * messages go again after a reconnect and every `retryMs` while connected (after `maxAttempts`
 * the period backs off, doubling up to `maxBackoffMs`). A cloudcore crash loses nothing: pending
 * messages are reloaded at start and sent when their node connects.
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { Op, compareRv, type Message } from "../message.ts";
import type { SqliteDatabase } from "../runtime/index.ts";
import { MsgQueueTable, msgQueueMigration, type QueuedMessage } from "../store/msgqueue.ts";
import type { CloudHub } from "../hub/cloudhub.ts";

export const outboxMigrations = { "0300-outbox": msgQueueMigration("outbox") };

export interface OutboxOptions {
  hub: CloudHub;
  raw: SqliteDatabase;
  log: Logger;
  metrics: Metrics;
  /** Pending messages kept per node; past it the oldest non-delete one is dropped (default 10,000). */
  limitPerNode?: number;
  /** Resend period for an unacked message (default 5 s, KubeEdge's). */
  retryMs?: number;
  /** Resends at the plain period before backing off (default 4, KubeEdge's). */
  maxAttempts?: number;
  maxBackoffMs?: number;
}

export interface SendOptions {
  /** Compaction key (default: the message's resource), for messages whose resource names no single object. */
  key?: string;
  /** Combines a pending message with its replacement (e.g. partial updates), instead of replacing it. */
  merge?: (pending: Message, next: Message) => Message;
}

interface Entry extends QueuedMessage {
  attempts: number;
  nextAt: number;
  /** The node session the message was last sent in (-1: not sent yet). */
  epoch: number;
}

interface NodeBox {
  entries: Map<string, Entry>;
  /** msg_id → key of the pending entries, for acks. */
  ids: Map<string, string>;
  /** Bumped on every connect, so each pending message goes once per session (then on the timer). */
  epoch: number;
  overflowed: boolean;
}

/** What a new message for an object does to the pending one: replace it, leave it, or it is the same. */
export function compaction(next: Message, pending: Message): "replace" | "keep" | "same" {
  const nextDelete = next.route.operation === Op.delete;
  const pendingDelete = pending.route.operation === Op.delete;
  const cmp = compareRv(next.header.resourceversion, pending.header.resourceversion);
  if (nextDelete) return pendingDelete && cmp === 0 ? "same" : "replace"; // a delete replaces anything
  if (pendingDelete) return cmp === undefined || cmp > 0 ? "replace" : "keep"; // only a newer object beats a delete
  if (cmp !== undefined && cmp < 0) return "keep"; // stale
  if (cmp === 0 && next.route.operation === pending.route.operation && JSON.stringify(next.content) === JSON.stringify(pending.content)) return "same";
  return "replace";
}

export class Outbox {
  private readonly table: MsgQueueTable;
  private readonly nodes = new Map<string, NodeBox>();
  private timer?: ReturnType<typeof setInterval>;
  private readonly limit: number;
  private readonly retryMs: number;
  private readonly maxAttempts: number;
  private readonly maxBackoffMs: number;
  private readonly depth;
  private readonly sent;
  private readonly resent;
  private readonly acked;
  private readonly compacted;
  private readonly dropped;
  private droppedLogged = 0;

  constructor(private readonly opts: OutboxOptions) {
    this.table = new MsgQueueTable(opts.raw, "outbox");
    this.limit = opts.limitPerNode ?? 10_000;
    this.retryMs = opts.retryMs ?? 5000;
    this.maxAttempts = opts.maxAttempts ?? 4;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
    const m = opts.metrics;
    this.depth = m.gauge("outpost_cloud_outbox_pending", "Messages waiting for an edge's ack, per node.");
    this.sent = m.counter("outpost_cloud_outbox_sent_total", "Outbox messages sent (first send in a session).").with({});
    this.resent = m.counter("outpost_cloud_outbox_resends_total", "Outbox messages sent again because no ack came in time.").with({});
    this.acked = m.counter("outpost_cloud_outbox_acked_total", "Outbox messages acknowledged by their edge.").with({});
    this.compacted = m.counter("outpost_cloud_outbox_compacted_total", "Pending messages replaced by a newer version of the same object.").with({});
    this.dropped = m.counter("outpost_cloud_outbox_dropped_total", "Pending messages dropped because a node's outbox was full.").with({});
  }

  /** Loads what a previous run left pending and starts acking, flushing and resending. */
  start(): void {
    let n = 0;
    for (const q of this.table.load()) {
      const box = this.box(q.scope);
      box.entries.set(q.key, { ...q, attempts: 0, nextAt: 0, epoch: -1 });
      box.ids.set(q.msg.header.msg_id, q.key);
      n++;
    }
    for (const node of this.nodes.keys()) this.updateDepth(node);
    if (n) this.opts.log.info("outbox loaded", { pending: n, nodes: this.nodes.size });
    const { hub } = this.opts;
    hub.on("ack", (node, parentId) => this.onAck(node, parentId));
    hub.on("connected", (node) => this.onConnected(node));
    for (const node of hub.connectedNodes()) this.onConnected(node);
    this.timer = setInterval(() => this.tick(), Math.min(1000, this.retryMs));
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Drops everything pending for `node` (a revoked node: it is no longer in the cluster). */
  discard(node: string): void {
    const box = this.nodes.get(node);
    if (!box) return;
    for (const key of box.entries.keys()) this.table.remove(node, key);
    this.nodes.delete(node);
    this.depth.set(0, { node });
  }

  /** Messages pending for `node` (tests, metrics). */
  pending(node: string): number {
    return this.nodes.get(node)?.entries.size ?? 0;
  }

  /**
   * Stores `msg` (wire form: `<ns>/<type>/<name>`) for `node`, compacting with what is pending for
   * the same resource (or `opts.key`), and sends it when the node is connected. Returns false when it was stale.
   */
  send(node: string, msg: Message, opts: SendOptions = {}): boolean {
    const key = opts.key ?? msg.route.resource;
    const box = this.box(node);
    const old = box.entries.get(key);
    if (old) {
      const verdict = compaction(msg, old.msg);
      if (verdict === "keep") return false;
      if (verdict === "replace" && opts.merge) msg = opts.merge(old.msg, msg);
      if (verdict === "same") {
        // pending already: it goes with the flush of this session or on the timer, not twice
        if (old.epoch !== box.epoch) this.transmit(node, box, old, false);
        return true;
      }
      this.compacted.inc();
      box.entries.delete(key);
      box.ids.delete(old.msg.header.msg_id);
    } else if (box.entries.size >= this.limit) {
      this.evict(node, box);
    }
    const entry: Entry = { ...this.table.upsert(node, key, msg), attempts: 0, nextAt: 0, epoch: -1 };
    box.entries.set(key, entry);
    box.ids.set(msg.header.msg_id, key);
    this.updateDepth(node);
    this.transmit(node, box, entry, false);
    return true;
  }

  private box(node: string): NodeBox {
    let b = this.nodes.get(node);
    if (!b) this.nodes.set(node, (b = { entries: new Map(), ids: new Map(), epoch: 0, overflowed: false }));
    return b;
  }

  /** Full: drop the oldest message that is not a delete (deletes are never dropped). */
  private evict(node: string, box: NodeBox): void {
    for (const [key, e] of box.entries) {
      if (e.msg.route.operation === Op.delete) continue;
      box.entries.delete(key);
      box.ids.delete(e.msg.header.msg_id);
      this.table.remove(node, key);
      this.dropped.inc();
      box.overflowed = true;
      if (this.droppedLogged++ % 1000 === 0)
        this.opts.log.warn("outbox full, oldest pending message dropped (the node gets a full resync when it reconnects)", { node, resource: key, limit: this.limit });
      return;
    }
  }

  private transmit(node: string, box: NodeBox, e: Entry, resend: boolean): void {
    if (!this.opts.hub.sendToNode(node, e.msg)) {
      e.nextAt = 0;
      return;
    }
    e.epoch = box.epoch;
    e.attempts++;
    const over = e.attempts - this.maxAttempts;
    e.nextAt = Date.now() + (over <= 0 ? this.retryMs : Math.min(this.maxBackoffMs, this.retryMs * 2 ** over));
    (resend ? this.resent : this.sent).inc();
  }

  private onConnected(node: string): void {
    const box = this.box(node);
    box.epoch++;
    if (box.overflowed) {
      box.overflowed = false;
      this.opts.log.info("outbox overflowed while the node was away; the controllers' resync catches it up", { node });
    }
    for (const e of box.entries.values()) {
      e.attempts = 0;
      this.transmit(node, box, e, false);
    }
  }

  private onAck(node: string, parentId: string): void {
    const box = this.nodes.get(node);
    const key = box?.ids.get(parentId);
    if (!box || key === undefined) return; // an ack of a version since replaced, or a resend acked twice
    box.ids.delete(parentId);
    box.entries.delete(key);
    this.table.remove(node, key);
    this.acked.inc();
    this.updateDepth(node);
  }

  private tick(): void {
    const now = Date.now();
    for (const [node, box] of this.nodes) {
      if (!box.entries.size || !this.opts.hub.isConnected(node)) continue;
      for (const e of box.entries.values()) if (e.nextAt <= now) this.transmit(node, box, e, e.epoch === box.epoch);
    }
  }

  private updateDepth(node: string): void {
    this.depth.set(this.nodes.get(node)?.entries.size ?? 0, { node });
  }
}
