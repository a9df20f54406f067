/**
 * DeviceController: sends each edge the Devices bound to it (spec.nodeName) and the DeviceModels they
 * use, as KubeEdge does: a twin `membership` message (group `twin`, the device and its desired values)
 * when a device joins or leaves the node, the Device and DeviceModel objects (group `resource`), and
 * when only desired values change, just those (`device/<ns>/<name>/twin/cloud_updated`). It writes what the edge reports (twin values, state) into the DeviceStatus of the same name,
 * owned by its Device, as KubeEdge v1.23 does. Reports are coalesced per device so a chatty device
 * cannot flood the API; each report is acked to the edge (which keeps it queued until then) once the
 * write it went into succeeded. Devices and models go through the outbox (persisted, acked).
 * Invalid Devices are reported as Events on the object and skipped.
 */
import { randomUUID } from "node:crypto";
import * as v from "valibot";
import { newMessage, responseTo, splitNodeResource, Op, type Message } from "../message.ts";
import type { Module, ModuleContext } from "../router.ts";
import type { Logger } from "../log.ts";
import type { CloudHub } from "../hub/cloudhub.ts";
import type { Outbox } from "./outbox.ts";
import { InformerFactory, KubeClient, Resources, byNodeName, isNotFound, type KubeObject, type ObjectMeta, type SharedInformer } from "../kube/client/index.ts";
import { BaseMessageSchema, DeviceSchema, MsgTwinSchema, describeIssues, twinTypeOf, type MsgTwin, type PropertyType } from "../../schemas/devices.ts";

type Obj = KubeObject & { metadata: ObjectMeta };
interface PropertySpec {
  name: string;
  desired?: { value?: string; metadata?: Record<string, string> };
}
type DeviceObj = Obj & { spec?: { nodeName?: string; deviceModelRef?: { name?: string }; properties?: PropertySpec[] } };
type ModelObj = Obj & { spec?: { properties?: { name: string; type?: PropertyType }[] } };

const EdgeUpdatedSchema = v.object({ ...BaseMessageSchema.entries, twin: v.record(v.string(), v.nullable(MsgTwinSchema)) });
const StateUpdatedSchema = v.object({
  ...BaseMessageSchema.entries,
  device: v.optional(v.object({ name: v.optional(v.string()), state: v.string(), lastOnlineTime: v.optional(v.string()) })),
  state: v.optional(v.string()),
  lastOnlineTime: v.optional(v.string()),
});

interface StatusTwin {
  propertyName: string;
  reported?: { value: string; metadata: Record<string, string> };
  observedDesired?: { value: string; metadata: Record<string, string> };
}

interface Pending {
  twins: Map<string, StatusTwin>;
  state?: string;
  lastOnlineTime?: string;
  timer?: ReturnType<typeof setTimeout>;
  /** The reports merged in, acked once the write succeeded. */
  acks: { node: string; msg: Message }[];
}

export interface DeviceControllerOptions {
  client: KubeClient;
  informers: InformerFactory;
  hub: CloudHub;
  outbox: Outbox;
  log: Logger;
  /** Reports of one device within this window become one API write (default 500 ms). */
  coalesceMs?: number;
}

const deviceTopic = /^device\/([^/]+)\/([^/]+)\/(twin\/edge_updated|state\/update)$/;

export class DeviceController implements Module {
  readonly name = "devicecontroller";
  readonly group = "devicecontroller";
  private devices!: SharedInformer<DeviceObj>;
  private models!: SharedInformer<ModelObj>;
  private readonly pending = new Map<string, Pending>();
  /** Devices whose status write is in flight: the next batch waits for it (writes stay in order). */
  private readonly writing = new Set<string>();
  private readonly warned = new Set<string>();
  private readonly log: Logger;

  constructor(private readonly opts: DeviceControllerOptions) {
    this.log = opts.log;
  }

