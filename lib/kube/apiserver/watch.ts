/**
 * Watch fan-out. One store listener dispatches each change to the watchers of that resource;
 * the JSON line of an event is built once per (event, version, form) and shared by every
 * watcher that receives it, so thousands of watchers cost one write each.
 */
import type { ServerResponse } from "node:http";
import { gvString } from "./api.ts";
import type { ResourceType } from "./resources.ts";
import { isEmpty, matches, type Selector } from "./selectors.ts";
import type { ObjectStore } from "./storage.ts";
import { toTable, type IncludeObject } from "./table.ts";
import type { KObject, StoreEvent } from "./types.ts";

export interface WatchSpec {
  t: ResourceType;
  version: string;
  /** undefined = all namespaces */
  namespace?: string;
  sel: Selector;
  allowBookmarks: boolean;
  table?: { includeObject: IncludeObject };
}

type OutType = "ADDED" | "MODIFIED" | "DELETED";

/** Max bytes queued for a slow watcher before it is cut off (it then re-watches from its RV). */
const MAX_BACKLOG = 16 * 1024 * 1024;

class Watcher {
  closed = false;
  timer: ReturnType<typeof setTimeout> | undefined;
  constructor(
    readonly spec: WatchSpec,
    readonly res: ServerResponse,
    readonly hub: WatchHub,
  ) {}

  /** The event as this watcher sees it (selectors can turn a modify into add or delete), or null. */
  classify(ev: StoreEvent): OutType | null {
    const s = this.spec;
    if (s.namespace !== undefined && ev.namespace !== s.namespace) return null;
    if (isEmpty(s.sel)) return ev.type;
    const cur = matches(s.sel, ev.object);
    const prev = ev.prev ? matches(s.sel, ev.prev) : cur;
    switch (ev.type) {
      case "ADDED":
        return cur ? "ADDED" : null;
      case "DELETED":
        return cur || prev ? "DELETED" : null;
      case "MODIFIED":
        if (cur && prev) return "MODIFIED";
        if (cur) return "ADDED";
        if (prev) return "DELETED";
        return null;
    }
  }

  /** Lines queued in this tick; flushed together (one socket write per watcher per tick). */
  pending: string[] = [];

  send(line: string): void {
    if (this.closed) return;
    if (this.pending.push(line) === 1) this.hub.markDirty(this);
  }

  flush(): void {
    if (this.closed || this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : this.pending.join("");
    this.pending = [];
    this.res.write(data);
    if (this.res.writableLength > MAX_BACKLOG) this.close();
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.hub.remove(this);
    try {
      this.res.end();
    } catch {
      /* already gone */
    }
  }
}

interface Cached {
  lines?: Map<string, string>;
}

export class WatchHub {
  private byResource = new Map<string, Set<Watcher>>();
  private dirty = new Set<Watcher>();
  private flushScheduled = false;
  private bookmarkTimer: ReturnType<typeof setInterval> | undefined;
  private unsubscribe: () => void;

  constructor(
    private readonly store: ObjectStore,
    bookmarkIntervalMs = 30_000,
  ) {
    this.unsubscribe = store.subscribe((ev) => this.dispatch(ev));
    this.bookmarkTimer = setInterval(() => this.bookmarks(), bookmarkIntervalMs);
    (this.bookmarkTimer as { unref?: () => void }).unref?.();
  }

  get size(): number {
    let n = 0;
    for (const s of this.byResource.values()) n += s.size;
    return n;
  }

  private line(ev: StoreEvent, type: OutType, spec: WatchSpec): string {
    const c = ev as StoreEvent & Cached;
    const key = `${type}|${spec.version}|${spec.table ? spec.table.includeObject : ""}`;
    const lines = (c.lines ??= new Map());
    let l = lines.get(key);
    if (l === undefined) {
      l = eventLine(type, ev.object, spec);
      lines.set(key, l);
    }
    return l;
  }

