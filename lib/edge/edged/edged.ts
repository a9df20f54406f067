/**
 * Edged: the lightweight kubelet of an edge node. It runs the pods bound to this node (from the
 * cloud's messages and, at start, from MetaManager's store), reports their status upward within
 * statusReportDelayMs of a change (coalesced: only the latest status of a pod goes up) and posts
 * the node's status every nodeStatusIntervalMs.
 *
 * Start: the runtime first kills whatever a previous edgecore left running (recorded process
 * groups), then every stored pod bound to this node runs again — edge autonomy without the cloud.
 * Stop (edgecore shutdown): pods are stopped gracefully (grace capped at shutdownGraceMs) so no
 * process outlives edgecore unsupervised; the next start runs them again from the store.
 */
import { readdirSync, rmSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { newMessage, parseResource, type Message } from "../../message.ts";
import type { Module, ModuleContext } from "../../router.ts";
import type { Logger } from "../../log.ts";
import type { Metrics } from "../../metrics.ts";
import type { ObjectGetter } from "./env.ts";
import { podIdentity, type PodIdentity } from "./pod.ts";
import type { Runtime } from "./runtime.ts";
import { PodWorker, type WorkerHost } from "./worker.ts";
import { nodeIPv4, nodeLabels, nodeStatus } from "./nodestatus.ts";
import type { V1PodStatus } from "./status.ts";

/** What Edged reads from MetaManager. `list` may return the objects or `{ value }` rows. */
export interface MetaSource {
  get(type: string, namespace: string, name: string): Promise<unknown | null>;
  list(type: string): Promise<unknown[]>;
}

export interface EdgedOptions {
  nodeName: string;
  dataDir: string;
  runtime: Runtime;
  meta: MetaSource;
  log: Logger;
  metrics?: Metrics;
  /** Node status period (default 10 s). */
  nodeStatusIntervalMs?: number;
  /** Delay before a changed pod status goes up; changes within it are coalesced (default 200 ms). */
  statusReportDelayMs?: number;
  /** First restart back-off (default 10 s, doubling). */
  restartBackoffBaseMs?: number;
  /** Longest restart back-off (default 5 min). */
  restartBackoffMaxMs?: number;
  /** A run at least this long resets the back-off (default 10 min). */
  backoffResetMs?: number;
  /** Retry period while a container waits for a missing configmap/secret/volume (default 5 s). */
  configRetryMs?: number;
  /** Longest grace given to each pod when edgecore stops (default 3 s, the daemon must exit in 5 s). */
  shutdownGraceMs?: number;
  /** The node's IP (default: first non-internal IPv4). Also every pod's IP. */
  nodeIP?: string;
}

export class Edged implements Module {
  readonly name = "edged";
  readonly group = "edged";
  private ctx?: ModuleContext;
  private readonly log: Logger;
  private readonly workers = new Map<string, PodWorker>();
  /** Latest configmaps/secrets seen in messages (null = deleted): fresher than the store may be. */
  private readonly overlay = new Map<string, unknown>();
  private readonly dirty = new Set<string>();
  private readonly lastSent = new Map<string, string>();
  private flushTimer?: ReturnType<typeof setTimeout>;
  private nodeTimer?: ReturnType<typeof setInterval>;
  private readonly host: WorkerHost;
  private readonly podsDir: string;
  private readonly nodeIP: string;
  private readySince = Date.now();
  private stopping = false;
  private readonly counters;

  constructor(private readonly opts: EdgedOptions) {
    this.log = opts.log;
    this.podsDir = join(opts.dataDir, "pods");
    this.nodeIP = opts.nodeIP ?? nodeIPv4();
    const m = opts.metrics;
    const c = m?.counter("outpost_edged_container_events_total", "Container starts, restarts and exits on this node.");
    m?.gauge("outpost_edged_pods", "Pods handled by edged.", () => this.workers.size);
    this.counters = c;
    const get: ObjectGetter = (type, ns, name) => {
      const k = `${type}/${ns}/${name}`;
      return this.overlay.has(k) ? Promise.resolve(this.overlay.get(k) ?? null) : opts.meta.get(type, ns, name);
    };
    this.host = {
      nodeName: opts.nodeName,
      nodeIP: this.nodeIP,
      runtime: opts.runtime,
      log: this.log,
      get,
      backoffBaseMs: opts.restartBackoffBaseMs ?? 10_000,
      backoffMaxMs: opts.restartBackoffMaxMs ?? 300_000,
      backoffResetMs: opts.backoffResetMs ?? 600_000,
      retryMs: opts.configRetryMs ?? 5_000,
      changed: (w) => this.markDirty(w),
      counted: (event) => this.counters?.inc({ event }),
    };
  }

  async start(ctx: ModuleContext): Promise<void> {
    this.ctx = ctx;
    this.stopping = false;
    this.readySince = Date.now();
    mkdirSync(this.podsDir, { recursive: true });
    const killed = await this.opts.runtime.recover();
    if (killed > 0) this.log.info("stopped containers left by a previous edgecore", { killed });
    let stored: unknown[] = [];
    try {
      stored = await this.opts.meta.list("pod");
    } catch (e) {
      this.log.error("cannot list stored pods", { err: String(e) });
    }
    const keep = new Set<string>();
    for (const row of stored) {
      const obj = row && typeof row === "object" && "value" in row && "key" in row ? (row as { value: unknown }).value : row;
      const id = podIdentity(obj);
      if (!id || id.nodeName !== this.opts.nodeName) continue;
      keep.add(id.uid);
      this.podChanged(id, obj);
    }
    this.removeOrphanDirs(keep);
    // A runtime whose containers outlive edgecore: what belongs to pods no longer stored goes.
    if (this.opts.runtime.removeOrphans)
      await this.opts.runtime.removeOrphans(keep).catch((e) => this.log.error("removing leftovers of deleted pods failed", { err: String(e) }));
    this.log.info("edged started", { node: this.opts.nodeName, pods: this.workers.size, runtime: this.opts.runtime.name, nodeIP: this.nodeIP });
    this.sendNodeStatus();
    this.nodeTimer = setInterval(() => this.sendNodeStatus(), this.opts.nodeStatusIntervalMs ?? 10_000);
  }

  async stop(): Promise<void> {
    clearInterval(this.nodeTimer);
    // Pending changes go up; the terminations caused by the shutdown itself do not (the pods are
    // not finished, they run again at the next start).
    this.flush();
    this.stopping = true;
    const grace = this.opts.shutdownGraceMs ?? 3_000;
    // cri: containers outlive edgecore, as with the kubelet; the next start adopts them.
    if (this.opts.runtime.keepsContainers) await Promise.all([...this.workers.values()].map((w) => w.detach()));
    else await Promise.all([...this.workers.values()].map((w) => w.terminate(Math.min(w.graceMs(), grace), false)));
    clearTimeout(this.flushTimer);
    this.workers.clear();
    await this.opts.runtime.close();
  }

  handle(msg: Message): void {
    const ref = parseResource(msg.route.resource);
    if (!ref || ref.name === undefined) return;
    const op = msg.route.operation;
    if (ref.type === "pod") {
      const id = podIdentity(msg.content) ?? { name: ref.name, namespace: ref.namespace, uid: "", nodeName: null, deleting: false };
      if (op === "delete") this.podDeleted(`${ref.namespace}/${ref.name}`, id.uid || null);
      else if (op === "insert" || op === "update" || op === "patch") {
        if (!podIdentity(msg.content)) {
          this.log.warn("pod message without a usable object dropped", { resource: msg.route.resource });
          return;
        }
        this.podChanged(id, msg.content);
      }
    } else if (ref.type === "configmap" || ref.type === "secret") {
      const k = `${ref.type}/${ref.namespace}/${ref.name}`;
      if (op === "delete") this.overlay.set(k, null);
      else if (msg.content && typeof msg.content === "object") this.overlay.set(k, msg.content);
      else return;
      for (const w of this.workers.values()) if (w.namespace === ref.namespace && w.uses(ref.type, ref.name)) w.poke();
    }
  }

  /** Marks every pod's status for re-reporting (e.g. after the cloud link comes back). */
  reportAll(): void {
    this.lastSent.clear();
    for (const w of this.workers.values()) this.markDirty(w);
  }

  /** Current status of a pod this node runs, or null. */
  podStatus(namespace: string, name: string): V1PodStatus | null {
    return this.workers.get(`${namespace}/${name}`)?.status() ?? null;
  }

  // ---- pods -------------------------------------------------------------------------------

  private podChanged(id: PodIdentity, obj: unknown): void {
    if (this.stopping) return;
    const key = `${id.namespace}/${id.name}`;
    let w = this.workers.get(key);
    if (id.nodeName !== this.opts.nodeName) {
      if (w) this.podDeleted(key, null);
      return;
    }
    if (w && id.uid && w.uid !== id.uid) {
      // Same name, new object (deleted and recreated meanwhile): the old one goes first.
      this.podDeleted(key, w.uid);
      w = undefined;
    }
    if (!id.uid) {
      this.log.warn("pod without metadata.uid cannot run", { pod: key });
      return;
    }
    if (!w) {
      w = new PodWorker(this.host, this.podsDir, id, obj);
      this.workers.set(key, w);
      if (id.deleting) this.terminateAndReport(w);
      else w.run();
      return;
    }
    if (id.deleting) {
      if (!w.terminating) {
        w.update(obj, id);
        this.terminateAndReport(w);
      }
      return;
    }
    w.update(obj, id);
    if (this.cloudStatusDiffers(w, obj)) {
      // The API holds another status than ours (e.g. updates lost while the link was down): send ours again.
      this.lastSent.delete(key);
      this.markDirty(w);
    }
  }

  /** Compares phase and each container's state kind and restartCount with the status in the pod object. */
  private cloudStatusDiffers(w: PodWorker, obj: unknown): boolean {
    const cloud = (obj as { status?: { phase?: unknown; containerStatuses?: unknown } }).status;
    if (!cloud || typeof cloud !== "object" || cloud.phase === undefined) return false;
    const ours = w.status();
    if (cloud.phase !== ours.phase) return true;
    const summary = (list: unknown) =>
      JSON.stringify(
        (Array.isArray(list) ? list : [])
          .map((c: { name?: string; restartCount?: number; state?: object }) => [c?.name, c?.restartCount ?? 0, Object.keys(c?.state ?? {}).sort().join()])
          .sort(),
      );
    return summary(cloud.containerStatuses) !== summary(ours.containerStatuses);
  }

  /** deletionTimestamp set: stop with grace, report the pod gone so the cloud finishes the deletion. */
  private terminateAndReport(w: PodWorker): void {
    const grace = w.graceMs();
    this.log.info("terminating pod", { pod: w.key, graceMs: grace });
    void w.terminate(grace).then(() => {
      if (this.workers.get(w.key) !== w) return;
      this.flush();
      this.sendUp(
        newMessage({ source: "edged", group: "resource", operation: "delete", resource: `${w.namespace}/pod/${w.name}` }, { metadata: { name: w.name, namespace: w.namespace, uid: w.uid } }),
      );
      this.forget(w);
      this.log.info("pod terminated", { pod: w.key });
    });
  }

  /** The object is gone (cloud delete): stop if running, forget, no report. */
  private podDeleted(key: string, uid: string | null): void {
    const w = this.workers.get(key);
    if (!w || (uid && w.uid !== uid)) return;
    this.forget(w);
    void w.terminate(w.graceMs()).then(() => rmSync(w.podDir, { recursive: true, force: true }));
  }

  private forget(w: PodWorker): void {
    if (this.workers.get(w.key) === w) this.workers.delete(w.key);
    this.dirty.delete(w.key);
    this.lastSent.delete(w.key);
    if (w.stopped) rmSync(w.podDir, { recursive: true, force: true });
  }

  private removeOrphanDirs(keep: Set<string>): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.podsDir);
    } catch {
      return;
    }
    for (const n of names) if (!keep.has(n)) rmSync(join(this.podsDir, n), { recursive: true, force: true });
  }

  // ---- status -----------------------------------------------------------------------------

  private markDirty(w: PodWorker): void {
    if (this.stopping || this.workers.get(w.key) !== w) return;
    this.dirty.add(w.key);
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      this.flush();
    }, this.opts.statusReportDelayMs ?? 200);
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const keys = [...this.dirty];
    this.dirty.clear();
    let failed = false;
    for (const key of keys) {
      const w = this.workers.get(key);
      if (!w) continue;
      const status = w.status();
      const body = JSON.stringify(status);
      if (this.lastSent.get(key) === body) continue;
      const ok = this.sendUp(
        newMessage({ source: "edged", group: "resource", operation: "update", resource: `${w.namespace}/podstatus/${w.name}` }, { metadata: { name: w.name, namespace: w.namespace, uid: w.uid }, status }),
      );
      if (ok) this.lastSent.set(key, body);
      else {
        this.dirty.add(key);
        failed = true;
      }
    }
    if (failed && !this.stopping)
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        this.flush();
      }, 1000);
  }

  private sendUp(msg: Message): boolean {
    return this.ctx?.router.send("websocket", msg) ?? false;
  }

  private sendNodeStatus(): void {
    const node = this.opts.nodeName;
    const status = nodeStatus({
      nodeName: node,
      dataDir: this.opts.dataDir,
      nodeIP: this.nodeIP,
      runtimeName: this.opts.runtime.name,
      runtimeVersion: this.opts.runtime.version,
      readySince: this.readySince,
      ...(this.opts.runtime.runtimeVersion ? { containerRuntimeVersion: this.opts.runtime.runtimeVersion() } : {}),
      ...(this.opts.runtime.images ? { images: this.opts.runtime.images() } : {}),
    });
    this.sendUp(newMessage({ source: "edged", group: "resource", operation: "update", resource: `null/nodestatus/${node}` }, { metadata: { name: node, labels: nodeLabels() }, status }));
  }
}
