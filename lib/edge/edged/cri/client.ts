/**
 * A CRI v1 client (k8s.io/cri-api runtime/v1, schemas/cri/api.proto) over gRPC on a unix socket,
 * with @grpc/grpc-js. The .proto text is imported as a module (Bun inlines it, so the compiled
 * edgecore carries it) and parsed with protobufjs; proto-loader turns that into gRPC service
 * definitions. Fields keep the proto's snake_case names, 64-bit integers are decimal strings and
 * enums their names. Only the calls Edged uses are typed here.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import apiProto from "../../../../schemas/cri/api.proto" with { type: "text" };

export type Int64 = string;
export type Labels = Record<string, string>;

export interface VersionResponse {
  version: string;
  runtime_name: string;
  runtime_version: string;
  runtime_api_version: string;
}

export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  hostname?: string;
  log_directory?: string;
  dns_config?: { servers: string[]; searches: string[]; options: string[] };
  labels?: Labels;
  annotations?: Labels;
  linux?: {
    cgroup_parent?: string;
    security_context?: { namespace_options?: { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode } };
  };
}

export type PodSandboxState = "SANDBOX_READY" | "SANDBOX_NOTREADY";

export interface PodSandbox {
  id: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  state: PodSandboxState;
  created_at: Int64;
  labels: Labels;
  annotations: Labels;
}

export interface Mount {
  container_path: string;
  host_path: string;
  readonly: boolean;
  propagation?: "PROPAGATION_PRIVATE" | "PROPAGATION_HOST_TO_CONTAINER" | "PROPAGATION_BIDIRECTIONAL";
}

export interface ContainerConfigMsg {
  metadata: { name: string; attempt: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  working_dir?: string;
  /** `bytes` in the current api.proto (wire-compatible with the older `string`). */
  envs?: { key: string; value: Uint8Array }[];
  mounts?: Mount[];
  labels?: Labels;
  annotations?: Labels;
  log_path?: string;
  stdin?: boolean;
  tty?: boolean;
  linux?: {
    resources?: { cpu_period?: Int64; cpu_quota?: Int64; cpu_shares?: Int64; memory_limit_in_bytes?: Int64; oom_score_adj?: Int64 };
    security_context?: { namespace_options?: { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode } };
  };
}

export type ContainerState = "CONTAINER_CREATED" | "CONTAINER_RUNNING" | "CONTAINER_EXITED" | "CONTAINER_UNKNOWN";

export interface Container {
  id: string;
  pod_sandbox_id: string;
  metadata: { name: string; attempt: number };
  image: { image: string };
  image_ref: string;
  state: ContainerState;
  created_at: Int64;
  labels: Labels;
  annotations: Labels;
}

export interface ContainerStatusMsg {
  id: string;
  metadata: { name: string; attempt: number };
  state: ContainerState;
  created_at: Int64;
  started_at: Int64;
  finished_at: Int64;
  exit_code: number;
  image: { image: string };
  image_ref: string;
  reason: string;
  message: string;
  labels: Labels;
  annotations: Labels;
  log_path: string;
}

export interface Image {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  size: Int64;
}

/** A CRI call failed: `code` is the gRPC status code (5 = NOT_FOUND, 14 = UNAVAILABLE, 4 = DEADLINE_EXCEEDED). */
export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: number,
    readonly details: string,
  ) {
    super(`CRI ${method}: ${details || `gRPC status ${code}`}`);
  }
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type Service = grpc.Client & Record<string, (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall>;
type ServiceCtor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => Service;

let services: { runtime: ServiceCtor; image: ServiceCtor } | null = null;

/** Parses the CRI proto once (from the inlined text, no file is read at run time). */
function loadServices(): { runtime: ServiceCtor; image: ServiceCtor } {
  if (services) return services;
  const root = protobuf.parse(apiProto, { keepCase: true }).root;
  const def = protoLoader.fromJSON(root.toJSON(), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: ServiceCtor; ImageService: ServiceCtor } } };
  services = { runtime: pkg.runtime.v1.RuntimeService, image: pkg.runtime.v1.ImageService };
  return services;
}

/** `unix:///run/containerd/containerd.sock`, `unix:/x` or a bare path → a gRPC target. */
export function criTarget(endpoint: string): string {
  if (endpoint.startsWith("unix://")) return `unix://${endpoint.slice("unix://".length)}`;
  if (endpoint.startsWith("unix:")) return `unix://${endpoint.slice("unix:".length)}`;
  if (endpoint.startsWith("/")) return `unix://${endpoint}`;
  throw new Error(`CRI endpoint ${JSON.stringify(endpoint)}: only unix sockets are supported (unix:///path)`);
}

