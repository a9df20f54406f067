/**
 * Shared informers: one list + watch per (resource, namespace, selectors), an in-memory cache of
 * its objects with optional indexes, and add/update/delete notifications. Controllers ask the
 * factory for an informer; asking twice for the same key returns the same one, so N controllers
 * watching pods open one watch. No periodic resync: a relist (after 410 Gone) is diffed against
 * the cache and only what changed while disconnected is announced.
 *
 * Objects handed out are the cache's own: treat them as read-only.
 */
import type { KubeClient } from "./client.ts";
import { objectKey, type KubeObject, type ResourceRef } from "./resources.ts";
import { WatchLoop, type BackoffOptions } from "./watch.ts";

export type InformerEventName = "add" | "update" | "delete";

export interface InformerHandlers<T> {
  add: (obj: T) => void;
  update: (oldObj: T, newObj: T) => void;
  delete: (obj: T) => void;
}

/** Index values of an object (e.g. its `spec.nodeName`); empty / undefined = not indexed. */
export type IndexFunc<T> = (obj: T) => string | string[] | undefined | null;

export interface InformerOptions<T> {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Named indexes, e.g. `{ byNode: (p) => p.spec?.nodeName }`; added to a shared informer if missing. */
  indexers?: Record<string, IndexFunc<T>>;
}

export interface InformerFactoryOptions {
  backoff?: BackoffOptions;
  /** Page size of relists (default 500). */
  pageSize?: number;
  /** Server-side watch timeout in seconds (default random 300–600). */
  timeoutSeconds?: number;
  /** Failures of lists, watches and handlers (they are retried / isolated). */
  onError?: (err: Error, info: { resource: string; attempt: number; delayMs: number }) => void;
}

/** Built-in index: `spec.nodeName`. */
export const byNodeName: IndexFunc<KubeObject> = (o) => (o as { spec?: { nodeName?: string } }).spec?.nodeName;

export class SharedInformer<T extends KubeObject = KubeObject> {
  private readonly items = new Map<string, T>();
  private readonly indexers = new Map<string, IndexFunc<T>>();
  private readonly indexes = new Map<string, Map<string, Set<string>>>();
  private readonly handlers: { [E in InformerEventName]: Set<InformerHandlers<T>[E]> } = { add: new Set(), update: new Set(), delete: new Set() };
  private synced = false;
  private rv: string | undefined;
  private syncWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private readonly loop: WatchLoop<T>;
  /** Completed lists (the initial one and relists after 410). */
  lists = 0;

  constructor(
    private readonly client: KubeClient,
    readonly resource: ResourceRef,
    readonly options: Omit<InformerOptions<T>, "indexers"> = {},
    private readonly factoryOpts: InformerFactoryOptions = {},
  ) {
    this.loop = new WatchLoop<T>(client, resource, {
      namespace: options.namespace,
      labelSelector: options.labelSelector,
      fieldSelector: options.fieldSelector,
      allowWatchBookmarks: true,
      timeoutSeconds: factoryOpts.timeoutSeconds,
      backoff: factoryOpts.backoff,
      relist: (signal) => this.relist(signal),
      onEvent: (ev) => {
        if (ev.object.metadata?.resourceVersion) this.rv = ev.object.metadata.resourceVersion;
        if (ev.type === "BOOKMARK") return;
        if (ev.type === "DELETED") this.remove(ev.object);
        else this.upsert(ev.object);
      },
      onError: (err, info) => this.reportError(err, info.attempt, info.delayMs),
    });
  }

