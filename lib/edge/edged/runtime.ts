/**
 * The container runtime seam of Edged. The `process` runtime (process-runtime.ts) implements it
 * with child processes; a `cri` runtime talking to containerd can implement it later. Edged only
 * speaks to this interface: it decides *what* runs, the runtime decides *how*.
 */

/** Everything a runtime needs to run one container instance (one start of one pod container). */
export interface ContainerConfig {
  /** Pod identity, for labels and for leftover bookkeeping. */
  podUid: string;
  podName: string;
  podNamespace: string;
  /** Container name inside the pod. */
  name: string;
  /** Recorded, not pulled, by the process runtime. */
  image: string;
  /** command + args, `$(VAR)` already expanded. argv[0] is the executable. */
  argv: string[];
  /** The environment of the container (the process runtime adds only OUTPOST_RUNTIME_DIR). */
  env: Record<string, string>;
  /** Working directory on the host (process runtime) or in the container (cri). */
  workingDir: string;
  /** Where stdout and stderr go (the runtime rotates it). */
  logPath: string;
  /** Host path → container path, for runtimes with a mount namespace. */
  mounts: { hostPath: string; containerPath: string; readOnly: boolean }[];
}

export type ContainerRunState = "created" | "running" | "exited";

export interface ContainerStatus {
  /** The runtime's id of this instance (what create returned). */
  id: string;
  /** `<runtime>://<id>` as shown in the pod status, e.g. `process://12345`. */
  containerID: string;
  state: ContainerRunState;
  pid?: number;
  /** Epoch ms. */
  startedAt?: number;
  finishedAt?: number;
  exitCode?: number;
  /** Signal name when the process was killed by a signal. */
  signal?: string;
  /** Set when the container never ran: `StartError` and a message naming the cause. */
  reason?: string;
  message?: string;
}

/** Thrown by startContainer when the container cannot start (missing executable, bad workingDir). */
export class StartError extends Error {
  readonly reason = "StartError";
}

export interface Runtime {
  /** `process` or `cri`; used in containerIDs and the node's containerRuntimeVersion. */
  readonly name: string;
  readonly version: string;
  /**
   * Called once before anything else: deal with containers a previous edgecore left behind.
   * Returns how many it killed. The process runtime kills every recorded process group.
   */
  recover(): Promise<number>;
  createContainer(cfg: ContainerConfig): Promise<string>;
  /** Resolves once running; rejects with StartError when it cannot start. */
  startContainer(id: string): Promise<void>;
  /** SIGTERM (or the runtime's equivalent), then SIGKILL after graceMs. Resolves once exited. */
  stopContainer(id: string, graceMs: number): Promise<void>;
  /** Forgets an exited container. Logs stay. */
  removeContainer(id: string): Promise<void>;
  status(id: string): ContainerStatus | null;
  /** Resolves with the final status when the container exits (immediately if it already has). */
  wait(id: string): Promise<ContainerStatus>;
  logPath(id: string): string | null;
  /** Stops everything (shutdown). */
  close(): Promise<void>;
}
