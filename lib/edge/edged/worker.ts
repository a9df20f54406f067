/**
 * One pod's lifecycle. Every change (pod update, container exit, back-off timer, configmap or
 * secret change, termination) runs on the worker's own promise chain, so a pod's steps never
 * interleave and one pod never waits for another.
 *
 * Restart rules follow kubelet: restartPolicy Always restarts any exit, OnFailure a non-zero exit,
 * Never none; restarts wait base·2^n (capped) and the container shows waiting/CrashLoopBackOff
 * with lastState = the termination meanwhile. The back-off resets after a run longer than
 * backoffResetMs. A pod's restart counts and final states are kept in `<podDir>/state.json` so an
 * edgecore restart neither re-runs finished containers nor forgets restart counts.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import type { Logger } from "../../log.ts";
import { ConfigError, expandVars, resolveEnv, type ObjectGetter, type PodEnvContext } from "./env.ts";
import { validatePod, type Container, type Pod, type PodIdentity } from "./pod.ts";
import { StartError, WaitingError, type ContainerStatus, type Runtime } from "./runtime.ts";
import { ConditionClock, podPhase, rfc3339, type ContainerState, type RestartPolicy, type Terminated, type V1ContainerStatus, type V1PodStatus } from "./status.ts";
import { containerMounts, materializeVolumes, mountEnvName, VolumeError } from "./volumes.ts";

export interface WorkerHost {
  nodeName: string;
  nodeIP: string;
  runtime: Runtime;
  log: Logger;
  get: ObjectGetter;
  backoffBaseMs: number;
  backoffMaxMs: number;
  backoffResetMs: number;
  /** Retry period for a container blocked by a missing configmap/secret or volume. */
  retryMs: number;
  /** Something in the pod's status changed. */
  changed(w: PodWorker): void;
  counted(event: "start" | "restart" | "exit"): void;
}

interface CRec {
  name: string;
  spec: Container;
  hash: string;
  restartCount: number;
  /** Instances started by this worker (the first start after load is not a restart). */
  starts: number;
  runId?: string;
  containerID?: string;
  state: ContainerState;
  lastState?: Terminated;
  /** Consecutive crashes, for the back-off exponent. */
  crashes: number;
  timer?: ReturnType<typeof setTimeout>;
}

interface SavedState {
  uid: string;
  startTime?: number;
  conditions?: Record<string, { status: string; at: string }>;
  containers: Record<string, { restartCount: number; terminated?: Terminated; lastState?: Terminated; crashes?: number }>;
}

const ms = (t: number) => (t >= 60_000 ? `${Math.round(t / 60_000)}m${Math.round((t % 60_000) / 1000)}s` : t >= 1000 ? `${Math.round(t / 100) / 10}s` : `${t}ms`);

function hashContainer(c: Container): string {
  const { name, image, command, args, workingDir, env, envFrom, volumeMounts } = c;
  return createHash("sha256").update(JSON.stringify({ name, image, command, args, workingDir, env, envFrom, volumeMounts })).digest("hex").slice(0, 16);
}

export class PodWorker {
  readonly key: string;
  readonly uid: string;
  readonly podDir: string;
  pod: Pod | null = null;
  /** Set when the pod cannot be run at all: reported as phase Failed with this message. */
  invalid: string | null = null;
  terminating = false;
  /** True once every container is stopped after terminate(). */
  stopped = false;
  private identity: PodIdentity;
  private raw: unknown;
  private readonly containers = new Map<string, CRec>();
  private chain: Promise<void> = Promise.resolve();
  private startTime?: number;
  private readonly clock = new ConditionClock();
  private volumes: Map<string, string> | null = null;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private persistEnabled = true;

  constructor(private readonly host: WorkerHost, podsDir: string, identity: PodIdentity, raw: unknown) {
    this.identity = identity;
    this.key = `${identity.namespace}/${identity.name}`;
    this.uid = identity.uid;
    this.podDir = join(podsDir, identity.uid);
    this.raw = raw;
    this.load();
    this.accept(raw);
    this.restoreSaved();
  }

