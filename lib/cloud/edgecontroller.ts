/**
 * EdgeController: registers edge nodes in the API and keeps their status and lease fresh, sends each
 * edge exactly the pods bound to it and the configmaps/secrets those pods use, and writes pod and
 * node status coming up from the edge back to the API. Object messages go through the outbox
 * (stored, compacted, resent until the edge acks them); on reconnect the node also gets a full
 * resync (sendNodeState), including a pod list so the edge drops what was deleted meanwhile.
 * Upstream status messages are acked once written to the API, so the edge can forget them.
 */
import { newMessage, parseResource, responseTo, splitNodeResource, Op, type Message } from "../message.ts";
import type { Module, ModuleContext } from "../router.ts";
import type { Logger } from "../log.ts";
import type { CloudHub } from "../hub/cloudhub.ts";
import type { Outbox } from "./outbox.ts";
import { InformerFactory, KubeClient, Resources, byNodeName, isConflict, isNotFound, type KubeObject, type ObjectMeta, type SharedInformer } from "../kube/client/index.ts";
import { KeyedWorkQueue } from "./workqueue.ts";

export const EDGE_ROLE_LABEL = "node-role.kubernetes.io/edge";
const AGENT_ROLE_LABEL = "node-role.kubernetes.io/agent";
const LEASE_NS = "kube-node-lease";
/**
 * An unchanged node status is written again only this often (kubelet's nodeStatusReportFrequency);
 * the node's Lease, renewed every leaseRenewMs while it is connected, is its heartbeat meanwhile.
 */
const NODE_STATUS_REPORT_MS = 5 * 60_000;
/** API writes in flight for upstream reports, and for lease renewals. */
const UPSTREAM_WRITES = 8;
const LEASE_WRITES = 4;

/** API objects as informers hold them: always with metadata. */
type Obj = KubeObject & { metadata: ObjectMeta };
type Pod = Obj & { spec?: { nodeName?: string; volumes?: Volume[]; containers?: Container[]; initContainers?: Container[] }; status?: unknown };
type Volume = { configMap?: { name?: string }; secret?: { secretName?: string }; projected?: { sources?: { configMap?: { name?: string }; secret?: { name?: string } }[] } };
type Container = { env?: { valueFrom?: { configMapKeyRef?: { name?: string }; secretKeyRef?: { name?: string } } }[]; envFrom?: { configMapRef?: { name?: string }; secretRef?: { name?: string } }[] };

/** Names of the configmaps and secrets a pod uses (volumes, env, envFrom). */
export function podReferences(pod: Pod): { configmaps: Set<string>; secrets: Set<string> } {
  const configmaps = new Set<string>();
  const secrets = new Set<string>();
  const add = (set: Set<string>, n?: string) => n && set.add(n);
  for (const v of pod.spec?.volumes ?? []) {
    add(configmaps, v.configMap?.name);
    add(secrets, v.secret?.secretName);
    for (const s of v.projected?.sources ?? []) {
      add(configmaps, s.configMap?.name);
      add(secrets, s.secret?.name);
    }
  }
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    for (const e of c.env ?? []) {
      add(configmaps, e.valueFrom?.configMapKeyRef?.name);
      add(secrets, e.valueFrom?.secretKeyRef?.name);
    }
    for (const f of c.envFrom ?? []) {
      add(configmaps, f.configMapRef?.name);
      add(secrets, f.secretRef?.name);
    }
  }
  return { configmaps, secrets };
}

export interface EdgeControllerOptions {
  client: KubeClient;
  informers: InformerFactory;
  hub: CloudHub;
  /** Where object messages for the edges go (persisted, acked). */
  outbox: Outbox;
  log: Logger;
  /** How long a node may be out of touch before Ready=Unknown (default 40 s). */
  nodeGracePeriodMs?: number;
  leaseRenewMs?: number;
  /** Unchanged node status is rewritten after this long (default 5 min). */
  nodeStatusReportMs?: number;
}

export class EdgeController implements Module {
  readonly name = "edgecontroller";
  readonly group = "edgecontroller";
  private pods!: SharedInformer<Pod>;
  private configmaps!: SharedInformer<Obj>;
  private secrets!: SharedInformer<Obj>;
  private readonly unknownTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private leaseTimer?: ReturnType<typeof setInterval>;
  private readonly log: Logger;
  private readonly grace: number;
  private readonly leaseRenewMs: number;
  /**
   * Upstream reports are written through bounded, per-object queues rather than one at a time in
   * the router's inbox: with thousands of nodes reporting, a serial inbox overflows and drops.
   */
  private readonly upstream: KeyedWorkQueue<Message>;
  private readonly leases: KeyedWorkQueue<string>;
  /** When each connected node's lease is due for renewal. */
  private readonly leaseDue = new Map<string, number>();
  /** The last node status written per node (what it said, when), to skip unchanged rewrites. */
  private readonly lastStatus = new Map<string, { sig: string; at: number }>();

