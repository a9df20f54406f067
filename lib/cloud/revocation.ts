/**
 * Node revocation: deleting an edge node's Node object in the API revokes that node. Its hub session
 * is closed, its pending outbox is discarded (it is no longer in the cluster; a node that comes back
 * gets a full resync anyway), and every certificate issued to it before the deletion is refused by
 * CloudHub (403, `outpost_cloudhub_refused_connections_total{reason="revoked"}`) and by the
 * certificate service (no renewal). So the node cannot reconnect and register its Node again.
 *
 * The revocation ends when
 *  - an administrator creates the Node again (`kubectl create` / `apply`): the node's existing
 *    certificate is accepted again, or
 *  - the node joins again with a new join token (what a KubeEdge user does after `keadm reset`):
 *    the certificate issued by that join is newer than the deletion and is accepted; when that node
 *    connects it registers its Node. Certificates issued before the deletion stay refused.
 *
 * Revocations are kept in cloudcore.db (table revoked_nodes), so a restart of cloudcore keeps them.
 * A Node deleted while cloudcore is not running is not noticed.
 */
import type { Migration } from "kysely";
import type { Logger } from "../log.ts";
import type { SqliteDatabase, SqliteStatement } from "../runtime/index.ts";
import type { CloudHub } from "../hub/cloudhub.ts";
import { issuedAt } from "../pki/ca.ts";
import { Resources, isNotFound, type InformerFactory, type KubeClient, type KubeObject, type SharedInformer } from "../kube/client/index.ts";
import type { Outbox } from "./outbox.ts";

export const revocationMigrations: Record<string, Migration> = {
  "0310-revoked-nodes": {
    async up(db) {
      await db.schema
        .createTable("revoked_nodes")
        .addColumn("node", "text", (c) => c.primaryKey())
        .addColumn("revoked_at", "integer", (c) => c.notNull())
        .execute();
    },
  },
};

export interface RevocationOptions {
  raw: SqliteDatabase;
  informers: InformerFactory;
  client: KubeClient;
  hub: CloudHub;
  outbox: Outbox;
  log: Logger;
}

export class NodeRevocation {
  /** node → time of the Node's deletion (ms). */
  private readonly revoked = new Map<string, number>();
  private readonly put: SqliteStatement;
  private readonly del: SqliteStatement;
  private nodes?: SharedInformer<KubeObject>;

  constructor(private readonly opts: RevocationOptions) {
    this.put = opts.raw.prepare("INSERT INTO revoked_nodes (node, revoked_at) VALUES (?, ?) ON CONFLICT (node) DO UPDATE SET revoked_at = excluded.revoked_at");
    this.del = opts.raw.prepare("DELETE FROM revoked_nodes WHERE node = ?");
    for (const r of opts.raw.prepare("SELECT node, revoked_at FROM revoked_nodes").all([]) as { node: string; revoked_at: number }[]) this.revoked.set(r.node, Number(r.revoked_at));
  }

  /** Watches Node objects; call before the hub accepts edges so the stored revocations apply at once. */
  async start(): Promise<void> {
    this.nodes = this.opts.informers.informer<KubeObject>(Resources.nodes);
    this.nodes.on("delete", (n) => this.onDeleted(n.metadata?.name));
    this.nodes.on("add", (n) => this.onCreated(n.metadata?.name));
    await this.nodes.waitForSync(30_000);
  }

  /** Time the node was revoked (ms), or undefined. */
  revokedAt(node: string): number | undefined {
    return this.revoked.get(node);
  }

  /**
   * Why a certificate of `node` that became valid at `notBefore` must be refused, or null when it may
   * be used. Certificates issued before the revocation are refused; those of a later join are not.
   */
  refusal(node: string, cert: { notBefore: Date; notAfter: Date }): string | null {
    const at = this.revoked.get(node);
    if (at === undefined) return null;
    const issued = issuedAt(cert.notBefore, cert.notAfter);
    if (issued > at) return null;
    return `node "${node}" was deleted from the cluster at ${new Date(at).toISOString()} (revoked): its certificate from ${new Date(issued).toISOString()} is no longer accepted; create the Node again or join the node again with a new token`;
  }

  /** Certificates carry whole seconds: one issued in the second of the revocation would look older, so wait that second out. */
  async beforeIssue(node: string): Promise<void> {
    const at = this.revoked.get(node);
    if (at === undefined) return;
    const wait = Math.floor(at / 1000) * 1000 + 1000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }

  private onDeleted(node: string | undefined): void {
    if (!node) return;
    const at = Date.now();
    this.revoked.set(node, at);
    this.put.run([node, at]);
    const pending = this.opts.outbox.pending(node);
    this.opts.outbox.discard(node);
    this.opts.log.warn("node deleted from the cluster: revoked, its session closed and its certificates refused", { node, discardedOutbox: pending });
    this.opts.hub.disconnect(node, "node revoked (deleted from the cluster)");
    // the lease would otherwise outlive its node (the cloud renewed it on the node's behalf)
    void this.opts.client.delete(Resources.leases, node, { namespace: "kube-node-lease" }).catch((e) => {
      if (!isNotFound(e)) this.opts.log.debug("could not delete the lease of a revoked node", { node, err: String(e) });
    });
  }

  private onCreated(node: string | undefined): void {
    if (!node || !this.revoked.has(node)) return;
    // a node admitted by a newer certificate registering itself does not lift the revocation of its old certificates
    if (this.opts.hub.isConnected(node)) return;
    this.revoked.delete(node);
    this.del.run([node]);
    this.opts.log.info("node created again: revocation lifted", { node });
  }
}
