/**
 * The `cri` runtime: real containers through a CRI v1 socket (containerd). One pod sandbox per pod
 * (host network, created with the pod's first container, removed by removePod), one CRI container
 * per container instance (each restart is a new container with the next attempt number; Edged
 * removes the exited one). Images are pulled per imagePullPolicy; an image imported locally is
 * used as is. Volumes are materialised by volumes.ts like for the process runtime and bind-mounted.
 *
 * Everything it creates carries labels (node, pod uid/name/namespace, container name, spec hash),
 * so a restarted edgecore finds its sandboxes and containers again: recover() takes the inventory,
 * adopt() hands a running (or meanwhile exited) container back to its pod worker, and
 * removeOrphans() removes the sandboxes of pods no longer stored. Containers outlive edgecore
 * (keepsContainers): shutdown lets go of them without stopping them, as the kubelet does.
 *
 * CRI has no exit notification in v1 that containerd 1.6 serves, so container states are polled
 * (one ListContainers per poll, a ContainerStatus for each container that changed).
 */
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute } from "node:path";
import type { Logger } from "../../log.ts";
import { CriClient, CriError, nsToMs, type Container, type ContainerConfigMsg, type ContainerStatusMsg, type Image, type PodSandboxConfig } from "./cri/client.ts";
import { linuxLimits } from "./cri/quantity.ts";
import { DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES } from "./logs.ts";
import { DEFAULT_CRI_ENDPOINT, StartError, WaitingError, type ContainerConfig, type ContainerStatus, type NodeImage, type Runtime } from "./runtime.ts";

export { DEFAULT_CRI_ENDPOINT };

/** Labels on every sandbox and container this runtime creates. */
export const LABELS = {
  node: "io.outpost.node",
  podUid: "io.outpost.pod.uid",
  podName: "io.outpost.pod.name",
  podNamespace: "io.outpost.pod.namespace",
  container: "io.outpost.container.name",
  hash: "io.outpost.container.hash",
} as const;

export interface CriRuntimeOptions {
  /** `unix:///run/containerd/containerd.sock` (default). */
  endpoint?: string;
  /** Labels everything with it: two edgecores may share one containerd. */
  nodeName: string;
  log?: Logger;
  /** Container state poll period (default 500 ms). */
  pollMs?: number;
  /** First back-off after a failed pull (default 10 s, doubling up to pullBackoffMaxMs = 5 min). */
  pullBackoffBaseMs?: number;
  pullBackoffMaxMs?: number;
  /** Longest a pull may take (default 5 min). */
  pullTimeoutMs?: number;
  /** How long recover() waits for the socket to answer (default 30 s). */
  connectTimeoutMs?: number;
  logMaxBytes?: number;
  logMaxFiles?: number;
}

interface Entry {
  id: string;
  podUid: string;
  name: string;
  logPath: string;
  status: ContainerStatus;
  /** StartContainer was called (or the container was adopted): its exit is watched. */
  started: boolean;
  settled: boolean;
  done: Promise<ContainerStatus>;
  resolveDone: (s: ContainerStatus) => void;
}

interface Sandbox {
  id: string;
  attempt: number;
}

interface Leftovers {
  containers: Container[];
}

/** `name`, `name:tag`, `host:port/name@sha256:…` → whether Kubernetes' default policy is Always. */
export function defaultPullAlways(image: string): boolean {
  if (image.includes("@")) return false;
  const last = image.slice(image.lastIndexOf("/") + 1);
  const i = last.indexOf(":");
  return i < 0 || last.slice(i + 1) === "latest";
}

/** The useful part of runc's start error: `exec: "foo": executable file not found in $PATH`. */
export function startErrorMessage(raw: string): string {
  const m = /exec: "[^"]*": [^:]+(?::[^:]*\$PATH)?/.exec(raw) ?? /chdir to cwd \("[^"]*"\)[^:]*: [^:]+/.exec(raw);
  return m ? m[0].trim() : raw;
}