  get name(): string {
    return this.identity.name;
  }
  get namespace(): string {
    return this.identity.namespace;
  }

  /** Whether this pod reads the given configmap/secret (env or volume). */
  uses(kind: "configmap" | "secret", name: string): boolean {
    const p = this.pod;
    if (!p) return false;
    for (const vol of p.spec.volumes ?? []) {
      if (kind === "configmap" && vol.configMap?.name === name) return true;
      if (kind === "secret" && vol.secret?.secretName === name) return true;
      for (const s of vol.projected?.sources ?? []) if ((kind === "configmap" ? s.configMap : s.secret)?.name === name) return true;
    }
    for (const c of p.spec.containers) {
      for (const f of c.envFrom ?? []) if ((kind === "configmap" ? f.configMapRef : f.secretRef)?.name === name) return true;
      for (const e of c.env ?? []) if ((kind === "configmap" ? e.valueFrom?.configMapKeyRef : e.valueFrom?.secretKeyRef)?.name === name) return true;
    }
    return false;
  }

  /** A new version of the pod object (same uid). */
  update(raw: unknown, identity: PodIdentity): void {
    if (this.terminating) return;
    this.identity = identity;
    this.raw = raw;
    this.accept(raw);
    this.enqueue(() => this.sync());
  }

  /** Sync soon (after a configmap/secret change: re-materialise volumes, retry blocked starts). */
  poke(): void {
    if (!this.terminating) this.enqueue(() => this.sync());
  }

  /** Starts the pod's containers. */
  run(): void {
    this.enqueue(() => this.sync());
  }

  /** Grace period for a deletion: deletionGracePeriodSeconds, else terminationGracePeriodSeconds, else 30 s. */
  graceMs(): number {
    const md = (this.raw as { metadata?: { deletionGracePeriodSeconds?: unknown } })?.metadata;
    const spec = (this.raw as { spec?: { terminationGracePeriodSeconds?: unknown } })?.spec;
    const g = typeof md?.deletionGracePeriodSeconds === "number" ? md.deletionGracePeriodSeconds : typeof spec?.terminationGracePeriodSeconds === "number" ? spec.terminationGracePeriodSeconds : 30;
    return Math.max(0, g) * 1000;
  }

  /**
   * Stops every container (SIGTERM, SIGKILL after graceMs) and nothing restarts afterwards.
   * persist=false (edgecore shutdown) leaves state.json as it was, so the next start runs the pod again.
   */
  terminate(graceMs: number, persist = true): Promise<void> {
    this.terminating = true;
    if (!persist) this.persistEnabled = false;
    clearTimeout(this.retryTimer);
    for (const c of this.containers.values()) clearTimeout(c.timer);
    return this.enqueue(async () => {
      const running = [...this.containers.values()].filter((c) => c.runId);
      await Promise.all(
        running.map(async (c) => {
          const id = c.runId!;
          try {
            await this.host.runtime.stopContainer(id, graceMs);
          } catch (e) {
            this.host.log.error("stopping a container failed", { pod: this.key, container: c.name, err: String(e) });
          }
          this.recordExit(c, id, this.host.runtime.status(id));
        }),
      );
      // A container waiting out its back-off shows its last termination.
      for (const c of this.containers.values()) if ("waiting" in c.state && c.lastState) c.state = { terminated: c.lastState };
      // The pod is finished with (not a shutdown): pod-level resources go (cri: the sandbox).
      if (persist && this.host.runtime.removePod)
        await this.host.runtime.removePod(this.uid).catch((e) => this.host.log.error("removing the pod from the runtime failed", { pod: this.key, err: String(e) }));
      this.stopped = true;
      this.persist();
      this.host.changed(this);
    });
  }

  /**
   * edgecore shutdown with a runtime whose containers outlive it (cri): nothing is stopped, nothing
   * more happens; the next edgecore adopts the containers. Resolves once the current step is done.
   */
  detach(): Promise<void> {
    this.terminating = true;
    this.persistEnabled = false;
    clearTimeout(this.retryTimer);
    for (const c of this.containers.values()) clearTimeout(c.timer);
    return this.enqueue(() => {});
  }

