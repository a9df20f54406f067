/**
 * MetaManager: keeps every object the cloud sends in edgecore.db and acknowledges it only once it
 * is stored, so the cloud never believes in a delivery that a crash could undo. It then hands the
 * object to the module that acts on it (pods and their configmaps/secrets → Edged, devices → twin)
 * and tells local watchers (MetaServer). Everything keeps working from the store when the cloud is
 * gone, also across restarts.
 */
import type { Kysely } from "kysely";
import { EventEmitter } from "node:events";
import { Op, isOlderRv, newMessage, parseResource, responseTo, type Message } from "../message.ts";
import type { Module, ModuleContext } from "../router.ts";
import type { Logger } from "../log.ts";
import type { EdgeDb } from "./store.ts";

export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

export interface MetaChange {
  type: ChangeType;
  /** The resource type as KubeEdge names it: pod, configmap, secret, service, node, device, ... */
  kind: string;
  namespace: string;
  name: string;
  object: unknown;
}

/** Which module acts on a stored object, by resource type (KubeEdge: meta forwards to edged / twin). */
const consumers: Record<string, string> = {
  pod: "edged",
  configmap: "edged",
  secret: "edged",
  device: "twin",
  devicemodel: "twin",
};

export class MetaManager extends EventEmitter<{ change: [MetaChange] }> implements Module {
  readonly name = "metamanager";
  readonly group = "meta";
  private ctx?: ModuleContext;
  private log?: Logger;

  constructor(private readonly db: Kysely<EdgeDb>) {
    super();
    this.setMaxListeners(0);
  }

  start(ctx: ModuleContext): void {
    this.ctx = ctx;
    this.log = ctx.log;
  }

  stop(): void {}

  async handle(msg: Message): Promise<void> {
    const { operation, resource } = msg.route;
    const ref = parseResource(resource);
    if (!ref) {
      this.log?.warn("message with a malformed resource dropped", { resource });
      return;
    }
    switch (operation) {
      case Op.insert:
      case Op.update:
      case Op.patch: {
        if (ref.name === undefined && (ref.type === "podlist" || ref.type === "devicelist")) {
          await this.reconcile(ref.type.slice(0, -4), msg.content, msg.header.resourceversion);
          return this.ack(msg);
        }
        if (ref.name === undefined) return;
        const rv = msg.header.resourceversion ?? rvOf(msg.content);
        const existing = await this.db.selectFrom("meta").select(["resource_version"]).where("key", "=", resource).executeTakeFirst();
        if (existing && isOlderRv(rv, existing.resource_version)) {
          // a stale resend (the cloud retries until acked): keep the newer copy, still ack
          this.log?.debug("stale version ignored", { resource, rv, stored: existing.resource_version });
          this.ack(msg);
          return;
        }
        const value = JSON.stringify(msg.content ?? null);
        const now = Date.now();
        await this.db
          .insertInto("meta")
          .values({ key: resource, type: ref.type, value, resource_version: rv, updated_at: now })
          .onConflict((oc) => oc.column("key").doUpdateSet({ type: ref.type, value, resource_version: rv, updated_at: now }))
          .execute();
        this.ack(msg);
        this.dispatch(msg, { type: existing ? "MODIFIED" : "ADDED", kind: ref.type, namespace: ref.namespace, name: ref.name, object: msg.content });
        return;
      }
      case Op.delete: {
        if (ref.name === undefined) return;
        const row = await this.db.selectFrom("meta").select(["value"]).where("key", "=", resource).executeTakeFirst();
        await this.db.deleteFrom("meta").where("key", "=", resource).execute();
        this.ack(msg);
        this.dispatch(msg, { type: "DELETED", kind: ref.type, namespace: ref.namespace, name: ref.name, object: row ? JSON.parse(row.value) : msg.content });
        return;
      }
      case Op.query:
        await this.answerQuery(msg, ref.type, ref.namespace, ref.name);
        return;
      case Op.response:
      case Op.error:
        return;
      default:
        this.log?.debug("operation not handled", { operation, resource });
    }
  }

  /**
   * The cloud's list of every pod (or device) bound to this node, sent on reconnect: stored objects
   * not in it were deleted while the link was down, so they are removed and their module is told.
   * `listRv` (when numeric) is what the cloud's cache was current to when it made the list: an
   * object stored with a newer resourceVersion was created after it (a resent, older list must not
   * remove it).
   */
  private async reconcile(type: string, content: unknown, listRv?: string): Promise<void> {
    if (!Array.isArray(content)) return this.log?.warn(`${type}list without a list dropped`);
    const keep = new Set(content.map((p: { namespace?: string; name?: string }) => `${p?.namespace}/${type}/${p?.name}`));
    const rows = await this.db.selectFrom("meta").select(["key", "value", "resource_version"]).where("type", "=", type).execute();
    for (const row of rows) {
      if (keep.has(row.key)) continue;
      if (listRv && isOlderRv(listRv, row.resource_version)) continue;
      await this.db.deleteFrom("meta").where("key", "=", row.key).execute();
      const ref = parseResource(row.key)!;
      const object = JSON.parse(row.value);
      this.log?.info(`${type} deleted in the cloud while offline, removing`, { [type]: row.key });
      const del = newMessage({ source: "metamanager", group: "resource", operation: Op.delete, resource: row.key }, object);
      this.dispatch(del, { type: "DELETED", kind: type, namespace: ref.namespace, name: ref.name!, object });
    }
  }

  /** One stored object, decoded, or null. */
  async get(type: string, namespace: string, name: string): Promise<unknown | null> {
    const row = await this.db.selectFrom("meta").select(["value"]).where("key", "=", `${namespace || "null"}/${type}/${name}`).executeTakeFirst();
    return row ? JSON.parse(row.value) : null;
  }

  /** All stored objects of one type, decoded. */
  async list(type: string): Promise<unknown[]> {
    const rows = await this.db.selectFrom("meta").select(["value"]).where("type", "=", type).orderBy("key").execute();
    return rows.map((r) => JSON.parse(r.value));
  }

  private async answerQuery(msg: Message, type: string, namespace: string, name: string | undefined): Promise<void> {
    const content = name === undefined ? (await this.list(type)).filter((o) => namespace === "null" || nsOf(o) === namespace) : await this.get(type, namespace, name);
    const reply = responseTo(msg, content);
    if (!this.ctx?.router.resolveReply(reply) && msg.route.source) this.ctx?.router.send(msg.route.source, reply);
  }

  private dispatch(msg: Message, change: MetaChange): void {
    const target = consumers[change.kind];
    if (target) this.ctx?.router.send(target, msg);
    this.emit("change", change);
  }

  private ack(msg: Message): void {
    this.ctx?.router.send("websocket", responseTo(msg, "OK"));
  }
}

function rvOf(obj: unknown): string {
  const rv = (obj as { metadata?: { resourceVersion?: unknown } } | null)?.metadata?.resourceVersion;
  return typeof rv === "string" ? rv : "";
}

function nsOf(obj: unknown): string | undefined {
  return (obj as { metadata?: { namespace?: string } } | null)?.metadata?.namespace;
}