  private reportError(err: Error, attempt: number, delayMs: number): void {
    try {
      this.factoryOpts.onError?.(err, { resource: this.resource.resource, attempt, delayMs });
    } catch {
      /* ignore */
    }
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const w of waiters) w.reject(new Error(`informer for ${this.resource.resource} stopped before it synced`));
  }

  /** The resourceVersion the cache is current to. */
  get resourceVersion(): string | undefined {
    return this.rv;
  }

  /** The underlying watch (connection count, state). */
  get watch(): WatchLoop<T> {
    return this.loop;
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the first list is in the cache; rejects after `timeoutMs` or when stopped. */
  waitForSync(timeoutMs?: number): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      this.syncWaiters.push(waiter);
      if (timeoutMs !== undefined) {
        const t = setTimeout(() => {
          this.syncWaiters = this.syncWaiters.filter((w) => w !== waiter);
          reject(new Error(`informer for ${this.resource.resource} did not sync within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter.resolve = () => {
          clearTimeout(t);
          resolve();
        };
      }
    });
  }

  /** By name; for namespaced resources the namespace defaults to the informer's, else the client's default. */
  get(name: string, namespace?: string): T | undefined {
    const ns = this.resource.namespaced ? (namespace ?? this.options.namespace ?? this.client.defaultNamespace) : undefined;
    return this.items.get(ns ? `${ns}/${name}` : name);
  }

  /** Everything in the cache, or one namespace's objects. */
  list(namespace?: string): T[] {
    const all = [...this.items.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata?.namespace === namespace);
  }

  get size(): number {
    return this.items.size;
  }

  addIndexer(name: string, fn: IndexFunc<T>): void {
    if (this.indexers.has(name)) return;
    this.indexers.set(name, fn);
    const index = new Map<string, Set<string>>();
    this.indexes.set(name, index);
    for (const [key, obj] of this.items) for (const v of this.indexValues(fn, obj)) addTo(index, v, key);
  }

  /** Objects whose index `name` contains `value` (e.g. `byIndex("byNode", "edge-1")`). */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`informer for ${this.resource.resource}: no index named "${name}"`);
    const out: T[] = [];
    for (const key of index.get(value) ?? []) {
      const o = this.items.get(key);
      if (o) out.push(o);
    }
    return out;
  }

  /**
   * Subscribes to changes; returns the unsubscribe function. A new "add" handler first receives
   * the current contents as adds (synchronously), so late subscribers miss nothing.
   */
  on<E extends InformerEventName>(event: E, handler: InformerHandlers<T>[E]): () => void {
    const set = this.handlers[event] as Set<InformerHandlers<T>[E]>;
    set.add(handler);
    if (event === "add") for (const o of [...this.items.values()]) this.call(() => (handler as InformerHandlers<T>["add"])(o));
    return () => void set.delete(handler);
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.reportError(e instanceof Error ? e : new Error(String(e)), 0, 0);
    }
  }

  private emitAdd(o: T): void {
    for (const h of [...this.handlers.add]) this.call(() => h(o));
  }

  private emitUpdate(a: T, b: T): void {
    for (const h of [...this.handlers.update]) this.call(() => h(a, b));
  }

  private emitDelete(o: T): void {
    for (const h of [...this.handlers.delete]) this.call(() => h(o));
  }

  private indexValues(fn: IndexFunc<T>, obj: T): string[] {
    let v: ReturnType<IndexFunc<T>>;
    try {
      v = fn(obj);
    } catch {
      return [];
    }
    if (v === undefined || v === null || v === "") return [];
    return Array.isArray(v) ? v : [v];
  }

  private index(key: string, oldObj: T | undefined, newObj: T | undefined): void {
    for (const [name, fn] of this.indexers) {
      const index = this.indexes.get(name)!;
      if (oldObj) for (const v of this.indexValues(fn, oldObj)) removeFrom(index, v, key);
      if (newObj) for (const v of this.indexValues(fn, newObj)) addTo(index, v, key);
    }
  }

  private upsert(obj: T): void {
    const key = objectKey(obj);
    const old = this.items.get(key);
    this.items.set(key, obj);
    this.index(key, old, obj);
    if (!old) this.emitAdd(obj);
    else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion || old.metadata?.uid !== obj.metadata?.uid) this.emitUpdate(old, obj);
  }

  private remove(obj: T): void {
    const key = objectKey(obj);
    const old = this.items.get(key);
    if (!old) return;
    this.items.delete(key);
    this.index(key, old, undefined);
    this.emitDelete(obj);
  }

  /** Lists everything and replaces the cache, announcing the difference; returns the list's RV. */
  private async relist(signal: AbortSignal): Promise<string> {
    const list = await this.client.listAll<T>(this.resource, {
      namespace: this.options.namespace,
      labelSelector: this.options.labelSelector,
      fieldSelector: this.options.fieldSelector,
      limit: this.factoryOpts.pageSize ?? 500,
      signal,
    });
    if (signal.aborted) return list.metadata?.resourceVersion ?? "";
    const fresh = new Map<string, T>();
    for (const o of list.items) {
      // list items carry no kind; fill it in so handlers see whole objects
      const item = o.kind || !this.resource.kind ? o : ({ ...o, apiVersion: o.apiVersion ?? list.apiVersion, kind: this.resource.kind } as T);
      fresh.set(objectKey(item), item);
    }
    for (const [key, old] of [...this.items]) {
      if (fresh.has(key)) continue;
      this.items.delete(key);
      this.index(key, old, undefined);
      this.emitDelete(old);
    }
    for (const o of fresh.values()) this.upsert(o);
    this.lists++;
    this.rv = list.metadata?.resourceVersion || this.rv;
    if (!this.synced) {
      this.synced = true;
      const waiters = this.syncWaiters;
      this.syncWaiters = [];
      for (const w of waiters) w.resolve();
    }
    return list.metadata?.resourceVersion ?? "";
  }
}

function addTo(index: Map<string, Set<string>>, value: string, key: string): void {
  let s = index.get(value);
  if (!s) index.set(value, (s = new Set()));
  s.add(key);
}

function removeFrom(index: Map<string, Set<string>>, value: string, key: string): void {
  const s = index.get(value);
  if (!s) return;
  s.delete(key);
  if (s.size === 0) index.delete(value);
}

const informerKey = (r: ResourceRef, o: { namespace?: string; labelSelector?: string; fieldSelector?: string }) =>
  `${r.group}/${r.version}/${r.resource}|${r.namespaced ? (o.namespace ?? "") : ""}|${o.labelSelector ?? ""}|${o.fieldSelector ?? ""}`;

export class InformerFactory {
  private readonly informers = new Map<string, SharedInformer<any>>();
  private stopped = false;

  constructor(
    readonly client: KubeClient,
    private readonly opts: InformerFactoryOptions = {},
  ) {}

  /** The shared (started) informer for this resource + namespace + selectors. */
  informer<T extends KubeObject = KubeObject>(resource: ResourceRef, opts: InformerOptions<T> = {}): SharedInformer<T> {
    if (this.stopped) throw new Error("InformerFactory: stopped");
    const key = informerKey(resource, opts);
    let inf = this.informers.get(key) as SharedInformer<T> | undefined;
    if (!inf) {
      inf = new SharedInformer<T>(
        this.client,
        resource,
        { namespace: resource.namespaced ? opts.namespace : undefined, labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector },
        this.opts,
      );
      this.informers.set(key, inf);
      inf.start();
    }
    for (const [name, fn] of Object.entries(opts.indexers ?? {})) inf.addIndexer(name, fn);
    return inf;
  }

  /** Number of distinct informers (= watches). */
  get size(): number {
    return this.informers.size;
  }

  /** Waits until every informer created so far has synced. */
  async waitForSync(timeoutMs?: number): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.waitForSync(timeoutMs)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
    this.informers.clear();
  }
}
