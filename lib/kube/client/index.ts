/** The Kubernetes client: kubeconfig / in-cluster config, REST calls, resuming watches, shared informers. */
export { KubeClient, PATCH_CONTENT_TYPES, type DeleteOptions, type JsonPatchOp, type KubeClientOptions, type ListOptions, type PatchType, type WatchQuery, type WriteOptions } from "./client.ts";
export { KubeApiError, KubeTransportError, isConflict, isGone, isNotFound, type KubeStatus } from "./errors.ts";
export { InformerFactory, SharedInformer, byNodeName, type IndexFunc, type InformerEventName, type InformerFactoryOptions, type InformerHandlers, type InformerOptions } from "./informer.ts";
export { KubeConfigError, SERVICE_ACCOUNT_DIR, inClusterAvailable, inClusterConfig, loadKubeConfig, parseKubeConfig, type ClusterConfig, type ParseKubeConfigOptions } from "./kubeconfig.ts";
export { Resources, apiVersionOf, coreResource, objectKey, ref, resourcePath, type KubeList, type KubeObject, type ObjectMeta, type ResourceRef } from "./resources.ts";
export { WatchLoop, backoffDelay, type BackoffOptions, type WatchEvent, type WatchEventType, type WatchLoopOptions } from "./watch.ts";