  /** The pod's current v1.PodStatus. */
  status(): V1PodStatus {
    const ip = this.host.nodeIP;
    const base = {
      hostIP: ip,
      hostIPs: [{ ip }],
      podIP: ip,
      podIPs: [{ ip }],
      ...(this.startTime !== undefined ? { startTime: rfc3339(this.startTime) } : {}),
    };
    const sched = this.clock.condition("PodScheduled", "True");
    if (this.invalid !== null || !this.pod) {
      const names = this.containerNamesOfRaw();
      return {
        phase: "Failed",
        reason: "InvalidPod",
        message: this.invalid ?? "invalid pod",
        conditions: [
          sched,
          this.clock.condition("Initialized", "True"),
          this.clock.condition("ContainersReady", "False", "InvalidPod", this.invalid ?? undefined),
          this.clock.condition("Ready", "False", "InvalidPod", this.invalid ?? undefined),
        ],
        ...base,
        containerStatuses: names.map((n) => ({
          name: n.name,
          state: { waiting: { reason: "CreateContainerConfigError", message: this.invalid ?? "invalid pod" } },
          lastState: {},
          ready: false,
          started: false,
          restartCount: 0,
          image: n.image,
          imageID: "",
        })),
      };
    }
    const statuses: V1ContainerStatus[] = this.pod.spec.containers.map((spec) => {
      const c = this.containers.get(spec.name)!;
      const running = "running" in c.state;
      const cid = "terminated" in c.state ? c.state.terminated.containerID : c.containerID;
      return {
        name: c.name,
        state: c.state,
        lastState: c.lastState ? { terminated: c.lastState } : {},
        ready: running && !this.terminating,
        started: running,
        restartCount: c.restartCount,
        image: spec.image ?? "",
        imageID: "",
        ...(cid ? { containerID: cid } : {}),
      };
    });
    const phase = podPhase((this.pod.spec.restartPolicy ?? "Always") as RestartPolicy, statuses);
    const unready = statuses.filter((s) => !s.ready).map((s) => s.name);
    const allReady = unready.length === 0;
    const notReadyMsg = `containers with unready status: [${unready.join(" ")}]`;
    const done = phase === "Succeeded" || phase === "Failed";
    return {
      phase,
      conditions: [
        sched,
        this.clock.condition("Initialized", "True"),
        allReady ? this.clock.condition("ContainersReady", "True") : this.clock.condition("ContainersReady", "False", done ? "PodCompleted" : "ContainersNotReady", done ? undefined : notReadyMsg),
        allReady ? this.clock.condition("Ready", "True") : this.clock.condition("Ready", "False", done ? "PodCompleted" : "ContainersNotReady", done ? undefined : notReadyMsg),
      ],
      ...base,
      containerStatuses: statuses,
    };
  }

  // ---- internals --------------------------------------------------------------------------

  private enqueue(step: () => Promise<void> | void): Promise<void> {
    const next = this.chain.then(step).catch((e) => this.host.log.error("pod worker step failed", { pod: this.key, err: String(e), stack: (e as Error)?.stack }));
    this.chain = next;
    return next;
  }

  private containerNamesOfRaw(): { name: string; image: string }[] {
    const cs = (this.raw as { spec?: { containers?: unknown } })?.spec?.containers;
    if (!Array.isArray(cs)) return [];
    return cs.filter((c) => c && typeof c.name === "string").map((c) => ({ name: c.name as string, image: typeof c.image === "string" ? c.image : "" }));
  }

