/** Wire constants shared by CloudHub and EdgeHub (see ../shared/kubeedge-wire.md). */
export const DEFAULT_PROJECT_ID = "e632aba927ea4ac2b575ec1603d56f10";
export const DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024;
export const NODE_CN_PREFIX = "system:node:";
export const NODES_ORG = "system:nodes";

/** Node names are Kubernetes object names: DNS subdomains. */
export const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** The route sources an upstream message is dispatched by, as KubeEdge's CloudHub does. */
export function cloudGroupFor(source: string, operation?: string): string {
  if (operation === "query") return "queryserver"; // reads, scoped to the node (lib/cloud/queryserver.ts)
  return source === "twin" ? "devicecontroller" : "edgecontroller";
}

/** The edge module group a downstream message belongs to, by route.group. */
export function edgeGroupFor(group: string): string | null {
  switch (group) {
    case "resource":
    case "func":
      return "meta";
    case "twin":
      return "twin";
    case "user":
      return "bus";
    default:
      return null;
  }
}
