/**
 * MetaManager: keeps every object the cloud sends in edgecore.db and acknowledges it only once it
 * is stored, so the cloud never believes in a delivery that a crash could undo.
 */
import type { Kysely } from "kysely";
import { Op, parseResource, responseTo, type Message } from "../message.ts";
import type { Module, ModuleContext } from "../router.ts";
import type { Logger } from "../log.ts";
import type { EdgeDb } from "./store.ts";

export class MetaManager implements Module {
  readonly name = "metamanager";
  readonly group = "meta";
  private ctx?: ModuleContext;
  private log?: Logger;

  constructor(private readonly db: Kysely<EdgeDb>) {}

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
        if (ref.name === undefined) return;
        const rv = msg.header.resourceversion ?? "";
        const value = JSON.stringify(msg.content ?? null);
        await this.db
          .insertInto("meta")
          .values({ key: resource, type: ref.type, value, resource_version: rv, updated_at: Date.now() })
          .onConflict((oc) => oc.column("key").doUpdateSet({ type: ref.type, value, resource_version: rv, updated_at: Date.now() }))
          .execute();
        this.ack(msg);
        return;
      }
      case Op.delete:
        await this.db.deleteFrom("meta").where("key", "=", resource).execute();
        this.ack(msg);
        return;
      case Op.response:
      case Op.error:
        return;
      default:
        this.log?.debug("operation not handled", { operation, resource });
    }
  }

  /** Objects of one type, decoded, for the other edge modules. */
  async list(type: string): Promise<{ key: string; value: unknown; resourceVersion: string }[]> {
    const rows = await this.db.selectFrom("meta").select(["key", "value", "resource_version"]).where("type", "=", type).execute();
    return rows.map((r) => ({ key: r.key, value: JSON.parse(r.value), resourceVersion: r.resource_version }));
  }

  private ack(msg: Message): void {
    this.ctx?.router.send("websocket", responseTo(msg, "OK"));
  }
}
