/** Addressing of API resources: group/version/resource + scope, and the REST paths built from them. */
import type { ObjectMeta } from "../meta.ts";

export interface ResourceRef {
  /** "" for the core group. */
  group: string;
  version: string;
  /** Plural, lower-case: "pods", "devices". */
  resource: string;
  namespaced: boolean;
  /** The Kind, when known (used for apiVersion/kind defaults on create). */
  kind?: string;
}

export type { ObjectMeta };

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [key: string]: unknown;
}

export interface KubeList<T extends KubeObject = KubeObject> {
  apiVersion?: string;
  kind?: string;
  metadata: { resourceVersion?: string; continue?: string; remainingItemCount?: number };
  items: T[];
}

export const ref = (group: string, version: string, resource: string, namespaced: boolean, kind?: string): ResourceRef => ({
  group,
  version,
  resource,
  namespaced,
  ...(kind ? { kind } : {}),
});

/** The built-in and KubeEdge resources Outpost uses. Anything else: `ref(...)` / `KubeClient.resource(...)`. */
export const Resources = {
  namespaces: ref("", "v1", "namespaces", false, "Namespace"),
  nodes: ref("", "v1", "nodes", false, "Node"),
  pods: ref("", "v1", "pods", true, "Pod"),
  configmaps: ref("", "v1", "configmaps", true, "ConfigMap"),
  secrets: ref("", "v1", "secrets", true, "Secret"),
  services: ref("", "v1", "services", true, "Service"),
  endpoints: ref("", "v1", "endpoints", true, "Endpoints"),
  events: ref("", "v1", "events", true, "Event"),
  serviceaccounts: ref("", "v1", "serviceaccounts", true, "ServiceAccount"),
  persistentvolumes: ref("", "v1", "persistentvolumes", false, "PersistentVolume"),
  persistentvolumeclaims: ref("", "v1", "persistentvolumeclaims", true, "PersistentVolumeClaim"),
  leases: ref("coordination.k8s.io", "v1", "leases", true, "Lease"),
  customresourcedefinitions: ref("apiextensions.k8s.io", "v1", "customresourcedefinitions", false, "CustomResourceDefinition"),
  devices: ref("devices.kubeedge.io", "v1beta1", "devices", true, "Device"),
  devicemodels: ref("devices.kubeedge.io", "v1beta1", "devicemodels", true, "DeviceModel"),
  devicestatuses: ref("devices.kubeedge.io", "v1beta1", "devicestatuses", true, "DeviceStatus"),
} as const satisfies Record<string, ResourceRef>;

const CLUSTER_SCOPED_CORE = new Set(["namespaces", "nodes", "persistentvolumes", "componentstatuses"]);

/** A core/v1 resource by plural name; scope from the table (cluster-scoped: namespaces, nodes, persistentvolumes). */
export function coreResource(resource: string): ResourceRef {
  const known = (Resources as Record<string, ResourceRef>)[resource];
  if (known && known.group === "") return known;
  return ref("", "v1", resource, !CLUSTER_SCOPED_CORE.has(resource));
}

export const apiVersionOf = (r: ResourceRef): string => (r.group ? `${r.group}/${r.version}` : r.version);

const seg = (s: string) => encodeURIComponent(s);

/** `/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUB]]` or the `/apis/GROUP/VERSION/…` equivalent. */
export function resourcePath(r: ResourceRef, namespace?: string, name?: string, subresource?: string): string {
  let p = r.group ? `/apis/${seg(r.group)}/${seg(r.version)}` : `/api/${seg(r.version)}`;
  if (r.namespaced && namespace) p += `/namespaces/${seg(namespace)}`;
  p += `/${seg(r.resource)}`;
  if (name !== undefined) {
    if (!name) throw new Error(`${r.resource}: empty object name`);
    p += `/${seg(name)}`;
    if (subresource) p += `/${seg(subresource)}`;
  }
  return p;
}

/** "namespace/name" (or "name" for cluster-scoped objects): the key informers and caches use. */
export function objectKey(o: KubeObject): string {
  const ns = o.metadata?.namespace;
  const name = o.metadata?.name ?? "";
  return ns ? `${ns}/${name}` : name;
}
