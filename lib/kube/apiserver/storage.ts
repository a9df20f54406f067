/**
 * The object store: SQLite rows keyed by group/resource/namespace/name, one global
 * resourceVersion, and a bounded in-memory log of recent changes that watches replay from.
 *
 * Writes are synchronous on the single connection and wrapped in a SAVEPOINT (a transaction of
 * its own, or a nested one if someone else's is open), so a change is committed to SQLite before
 * its caller can answer the request.
 */
import type { SqliteDatabase, SqliteStatement } from "../../runtime/index.ts";
import type { KObject, StoreEvent, WatchEventType } from "./types.ts";

/** A change about to be committed: a StoreEvent before it gets its resourceVersion (for DELETED, `object` is the object as it was). */
export type Change = Omit<StoreEvent, "rv">;

export interface ObjectStoreOptions {
  /** How many recent changes watches can resume from (default 10,000). */
  windowSize?: number;
}

interface Row {
  data: string;
}

export class ObjectStore {
  private rv = 0;
  private ring: Array<StoreEvent | undefined>;
  private head = 0; // index of the oldest event
  private count = 0;
  /** Every change with rv > windowStart is in the ring. */
  private windowStart = 0;
  private writesSinceTrim = 0;
  private readonly listeners = new Set<(ev: StoreEvent) => void>();
  private readonly stmt: Record<string, SqliteStatement>;
  private savepointSeq = 0;
  /**
   * Owner uid → keys of the objects whose ownerReferences name it, and the reverse, so garbage
   * collection after a delete looks up the dependents instead of scanning every stored object.
   */
  private readonly dependents = new Map<string, Set<string>>();
  private readonly ownersOf = new Map<string, string[]>();

