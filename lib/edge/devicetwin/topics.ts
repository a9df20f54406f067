/**
 * KubeEdge's device-twin MQTT topics. Device ids are `<namespace>/<name>` (KubeEdge ≥ v1.17), so a
 * device topic is `$hw/events/device/<namespace>/<name>/<action>`.
 */

export const DEVICE_PREFIX = "$hw/events/device/";
export const NODE_PREFIX = "$hw/events/node/";
export const UPLOAD_PREFIX = "$hw/events/upload/";
export const UPLOAD_RECORDS_TOPIC = "SYS/dis/upload_records";

export const TwinAction = {
  update: "twin/update",
  updateResult: "twin/update/result",
  delta: "twin/update/delta",
  document: "twin/update/document",
  get: "twin/get",
  getResult: "twin/get/result",
  cloudUpdated: "twin/cloud_updated",
  edgeUpdated: "twin/edge_updated",
  stateUpdate: "state/update",
  stateUpdateResult: "state/update/result",
  updated: "updated",
} as const;

export const NodeAction = {
  membershipGet: "membership/get",
  membershipGetResult: "membership/get/result",
  membershipUpdated: "membership/updated",
} as const;

/** What the EventBus subscribes to (KubeEdge's list, device ids with two segments). */
export const TWIN_SUBSCRIPTIONS = [
  "$hw/events/device/+/+/twin/+",
  "$hw/events/device/+/+/state/update",
  "$hw/events/node/+/membership/get",
  "$hw/events/upload/#",
  UPLOAD_RECORDS_TOPIC,
] as const;

export function deviceTopic(deviceId: string, action: string): string {
  return `${DEVICE_PREFIX}${deviceId}/${action}`;
}

export function nodeTopic(node: string, action: string): string {
  return `${NODE_PREFIX}${node}/${action}`;
}

export interface DeviceTopic {
  deviceId: string;
  namespace: string;
  name: string;
  /** What follows the device id, e.g. `twin/update`. */
  action: string;
}

/** `$hw/events/device/<ns>/<name>/<action...>` → its parts; null when it is not one. */
export function parseDeviceTopic(topic: string): DeviceTopic | null {
  if (!topic.startsWith(DEVICE_PREFIX)) return null;
  const parts = topic.slice(DEVICE_PREFIX.length).split("/");
  if (parts.length < 3) return null;
  const [namespace, name, ...rest] = parts as [string, string, ...string[]];
  if (!namespace || !name || rest.some((p) => p === "")) return null;
  return { deviceId: `${namespace}/${name}`, namespace, name, action: rest.join("/") };
}

/** `$hw/events/node/<node>/<action...>` → its parts; null when it is not one. */
export function parseNodeTopic(topic: string): { node: string; action: string } | null {
  if (!topic.startsWith(NODE_PREFIX)) return null;
  const rest = topic.slice(NODE_PREFIX.length);
  const i = rest.indexOf("/");
  if (i <= 0) return null;
  return { node: rest.slice(0, i), action: rest.slice(i + 1) };
}

/** Topics whose messages go up to the cloud (op `upload`, group `user`, resource = topic). */
export function isUploadTopic(topic: string): boolean {
  return topic.startsWith(UPLOAD_PREFIX) || topic === UPLOAD_RECORDS_TOPIC;
}