  constructor(private readonly opts: EdgeControllerOptions) {
    this.log = opts.log;
    this.grace = opts.nodeGracePeriodMs ?? 40_000;
    this.leaseRenewMs = opts.leaseRenewMs ?? 10_000;
    this.upstream = new KeyedWorkQueue(UPSTREAM_WRITES, (_key, msgs) => this.handleUpstream(msgs), (key, e) => this.log.warn("upstream write failed", { key, err: String(e) }));
    this.leases = new KeyedWorkQueue(LEASE_WRITES, (node) => this.renewLease(node));
  }

  async start(_ctx: ModuleContext): Promise<void> {
    const { informers, hub } = this.opts;
    this.pods = informers.informer<Pod>(Resources.pods, { indexers: { byNode: byNodeName } });
    this.configmaps = informers.informer<Obj>(Resources.configmaps);
    this.secrets = informers.informer<Obj>(Resources.secrets);
    await Promise.all([this.pods.waitForSync(30_000), this.configmaps.waitForSync(30_000), this.secrets.waitForSync(30_000)]);

    this.pods.on("add", (p) => this.onPod(Op.insert, p));
    this.pods.on("update", (_old, p) => this.onPod(Op.update, p));
    this.pods.on("delete", (p) => this.onPod(Op.delete, p));
    for (const [inf, type] of [[this.configmaps, "configmap"], [this.secrets, "secret"]] as const) {
      inf.on("add", (o) => this.onReferenced(type, Op.update, o));
      inf.on("update", (_old, o) => this.onReferenced(type, Op.update, o));
      inf.on("delete", (o) => this.onReferenced(type, Op.delete, o));
    }
    hub.on("connected", (node) => void this.onConnected(node));
    hub.on("disconnected", (node) => this.onDisconnected(node));
    for (const node of hub.connectedNodes()) void this.onConnected(node);
    // nodes that were Ready when cloudcore stopped and have not come back go Unknown after the grace period
    try {
      const nodes = await this.opts.client.list<Obj>(Resources.nodes, { labelSelector: EDGE_ROLE_LABEL });
      for (const n of nodes.items) if (!hub.isConnected(n.metadata.name!)) this.onDisconnected(n.metadata.name!);
    } catch (e) {
      this.log.warn("could not list edge nodes", { err: String(e) });
    }
    // each connected node's lease is renewed leaseRenewMs after the last renewal: spread over the
    // period as the nodes connected, not all at once
    this.leaseTimer = setInterval(() => {
      const now = Date.now();
      for (const [node, due] of this.leaseDue) {
        if (due > now) continue;
        if (!hub.isConnected(node)) {
          this.leaseDue.delete(node);
          continue;
        }
        this.leaseDue.set(node, now + this.leaseRenewMs);
        this.leases.push(node, node);
      }
    }, Math.min(1000, this.leaseRenewMs));
    this.leaseTimer.unref?.();
  }

  stop(): void {
    clearInterval(this.leaseTimer);
    this.upstream.stop();
    this.leases.stop();
    for (const t of this.unknownTimers.values()) clearTimeout(t);
  }

  // ---- downstream ---------------------------------------------------------------------------

  private send(node: string, operation: string, type: string, obj: Obj): void {
    const md = obj.metadata;
    const msg = newMessage({ source: "edgecontroller", group: "resource", operation, resource: `${md.namespace || "null"}/${type}/${md.name}` }, obj, { resourceversion: md.resourceVersion ?? "" });
    this.opts.outbox.send(node, msg);
  }

  /** Offline nodes too: the outbox keeps the message until the node is back and acks it. */
  private onPod(operation: string, pod: Pod): void {
    const node = pod.spec?.nodeName;
    if (!node) return;
    if (operation !== Op.delete) this.sendReferenced(node, pod);
    this.send(node, operation, "pod", pod);
  }

  /** Sends the configmaps and secrets `pod` uses (before the pod, so the edge can start it at once). */
  private sendReferenced(node: string, pod: Pod): void {
    const ns = pod.metadata.namespace!;
    const refs = podReferences(pod);
    for (const n of refs.configmaps) {
      const cm = this.configmaps.get(n, ns);
      if (cm) this.send(node, Op.update, "configmap", cm);
    }
    for (const n of refs.secrets) {
      const s = this.secrets.get(n, ns);
      if (s) this.send(node, Op.update, "secret", s);
    }
  }

