/**
 * A lean Kubernetes REST client: get/list/create/update/patch/delete and the status subresource
 * for any resource addressed as {group, version, resource, namespaced}. JSON only. Failures the
 * server answers are `KubeApiError`s carrying its Status object; transport failures are
 * `KubeTransportError`s.
 */
import type { IncomingMessage } from "node:http";
import { KubeApiError } from "./errors.ts";
import { inClusterConfig, loadKubeConfig, type ClusterConfig } from "./kubeconfig.ts";
import { apiVersionOf, coreResource, ref, resourcePath, type KubeList, type KubeObject, type ResourceRef } from "./resources.ts";
import { Transport, type RequestOptions, type TransportOptions } from "./transport.ts";
import { WatchLoop, type WatchLoopOptions } from "./watch.ts";

export type KubeClientOptions = TransportOptions;

export interface ListOptions {
  /** undefined = all namespaces (for namespaced resources). */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WriteOptions {
  /** Defaults to the object's namespace, then the client's default namespace. */
  namespace?: string;
  dryRun?: boolean;
  fieldManager?: string;
  /** fieldValidation=Strict|Warn|Ignore */
  fieldValidation?: "Strict" | "Warn" | "Ignore";
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** merge = application/merge-patch+json, strategic = application/strategic-merge-patch+json, json = application/json-patch+json */
export type PatchType = "merge" | "strategic" | "json";

export const PATCH_CONTENT_TYPES: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
};

export type JsonPatchOp = { op: "add" | "remove" | "replace" | "move" | "copy" | "test"; path: string; value?: unknown; from?: string };

export interface DeleteOptions {
  namespace?: string;
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
  propagationPolicy?: "Foreground" | "Background" | "Orphan";
  dryRun?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Query parameters of a watch request. */
export interface WatchQuery {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  allowWatchBookmarks?: boolean;
  timeoutSeconds?: number;
}

export class KubeClient {
  readonly transport: Transport;
  /** Namespace used when a call on a namespaced resource names none (context / service account, else "default"). */
  readonly defaultNamespace: string;

  constructor(
    readonly config: ClusterConfig,
    opts: KubeClientOptions = {},
  ) {
    this.transport = new Transport(config, opts);
    this.defaultNamespace = config.namespace || "default";
  }

  /** A core/v1 resource by plural name, e.g. `KubeClient.core("pods")`. */
  static core(resource: string): ResourceRef {
    return coreResource(resource);
  }

  /** Any resource, e.g. `KubeClient.resource("devices.kubeedge.io", "v1beta1", "devices", true)`. */
  static resource(group: string, version: string, resource: string, namespaced: boolean, kind?: string): ResourceRef {
    return ref(group, version, resource, namespaced, kind);
  }

  static fromKubeconfig(path?: string, opts: KubeClientOptions & { context?: string } = {}): KubeClient {
    return new KubeClient(loadKubeConfig(path, { context: opts.context }), opts);
  }

  static inCluster(root?: string, opts: KubeClientOptions = {}): KubeClient {
    return new KubeClient(inClusterConfig(root), opts);
  }

  /** A request with a JSON answer; status >= 400 throws KubeApiError. */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.transport.request(method, path, opts);
    if (res.status >= 400 || res.status < 200) throw KubeApiError.fromResponse(res.status, res.body, `${method} ${path}`);
    if (!res.body) return undefined as T;
    try {
      return JSON.parse(res.body) as T;
    } catch {
      throw new KubeApiError(res.status, { kind: "Status", status: "Failure", code: res.status, reason: "InternalError", message: `response is not JSON: ${res.body.slice(0, 200)}` }, `${method} ${path}`);
    }
  }

  private ns(res: ResourceRef, explicit?: string, obj?: KubeObject): string | undefined {
    if (!res.namespaced) return undefined;
    return explicit || obj?.metadata?.namespace || this.defaultNamespace;
  }

  private writeQuery(o: WriteOptions = {}): RequestOptions["query"] {
    return { dryRun: o.dryRun ? "All" : undefined, fieldManager: o.fieldManager, fieldValidation: o.fieldValidation };
  }

  private withTypeMeta<T extends KubeObject>(res: ResourceRef, obj: T): T {
    if (obj.apiVersion && obj.kind) return obj;
    return { ...obj, apiVersion: obj.apiVersion ?? apiVersionOf(res), ...(obj.kind || res.kind ? { kind: obj.kind ?? res.kind } : {}) };
  }

  private nameOf(res: ResourceRef, obj: KubeObject): string {
    const name = obj.metadata?.name;
    if (!name) throw new TypeError(`${res.resource}: the object has no metadata.name`);
    return name;
  }

