/**
 * KubeEdge's beehive message: header / route / content, exactly as it crosses the hub link.
 * See ../shared/kubeedge-wire.md. The schema is lenient where KubeEdge is (optional route fields,
 * content of any JSON type) and strict where a wrong type would hurt us (ids, timestamps).
 */
import * as v from "valibot";
import { randomUUID } from "node:crypto";

export const MessageHeaderSchema = v.object({
  msg_id: v.pipe(v.string(), v.minLength(1), v.maxLength(128)),
  parent_msg_id: v.optional(v.pipe(v.string(), v.maxLength(128))),
  timestamp: v.optional(v.pipe(v.number(), v.integer()), 0),
  resourceversion: v.optional(v.string()),
  sync: v.optional(v.boolean()),
  type: v.optional(v.string()),
});

const routeField = v.optional(v.pipe(v.string(), v.maxLength(1024)), "");

export const MessageRouteSchema = v.object({
  source: routeField,
  destination: v.optional(v.pipe(v.string(), v.maxLength(1024))),
  group: routeField,
  operation: routeField,
  resource: routeField,
});

export const MessageSchema = v.object({
  header: MessageHeaderSchema,
  route: MessageRouteSchema,
  content: v.optional(v.unknown()),
});

export type Message = v.InferOutput<typeof MessageSchema>;
export type MessageRoute = Message["route"];

/** Operations used on the wire (beehive/model) plus the edge extras KubeEdge defines. */
export const Op = {
  insert: "insert",
  delete: "delete",
  query: "query",
  update: "update",
  patch: "patch",
  upload: "upload",
  response: "response",
  error: "error",
  keepalive: "keepalive",
} as const;

export function newMessage(route: Partial<MessageRoute> & { operation: string; resource: string }, content: unknown, header: Partial<Message["header"]> = {}): Message {
  return {
    header: { msg_id: randomUUID(), timestamp: Date.now(), ...header },
    route: { source: route.source ?? "", group: route.group ?? "", operation: route.operation, resource: route.resource, ...(route.destination ? { destination: route.destination } : {}) },
    content,
  };
}

/** A reply to `req`: new id, parent id = request id, same source/group/resource, operation `response`. */
export function responseTo(req: Message, content: unknown, operation: string = Op.response): Message {
  return {
    header: { msg_id: randomUUID(), parent_msg_id: req.header.msg_id, timestamp: Date.now() },
    route: { source: req.route.source, group: req.route.group, operation, resource: req.route.resource },
    content,
  };
}

export class FrameError extends Error {}

/** Parses one hub frame (a JSON document, possibly newline-terminated). Throws FrameError with the reason. */
export function parseFrame(text: string): Message {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FrameError(`not JSON: ${(e as Error).message}`);
  }
  // valibot's object() also takes arrays; a message, its header and its route must be plain objects
  const d = doc as { header?: unknown; route?: unknown };
  for (const [what, x] of [["message", doc], ["header", d?.header], ["route", d?.route]] as const)
    if (Array.isArray(x)) throw new FrameError(`not a message: ${what} must be an object, not an array`);
  const r = v.safeParse(MessageSchema, doc);
  if (!r.success) {
    const issue = r.issues[0];
    const path = issue ? v.getDotPath(issue) : null;
    throw new FrameError(`not a message: ${path ? `${path}: ` : ""}${issue?.message ?? "invalid"}`);
  }
  return r.output;
}

export function encodeFrame(msg: Message): string {
  return JSON.stringify(msg) + "\n";
}

// ---- resource strings ---------------------------------------------------------------------

/** Namespace literal KubeEdge uses for cluster-scoped objects. */
export const CLUSTER_NS = "null";

export interface ResourceRef {
  namespace: string;
  type: string;
  /** Absent for list resources (`<ns>/<type>`). */
  name?: string;
}

/** `<namespace>/<type>/<name>` (or `<namespace>/<type>` for lists); cluster-scoped → namespace `null`. */
export function buildResource(ref: ResourceRef): string {
  const ns = ref.namespace === "" ? CLUSTER_NS : ref.namespace;
  return ref.name === undefined ? `${ns}/${ref.type}` : `${ns}/${ref.type}/${ref.name}`;
}

/** Inverse of buildResource. The name keeps any further slashes. Returns null when malformed. */
export function parseResource(resource: string): ResourceRef | null {
  const parts = resource.split("/");
  if (parts.length < 2 || !parts[0] || !parts[1]) return null;
  const [namespace, type, ...rest] = parts as [string, string, ...string[]];
  if (rest.length === 0) return { namespace, type };
  const name = rest.join("/");
  return name ? { namespace, type, name } : null;
}

/** Cloud-internal form `node/<node>/<resource>`. */
export function nodeResource(node: string, resource: string): string {
  return `node/${node}/${resource}`;
}

/** Splits `node/<node>/<rest>`; returns null when the string is not node-prefixed. */
export function splitNodeResource(resource: string): { node: string; resource: string } | null {
  if (!resource.startsWith("node/")) return null;
  const i = resource.indexOf("/", 5);
  if (i < 0) return null;
  const node = resource.slice(5, i);
  return node ? { node, resource: resource.slice(i + 1) } : null;
}

/** Compares two resourceVersions as integers when both are; undefined when they cannot be compared. */
export function compareRv(a: string | undefined, b: string | undefined): number | undefined {
  if (!a || !b || !/^\d+$/.test(a) || !/^\d+$/.test(b)) return undefined;
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** True when `incoming` is a strictly older resourceVersion than `stored` (false when either is not a number). */
export function isOlderRv(incoming: string | undefined, stored: string | undefined): boolean {
  return compareRv(incoming, stored) === -1;
}