export class CriRuntime implements Runtime {
  readonly name = "cri";
  readonly keepsContainers = true;
  readonly isolated = true;
  private runtimeName = "cri";
  private runtimeVer = "unknown";
  private readonly cri: CriClient;
  private readonly log?: Logger;
  private readonly entries = new Map<string, Entry>();
  private readonly sandboxes = new Map<string, Promise<Sandbox>>();
  /** Next attempt number per `<podUid>/<container>` (CRI names must be unique per attempt). */
  private readonly attempts = new Map<string, number>();
  private readonly sandboxAttempts = new Map<string, number>();
  private readonly leftovers = new Map<string, Leftovers>();
  private readonly pullBackoff = new Map<string, { until: number; failures: number; error: string }>();
  private imageList: NodeImage[] = [];
  private pollTimer?: ReturnType<typeof setInterval>;
  private polling = false;
  private lastSlowPoll = 0;
  private closed = false;
  /** Resolved once recover() has taken the inventory: nothing is created or adopted before. */
  private readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(private readonly opts: CriRuntimeOptions) {
    this.cri = new CriClient(opts.endpoint ?? DEFAULT_CRI_ENDPOINT);
    this.log = opts.log;
    this.ready = new Promise((r) => (this.markReady = r));
  }

  get version(): string {
    return this.runtimeVer;
  }

  get endpoint(): string {
    return this.cri.endpoint;
  }

  /** The CRI client, for callers that want to look at the runtime directly (tests, tools). */
  get client(): CriClient {
    return this.cri;
  }

  runtimeVersion(): string {
    return `${this.runtimeName}://${this.runtimeVer}`;
  }

  images(): NodeImage[] {
    return this.imageList.map((i) => ({ names: [...i.names], sizeBytes: i.sizeBytes }));
  }

  private labels(cfg: { podUid: string; podName: string; podNamespace: string }): Record<string, string> {
    return {
      [LABELS.node]: this.opts.nodeName,
      [LABELS.podUid]: cfg.podUid,
      [LABELS.podName]: cfg.podName,
      [LABELS.podNamespace]: cfg.podNamespace,
      // what crictl and other CRI tools show
      "io.kubernetes.pod.uid": cfg.podUid,
      "io.kubernetes.pod.name": cfg.podName,
      "io.kubernetes.pod.namespace": cfg.podNamespace,
    };
  }

  // ---- start: connect and take the inventory ---------------------------------------------

