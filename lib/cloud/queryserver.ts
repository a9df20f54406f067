/**
 * QueryServer: answers the reads an edge sends upstream (`operation: query`, as KubeEdge's
 * MetaManager does on a local miss, e.g. `<ns>/configmap/<name>`), scoped as the Node authorizer
 * scopes a kubelet: a node may read only what is bound to it, i.e. what the cloud would send it —
 * its own Node, the pods bound to it, the configmaps and secrets those pods use, the devices bound to
 * it and the device models those use. Anything else is refused (`operation: error`, a warning in
 * the log, `outpost_cloud_queries_total{result="refused"}`) whether or not it exists, so a refusal
 * tells nothing about other nodes' objects. Lists (no name) return only the node's own pods or
 * devices. Answers come from the controllers' informer caches.
 */
import { parseResource, responseTo, splitNodeResource, Op, type Message } from "../message.ts";
import type { Module, ModuleContext } from "../router.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { CloudHub } from "../hub/cloudhub.ts";
import { InformerFactory, Resources, byNodeName, type KubeObject, type ObjectMeta, type SharedInformer } from "../kube/client/index.ts";
import { podReferences } from "./edgecontroller.ts";

type Obj = KubeObject & { metadata: ObjectMeta };
type Bound = Obj & { spec?: { nodeName?: string; deviceModelRef?: { name?: string } } };

export interface QueryServerOptions {
  informers: InformerFactory;
  hub: CloudHub;
  log: Logger;
  metrics: Metrics;
}

export class QueryServer implements Module {
  readonly name = "queryserver";
  readonly group = "queryserver";
  private pods!: SharedInformer<Bound>;
  private configmaps!: SharedInformer<Obj>;
  private secrets!: SharedInformer<Obj>;
  private nodes!: SharedInformer<Obj>;
  private devices!: SharedInformer<Bound>;
  private models!: SharedInformer<Obj>;
  private readonly results;

  constructor(private readonly opts: QueryServerOptions) {
    this.results = opts.metrics.counter("outpost_cloud_queries_total", "Reads (query messages) from edges, by result: answered, notfound, refused.");
  }

  async start(_ctx: ModuleContext): Promise<void> {
    const { informers } = this.opts;
    this.pods = informers.informer<Bound>(Resources.pods, { indexers: { byNode: byNodeName } });
    this.configmaps = informers.informer<Obj>(Resources.configmaps);
    this.secrets = informers.informer<Obj>(Resources.secrets);
    this.nodes = informers.informer<Obj>(Resources.nodes);
    this.devices = informers.informer<Bound>(Resources.devices, { indexers: { byNode: byNodeName } });
    this.models = informers.informer<Obj>(Resources.devicemodels);
    await Promise.all([this.pods, this.configmaps, this.secrets, this.nodes, this.devices, this.models].map((i) => i.waitForSync(30_000)));
  }

  stop(): void {}

  handle(msg: Message): void {
    const target = splitNodeResource(msg.route.resource);
    if (!target || msg.route.operation !== Op.query) return;
    const { node, resource } = target;
    const reply = (content: unknown, operation: string = Op.response) => void this.opts.hub.sendToNode(node, { ...responseTo(msg, content, operation), route: { ...msg.route, operation, resource } });
    const ref = parseResource(resource);
    const verdict = ref ? this.read(node, ref.namespace, ref.type, ref.name) : { refused: "unparsable resource" };
    if ("refused" in verdict) {
      this.results.inc({ result: "refused" });
      this.opts.log.warn("read refused: not bound to the requesting node", { node, resource, why: verdict.refused });
      return reply(`forbidden: node "${node}" cannot read ${resource}`, Op.error);
    }
    if (verdict.object === undefined) {
      this.results.inc({ result: "notfound" });
      return reply(`not found: ${resource}`, Op.error);
    }
    this.results.inc({ result: "answered" });
    reply(verdict.object);
  }

  /** What `node` may see of `<ns>/<type>/<name>`: the object (undefined = not found), or why not. */
  private read(node: string, namespace: string, type: string, name: string | undefined): { object: unknown } | { refused: string } {
    const ns = namespace === "null" ? undefined : namespace;
    const boundPods = () => this.pods.byIndex("byNode", node).filter((p) => !ns || p.metadata.namespace === ns);
    const boundDevices = () => this.devices.byIndex("byNode", node).filter((d) => !ns || d.metadata.namespace === ns);
    if (name === undefined) {
      if (type === "pod") return { object: boundPods() };
      if (type === "device") return { object: boundDevices() };
      return { refused: `lists of ${type} are not served to edges` };
    }
    switch (type) {
      case "node":
        return name === node ? { object: this.nodes.get(name) } : { refused: "another node" };
      case "pod": {
        const pod = this.pods.get(name, namespace);
        return pod?.spec?.nodeName === node ? { object: pod } : { refused: "pod not bound to this node" };
      }
      case "configmap":
      case "secret": {
        const used = boundPods().some((p) => p.metadata.namespace === namespace && (type === "configmap" ? podReferences(p).configmaps : podReferences(p).secrets).has(name));
        if (!used) return { refused: `no pod on this node uses this ${type}` };
        return { object: (type === "configmap" ? this.configmaps : this.secrets).get(name, namespace) };
      }
      case "device": {
        const d = this.devices.get(name, namespace);
        return d?.spec?.nodeName === node ? { object: d } : { refused: "device not bound to this node" };
      }
      case "devicemodel": {
        const used = boundDevices().some((d) => d.metadata.namespace === namespace && d.spec?.deviceModelRef?.name === name);
        return used ? { object: this.models.get(name, namespace) } : { refused: "no device on this node uses this model" };
      }
      default:
        return { refused: `${type} is not served to edges` };
    }
  }
}