  constructor(
    private readonly raw: SqliteDatabase,
    opts: ObjectStoreOptions = {},
  ) {
    const size = Math.max(16, opts.windowSize ?? 10_000);
    this.ring = new Array(size);
    this.stmt = {
      get: raw.prepare("SELECT data FROM apiserver_objects WHERE grp = ? AND resource = ? AND namespace = ? AND name = ?"),
      listAll: raw.prepare("SELECT data FROM apiserver_objects WHERE grp = ? AND resource = ? ORDER BY namespace, name"),
      listNs: raw.prepare("SELECT data FROM apiserver_objects WHERE grp = ? AND resource = ? AND namespace = ? ORDER BY name"),
      terminating: raw.prepare(`SELECT grp, resource, namespace, name FROM apiserver_objects WHERE instr(data, '"deletionTimestamp"') > 0`),
      listInNs: raw.prepare("SELECT grp, resource, name, data FROM apiserver_objects WHERE namespace = ?"),
      withOwners: raw.prepare(`SELECT grp, resource, namespace, name, data FROM apiserver_objects WHERE instr(data, '"ownerReferences"') > 0`),
      upsert: raw.prepare(
        "INSERT INTO apiserver_objects (grp, resource, namespace, name, rv, data) VALUES (?, ?, ?, ?, ?, ?) " +
          "ON CONFLICT (grp, resource, namespace, name) DO UPDATE SET rv = excluded.rv, data = excluded.data",
      ),
      del: raw.prepare("DELETE FROM apiserver_objects WHERE grp = ? AND resource = ? AND namespace = ? AND name = ?"),
      event: raw.prepare("INSERT INTO apiserver_events (rv, type, grp, resource, namespace, name, data) VALUES (?, ?, ?, ?, ?, ?, ?)"),
      setMeta: raw.prepare("INSERT INTO apiserver_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
      getMeta: raw.prepare("SELECT value FROM apiserver_meta WHERE key = ?"),
      trim: raw.prepare("DELETE FROM apiserver_events WHERE rv <= ?"),
    };
    this.load(size);
    for (const r of this.stmt.withOwners!.all([]) as Array<{ grp: string; resource: string; namespace: string; name: string; data: string }>)
      this.indexOwners(r.grp, r.resource, r.namespace, r.name, JSON.parse(r.data) as KObject);
  }

  /** Keeps the owner index in step with one stored (or, with `obj` undefined, deleted) object. */
  private indexOwners(group: string, resource: string, namespace: string, name: string, obj: KObject | undefined): void {
    const key = JSON.stringify([group, resource, namespace, name]);
    const uids = [...new Set((obj?.metadata?.ownerReferences ?? []).map((r) => r.uid).filter((u): u is string => typeof u === "string" && u !== ""))];
    const old = this.ownersOf.get(key);
    if (!old && uids.length === 0) return;
    for (const u of old ?? []) {
      const set = this.dependents.get(u);
      set?.delete(key);
      if (set?.size === 0) this.dependents.delete(u);
    }
    if (uids.length === 0) return void this.ownersOf.delete(key);
    this.ownersOf.set(key, uids);
    for (const u of uids) {
      let set = this.dependents.get(u);
      if (!set) this.dependents.set(u, (set = new Set()));
      set.add(key);
    }
  }

  /** RV continues from the stored maximum; the ring is refilled from the stored change log. */
  private load(size: number): void {
    const maxObj = (this.raw.prepare("SELECT max(rv) AS m FROM apiserver_objects").all([])[0] as { m: number | null }).m ?? 0;
    const maxEv = (this.raw.prepare("SELECT max(rv) AS m FROM apiserver_events").all([])[0] as { m: number | null }).m ?? 0;
    const stored = Number(this.getMeta("rv") ?? "0");
    this.rv = Math.max(maxObj, maxEv, stored);
    this.windowStart = Number(this.getMeta("event_window_start") ?? "0");
    const rows = this.raw
      .prepare("SELECT rv, type, grp, resource, namespace, name, data FROM apiserver_events ORDER BY rv DESC LIMIT ?")
      .all([size]) as Array<{ rv: number; type: WatchEventType; grp: string; resource: string; namespace: string; name: string; data: string }>;
    rows.reverse();
    if (rows.length === size && rows[0]) this.windowStart = Math.max(this.windowStart, rows[0].rv - 1);
    if (rows.length === 0) this.windowStart = Math.max(this.windowStart, this.rv);
    for (const r of rows) {
      if (r.rv <= this.windowStart) continue;
      this.push({ rv: r.rv, type: r.type, group: r.grp, resource: r.resource, namespace: r.namespace, name: r.name, object: JSON.parse(r.data) as KObject });
    }
  }

  get currentRV(): number {
    return this.rv;
  }

  /** The oldest resourceVersion a watch can resume from. */
  get oldestResumableRV(): number {
    return this.windowStart;
  }

  getMeta(key: string): string | undefined {
    const row = this.stmt.getMeta!.all([key])[0] as { value: string } | undefined;
    return row?.value;
  }

  setMeta(key: string, value: string): void {
    this.stmt.setMeta!.run([key, value]);
  }

  get(group: string, resource: string, namespace: string, name: string): KObject | undefined {
    const row = this.stmt.get!.all([group, resource, namespace, name])[0] as Row | undefined;
    return row ? (JSON.parse(row.data) as KObject) : undefined;
  }

  /** Objects of one resource, in one namespace or all (namespace undefined), ordered by namespace/name. */
  list(group: string, resource: string, namespace?: string): KObject[] {
    const rows = (namespace === undefined ? this.stmt.listAll!.all([group, resource]) : this.stmt.listNs!.all([group, resource, namespace])) as Row[];
    return rows.map((r) => JSON.parse(r.data) as KObject);
  }

  /** Everything stored in a namespace (for namespace deletion). */
  listNamespaceContents(namespace: string): Array<{ group: string; resource: string; name: string; object: KObject }> {
    const rows = this.stmt.listInNs!.all([namespace]) as Array<{ grp: string; resource: string; name: string; data: string }>;
    return rows.map((r) => ({ group: r.grp, resource: r.resource, name: r.name, object: JSON.parse(r.data) as KObject }));
  }

  /** Keys of objects that may carry a deletionTimestamp (a cheap superset; callers check). */
  listTerminatingKeys(): Array<{ group: string; resource: string; namespace: string; name: string }> {
    const rows = this.stmt.terminating!.all([]) as Array<{ grp: string; resource: string; namespace: string; name: string }>;
    return rows.map((r) => ({ group: r.grp, resource: r.resource, namespace: r.namespace, name: r.name }));
  }

  /** Objects whose ownerReferences name `uid` (candidates for owner-reference garbage collection). */
  findMentioning(uid: string): Array<{ group: string; resource: string; namespace: string; name: string; object: KObject }> {
    const out: Array<{ group: string; resource: string; namespace: string; name: string; object: KObject }> = [];
    for (const key of this.dependents.get(uid) ?? []) {
      const [group, resource, namespace, name] = JSON.parse(key) as [string, string, string, string];
      const object = this.get(group, resource, namespace, name);
      if (object) out.push({ group, resource, namespace, name, object });
    }
    return out;
  }

  /**
   * Commits changes atomically: each gets the next resourceVersion (written into the object's
   * metadata), rows and log entries are written, then watchers are told. Returns the events.
   */
  commit(changes: Change[]): StoreEvent[] {
    if (changes.length === 0) return [];
    const sp = `apiserver_w${++this.savepointSeq}`;
    const events: StoreEvent[] = [];
    let rv = this.rv;
    this.raw.exec(`SAVEPOINT ${sp}`);
    try {
      for (const c of changes) {
        rv++;
        const md = (c.object.metadata ??= {});
        md.resourceVersion = String(rv);
        const data = JSON.stringify(c.object);
        if (c.type === "DELETED") this.stmt.del!.run([c.group, c.resource, c.namespace, c.name]);
        else this.stmt.upsert!.run([c.group, c.resource, c.namespace, c.name, rv, data]);
        this.stmt.event!.run([rv, c.type, c.group, c.resource, c.namespace, c.name, data]);
        events.push({ rv, type: c.type, group: c.group, resource: c.resource, namespace: c.namespace, name: c.name, object: c.object, ...(c.prev ? { prev: c.prev } : {}) });
      }
      this.stmt.setMeta!.run(["rv", String(rv)]);
      this.raw.exec(`RELEASE ${sp}`);
    } catch (err) {
      try {
        this.raw.exec(`ROLLBACK TO ${sp}`);
        this.raw.exec(`RELEASE ${sp}`);
      } catch {
        /* the savepoint is gone with an outer rollback */
      }
      throw err;
    }
    this.rv = rv;
    for (const ev of events) {
      this.push(ev);
      this.indexOwners(ev.group, ev.resource, ev.namespace, ev.name, ev.type === "DELETED" ? undefined : ev.object);
    }
    if (++this.writesSinceTrim >= 256) this.trim();
    for (const ev of events) {
      for (const fn of this.listeners) {
        try {
          fn(ev);
        } catch {
          /* a listener's failure is its own */
        }
      }
    }
    return events;
  }

  private push(ev: StoreEvent): void {
    const size = this.ring.length;
    if (this.count === size) {
      const evicted = this.ring[this.head]!;
      this.windowStart = evicted.rv;
      this.ring[this.head] = ev;
      this.head = (this.head + 1) % size;
    } else {
      this.ring[(this.head + this.count) % size] = ev;
      this.count++;
    }
  }

  private trim(): void {
    this.writesSinceTrim = 0;
    try {
      this.stmt.trim!.run([this.windowStart]);
      this.stmt.setMeta!.run(["event_window_start", String(this.windowStart)]);
    } catch {
      /* trimming is housekeeping; try again later */
    }
  }

  /**
   * Changes with rv > `since`, oldest first, or "expired" when `since` is older than the window.
   * `filter` narrows to one resource cheaply.
   */
  eventsSince(since: number, filter?: (ev: StoreEvent) => boolean): StoreEvent[] | "expired" {
    if (since < this.windowStart) return "expired";
    const out: StoreEvent[] = [];
    const size = this.ring.length;
    // binary search for the first event with rv > since
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ring[(this.head + mid) % size]!.rv <= since) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.count; i++) {
      const ev = this.ring[(this.head + i) % size]!;
      if (!filter || filter(ev)) out.push(ev);
    }
    return out;
  }

  subscribe(fn: (ev: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