  /** A configmap/secret changed: send it to every connected node whose pods use it, and only those. */
  private onReferenced(type: "configmap" | "secret", operation: string, obj: Obj): void {
    const { name, namespace } = obj.metadata;
    const nodes = new Set<string>();
    for (const pod of this.pods.list(namespace)) {
      const node = pod.spec?.nodeName;
      if (!node || nodes.has(node)) continue;
      const refs = podReferences(pod);
      if ((type === "configmap" ? refs.configmaps : refs.secrets).has(name!)) nodes.add(node);
    }
    for (const node of nodes) this.send(node, operation, type, obj);
  }

  /** Everything a node should hold: its pods (and what they use), then the list so it drops the rest. */
  private sendNodeState(node: string): void {
    const pods = this.pods.byIndex("byNode", node);
    for (const pod of pods) this.onPod(Op.update, pod);
    const list = pods.map((p) => ({ namespace: p.metadata.namespace, name: p.metadata.name, uid: p.metadata.uid }));
    // the list's resourceversion is what the cache is current to: a pod the edge holds with a newer
    // one was created after the list was made (a resent list must not remove it)
    this.opts.outbox.send(node, newMessage({ source: "edgecontroller", group: "resource", operation: Op.update, resource: "null/podlist" }, list, { resourceversion: this.pods.resourceVersion ?? "" }));
  }

  // ---- node lifecycle -----------------------------------------------------------------------

  private async onConnected(node: string): Promise<void> {
    clearTimeout(this.unknownTimers.get(node));
    this.unknownTimers.delete(node);
    this.lastStatus.delete(node);
    try {
      await this.ensureNode(node);
      await this.setReady(node, "True", "EdgeReady", "edge node is connected to cloudcore");
      await this.renewLease(node);
    } catch (e) {
      this.log.error("node registration failed", { node, err: String(e) });
    }
    // renewed from now on while connected (also when registration failed: the renewal may succeed)
    if (this.opts.hub.isConnected(node)) this.leaseDue.set(node, Date.now() + this.leaseRenewMs);
    if (this.opts.hub.isConnected(node)) this.sendNodeState(node);
  }

  private onDisconnected(node: string): void {
    this.leaseDue.delete(node);
    this.lastStatus.delete(node);
    clearTimeout(this.unknownTimers.get(node));
    const t = setTimeout(() => {
      this.unknownTimers.delete(node);
      if (this.opts.hub.isConnected(node)) return;
      void this.setReady(node, "Unknown", "NodeStatusUnknown", "edge node stopped posting status (not connected to cloudcore)").catch((e) => this.log.warn("could not mark node Unknown", { node, err: String(e) }));
    }, this.grace);
    t.unref?.();
    this.unknownTimers.set(node, t);
  }

  private async ensureNode(node: string): Promise<void> {
    const { client } = this.opts;
    try {
      const existing = await client.get<Obj>(Resources.nodes, node);
      const labels = existing.metadata.labels ?? {};
      if (labels[EDGE_ROLE_LABEL] === undefined || labels[AGENT_ROLE_LABEL] === undefined)
        await client.patch(Resources.nodes, node, { metadata: { labels: { [EDGE_ROLE_LABEL]: "", [AGENT_ROLE_LABEL]: "" } } });
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await client.create(Resources.nodes, { apiVersion: "v1", kind: "Node", metadata: { name: node, labels: { [EDGE_ROLE_LABEL]: "", [AGENT_ROLE_LABEL]: "" } }, spec: {} });
      this.log.info("edge node registered", { node });
    }
  }

