/**
 * A persisted message queue keyed by (scope, key): one pending message per object, the newest
 * replacing the older one in place. The cloud's outbox (scope = node) and the edge's upstream queue
 * (scope = "") keep their pending messages here, so a crash loses nothing not yet acknowledged.
 * Writes are synchronous prepared statements on the store's one connection: a message is on disk
 * (WAL) before anyone sends it.
 */
import { sql, type Kysely, type Migration } from "kysely";
import type { SqliteDatabase, SqliteStatement } from "../runtime/index.ts";
import type { Message } from "../message.ts";

export interface QueuedMessage {
  scope: string;
  key: string;
  /** Insertion order; a replacement takes a new one (it is the newest message). */
  seq: number;
  msg: Message;
}

/** The migration that creates `table` (name it per store, e.g. "0300-outbox"). */
export function msgQueueMigration(table: string): Migration {
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable(table)
        .addColumn("scope", "text", (c) => c.notNull())
        .addColumn("key", "text", (c) => c.notNull())
        .addColumn("seq", "integer", (c) => c.notNull())
        .addColumn("message", "text", (c) => c.notNull())
        .addColumn("updated_at", "integer", (c) => c.notNull().defaultTo(sql`0`))
        .addPrimaryKeyConstraint(`${table}_pk`, ["scope", "key"])
        .execute();
    },
  };
}

export class MsgQueueTable {
  private readonly put: SqliteStatement;
  private readonly del: SqliteStatement;
  private readonly all: SqliteStatement;
  private seq = 0;

  constructor(raw: SqliteDatabase, table: string) {
    if (!/^[a-z_]+$/.test(table)) throw new Error(`bad table name ${table}`);
    this.put = raw.prepare(`INSERT INTO ${table} (scope, key, seq, message, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET seq = excluded.seq, message = excluded.message, updated_at = excluded.updated_at`);
    this.del = raw.prepare(`DELETE FROM ${table} WHERE scope = ? AND key = ?`);
    this.all = raw.prepare(`SELECT scope, key, seq, message FROM ${table} ORDER BY seq`);
  }

  /** Everything stored, oldest first. Rows that do not decode are skipped. */
  load(): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    for (const r of this.all.all([]) as { scope: string; key: string; seq: number; message: string }[]) {
      this.seq = Math.max(this.seq, Number(r.seq));
      try {
        out.push({ scope: r.scope, key: r.key, seq: Number(r.seq), msg: JSON.parse(r.message) as Message });
      } catch {
        this.del.run([r.scope, r.key]);
      }
    }
    return out;
  }

  /** Stores (or replaces) the message of (scope, key) and returns its entry. */
  upsert(scope: string, key: string, msg: Message): QueuedMessage {
    const seq = ++this.seq;
    this.put.run([scope, key, seq, JSON.stringify(msg), Date.now()]);
    return { scope, key, seq, msg };
  }

  remove(scope: string, key: string): void {
    this.del.run([scope, key]);
  }
}
