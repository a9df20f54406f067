/**
 * The edge → cloud queue for what must not be lost: pod status, pod deletions, node status and
 * device twin/state reports. Kept in edgecore.db, compacted per object (latest pod status per pod,
 * latest node status, twin reports merged per device and property with the latest value winning),
 * bounded, sent when the link is up and removed only when the cloud acks (`operation: response`,
 * `parent_msg_id` = our id; the cloud acks after it wrote the report to the API). Unacked
 * messages go again after a reconnect and every `retryMs`. Everything else (keepalives, queries,
 * bus uploads) keeps EdgeHub's in-memory path.
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { Op, type Message } from "../message.ts";
import type { SqliteDatabase } from "../runtime/index.ts";
import { MsgQueueTable, msgQueueMigration, type QueuedMessage } from "../store/msgqueue.ts";

export const upstreamMigrations = { "0300-upstream": msgQueueMigration("upstream") };

const twinReport = /^device\/.+\/(twin\/edge_updated|state\/update)$/;

/** The queue key of a message that must be delivered reliably, or null for the best-effort path. */
export function reliableKey(msg: Message): string | null {
  const { source, operation, resource } = msg.route;
  if (operation === Op.keepalive || operation === Op.response || operation === Op.query) return null;
  if (source === "edged") {
    const type = resource.split("/")[1];
    if (type === "podstatus" || type === "nodestatus" || (type === "pod" && operation === Op.delete)) return resource;
    return null;
  }
  if (source === "twin" && twinReport.test(resource)) return resource;
  return null;
}

type Twins = Record<string, Record<string, unknown> | null>;

/** A newer report merged over a pending one: per property, the newer fields win. */
function mergeContent(resource: string, older: unknown, newer: unknown): unknown {
  if (!resource.endsWith("/twin/edge_updated")) return newer;
  const o = older as { twin?: Twins } | null;
  const n = newer as { twin?: Twins } | null;
  if (!o?.twin || typeof o.twin !== "object" || !n?.twin || typeof n.twin !== "object") return newer;
  const twin: Twins = { ...o.twin };
  for (const [k, t] of Object.entries(n.twin)) twin[k] = t && twin[k] ? { ...twin[k], ...t } : t;
  return { ...n, twin };
}

interface Entry extends QueuedMessage {
  nextAt: number;
  epoch: number;
}

export interface UpstreamQueueOptions {
  raw: SqliteDatabase;
  log: Logger;
  metrics: Metrics;
  /** Pending messages kept; past it the oldest is dropped (default 10,000). */
  limit?: number;
  retryMs?: number;
}

export class UpstreamQueue {
  private readonly table: MsgQueueTable;
  private readonly entries = new Map<string, Entry>();
  private readonly ids = new Map<string, string>();
  private readonly limit: number;
  readonly retryMs: number;
  /** Bumped per connection: each pending message goes once per connection, then on the timer. */
  private epoch = 0;
  private readonly dropped;
  private readonly acked;
  private readonly resent;
  private droppedLogged = 0;

  constructor(private readonly opts: UpstreamQueueOptions) {
    this.table = new MsgQueueTable(opts.raw, "upstream");
    this.limit = opts.limit ?? 10_000;
    this.retryMs = opts.retryMs ?? 5000;
    for (const q of this.table.load()) {
      this.entries.set(q.key, { ...q, nextAt: 0, epoch: -1 });
      this.ids.set(q.msg.header.msg_id, q.key);
    }
    const m = opts.metrics;
    m.gauge("outpost_edge_upstream_pending", "Reliable upstream messages waiting for the cloud's ack.", () => this.entries.size);
    this.dropped = m.counter("outpost_edge_upstream_dropped_total", "Reliable upstream messages dropped because the queue was full.").with({});
    this.acked = m.counter("outpost_edge_upstream_acked_total", "Reliable upstream messages acknowledged by the cloud.").with({});
    this.resent = m.counter("outpost_edge_upstream_resends_total", "Reliable upstream messages sent again for want of an ack.").with({});
    if (this.entries.size) opts.log.info("upstream queue loaded", { pending: this.entries.size });
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Stores `msg` (merged with what is pending for the same object). Returns the message to send
   * now, or null when the pending one already says the same and went in this connection.
   */
  put(key: string, msg: Message): Message | null {
    const old = this.entries.get(key);
    let next = msg;
    if (old) {
      if (old.msg.route.operation === msg.route.operation && JSON.stringify(old.msg.content) === JSON.stringify(msg.content)) return old.epoch === this.epoch ? null : old.msg;
      next = { ...msg, content: mergeContent(msg.route.resource, old.msg.content, msg.content) };
      this.entries.delete(key);
      this.ids.delete(old.msg.header.msg_id);
    } else if (this.entries.size >= this.limit) {
      const [oldestKey, oldest] = this.entries.entries().next().value as [string, Entry];
      this.entries.delete(oldestKey);
      this.ids.delete(oldest.msg.header.msg_id);
      this.table.remove("", oldestKey);
      this.dropped.inc();
      if (this.droppedLogged++ % 1000 === 0) this.opts.log.warn("upstream queue full, oldest report dropped", { resource: oldestKey, limit: this.limit });
    }
    const e: Entry = { ...this.table.upsert("", key, next), nextAt: 0, epoch: -1 };
    this.entries.set(key, e);
    this.ids.set(next.header.msg_id, key);
    return next;
  }

  /** Marks a message as sent in the current connection. */
  sent(msg: Message): void {
    const key = this.ids.get(msg.header.msg_id);
    const e = key === undefined ? undefined : this.entries.get(key);
    if (!e) return;
    e.epoch = this.epoch;
    e.nextAt = Date.now() + this.retryMs;
  }

  /** A new connection: everything pending is due, oldest first. */
  connected(): Message[] {
    this.epoch++;
    return [...this.entries.values()].map((e) => e.msg);
  }

  /** Pending messages whose ack is overdue (to resend while connected). */
  due(): Message[] {
    const now = Date.now();
    const out: Message[] = [];
    for (const e of this.entries.values()) if (e.nextAt <= now) out.push(e.msg);
    if (out.length) this.resent.inc(out.length);
    return out;
  }

  /** The cloud acked `parentId`: forget it. Returns false when it is not ours (or was replaced). */
  ack(parentId: string): boolean {
    const key = this.ids.get(parentId);
    if (key === undefined) return false;
    this.ids.delete(parentId);
    this.entries.delete(key);
    this.table.remove("", key);
    this.acked.inc();
    return true;
  }
}