  private async setReady(node: string, status: "True" | "Unknown", reason: string, message: string, extra: Record<string, unknown> = {}): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const current = await this.opts.client.get<Obj & { status?: { conditions?: { type: string; status: string; lastTransitionTime?: string }[] } }>(Resources.nodes, node);
    const was = current.status?.conditions?.find((c) => c.type === "Ready");
    const transition = was?.status === status ? (was.lastTransitionTime ?? now) : now;
    const ready = { type: "Ready", status, reason, message, lastHeartbeatTime: now, lastTransitionTime: transition };
    const others = (current.status?.conditions ?? []).filter((c) => c.type !== "Ready");
    await this.opts.client.patchStatus(Resources.nodes, node, { status: { ...extra, conditions: [...others, ready] } });
    if (was?.status !== status) this.log.info("node readiness changed", { node, ready: status });
  }

  private async renewLease(node: string): Promise<void> {
    const { client } = this.opts;
    const renewTime = new Date().toISOString().replace("Z", "000Z").replace(/(\.\d{6})\d*Z$/, "$1Z");
    try {
      await client.patch(Resources.leases, node, { spec: { holderIdentity: node, leaseDurationSeconds: Math.round(this.grace / 1000), renewTime } }, "merge", { namespace: LEASE_NS });
    } catch (e) {
      if (!isNotFound(e)) return void this.log.debug("lease renewal failed", { node, err: String(e) });
      await client
        .create(Resources.leases, { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: node, namespace: LEASE_NS }, spec: { holderIdentity: node, leaseDurationSeconds: Math.round(this.grace / 1000), renewTime } })
        .catch((err) => this.log.debug("lease create failed", { node, err: String(err) }));
    }
  }

  // ---- upstream -----------------------------------------------------------------------------

  /**
   * Queues an upstream report for writing; reports for one object are written in order, and those
   * that pile up while it waits are written as one (the newest) and acked together.
   */
  handle(msg: Message): void {
    const target = splitNodeResource(msg.route.resource);
    const ref = target ? parseResource(target.resource) : null;
    if (!target || !ref?.name) return;
    // a pod's deletion is not folded into its status reports
    this.upstream.push(`${msg.route.resource}${msg.route.operation === Op.delete ? "#delete" : ""}`, msg);
  }

  private async handleUpstream(msgs: Message[]): Promise<void> {
    const msg = msgs[msgs.length - 1]!;
    const target = splitNodeResource(msg.route.resource)!;
    const ref = parseResource(target.resource)!;
    if (!ref.name) return;
    const node = target.node;
    // the edge keeps these queued (edgecore.db) until acked: ack once handled for good, i.e. written,
    // or refused / obsolete (a retry could not do better); a failed write is not acked and comes again
    const ack = () => {
      for (const m of msgs) this.opts.hub.sendToNode(node, { ...responseTo(m, "OK"), route: { ...m.route, operation: Op.response, resource: target.resource } });
    };
    try {
      switch (ref.type) {
        case "podstatus":
          await this.onPodStatus(node, ref.namespace, ref.name, msg.content);
          return ack();
        case "pod":
          if (msg.route.operation !== Op.delete) return;
          await this.onPodStopped(node, ref.namespace, ref.name, msg.content);
          return ack();
        case "nodestatus":
          if (ref.name !== node) this.log.warn("node status for another node refused", { node, for: ref.name });
          else await this.onNodeStatus(node, msg.content);
          return ack();
        default:
          this.log.debug("upstream message not handled", { node, resource: target.resource, operation: msg.route.operation });
      }
    } catch (e) {
      if (isConflict(e) || isNotFound(e)) {
        this.log.debug("upstream write skipped", { node, resource: target.resource, err: String(e) });
        return ack();
      }
      this.log.warn("upstream write failed, the edge will send it again", { node, resource: target.resource, err: String(e) });
    }
  }

  /** A node may write the status of its own pods only (NodeRestriction). */
  private boundPod(node: string, namespace: string, name: string, uid: unknown): Pod | null {
    const pod = this.pods.get(name, namespace);
    if (!pod || pod.spec?.nodeName !== node) {
      this.log.warn("update for a pod not bound to the sending node refused", { node, pod: `${namespace}/${name}` });
      return null;
    }
    if (typeof uid === "string" && uid && pod.metadata.uid !== uid) return null; // an older pod of the same name
    return pod;
  }

  private async onPodStatus(node: string, namespace: string, name: string, content: unknown): Promise<void> {
    const c = content as { metadata?: { uid?: string }; status?: unknown } | null;
    if (!c || typeof c.status !== "object" || c.status === null) return this.log.warn("pod status without a status object dropped", { node, pod: `${namespace}/${name}` });
    if (!this.boundPod(node, namespace, name, c.metadata?.uid)) return;
    await this.opts.client.patchStatus(Resources.pods, name, { status: c.status }, "merge", { namespace });
  }

  /** The edge stopped a pod that was being deleted: finish the deletion (grace 0, same uid). */
  private async onPodStopped(node: string, namespace: string, name: string, content: unknown): Promise<void> {
    const uid = (content as { metadata?: { uid?: string } } | null)?.metadata?.uid;
    const pod = this.boundPod(node, namespace, name, uid);
    if (!pod || !pod.metadata.deletionTimestamp) return;
    await this.opts.client.delete(Resources.pods, name, { namespace, gracePeriodSeconds: 0, preconditions: { uid: pod.metadata.uid } });
  }

  /** Writes the node's status when it changed, or when the last write is NODE_STATUS_REPORT_MS old. */
  private async onNodeStatus(node: string, content: unknown): Promise<void> {
    const c = content as { metadata?: { labels?: Record<string, string> }; status?: Record<string, unknown> } | null;
    const status = c?.status && typeof c.status === "object" ? { ...c.status } : {};
    delete status.conditions; // readiness is the cloud's judgement of the link, set below
    const sig = JSON.stringify(status);
    const last = this.lastStatus.get(node);
    const now = Date.now();
    if (last && last.sig === sig && now - last.at < (this.opts.nodeStatusReportMs ?? NODE_STATUS_REPORT_MS)) return;
    await this.setReady(node, "True", "EdgeReady", "edge node is connected to cloudcore", status);
    if (this.opts.hub.isConnected(node)) this.lastStatus.set(node, { sig, at: now });
  }
}