  get<T extends KubeObject = KubeObject>(res: ResourceRef, name: string, namespace?: string, opts: { subresource?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T> {
    return this.request<T>("GET", resourcePath(res, this.ns(res, namespace), name, opts.subresource), { timeoutMs: opts.timeoutMs, signal: opts.signal });
  }

  /** One page (or everything, without `limit`). `namespace` undefined lists across all namespaces. */
  list<T extends KubeObject = KubeObject>(res: ResourceRef, opts: ListOptions = {}): Promise<KubeList<T>> {
    return this.request<KubeList<T>>("GET", resourcePath(res, res.namespaced ? opts.namespace : undefined), {
      query: { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector, limit: opts.limit, continue: opts.continue, resourceVersion: opts.resourceVersion },
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
    });
  }

  /** Every page, following `continue` tokens; the list's resourceVersion is the first page's. */
  async listAll<T extends KubeObject = KubeObject>(res: ResourceRef, opts: Omit<ListOptions, "continue"> = {}): Promise<KubeList<T>> {
    const first = await this.list<T>(res, opts);
    const items = [...first.items];
    let cont = first.metadata?.continue;
    while (cont) {
      const page = await this.list<T>(res, { ...opts, continue: cont, resourceVersion: undefined });
      items.push(...page.items);
      cont = page.metadata?.continue;
    }
    return { ...first, metadata: { resourceVersion: first.metadata?.resourceVersion }, items };
  }

  create<T extends KubeObject = KubeObject>(res: ResourceRef, obj: NoInfer<T>, opts: WriteOptions = {}): Promise<T> {
    return this.request<T>("POST", resourcePath(res, this.ns(res, opts.namespace, obj)), {
      body: this.withTypeMeta(res, obj),
      query: this.writeQuery(opts),
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
    });
  }

  /** PUT: replaces the object; a stale metadata.resourceVersion → KubeApiError 409 Conflict. */
  update<T extends KubeObject = KubeObject>(res: ResourceRef, obj: NoInfer<T>, opts: WriteOptions = {}): Promise<T> {
    return this.request<T>("PUT", resourcePath(res, this.ns(res, opts.namespace, obj), this.nameOf(res, obj)), {
      body: this.withTypeMeta(res, obj),
      query: this.writeQuery(opts),
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
    });
  }

  patch<T extends KubeObject = KubeObject>(
    res: ResourceRef,
    name: string,
    patch: Record<string, unknown> | JsonPatchOp[],
    type: PatchType = "merge",
    opts: WriteOptions & { subresource?: string } = {},
  ): Promise<T> {
    if (type === "json" ? !Array.isArray(patch) : Array.isArray(patch)) throw new TypeError(`a ${type} patch must be ${type === "json" ? "an array of operations" : "an object"}`);
    return this.request<T>("PATCH", resourcePath(res, this.ns(res, opts.namespace), name, opts.subresource), {
      body: patch,
      contentType: PATCH_CONTENT_TYPES[type],
      query: this.writeQuery(opts),
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
    });
  }

  /**
   * Deletes an object. Answers the object as the server returns it: with a deletionTimestamp
   * when deletion is graceful or blocked by finalizers, or the final state (or a Status).
   */
  delete<T extends KubeObject = KubeObject>(res: ResourceRef, name: string, opts: DeleteOptions = {}): Promise<T> {
    const body: Record<string, unknown> = { kind: "DeleteOptions", apiVersion: "v1" };
    if (opts.gracePeriodSeconds !== undefined) body.gracePeriodSeconds = opts.gracePeriodSeconds;
    if (opts.preconditions) body.preconditions = opts.preconditions;
    if (opts.propagationPolicy) body.propagationPolicy = opts.propagationPolicy;
    if (opts.dryRun) body.dryRun = ["All"];
    return this.request<T>("DELETE", resourcePath(res, this.ns(res, opts.namespace), name), { body, timeoutMs: opts.timeoutMs, signal: opts.signal });
  }

  getStatus<T extends KubeObject = KubeObject>(res: ResourceRef, name: string, namespace?: string): Promise<T> {
    return this.get<T>(res, name, namespace, { subresource: "status" });
  }

  /** PUT …/status: only the status is taken from `obj` (and its resourceVersion is checked). */
  updateStatus<T extends KubeObject = KubeObject>(res: ResourceRef, obj: NoInfer<T>, opts: WriteOptions = {}): Promise<T> {
    return this.request<T>("PUT", resourcePath(res, this.ns(res, opts.namespace, obj), this.nameOf(res, obj), "status"), {
      body: this.withTypeMeta(res, obj),
      query: this.writeQuery(opts),
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
    });
  }

  patchStatus<T extends KubeObject = KubeObject>(res: ResourceRef, name: string, patch: Record<string, unknown> | JsonPatchOp[], type: PatchType = "merge", opts: WriteOptions = {}): Promise<T> {
    return this.patch<T>(res, name, patch, type, { ...opts, subresource: "status" });
  }

  /** Opens one raw watch stream (see watch.ts for the resuming loop built on it). */
  openWatch(res: ResourceRef, q: WatchQuery, signal?: AbortSignal, headerTimeoutMs?: number): Promise<{ res: IncomingMessage; destroy: () => void }> {
    return this.transport.openStream(resourcePath(res, res.namespaced ? q.namespace : undefined), {
      query: {
        watch: "true",
        resourceVersion: q.resourceVersion,
        allowWatchBookmarks: q.allowWatchBookmarks ? "true" : undefined,
        labelSelector: q.labelSelector,
        fieldSelector: q.fieldSelector,
        timeoutSeconds: q.timeoutSeconds,
      },
      signal,
      headerTimeoutMs,
    });
  }

  /** A resuming watch (see `WatchLoop`); started, stop it with `stop()`. */
  watch<T extends KubeObject = KubeObject>(res: ResourceRef, opts: WatchLoopOptions<T>): WatchLoop<T> {
    const w = new WatchLoop<T>(this, res, opts);
    w.start();
    return w;
  }

  /** Closes pooled connections (open watches are stopped by their owners). */
  close(): void {
    this.transport.close();
  }
}