  private dispatch(ev: StoreEvent): void {
    const set = this.byResource.get(`${ev.group}/${ev.resource}`);
    if (!set) return;
    for (const w of set) {
      const type = w.classify(ev);
      if (type) w.send(this.line(ev, type, w.spec));
    }
  }

  /**
   * Starts a watch on `res`: replays `initial` objects as ADDED (when given), then the changes
   * after `sinceRV`, then live changes. Everything up to registration runs in one synchronous
   * step, so no change can slip between replay and live delivery.
   */
  start(
    res: ServerResponse,
    spec: WatchSpec,
    opts: { sinceRV: number; initial?: KObject[]; initialEventsEndBookmark?: boolean; timeoutMs: number },
  ): void {
    const w = new Watcher(spec, res, this);
    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-cache, private", "X-Content-Type-Options": "nosniff" });
    res.flushHeaders?.();
    for (const o of opts.initial ?? []) {
      if (spec.namespace !== undefined && o.metadata?.namespace !== spec.namespace) continue;
      if (!matches(spec.sel, o)) continue;
      w.send(eventLine("ADDED", o, spec));
    }
    const missed = this.store.eventsSince(opts.sinceRV, (ev) => ev.group === spec.t.group && ev.resource === spec.t.resource);
    if (missed !== "expired") {
      for (const ev of missed) {
        const type = w.classify(ev);
        if (type) w.send(this.line(ev, type, spec));
      }
    }
    if (opts.initialEventsEndBookmark) w.send(bookmarkLine(spec, this.store.currentRV, true));
    const key = `${spec.t.group}/${spec.t.resource}`;
    let set = this.byResource.get(key);
    if (!set) this.byResource.set(key, (set = new Set()));
    set.add(w);
    w.timer = setTimeout(() => w.close(), opts.timeoutMs);
    (w.timer as { unref?: () => void }).unref?.();
    const onClose = () => w.close();
    res.on("close", onClose);
    res.on("error", onClose);
  }

  /**
   * Watchers with queued lines are written once at the end of the tick: the writer's response
   * is not held up by the fan-out, and a burst of changes costs each watcher one socket write.
   */
  markDirty(w: Watcher): void {
    this.dirty.add(w);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const batch = this.dirty;
      this.dirty = new Set();
      for (const x of batch) x.flush();
    });
  }

  remove(w: Watcher): void {
    this.dirty.delete(w);
    const key = `${w.spec.t.group}/${w.spec.t.resource}`;
    const set = this.byResource.get(key);
    if (!set) return;
    set.delete(w);
    if (set.size === 0) this.byResource.delete(key);
  }

  /** Sends a BOOKMARK with the current RV to every watcher that allowed them. */
  bookmarks(): void {
    const rv = this.store.currentRV;
    for (const set of this.byResource.values()) for (const w of set) if (w.spec.allowBookmarks) w.send(bookmarkLine(w.spec, rv, false));
  }

  closeAll(): void {
    clearInterval(this.bookmarkTimer);
    this.unsubscribe();
    for (const set of [...this.byResource.values()]) for (const w of [...set]) w.close();
  }
}

function eventLine(type: OutType, obj: KObject, spec: WatchSpec): string {
  const { apiVersion: _a, kind: _k, ...rest } = obj;
  const out: KObject = { apiVersion: gvString(spec.t.group, spec.version), kind: spec.t.kind, ...rest };
  const payload = spec.table ? toTable(spec.t, spec.version, [out], { includeObject: spec.table.includeObject }) : out;
  return `{"type":"${type}","object":${JSON.stringify(payload)}}\n`;
}

function bookmarkLine(spec: WatchSpec, rv: number, initialEnd: boolean): string {
  const object = {
    kind: spec.t.kind,
    apiVersion: gvString(spec.t.group, spec.version),
    metadata: { resourceVersion: String(rv), ...(initialEnd ? { annotations: { "k8s.io/initial-events-end": "true" } } : {}) },
  };
  return `{"type":"BOOKMARK","object":${JSON.stringify(object)}}\n`;
}