  async start(_ctx: ModuleContext): Promise<void> {
    const { informers, hub } = this.opts;
    this.devices = informers.informer<DeviceObj>(Resources.devices, { indexers: { byNode: byNodeName } });
    this.models = informers.informer<ModelObj>(Resources.devicemodels);
    await Promise.all([this.devices.waitForSync(30_000), this.models.waitForSync(30_000)]);
    this.devices.on("add", (d) => this.onDevice(Op.insert, d));
    this.devices.on("update", (old, d) => this.onDeviceUpdate(old, d));
    this.devices.on("delete", (d) => this.onDevice(Op.delete, d));
    this.models.on("update", (_o, m) => this.onModel(m));
    hub.on("connected", (node) => this.sendNodeState(node));
    for (const node of hub.connectedNodes()) this.sendNodeState(node);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.pending.keys()].map((k) => this.flush(k)));
  }

  // ---- downstream ---------------------------------------------------------------------------

  private send(node: string, operation: string, type: string, obj: Obj): void {
    const md = obj.metadata;
    this.opts.outbox.send(node, newMessage({ source: "devicecontroller", group: "resource", operation, resource: `${md.namespace}/${type}/${md.name}` }, obj, { resourceversion: md.resourceVersion ?? "" }));
  }

  /** A Device that does not validate is reported once per version as an Event and not sent. */
  private valid(d: DeviceObj): boolean {
    const r = v.safeParse(DeviceSchema, d);
    if (r.success) return true;
    const key = `${d.metadata.namespace}/${d.metadata.name}@${d.metadata.resourceVersion}`;
    if (!this.warned.has(key)) {
      this.warned.add(key);
      const why = describeIssues(r.issues);
      this.log.warn("invalid Device skipped", { device: `${d.metadata.namespace}/${d.metadata.name}`, err: why });
      void this.event(d, "InvalidDevice", `Device not sent to the edge: ${why}`);
    }
    return false;
  }

  /** A device joins (insert), is resent (update) or leaves (delete) its node. */
  private onDevice(operation: string, d: DeviceObj, node = d.spec?.nodeName): void {
    if (!node) return; // offline nodes too: the outbox keeps it
    if (operation === Op.delete) {
      this.sendMembership(node, d, false);
      return this.send(node, Op.delete, "device", d);
    }
    if (!this.valid(d)) return;
    const model = this.modelOf(d);
    if (model) this.send(node, Op.update, "devicemodel", model);
    if (operation === Op.insert) this.sendMembership(node, d, true);
    this.send(node, operation, "device", d);
  }

  private onDeviceUpdate(old: DeviceObj, d: DeviceObj): void {
    const was = old.spec?.nodeName;
    const node = d.spec?.nodeName;
    if (was && was !== node) this.onDevice(Op.delete, old, was);
    if (!node) return;
    if (was !== node || !v.is(DeviceSchema, old)) return this.onDevice(Op.insert, d); // new to this node
    if (!this.valid(d)) return;
    const delta = desiredDelta(old, d);
    if (delta === null) return this.onDevice(Op.update, d);
    if (Object.keys(delta).length) this.sendDesiredDelta(node, d, delta);
  }

  private modelOf(d: DeviceObj): ModelObj | undefined {
    return d.spec?.deviceModelRef?.name ? this.models.get(d.spec.deviceModelRef.name, d.metadata.namespace) : undefined;
  }

  /** KubeEdge's twin membership message: the device joins (with its desired values) or leaves the node. */
  private sendMembership(node: string, d: DeviceObj, added: boolean): void {
    const md = d.metadata;
    const id = `${md.namespace}/${md.name}`;
    const device = added ? { id, name: md.name, twin: this.desiredTwins(d, d.spec?.properties ?? []) } : { id, name: md.name };
    const content = { event_id: randomUUID(), timestamp: Date.now(), added_devices: added ? [device] : [], removed_devices: added ? [] : [device] };
    const msg = newMessage({ source: "devicecontroller", group: "twin", operation: Op.update, resource: "membership" }, content, { resourceversion: md.resourceVersion ?? "" });
    // one pending membership change per device (the outbox compacts by key; the wire resource is shared)
    this.opts.outbox.send(node, msg, { key: `membership/${id}` });
  }

  /** Only the desired values that changed: `device/<ns>/<name>/twin/cloud_updated`, merged while pending. */
  private sendDesiredDelta(node: string, d: DeviceObj, delta: Record<string, PropertySpec>): void {
    const md = d.metadata;
    const msg = newMessage(
      { source: "devicecontroller", group: "twin", operation: Op.update, resource: `device/${md.namespace}/${md.name}/twin/cloud_updated` },
      { event_id: randomUUID(), timestamp: Date.now(), twin: this.desiredTwins(d, Object.values(delta)) },
      { resourceversion: md.resourceVersion ?? "" },
    );
    this.opts.outbox.send(node, msg, { merge: mergeTwinDeltas });
  }

  /**
   * Twins carrying the cloud's desired values of `props` (typed by the device's model), without
   * versions: the edge applies them as cloud-wins.
   */
  private desiredTwins(d: DeviceObj, props: PropertySpec[]): Record<string, MsgTwin> {
    const types = new Map((this.modelOf(d)?.spec?.properties ?? []).map((p) => [p.name, twinTypeOf(p.type)]));
    const now = Date.now();
    const twins: Record<string, MsgTwin> = {};
    for (const p of props) {
      const twin: MsgTwin = { expected: { value: p.desired?.value ?? "", metadata: { timestamp: now } }, optional: false };
      const type = types.get(p.name);
      if (type) twin.metadata = { type };
      twins[p.name] = twin;
    }
    return twins;
  }

  /** A model changed: send it to the nodes whose devices use it. */
  private onModel(m: Obj): void {
    const nodes = new Set<string>();
    for (const d of this.devices.list(m.metadata.namespace)) {
      const node = d.spec?.nodeName;
      if (node && d.spec?.deviceModelRef?.name === m.metadata.name) nodes.add(node);
    }
    for (const node of nodes) this.send(node, Op.update, "devicemodel", m);
  }

  /** On connect: every device of the node, then the list so the edge drops devices deleted meanwhile. */
  private sendNodeState(node: string): void {
    const devices = this.devices.byIndex("byNode", node);
    for (const d of devices) this.onDevice(Op.update, d);
    const list = devices.map((d) => ({ namespace: d.metadata.namespace, name: d.metadata.name, uid: d.metadata.uid }));
    // resourceversion = what the cache is current to: the edge keeps devices newer than the list
    this.opts.outbox.send(node, newMessage({ source: "devicecontroller", group: "resource", operation: Op.update, resource: "null/devicelist" }, list, { resourceversion: this.devices.resourceVersion ?? "" }));
  }

  // ---- upstream -----------------------------------------------------------------------------

  handle(msg: Message): void {
    const target = splitNodeResource(msg.route.resource);
    const m = target ? deviceTopic.exec(target.resource) : null;
    if (!target || !m) return;
    const [, namespace, name, what] = m as unknown as [string, string, string, string];
    const ack = { node: target.node, msg: { ...msg, route: { ...msg.route, resource: target.resource } } };
    const device = this.devices.get(name, namespace);
    if (!device || device.spec?.nodeName !== target.node) {
      this.log.warn("report for a device not bound to the sending node refused", { node: target.node, device: `${namespace}/${name}` });
      return this.ack([ack]); // final: a resend would be refused again
    }
    const content = typeof msg.content === "string" ? safeJson(msg.content) : msg.content;
    const key = `${namespace}/${name}`;
    const p = this.pending.get(key) ?? { twins: new Map<string, StatusTwin>(), acks: [] };
    if (what === "twin/edge_updated") {
      const r = v.safeParse(EdgeUpdatedSchema, content);
      if (!r.success) return (this.log.warn("malformed twin report dropped", { device: key, err: describeIssues(r.issues) }), this.ack([ack]));
      for (const [prop, twin] of Object.entries(r.output.twin)) if (twin) p.twins.set(prop, mergeTwin(p.twins.get(prop), prop, twin));
    } else {
      const r = v.safeParse(StateUpdatedSchema, content);
      if (!r.success) return (this.log.warn("malformed state report dropped", { device: key, err: describeIssues(r.issues) }), this.ack([ack]));
      p.state = r.output.device?.state ?? r.output.state;
      p.lastOnlineTime = r.output.device?.lastOnlineTime ?? r.output.lastOnlineTime ?? p.lastOnlineTime;
    }
    p.acks.push(ack);
    this.pending.set(key, p);
    p.timer ??= setTimeout(() => void this.flush(key), this.opts.coalesceMs ?? 500);
  }

  private async flush(key: string): Promise<void> {
    const p = this.pending.get(key);
    if (!p) return;
    clearTimeout(p.timer);
    if (this.writing.has(key)) {
      // the previous batch is still being written (a slow API): this one goes right after it
      p.timer = setTimeout(() => void this.flush(key), this.opts.coalesceMs ?? 500);
      return;
    }
    this.pending.delete(key);
    const [namespace, name] = key.split("/") as [string, string];
    const device = this.devices.get(name, namespace);
    if (!device) return this.ack(p.acks);
    this.writing.add(key);
    try {
      await this.writeStatus(device, p);
      this.ack(p.acks);
    } catch (e) {
      this.log.warn("DeviceStatus write failed, the edge will send the reports again", { device: key, err: String(e) });
    } finally {
      this.writing.delete(key);
    }
  }

  /** Tells the edge these reports are handled (it keeps them queued until then). */
  private ack(acks: { node: string; msg: Message }[]): void {
    for (const { node, msg } of acks) this.opts.hub.sendToNode(node, { ...responseTo(msg, "OK"), route: { ...msg.route, operation: Op.response } });
  }

  private async writeStatus(device: DeviceObj, p: Pending): Promise<void> {
    const { client } = this.opts;
    const { name, namespace } = device.metadata as { name: string; namespace: string };
    let current: Obj & { status?: { twins?: StatusTwin[] } };
    try {
      current = await client.get(Resources.devicestatuses, name, namespace);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      current = await client.create(Resources.devicestatuses, {
        apiVersion: "devices.kubeedge.io/v1beta1",
        kind: "DeviceStatus",
        metadata: { name, namespace, ownerReferences: [{ apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", name, uid: device.metadata.uid!, controller: true, blockOwnerDeletion: true }] },
      } as Obj);
    }
    // keep every property's latest value: merge this batch into what the status already holds
    const twins = new Map((current.status?.twins ?? []).map((t) => [t.propertyName, t]));
    for (const [prop, t] of p.twins) twins.set(prop, { ...twins.get(prop), ...t, propertyName: prop });
    const status: Record<string, unknown> = { twins: [...twins.values()] };
    if (p.state) status.state = p.state;
    if (p.lastOnlineTime) status.lastOnlineTime = p.lastOnlineTime;
    else if (p.twins.size) status.lastOnlineTime = new Date().toISOString();
    await client.patchStatus(Resources.devicestatuses, name, { status }, "merge", { namespace });
  }

  private async event(obj: Obj, reason: string, message: string): Promise<void> {
    const md = obj.metadata;
    const now = new Date().toISOString();
    await this.opts.client
      .create(Resources.events, {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${md.name}.`, namespace: md.namespace },
        involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: md.name, namespace: md.namespace, uid: md.uid, resourceVersion: md.resourceVersion },
        reason,
        message,
        type: "Warning",
        source: { component: "outpost-devicecontroller" },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      } as unknown as Obj)
      .catch((e) => this.log.debug("event not recorded", { err: String(e) }));
  }
}

/**
 * The desired values that differ between two versions of a Device, by property; `null` when anything
 * else the edge uses changed (then the whole object goes).
 */
export function desiredDelta(old: DeviceObj, next: DeviceObj): Record<string, PropertySpec> | null {
  const a = old.spec?.properties ?? [];
  const b = next.spec?.properties ?? [];
  if (a.length !== b.length) return null;
  const delta: Record<string, PropertySpec> = {};
  for (let i = 0; i < b.length; i++) {
    if (a[i]!.name !== b[i]!.name) return null;
    if ((a[i]!.desired?.value ?? "") !== (b[i]!.desired?.value ?? "")) delta[b[i]!.name] = b[i]!;
  }
  return stripDesired(old) === stripDesired(next) ? delta : null;
}

/** The parts of a Device the edge uses besides desired values, as JSON. */
function stripDesired(d: DeviceObj): string {
  const { resourceVersion: _rv, managedFields: _mf, generation: _g, ...metadata } = d.metadata as ObjectMeta & { generation?: number };
  const spec = { ...d.spec, properties: (d.spec?.properties ?? []).map(({ desired: _d, ...p }) => p) };
  return JSON.stringify({ metadata, spec });
}

/** Two pending desired deltas of one device become one: every property's latest value. */
function mergeTwinDeltas(pending: Message, next: Message): Message {
  const twins = (m: Message) => ((m.content as { twin?: Record<string, MsgTwin> } | null)?.twin ?? {});
  return { ...next, content: { ...(next.content as object), twin: { ...twins(pending), ...twins(next) } } };
}

/** MsgTwin → DeviceStatus twin: actual → reported, expected → observedDesired (values as strings). */
function mergeTwin(prev: StatusTwin | undefined, prop: string, t: MsgTwin): StatusTwin {
  const out: StatusTwin = { ...prev, propertyName: prop };
  const meta = (ts: number | undefined) => ({ timestamp: String(ts ?? Date.now()), ...(t.metadata?.type ? { type: String(t.metadata.type) } : {}) });
  if (t.actual && t.actual.value != null) out.reported = { value: t.actual.value, metadata: meta(t.actual.metadata?.timestamp ?? undefined) };
  if (t.expected && t.expected.value != null) out.observedDesired = { value: t.expected.value, metadata: meta(t.expected.metadata?.timestamp ?? undefined) };
  return out;
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}