  async recover(): Promise<number> {
    const end = Date.now() + (this.opts.connectTimeoutMs ?? 30_000);
    for (;;) {
      try {
        const v = await this.cri.version();
        this.runtimeName = v.runtime_name || "cri";
        this.runtimeVer = v.runtime_version || "unknown";
        break;
      } catch (e) {
        if (Date.now() > end) throw new Error(`CRI endpoint ${this.cri.endpoint} does not answer: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    this.log?.info("connected to the container runtime", { endpoint: this.cri.endpoint, runtime: this.runtimeVersion() });
    const mine = { [LABELS.node]: this.opts.nodeName };
    const [sandboxes, containers] = await Promise.all([this.cri.listPodSandbox(mine), this.cri.listContainers(mine)]);
    const byPod = new Map<string, typeof sandboxes>();
    for (const sb of sandboxes) {
      const uid = sb.labels[LABELS.podUid] ?? sb.metadata.uid;
      byPod.set(uid, [...(byPod.get(uid) ?? []), sb]);
      this.leftovers.set(uid, this.leftovers.get(uid) ?? { containers: [] });
    }
    for (const c of containers) {
      const uid = c.labels[LABELS.podUid];
      if (!uid) continue;
      const left = this.leftovers.get(uid) ?? { containers: [] };
      left.containers.push(c);
      this.leftovers.set(uid, left);
      const key = `${uid}/${c.labels[LABELS.container] ?? c.metadata.name}`;
      this.attempts.set(key, Math.max(this.attempts.get(key) ?? 0, c.metadata.attempt + 1));
    }
    for (const [uid, list] of byPod) {
      // The newest sandbox is the pod's (a not-ready one is replaced at the next container start).
      list.sort((a, b) => b.metadata.attempt - a.metadata.attempt);
      const [best, ...old] = list;
      this.sandboxes.set(uid, Promise.resolve({ id: best!.id, attempt: best!.metadata.attempt }));
      this.sandboxAttempts.set(uid, best!.metadata.attempt + 1);
      for (const sb of old) void this.dropSandbox(sb.id);
    }
    this.log?.info("runtime inventory", { sandboxes: sandboxes.length, containers: containers.length, running: containers.filter((c) => c.state === "CONTAINER_RUNNING").length });
    await this.refreshImages();
    this.startPolling();
    this.markReady();
    return 0;
  }

  async adopt(podUid: string, container: string, specHash: string): Promise<string | null> {
    await this.ready;
    const left = this.leftovers.get(podUid);
    if (!left) return null;
    const mine = left.containers.filter((c) => (c.labels[LABELS.container] ?? c.metadata.name) === container);
    left.containers = left.containers.filter((c) => !mine.includes(c));
    mine.sort((a, b) => (BigInt(b.created_at) > BigInt(a.created_at) ? 1 : -1));
    const pick =
      mine.find((c) => c.labels[LABELS.hash] === specHash && c.state === "CONTAINER_RUNNING") ??
      mine.find((c) => c.labels[LABELS.hash] === specHash && c.state === "CONTAINER_EXITED");
    for (const c of mine) if (c !== pick) void this.discard(c.id);
    if (!pick) {
      if (mine.length) this.log?.info("leftover containers do not match the pod's spec, starting afresh", { pod: podUid, container, found: mine.length });
      return null;
    }
    let st: ContainerStatusMsg;
    try {
      st = await this.cri.containerStatus(pick.id);
    } catch (e) {
      this.log?.warn("cannot read a leftover container, starting a new one", { id: pick.id, err: String(e) });
      void this.discard(pick.id);
      return null;
    }
    const e = this.newEntry(pick.id, podUid, container, st.log_path);
    e.started = true;
    this.apply(e, st);
    this.log?.info("adopted a container left by a previous edgecore", { pod: podUid, container, id: pick.id, state: st.state });
    this.startPolling();
    return pick.id;
  }

  async removeOrphans(keep: Set<string>): Promise<void> {
    for (const uid of [...this.leftovers.keys()]) {
      if (keep.has(uid)) continue;
      this.leftovers.delete(uid);
      this.log?.info("removing the sandbox of a pod that is no longer stored", { pod: uid });
      await this.removePod(uid);
    }
  }

  // ---- containers ----------------------------------------------------------------------

  /** Call recover() first (Edged does): creation waits for the inventory. */
  async createContainer(cfg: ContainerConfig): Promise<string> {
    await this.ready;
    this.startPolling();
    const imageRef = await this.ensureImage(cfg.image, cfg.imagePullPolicy);
    const logDir = dirname(cfg.logPath);
    mkdirSync(logDir, { recursive: true });
    const sbConfig = (attempt: number) => this.sandboxConfig(cfg, logDir, attempt);
    let sb: Sandbox;
    try {
      sb = await this.ensureSandbox(cfg.podUid, sbConfig);
    } catch (e) {
      throw new WaitingError("CreateContainerError", `cannot create the pod sandbox: ${(e as Error).message}`);
    }
    const key = `${cfg.podUid}/${cfg.name}`;
    const attempt = this.attempts.get(key) ?? 0;
    this.attempts.set(key, attempt + 1);
    const limits = linuxLimits(cfg.limits);
    const msg: ContainerConfigMsg = {
      metadata: { name: cfg.name, attempt },
      image: { image: imageRef },
      // Without `command` the image's entrypoint stays; without `args` its cmd (Kubernetes' rules).
      ...(cfg.command !== undefined || cfg.args !== undefined ? { command: cfg.command ?? [], args: cfg.args ?? [] } : { command: cfg.argv, args: [] }),
      working_dir: cfg.workingDir,
      envs: Object.entries(cfg.env).map(([key, value]) => ({ key, value: Buffer.from(value, "utf8") })),
      mounts: cfg.mounts.map((m) => ({ container_path: m.containerPath, host_path: m.hostPath, readonly: m.readOnly, propagation: "PROPAGATION_PRIVATE" })),
      labels: { ...this.labels(cfg), [LABELS.container]: cfg.name, ...(cfg.specHash ? { [LABELS.hash]: cfg.specHash } : {}), "io.kubernetes.container.name": cfg.name },
      log_path: basename(cfg.logPath),
      stdin: false,
      tty: false,
      linux: {
        resources: limits,
        security_context: { namespace_options: { network: "NODE", pid: "CONTAINER", ipc: "POD" } },
      },
    };
    let id: string;
    try {
      id = await this.cri.createContainer(sb.id, msg, sbConfig(sb.attempt));
    } catch (e) {
      throw new WaitingError("CreateContainerError", e instanceof CriError ? e.details : (e as Error).message);
    }
    this.newEntry(id, cfg.podUid, cfg.name, cfg.logPath);
    return id;
  }

  async startContainer(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e) throw new Error(`no container ${id}`);
    e.started = true;
    try {
      await this.cri.startContainer(id);
    } catch (err) {
      const raw = err instanceof CriError ? err.details : String(err);
      const st = await this.cri.containerStatus(id).catch(() => null);
      const message = startErrorMessage(st?.message || raw);
      const now = Date.now();
      e.status = {
        ...e.status,
        state: "exited",
        exitCode: st?.exit_code || 128,
        reason: "StartError",
        message,
        startedAt: nsToMs(st?.started_at) ?? now,
        finishedAt: nsToMs(st?.finished_at) ?? now,
      };
      this.settle(e);
      throw new StartError(message);
    }
    await this.refresh(e);
  }

  async stopContainer(id: string, graceMs: number): Promise<void> {
    const e = this.entries.get(id);
    if (!e || e.settled || !e.started) return;
    try {
      await this.cri.stopContainer(id, Math.ceil(Math.max(0, graceMs) / 1000));
    } catch (err) {
      if (!(err instanceof CriError && err.code === 5)) this.log?.warn("stopping a container failed", { id, err: String(err) });
    }
    await this.refresh(e);
    if (!e.settled) {
      // Still reported running (a stop that failed): one last hard stop.
      await this.cri.stopContainer(id, 0).catch(() => {});
      await this.refresh(e);
    }
  }

  async removeContainer(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (e && e.started && !e.settled) throw new Error(`container ${id} is running`);
    try {
      await this.cri.removeContainer(id);
    } catch (err) {
      if (!(err instanceof CriError && err.code === 5)) throw err;
    }
    this.entries.delete(id);
  }

  status(id: string): ContainerStatus | null {
    const e = this.entries.get(id);
    return e ? { ...e.status } : null;
  }

  wait(id: string): Promise<ContainerStatus> {
    const e = this.entries.get(id);
    return e ? e.done : Promise.reject(new Error(`no container ${id}`));
  }

  logPath(id: string): string | null {
    return this.entries.get(id)?.logPath ?? null;
  }

  /** Lets go of everything; the containers keep running for the next edgecore to adopt. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    this.cri.close();
  }

  async removePod(podUid: string): Promise<void> {
    const known = this.sandboxes.get(podUid);
    this.sandboxes.delete(podUid);
    this.leftovers.delete(podUid);
    for (const e of this.entries.values()) if (e.podUid === podUid && !e.started) this.entries.delete(e.id);
    const ids = new Set<string>();
    if (known) await known.then((sb) => ids.add(sb.id)).catch(() => {});
    try {
      for (const sb of await this.cri.listPodSandbox({ [LABELS.node]: this.opts.nodeName, [LABELS.podUid]: podUid })) ids.add(sb.id);
    } catch (e) {
      this.log?.warn("cannot list the pod's sandboxes", { pod: podUid, err: String(e) });
    }
    for (const id of ids) await this.dropSandbox(id);
    for (const [key] of this.attempts) if (key.startsWith(`${podUid}/`)) this.attempts.delete(key);
    this.sandboxAttempts.delete(podUid);
  }

  // ---- internals -------------------------------------------------------------------------

  private sandboxConfig(cfg: ContainerConfig, logDir: string, attempt: number): PodSandboxConfig {
    return {
      metadata: { name: cfg.podName, uid: cfg.podUid, namespace: cfg.podNamespace, attempt },
      // Host network shares the host's UTS namespace: no hostname of its own (HOSTNAME is in the env).
      log_directory: logDir,
      labels: this.labels(cfg),
      linux: { security_context: { namespace_options: { network: "NODE", pid: "CONTAINER", ipc: "POD" } } },
    };
  }

  /** The pod's sandbox, created on first use (one creation at a time per pod), replaced when not ready. */
  private async ensureSandbox(podUid: string, config: (attempt: number) => PodSandboxConfig): Promise<Sandbox> {
    const current = this.sandboxes.get(podUid);
    if (current) {
      const sb = await current.catch(() => null);
      if (sb) {
        const state = await this.cri.podSandboxState(sb.id).catch(() => null);
        if (state === "SANDBOX_READY") return sb;
        this.log?.warn("pod sandbox is not ready, replacing it", { pod: podUid, sandbox: sb.id, state });
        if (this.sandboxes.get(podUid) === current) this.sandboxes.delete(podUid);
        await this.dropSandbox(sb.id);
      } else if (this.sandboxes.get(podUid) === current) this.sandboxes.delete(podUid);
      const again = this.sandboxes.get(podUid);
      if (again && again !== current) return again;
    }
    const attempt = this.sandboxAttempts.get(podUid) ?? 0;
    this.sandboxAttempts.set(podUid, attempt + 1);
    const p = this.cri.runPodSandbox(config(attempt)).then((id) => ({ id, attempt }));
    this.sandboxes.set(podUid, p);
    try {
      const sb = await p;
      this.log?.info("pod sandbox created", { pod: podUid, sandbox: sb.id });
      return sb;
    } catch (e) {
      if (this.sandboxes.get(podUid) === p) this.sandboxes.delete(podUid);
      throw e;
    }
  }

  private async dropSandbox(id: string): Promise<void> {
    try {
      await this.cri.stopPodSandbox(id);
      await this.cri.removePodSandbox(id);
    } catch (e) {
      if (!(e instanceof CriError && e.code === 5)) this.log?.warn("cannot remove a pod sandbox", { sandbox: id, err: String(e) });
    }
  }

  /** Stops (at once) and removes a container nobody tracks. */
  private async discard(id: string): Promise<void> {
    try {
      await this.cri.stopContainer(id, 0);
      await this.cri.removeContainer(id);
      this.log?.info("removed a leftover container", { id });
    } catch (e) {
      if (!(e instanceof CriError && e.code === 5)) this.log?.warn("cannot remove a leftover container", { id, err: String(e) });
    }
  }

  /** Returns the image reference to run, pulling per policy; throws WaitingError when it cannot be had. */
  private async ensureImage(image: string, policy: string | undefined): Promise<string> {
    if (!image) throw new WaitingError("InvalidImageName", "the container has no image");
    const pol = policy || (defaultPullAlways(image) ? "Always" : "IfNotPresent");
    let present: Image | null = null;
    try {
      present = await this.cri.imageStatus(image);
    } catch (e) {
      throw new WaitingError("InvalidImageName", `image ${JSON.stringify(image)}: ${e instanceof CriError ? e.details : String(e)}`);
    }
    if (pol === "Never") {
      if (!present) throw new WaitingError("ErrImageNeverPull", `Container image "${image}" is not present with pull policy of Never`);
      return present.id;
    }
    if (pol !== "Always" && present) return present.id;
    const bo = this.pullBackoff.get(image);
    if (bo && Date.now() < bo.until) {
      if (present) return present.id;
      throw new WaitingError("ImagePullBackOff", `Back-off pulling image "${image}": ${bo.error}`);
    }
    try {
      this.log?.info("pulling image", { image });
      const ref = await this.cri.pullImage(image, undefined, this.opts.pullTimeoutMs ?? 300_000);
      this.pullBackoff.delete(image);
      void this.refreshImages();
      return ref;
    } catch (e) {
      const error = e instanceof CriError ? e.details : String(e);
      const failures = (bo?.failures ?? 0) + 1;
      const delay = Math.min((this.opts.pullBackoffBaseMs ?? 10_000) * 2 ** Math.min(failures - 1, 30), this.opts.pullBackoffMaxMs ?? 300_000);
      this.pullBackoff.set(image, { until: Date.now() + delay, failures, error });
      if (present) {
        // At the edge the registry is often out of reach: run what the node has.
        this.log?.warn("image pull failed, using the image present on the node", { image, err: error });
        return present.id;
      }
      this.log?.warn("image pull failed", { image, err: error, retryInMs: delay });
      throw new WaitingError("ErrImagePull", `failed to pull image "${image}": ${error}`);
    }
  }

  private async refreshImages(): Promise<void> {
    try {
      const list = await this.cri.listImages();
      this.imageList = list.map((i) => ({ names: [...i.repo_digests, ...i.repo_tags], sizeBytes: Number(i.size) })).filter((i) => i.names.length > 0);
    } catch (e) {
      this.log?.warn("cannot list images", { err: String(e) });
    }
  }

  private newEntry(id: string, podUid: string, name: string, logPath: string): Entry {
    let resolveDone!: (s: ContainerStatus) => void;
    const done = new Promise<ContainerStatus>((r) => (resolveDone = r));
    const e: Entry = { id, podUid, name, logPath, status: { id, containerID: `${this.runtimeName}://${id}`, state: "created" }, started: false, settled: false, done, resolveDone };
    this.entries.set(id, e);
    return e;
  }

  private settle(e: Entry): void {
    if (e.settled) return;
    e.settled = true;
    e.resolveDone({ ...e.status });
  }

  /** Applies a CRI ContainerStatus to an entry. */
  private apply(e: Entry, st: ContainerStatusMsg): void {
    const startedAt = nsToMs(st.started_at);
    if (st.state === "CONTAINER_RUNNING") {
      e.status = { ...e.status, state: "running", ...(startedAt ? { startedAt } : {}) };
    } else if (st.state === "CONTAINER_EXITED" || (st.state === "CONTAINER_UNKNOWN" && e.started)) {
      const now = Date.now();
      e.status = {
        ...e.status,
        state: "exited",
        exitCode: st.exit_code,
        startedAt: startedAt ?? e.status.startedAt ?? now,
        finishedAt: nsToMs(st.finished_at) ?? now,
        ...(st.reason ? { reason: st.reason } : {}),
        ...(st.message ? { message: st.message } : {}),
      };
      if (st.reason === "StartError") e.status.message = startErrorMessage(st.message);
      this.settle(e);
    }
  }

  private async refresh(e: Entry): Promise<void> {
    try {
      this.apply(e, await this.cri.containerStatus(e.id));
    } catch (err) {
      if (err instanceof CriError && err.code === 5) {
        // Removed behind our back (e.g. with ctr): it is gone, as if killed.
        const now = Date.now();
        e.status = { ...e.status, state: "exited", exitCode: 137, reason: "Error", message: "container disappeared from the runtime", startedAt: e.status.startedAt ?? now, finishedAt: now };
        this.settle(e);
      } else this.log?.warn("cannot read container status", { id: e.id, err: String(err) });
    }
  }

  private startPolling(): void {
    if (this.pollTimer || this.closed) return;
    this.pollTimer = setInterval(() => void this.poll(), this.opts.pollMs ?? 500);
  }

  private async poll(): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    try {
      const watched = [...this.entries.values()].filter((e) => e.started && !e.settled);
      if (watched.length > 0) {
        const listed = new Map((await this.cri.listContainers({ [LABELS.node]: this.opts.nodeName })).map((c) => [c.id, c.state]));
        await Promise.all(watched.filter((e) => listed.get(e.id) !== "CONTAINER_RUNNING" || e.status.state !== "running").map((e) => this.refresh(e)));
      }
      if (Date.now() - this.lastSlowPoll >= 10_000) {
        this.lastSlowPoll = Date.now();
        await this.refreshImages();
        await this.rotateLogs();
      }
    } catch (e) {
      if (!this.closed) this.log?.warn("runtime poll failed", { err: String(e) });
    } finally {
      this.polling = false;
    }
  }

  /** Size-based rotation of running containers' logs: rename, then ask the runtime to reopen. */
  private async rotateLogs(): Promise<void> {
    const max = this.opts.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES;
    const files = this.opts.logMaxFiles ?? DEFAULT_LOG_MAX_FILES;
    for (const e of this.entries.values()) {
      if (!e.started || e.settled || !isAbsolute(e.logPath)) continue;
      let size = 0;
      try {
        size = statSync(e.logPath).size;
      } catch {
        continue;
      }
      if (size < max) continue;
      if (files <= 1) rmSync(e.logPath, { force: true });
      else {
        rmSync(`${e.logPath}.${files - 1}`, { force: true });
        for (let i = files - 2; i >= 1; i--) if (existsSync(`${e.logPath}.${i}`)) renameSync(`${e.logPath}.${i}`, `${e.logPath}.${i + 1}`);
        renameSync(e.logPath, `${e.logPath}.1`);
      }
      await this.cri.reopenContainerLog(e.id).catch((err) => this.log?.warn("cannot reopen a container log", { id: e.id, err: String(err) }));
    }
  }
}