export interface CriClientOptions {
  /** Deadline of ordinary calls (default 30 s). */
  timeoutMs?: number;
}

export class CriClient {
  private readonly runtime: Service;
  private readonly image: Service;
  private readonly timeoutMs: number;

  constructor(
    readonly endpoint: string,
    opts: CriClientOptions = {},
  ) {
    const { runtime, image } = loadServices();
    const target = criTarget(endpoint);
    const creds = grpc.credentials.createInsecure();
    // One channel for both services; large lists (many containers/images) fit in 16 MiB.
    const chOpts: grpc.ChannelOptions = { "grpc.max_receive_message_length": 16 * 1024 * 1024 };
    this.runtime = new runtime(target, creds, chOpts);
    this.image = new image(target, creds, { ...chOpts, channelOverride: this.runtime.getChannel() });
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  private call<T>(svc: Service, method: string, req: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fn = svc[method];
      if (typeof fn !== "function") return reject(new Error(`CRI: no method ${method}`));
      fn.call(svc, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<VersionResponse> {
    return this.call(this.runtime, "Version", { version: "v1" });
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ""): Promise<string> {
    return (await this.call<{ pod_sandbox_id: string }>(this.runtime, "RunPodSandbox", { config, runtime_handler: runtimeHandler }, 120_000)).pod_sandbox_id;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, "StopPodSandbox", { pod_sandbox_id: id }, 120_000);
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, "RemovePodSandbox", { pod_sandbox_id: id }, 120_000);
  }

  async podSandboxState(id: string): Promise<PodSandboxState> {
    return (await this.call<{ status: { state: PodSandboxState } }>(this.runtime, "PodSandboxStatus", { pod_sandbox_id: id, verbose: false })).status.state;
  }

  async listPodSandbox(labelSelector: Labels = {}): Promise<PodSandbox[]> {
    return (await this.call<{ items: PodSandbox[] }>(this.runtime, "ListPodSandbox", { filter: { label_selector: labelSelector } })).items;
  }

  async createContainer(podSandboxId: string, config: ContainerConfigMsg, sandboxConfig: PodSandboxConfig): Promise<string> {
    return (await this.call<{ container_id: string }>(this.runtime, "CreateContainer", { pod_sandbox_id: podSandboxId, config, sandbox_config: sandboxConfig }, 120_000)).container_id;
  }

  async startContainer(id: string): Promise<void> {
    await this.call(this.runtime, "StartContainer", { container_id: id }, 120_000);
  }

  /** Stop signal, then SIGKILL after `timeoutS` seconds (0: at once). */
  async stopContainer(id: string, timeoutS: number): Promise<void> {
    await this.call(this.runtime, "StopContainer", { container_id: id, timeout: String(timeoutS) }, timeoutS * 1000 + 30_000);
  }

  async removeContainer(id: string): Promise<void> {
    await this.call(this.runtime, "RemoveContainer", { container_id: id });
  }

  async listContainers(labelSelector: Labels = {}): Promise<Container[]> {
    return (await this.call<{ containers: Container[] }>(this.runtime, "ListContainers", { filter: { label_selector: labelSelector } })).containers;
  }

  async containerStatus(id: string): Promise<ContainerStatusMsg> {
    return (await this.call<{ status: ContainerStatusMsg }>(this.runtime, "ContainerStatus", { container_id: id, verbose: false })).status;
  }

  async reopenContainerLog(id: string): Promise<void> {
    await this.call(this.runtime, "ReopenContainerLog", { container_id: id });
  }

  /** The image if present (by name or id), else null. */
  async imageStatus(image: string): Promise<Image | null> {
    return (await this.call<{ image: Image | null }>(this.image, "ImageStatus", { image: { image }, verbose: false })).image ?? null;
  }

  /** Returns the image reference (id). */
  async pullImage(image: string, sandboxConfig?: PodSandboxConfig, timeoutMs = 300_000): Promise<string> {
    return (await this.call<{ image_ref: string }>(this.image, "PullImage", { image: { image }, ...(sandboxConfig ? { sandbox_config: sandboxConfig } : {}) }, timeoutMs)).image_ref;
  }

  async listImages(): Promise<Image[]> {
    return (await this.call<{ images: Image[] }>(this.image, "ListImages", {})).images;
  }

  close(): void {
    this.runtime.close();
    this.image.close();
  }
}

/** Nanoseconds since the epoch (as an int64 string) → epoch ms; undefined for 0 / unset. */
export function nsToMs(ns: Int64 | number | undefined): number | undefined {
  if (ns === undefined || ns === "" || ns === "0" || ns === 0) return undefined;
  return Number(BigInt(ns) / 1_000_000n);
}
