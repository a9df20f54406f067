/**
 * The container runtime seam of Edged. The `process` runtime (process-runtime.ts) implements it
 * with child processes; the `cri` runtime (cri-runtime.ts) with containers through a CRI socket
 * (containerd). Edged only speaks to this interface: it decides *what* runs, the runtime decides
 * *how*. The optional members are pod-level and restart hooks that only the cri runtime needs.
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
  /** `command` and `args` apart (expanded), for runtimes that keep the image's entrypoint/cmd when one is missing. */
  command?: string[];
  args?: string[];
  /** `imagePullPolicy` as given (cri: the default follows Kubernetes: Always for `:latest` or no tag). */
  imagePullPolicy?: string;
  /** `resources.limits` as given (`cpu`, `memory` quantities). */
  limits?: Record<string, unknown>;
  /** Hash of the container's spec, kept with the container so a restarted edgecore can tell whether to adopt it. */
  specHash?: string;
}

/** The containerd socket the `cri` runtime dials unless told otherwise (here, not in cri-runtime.ts, so naming it loads no gRPC). */
export const DEFAULT_CRI_ENDPOINT = "unix:///run/containerd/containerd.sock";

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

/**
 * Thrown by createContainer when the container cannot be created yet and Edged should retry later
 * while showing `waiting` with this reason (e.g. `ErrImagePull`, `ImagePullBackOff`,
 * `ErrImageNeverPull`, `CreateContainerError`).
 */
export class WaitingError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** An image present on the node, as kubelet reports it in `status.images`. */
export interface NodeImage {
  names: string[];
  sizeBytes: number;
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
  /** Stops everything (shutdown); a runtime with `keepsContainers` only lets go of them. */
  close(): Promise<void>;

  // ---- optional: runtimes whose containers outlive edgecore (cri) ----
  /**
   * Containers outlive edgecore: shutdown leaves them running (Edged does not stop pods), and at the
   * next start Edged adopts them with adopt() instead of starting new ones.
   */
  readonly keepsContainers?: boolean;
  /** Containers have their own filesystem: env, mounts and workingDir are the container's view. */
  readonly isolated?: boolean;
  /**
   * A container of this pod left by a previous edgecore, running or exited, whose spec hash is
   * `specHash`: the runtime now tracks it (status/wait work) and returns its id; null when there is
   * none. Other leftovers of that pod container are removed.
   */
  adopt?(podUid: string, container: string, specHash: string): Promise<string | null>;
  /** After Edged loaded the stored pods: remove what belongs to pods not in `keep` (pod uids). */
  removeOrphans?(keep: Set<string>): Promise<void>;
  /** The pod is finished with (deleted): release its pod-level resources (cri: the sandbox). */
  removePod?(podUid: string): Promise<void>;
  /** `<runtime>://<version>` for nodeInfo.containerRuntimeVersion, e.g. `containerd://1.6.20`. */
  runtimeVersion?(): string;
  /** Images present on the node (for the node's status.images). */
  images?(): NodeImage[];
}