  /** Validates the object and aligns the container records with its spec. */
  private accept(raw: unknown): void {
    const r = validatePod(raw, this.host.runtime.name);
    if (!r.ok) {
      if (this.invalid !== r.message) this.host.log.warn("pod cannot run", { pod: this.key, reason: r.message });
      this.invalid = r.message;
      this.pod = null;
      this.startTime ??= Date.now();
      return;
    }
    this.invalid = null;
    this.pod = r.pod;
    for (const spec of r.pod.spec.containers) {
      const c = this.containers.get(spec.name);
      if (c) c.spec = spec;
      else
        this.containers.set(spec.name, {
          name: spec.name,
          spec,
          hash: hashContainer(spec),
          restartCount: 0,
          starts: 0,
          crashes: 0,
          state: { waiting: { reason: "ContainerCreating" } },
        });
    }
  }

  private envContext(): PodEnvContext {
    return { pod: this.pod!, nodeName: this.host.nodeName, podIP: this.host.nodeIP, hostIP: this.host.nodeIP, get: this.host.get };
  }

  private scheduleRetry(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.poke(), this.host.retryMs);
  }

  private async sync(): Promise<void> {
    if (this.terminating) return;
    this.startTime ??= Date.now();
    if (this.invalid !== null || !this.pod) {
      this.persist();
      this.host.changed(this);
      return;
    }
    const pod = this.pod;
    // Containers removed from the spec (should not happen: the API forbids it) are stopped.
    for (const [name, c] of this.containers) {
      if (pod.spec.containers.some((s) => s.name === name)) continue;
      clearTimeout(c.timer);
      if (c.runId) await this.host.runtime.stopContainer(c.runId, this.graceMs()).catch(() => {});
      this.containers.delete(name);
    }
    try {
      this.volumes = await materializeVolumes(this.podDir, this.envContext());
    } catch (e) {
      if (!(e instanceof VolumeError)) throw e;
      for (const c of this.containers.values()) if (!c.runId && !("terminated" in c.state) && !c.timer) c.state = { waiting: { reason: "ContainerCreating", message: e.message } };
      this.host.log.warn("volume setup failed, will retry", { pod: this.key, err: e.message });
      this.scheduleRetry();
      this.host.changed(this);
      return;
    }
    for (const spec of pod.spec.containers) {
      const c = this.containers.get(spec.name)!;
      const hash = hashContainer(spec);
      if (c.runId) {
        if (hash === c.hash) continue;
        this.host.log.info("container spec changed, restarting it", { pod: this.key, container: c.name });
        const id = c.runId;
        await this.host.runtime.stopContainer(id, this.graceMs());
        this.recordExit(c, id, this.host.runtime.status(id));
        c.lastState = "terminated" in c.state ? c.state.terminated : c.lastState;
        c.hash = hash;
        await this.start(c);
        continue;
      }
      if (hash !== c.hash) {
        c.hash = hash;
        if ("terminated" in c.state) {
          c.lastState = c.state.terminated;
          c.state = { waiting: { reason: "ContainerCreating" } };
        }
      }
      if (c.timer) continue;
      if ("terminated" in c.state) continue;
      if (c.starts === 0 && this.host.runtime.adopt && (await this.adopt(c))) continue;
      await this.start(c);
    }
    this.persist();
    this.host.changed(this);
  }

  private async start(c: CRec): Promise<void> {
    const pod = this.pod!;
    const rt = this.host.runtime;
    // A runtime with its own filesystem (cri) gets the container's view: its image's PATH, mount
    // variables naming the mount paths inside, the image's working directory by default.
    const isolated = rt.isolated === true;
    let env: Record<string, string>;
    let command: string[];
    let args: string[];
    let mounts: ReturnType<typeof containerMounts>;
    try {
      const own = await resolveEnv(c.spec, this.envContext());
      mounts = containerMounts(this.podDir, c.spec, this.volumes ?? new Map(), own);
      const mountEnv = isolated ? { OUTPOST_ROOTFS: "/", ...Object.fromEntries((c.spec.volumeMounts ?? []).map((m) => [mountEnvName(m.name), m.mountPath])) } : mounts.env;
      env = {
        ...(isolated ? {} : { PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }),
        HOSTNAME: pod.metadata.name,
        ...mountEnv,
        ...own,
      };
      const lookup = (n: string) => env[n];
      command = (c.spec.command ?? []).map((a) => expandVars(a, lookup));
      args = (c.spec.args ?? []).map((a) => expandVars(a, lookup));
    } catch (e) {
      if (!(e instanceof ConfigError || e instanceof VolumeError)) throw e;
      c.state = { waiting: { reason: "CreateContainerConfigError", message: e.message } };
      this.host.log.warn("container config error, will retry", { pod: this.key, container: c.name, err: e.message });
      this.scheduleRetry();
      return;
    }
    let id: string;
    try {
      id = await rt.createContainer({
        podUid: this.uid,
        podName: pod.metadata.name,
        podNamespace: pod.metadata.namespace,
        name: c.name,
        image: c.spec.image ?? "",
        argv: [...command, ...args],
        command: c.spec.command ? command : undefined,
        args: c.spec.args ? args : undefined,
        env,
        // process: a relative workingDir is taken inside the container's rootfs farm.
        workingDir: isolated ? (c.spec.workingDir ?? "") : c.spec.workingDir ? (isAbsolute(c.spec.workingDir) ? c.spec.workingDir : join(mounts.rootfs, c.spec.workingDir)) : mounts.rootfs,
        logPath: join(this.podDir, "logs", `${c.name}.log`),
        mounts: mounts.mounts,
        ...(c.spec.imagePullPolicy ? { imagePullPolicy: c.spec.imagePullPolicy } : {}),
        ...(c.spec.resources?.limits ? { limits: c.spec.resources.limits } : {}),
        specHash: c.hash,
      });
    } catch (e) {
      if (!(e instanceof WaitingError)) throw e;
      // Not created (image missing, runtime refused): wait and retry, as kubelet's ErrImagePull etc.
      c.state = { waiting: { reason: e.reason, message: e.message } };
      this.host.log.warn("container cannot be created, will retry", { pod: this.key, container: c.name, reason: e.reason, err: e.message });
      this.scheduleRetry();
      return;
    }
    // The first start by this worker is not a restart, also after an edgecore restart: the pod
    // was stopped by the node, not by its own exit (restartCount itself comes from state.json).
    if (c.starts > 0) {
      c.restartCount++;
      this.host.counted("restart");
    }
    c.starts++;
    c.runId = id;
    try {
      await rt.startContainer(id);
    } catch (e) {
      const st = rt.status(id);
      this.host.log.warn("container failed to start", { pod: this.key, container: c.name, err: (e as Error).message });
      this.onExit(c, id, st ?? { id, containerID: "", state: "exited", exitCode: 128, reason: e instanceof StartError ? e.reason : "StartError", message: (e as Error).message });
      return;
    }
    const st = rt.status(id)!;
    c.containerID = st.containerID;
    c.state = { running: { startedAt: rfc3339(st.startedAt ?? Date.now()) } };
    this.host.counted("start");
    this.host.log.info("container started", { pod: this.key, container: c.name, id: st.containerID });
    void rt.wait(id).then((fin) => this.enqueue(() => this.onExit(c, id, fin)));
  }

  /** Takes over the container a previous edgecore left in the runtime, if any (cri). */
  private async adopt(c: CRec): Promise<boolean> {
    const rt = this.host.runtime;
    let id: string | null = null;
    try {
      id = await rt.adopt!(this.uid, c.name, c.hash);
    } catch (e) {
      this.host.log.warn("cannot adopt a leftover container", { pod: this.key, container: c.name, err: String(e) });
    }
    const st = id ? rt.status(id) : null;
    if (!id || !st) return false;
    c.runId = id;
    c.starts++;
    c.containerID = st.containerID;
    if (st.state === "exited") {
      // It ended while edgecore was away: its exit counts, the restart policy applies.
      this.onExit(c, id, st);
      return true;
    }
    c.state = { running: { startedAt: rfc3339(st.startedAt ?? Date.now()) } };
    this.host.log.info("container adopted", { pod: this.key, container: c.name, id: st.containerID });
    void rt.wait(id).then((fin) => this.enqueue(() => this.onExit(c, id, fin)));
    return true;
  }

  /** Turns a runtime exit into a terminated state; returns it, or null when `id` is not current. */
  private recordExit(c: CRec, id: string, st: ContainerStatus | null): Terminated | null {
    if (c.runId !== id) return null;
    c.runId = undefined;
    const now = Date.now();
    const exitCode = st?.exitCode ?? 137;
    const term: Terminated = {
      exitCode,
      reason: st?.reason ?? (exitCode === 0 ? "Completed" : "Error"),
      ...(st?.message ? { message: st.message } : {}),
      startedAt: rfc3339(st?.startedAt ?? now),
      finishedAt: rfc3339(st?.finishedAt ?? now),
      ...(st?.containerID ? { containerID: st.containerID } : {}),
    };
    c.state = { terminated: term };
    void this.host.runtime.removeContainer(id).catch(() => {});
    this.host.counted("exit");
    return term;
  }

  private onExit(c: CRec, id: string, st: ContainerStatus | null): void {
    const term = this.recordExit(c, id, st);
    if (!term) return;
    this.host.log.info("container exited", { pod: this.key, container: c.name, exitCode: term.exitCode, reason: term.reason });
    const policy = (this.pod?.spec.restartPolicy ?? "Always") as RestartPolicy;
    const restart = !this.terminating && (policy === "Always" || (policy === "OnFailure" && term.exitCode !== 0));
    if (restart) {
      const ran = (st?.finishedAt ?? 0) - (st?.startedAt ?? 0);
      if (ran >= this.host.backoffResetMs) c.crashes = 0;
      const delay = Math.min(this.host.backoffBaseMs * 2 ** Math.min(c.crashes, 30), this.host.backoffMaxMs);
      c.crashes++;
      c.lastState = term;
      c.state = { waiting: { reason: "CrashLoopBackOff", message: `back-off ${ms(delay)} restarting failed container=${c.name} pod=${this.identity.name}_${this.identity.namespace}(${this.uid})` } };
      c.timer = setTimeout(() => {
        c.timer = undefined;
        this.poke();
      }, delay);
    }
    this.persist();
    this.host.changed(this);
  }

  private load(): void {
    let saved: SavedState;
    try {
      saved = JSON.parse(readFileSync(join(this.podDir, "state.json"), "utf8")) as SavedState;
    } catch {
      return;
    }
    if (saved.uid !== this.uid) return;
    this.startTime = saved.startTime;
    this.clock.restore(saved.conditions);
    this.savedContainers = saved.containers;
  }

  private savedContainers: SavedState["containers"] | undefined;

  /** Applies what load() read once the container records exist. */
  private restoreSaved(): void {
    const saved = this.savedContainers;
    this.savedContainers = undefined;
    if (!saved) return;
    for (const [name, s] of Object.entries(saved)) {
      const c = this.containers.get(name);
      if (!c) continue;
      c.restartCount = s.restartCount ?? 0;
      c.crashes = s.crashes ?? 0;
      if (s.lastState) c.lastState = s.lastState;
      if (s.terminated) c.state = { terminated: s.terminated };
    }
  }

  private persist(): void {
    if (!this.persistEnabled) return;
    const saved: SavedState = {
      uid: this.uid,
      ...(this.startTime !== undefined ? { startTime: this.startTime } : {}),
      conditions: this.clock.snapshot(),
      containers: {},
    };
    for (const c of this.containers.values())
      saved.containers[c.name] = {
        restartCount: c.restartCount,
        crashes: c.crashes,
        ...("terminated" in c.state && !c.runId ? { terminated: c.state.terminated } : {}),
        ...(c.lastState ? { lastState: c.lastState } : {}),
      };
    try {
      mkdirSync(this.podDir, { recursive: true });
      const file = join(this.podDir, "state.json");
      writeFileSync(`${file}.tmp`, JSON.stringify(saved));
      renameSync(`${file}.tmp`, file);
    } catch (e) {
      this.host.log.warn("cannot save pod state", { pod: this.key, err: String(e) });
    }
  }
}
