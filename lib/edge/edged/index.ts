/** Edged: pods on the edge node. See docs/pods.md. */
export { Edged, type EdgedOptions, type MetaSource } from "./edged.ts";
export { ProcessRuntime, type ProcessRuntimeOptions } from "./process-runtime.ts";
export { CriRuntime, DEFAULT_CRI_ENDPOINT, LABELS as CRI_LABELS, type CriRuntimeOptions } from "./cri-runtime.ts";
export { CriClient, CriError } from "./cri/client.ts";
export { parseCriLog } from "./cri/logs.ts";
export { StartError, WaitingError, type NodeImage, type Runtime, type ContainerConfig, type ContainerStatus, type ContainerRunState } from "./runtime.ts";
export { mountEnvName } from "./volumes.ts";
export { nodeIPv4, KUBELET_VERSION } from "./nodestatus.ts";
export type { V1PodStatus, V1ContainerStatus, ContainerState, Terminated, PodPhase } from "./status.ts";
