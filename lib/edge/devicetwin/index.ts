/**
 * DeviceTwin (module `twin`, group `twin`): the edge's copy of its devices, their attributes and
 * twins, kept in edgecore.db and in memory. KubeEdge's rules live in rules.ts; this module routes:
 *
 *  - cloud → edge (router messages forwarded by MetaManager / EdgeHub):
 *      `<ns>/device/<name>` insert/update/delete (v1beta1 Device: desired values → expected),
 *      `<ns>/devicemodel/<name>` (gives property types and access modes),
 *      `membership` `{added_devices, removed_devices}` and `device/<id>/twin/cloud_updated` (versioned sync);
 *  - MQTT (through the EventBus, resource = topic): `…/twin/update`, `…/twin/get`, `…/state/update`,
 *    `$hw/events/node/<node>/membership/get`; answers go back to the EventBus as `publish` messages;
 *  - edge → cloud: `device/<id>/twin/edge_updated` (coalesced per device) and `device/<id>/state/update`;
 *  - in process (mappers): reportValue / reportState / onDesired / getDevice / listDevices.
 *
 * Every operation is synchronous (SQLite through prepared statements), so one update is never
 * interleaved with another.
 */
import { randomUUID } from "node:crypto";
import {
  DeviceStates,
  MembershipGetSchema,
  MembershipUpdateSchema,
  StateUpdateSchema,
  TWIN_TYPE_DELETED,
  TwinGetSchema,
  TwinUpdateSchema,
  parseDevice,
  parseDeviceModel,
  twinTypeOf,
  validate,
  type AccessMode,
  type Device,
  type DeviceMethod,
  type DeviceModel,
  type DeviceProperty,
  type EdgeUpdated,
  type ErrorResult,
  type MembershipDevice,
  type MembershipDeviceInfo,
  type MsgAttr,
  type MsgTwin,
  type PropertyType,
  type ProtocolConfig,
  type PushMethod,
  type StateResult,
  type VisitorConfig,
} from "../../../schemas/devices.ts";
import { isOlderRv, newMessage, parseResource, responseTo, type Message } from "../../message.ts";
import type { Logger } from "../../log.ts";
import type { Module, ModuleContext } from "../../router.ts";
import type { SqliteDatabase } from "../../runtime/index.ts";
import { DealType, applyCloudDesired, buildDelta, cloneTwin, dealMsgTwin, mergeSync, toMsgTwin, type DealResult, type TwinRecord } from "./rules.ts";
import { TwinStore, type DeviceTable, type DeviceTwinTable } from "./store.ts";
import { NodeAction, TwinAction, deviceTopic, nodeTopic, parseDeviceTopic, parseNodeTopic } from "./topics.ts";

export { deviceTwinMigrations, type DeviceTwinDb } from "./store.ts";
export type { TwinRecord } from "./rules.ts";

export interface DeviceTwinOptions {
  /** edgecore.db opened with `deviceTwinMigrations`; only its raw connection is used. */
  store: { raw: SqliteDatabase };
  /** This node's name (membership topics, Device.spec.nodeName filter). */
  nodeName: string;
  /** At most one `twin/edge_updated` per device per this many ms (default 200). */
  coalesceMs?: number;
  /** Upstream module (default `websocket`, EdgeHub). */
  hubModule?: string;
  /** MQTT module (default `eventbus`), reached through the router. */
  busModule?: string;
  /**
   * Publishes directly instead of through the router (e.g. the EventBus instance): no inbox in
   * between, so a burst of updates never overflows the bus module's inbox.
   */
  publisher?: { publish(topic: string, payload: unknown): unknown };
  /** Used before start() and when no context logger is given. */
  log?: Logger;
}

/** What an in-process call or an MQTT request came to. */
export type TwinOutcome = { ok: true } | { ok: false; code: 400 | 404 | 409 | 500; reason: string };

export type DesiredListener = (deviceId: string, property: string, value: string) => void;

export interface TwinDeviceProperty {
  name: string;
  /** DeviceModel type (INT, FLOAT, …) when the model is known. */
  type?: PropertyType;
  /** The twin's value type (string/int/float/boolean). */
  twinType: string;
  accessMode?: AccessMode;
  minimum?: string;
  maximum?: string;
  unit?: string;
  /** Current desired (expected) value, if any. */
  desired?: string;
  /** Latest reported (actual) value, if any. */
  reported?: string;
  /** The Device's visitor config, else the model's. */
  visitors?: VisitorConfig;
  collectCycle?: number;
  reportCycle?: number;
  reportToCloud?: boolean;
  pushMethod?: PushMethod;
}

/** A device as the mapper host sees it. */
export interface TwinDevice {
  /** `<namespace>/<name>`. */
  id: string;
  namespace: string;
  name: string;
  description: string;
  state: string;
  lastOnline: string;
  nodeName?: string;
  modelName?: string;
  model?: DeviceModel;
  protocol?: ProtocolConfig;
  /** The model's protocolConfigData (defaults a mapper may merge under the Device's). */
  modelProtocolConfigData?: Record<string, unknown>;
  properties: TwinDeviceProperty[];
  methods?: DeviceMethod[];
  stateReport?: { reportToCloud?: boolean; reportCycle?: number };
  twins: Record<string, MsgTwin>;
  attributes: Record<string, MsgAttr>;
  /** The v1beta1 Device as the cloud sent it (absent for membership-only devices). */
  object?: Device;
}

interface AttrRecord {
  value: string;
  optional: boolean;
  metadata: { type: string; [k: string]: unknown };
  description: string;
}

interface DeviceEntry {
  id: string;
  namespace: string;
  name: string;
  description: string;
  state: string;
  lastOnline: string;
  object?: Device;
  attributes: Map<string, AttrRecord>;
  twins: Map<string, TwinRecord>;
}

interface PendingSync {
  twin: Record<string, MsgTwin>;
  timer?: ReturnType<typeof setTimeout>;
  lastSent: number;
}

const NOT_FOUND = "Update rejected due to the device is not existed";

const parseJson = <T>(text: string, fallback: T): T => {
  if (!text) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
};

function rowToTwin(r: DeviceTwinTable): TwinRecord {
  const meta = parseJson<Record<string, unknown>>(r.metadata, {});
  const t: TwinRecord = { optional: !!r.optional, metadata: { ...meta, type: r.attr_type || "string" } };
  if (r.expected !== "") t.expected = { value: r.expected, metadata: parseJson(r.expected_meta, {}) };
  if (r.actual !== "") t.actual = { value: r.actual, metadata: parseJson(r.actual_meta, {}) };
  if (r.expected_version) t.expected_version = parseJson(r.expected_version, { cloud: 0, edge: 0 });
  if (r.actual_version) t.actual_version = parseJson(r.actual_version, { cloud: 0, edge: 0 });
  if (r.description) t.description = r.description;
  return t;
}

/** A device's row in the `device` table. */
function deviceRow(d: DeviceEntry, now: number): DeviceTable {
  return { id: d.id, namespace: d.namespace, name: d.name, description: d.description, state: d.state, last_online: d.lastOnline, object: d.object ? JSON.stringify(d.object) : "", updated_at: now };
}

/** A twin as `…/twin/update/document` shows it before or after a change (null: absent or deleted). */
function documentSide(t: TwinRecord | undefined): MsgTwin | null {
  return t && t.metadata.type !== TWIN_TYPE_DELETED ? toMsgTwin(t, false) : null;
}

function twinToRow(deviceid: string, name: string, t: TwinRecord): Omit<DeviceTwinTable, "id"> {
  const { type, ...meta } = t.metadata;
  return {
    deviceid,
    name,
    description: t.description ?? "",
    expected: t.expected?.value ?? "",
    actual: t.actual?.value ?? "",
    expected_meta: t.expected?.metadata ? JSON.stringify(t.expected.metadata) : "",
    actual_meta: t.actual?.metadata ? JSON.stringify(t.actual.metadata) : "",
    expected_version: t.expected_version ? JSON.stringify(t.expected_version) : "",
    actual_version: t.actual_version ? JSON.stringify(t.actual_version) : "",
    optional: t.optional ? 1 : 0,
    attr_type: type,
    metadata: Object.keys(meta).length ? JSON.stringify(meta) : "",
  };
}

/** Go's time.RFC3339 (seconds, UTC). */
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

/** MQTT payloads arrive as bytes, strings, or already-decoded objects. */
function decodePayload(content: unknown): { ok: true; value: unknown } | { ok: false; error: string } {
  let text: string | undefined;
  if (typeof content === "string") text = content;
  else if (content instanceof Uint8Array) text = Buffer.from(content.buffer, content.byteOffset, content.byteLength).toString("utf8");
  if (text === undefined) return content === undefined || content === null ? { ok: false, error: "empty payload" } : { ok: true, value: content };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (e) {
    return { ok: false, error: `Unmarshal update request body failed, please check the request: ${(e as Error).message}` };
  }
}

/** The event_id of a request, when it has a usable one (for error results). */
function eventIdOf(doc: unknown): string {
  const id = doc && typeof doc === "object" ? (doc as { event_id?: unknown }).event_id : undefined;
  return typeof id === "string" ? id : "";
}

export class DeviceTwin implements Module {
  readonly name = "twin";
  readonly group = "twin";

  private ctx?: ModuleContext;
  private log?: Logger;
  private readonly db: TwinStore;
  private readonly devices = new Map<string, DeviceEntry>();
  private readonly models = new Map<string, DeviceModel>();
  private readonly listeners = new Set<DesiredListener>();
  private readonly pending = new Map<string, PendingSync>();
  private readonly coalesceMs: number;
  private readonly hubModule: string;
  private readonly busModule: string;
  private stopped = false;
  /** While a batch is open: announcements held until its commit. */
  private deferred?: (() => void)[];

  constructor(private readonly opts: DeviceTwinOptions) {
    this.db = new TwinStore(opts.store.raw);
    this.coalesceMs = opts.coalesceMs ?? 200;
    this.hubModule = opts.hubModule ?? "websocket";
    this.busModule = opts.busModule ?? "eventbus";
    this.log = opts.log;
    this.load();
  }

  // ---- lifecycle --------------------------------------------------------------------------

  start(ctx: ModuleContext): void {
    this.ctx = ctx;
    this.log = this.opts.log ?? ctx.log;
    this.stopped = false;
    this.log.info("device twin ready", { devices: this.devices.size, models: this.models.size });
  }

  stop(): void {
    // Send what is still being coalesced, then stop.
    for (const id of [...this.pending.keys()]) this.flushSync(id);
    for (const p of this.pending.values()) if (p.timer) clearTimeout(p.timer);
    this.pending.clear();
    this.stopped = true;
  }

  private load(): void {
    const { devices, models, attrs, twins } = this.db.loadAll();
    for (const m of models) {
      const parsed = parseDeviceModel(parseJson<unknown>(m.value, null));
      if (parsed.ok) this.models.set(m.id, parsed.value);
    }
    for (const d of devices) {
      const obj = d.object ? parseDevice(parseJson<unknown>(d.object, null)) : undefined;
      this.devices.set(d.id, {
        id: d.id,
        namespace: d.namespace,
        name: d.name,
        description: d.description,
        state: d.state,
        lastOnline: d.last_online,
        ...(obj?.ok ? { object: obj.value } : {}),
        attributes: new Map(),
        twins: new Map(),
      });
    }
    for (const a of attrs) {
      this.devices.get(a.deviceid)?.attributes.set(a.name, {
        value: a.value,
        optional: !!a.optional,
        metadata: { ...parseJson<Record<string, unknown>>(a.metadata, {}), type: a.attr_type || "string" },
        description: a.description,
      });
    }
    for (const t of twins) this.devices.get(t.deviceid)?.twins.set(t.name, rowToTwin(t));
  }

  // ---- router input -----------------------------------------------------------------------

  /**
   * Handles a burst of requests (the EventBus hands over each drained slice) as one SQLite
   * transaction, each request in its own savepoint, instead of one commit per request. What tells
   * anyone about a change (MQTT results, documents, deltas, reports to the cloud, desired values to
   * mappers) waits until the commit, so nothing is announced that a crash could undo.
   */
  handleBatch(msgs: Message[]): void {
    if (msgs.length === 1 || this.deferred) {
      for (const m of msgs) this.handle(m);
      return;
    }
    const deferred: (() => void)[] = (this.deferred = []);
    try {
      this.db.transaction(() => {
        for (const m of msgs) {
          try {
            this.handle(m);
          } catch (e) {
            this.log?.error("twin request failed", { resource: m.route.resource, err: String(e) });
          }
        }
      });
    } catch (e) {
      // The commit failed: the memory holds changes the disk does not. Announce none of them and
      // rebuild the state from edgecore.db.
      this.log?.error("twin requests not stored; state reloaded from the database", { count: msgs.length, err: String(e) });
      deferred.length = 0;
      this.devices.clear();
      this.models.clear();
      this.load();
    } finally {
      this.deferred = undefined;
    }
    for (const f of deferred) f();
  }

  handle(msg: Message): void {
    const { resource, operation } = msg.route;
    if (resource.startsWith("$hw/events/")) {
      this.handleMqtt(resource, msg.content);
      return;
    }
    if (operation === "response" || operation === "error") return; // the cloud's acks
    const rv = msg.header.resourceversion;
    if (resource === "membership" || /^node\/[^/]+\/membership$/.test(resource)) {
      if (this.handleMembership(msg.content, rv)) this.ackCloud(msg);
      return;
    }
    const cloudSync = /^(?:node\/[^/]+\/)?device\/([^/]+\/[^/]+)\/twin\/cloud_updated$/.exec(resource);
    if (cloudSync) {
      const doc = decodePayload(msg.content);
      const parsed = doc.ok ? validate(TwinUpdateSchema, doc.value) : doc;
      if (!parsed.ok) this.log?.warn("cloud twin sync dropped", { resource, err: parsed.error });
      else if (!this.cloudTwins(cloudSync[1]!, parsed.value.twin, rv)) return; // not stored: the cloud sends it again
      this.ackCloud(msg);
      return;
    }
    const ref = parseResource(resource);
    if (!ref?.name) {
      this.log?.debug("message not for the twin", { resource, operation });
      return;
    }
    if (ref.type === "device") this.handleDeviceObject(operation, ref.namespace, ref.name, msg.content);
    else if (ref.type === "devicemodel") this.handleModelObject(operation, ref.namespace, ref.name, msg.content);
  }

  private handleMqtt(topic: string, content: unknown): void {
    const dt = parseDeviceTopic(topic);
    if (dt) {
      switch (dt.action) {
        case TwinAction.update: {
          const doc = decodePayload(content);
          if (!doc.ok) return this.publishError(dt.deviceId, TwinAction.updateResult, "", 400, doc.error);
          const parsed = validate(TwinUpdateSchema, doc.value);
          if (!parsed.ok) return this.publishError(dt.deviceId, TwinAction.updateResult, eventIdOf(doc.value), 400, parsed.error);
          this.updateTwins(dt.deviceId, parsed.value.twin, parsed.value.event_id, { publishResult: true, fromApi: false });
          return;
        }
        case TwinAction.get: {
          const doc = decodePayload(content);
          const parsed = doc.ok ? validate(TwinGetSchema, doc.value) : doc;
          if (!parsed.ok) return this.publishError(dt.deviceId, TwinAction.getResult, doc.ok ? eventIdOf(doc.value) : "", 400, parsed.error);
          const dev = this.devices.get(dt.deviceId);
          if (!dev) return this.publishError(dt.deviceId, TwinAction.getResult, parsed.value.event_id, 404, `Device ${dt.deviceId} not found while getting twin`);
          this.publish(deviceTopic(dt.deviceId, TwinAction.getResult), { event_id: parsed.value.event_id, timestamp: Date.now(), twin: this.twinsForApps(dev) });
          return;
        }
        case TwinAction.stateUpdate: {
          const doc = decodePayload(content);
          const parsed = doc.ok ? validate(StateUpdateSchema, doc.value) : doc;
          if (!parsed.ok) return this.publishError(dt.deviceId, TwinAction.stateUpdateResult, doc.ok ? eventIdOf(doc.value) : "", 400, parsed.error);
          this.updateState(dt.deviceId, parsed.value.state, parsed.value.event_id, true);
          return;
        }
        default:
          this.log?.debug("device topic not handled", { topic });
          return;
      }
    }
    const nt = parseNodeTopic(topic);
    if (nt?.action === NodeAction.membershipGet) {
      const doc = decodePayload(content);
      const parsed = doc.ok ? validate(MembershipGetSchema, doc.value) : doc;
      const out = parsed.ok
        ? { event_id: parsed.value.event_id, timestamp: Date.now(), devices: [...this.devices.values()].map((d) => this.memberInfo(d)) }
        : ({ event_id: doc.ok ? eventIdOf(doc.value) : "", timestamp: Date.now(), code: 400, reason: parsed.error } satisfies ErrorResult);
      this.publish(nodeTopic(nt.node, NodeAction.membershipGetResult), out);
    }
  }

  // ---- twin updates -----------------------------------------------------------------------

  /** An edge-side twin update (`…/twin/update` semantics). */
  updateTwins(deviceId: string, twin: Record<string, MsgTwin | null>, eventId = "", o: { publishResult?: boolean; fromApi?: boolean; stamp?: number } = {}): TwinOutcome {
    const dev = this.devices.get(deviceId);
    if (!dev) {
      if (o.publishResult) this.publishError(deviceId, TwinAction.updateResult, eventId, 404, NOT_FOUND);
      return { ok: false, code: 404, reason: NOT_FOUND };
    }
    const now = Date.now();
    const work = new Map(dev.twins);
    const res = dealMsgTwin(work, twin, DealType.Rest, now, o.stamp);
    if (res.error) {
      if (o.publishResult) this.publishError(deviceId, TwinAction.updateResult, eventId, res.error.code, res.error.reason);
      return { ok: false, ...res.error };
    }
    const failed = this.commitTwins(dev, res);
    if (failed) {
      if (o.publishResult) this.publishError(deviceId, TwinAction.updateResult, eventId, 500, failed);
      return { ok: false, code: 500, reason: failed };
    }
    dev.twins = work;
    if (o.publishResult) this.publish(deviceTopic(deviceId, TwinAction.updateResult), { event_id: eventId, timestamp: now, twin: res.result });
    this.afterChange(dev, res, eventId, now);
    if (Object.keys(res.sync).length) this.queueSync(deviceId, res.sync);
    if (!o.fromApi) this.fireDesired(dev, res.expectedChanged);
    return { ok: true };
  }

  /**
   * Twins from the cloud (membership, `twin/cloud_updated`): those with versions follow KubeEdge's
   * sync rules; those without (what Outpost's DeviceController sends) carry the Device's desired values
   * and win, as a Device update does. `rv` is the Device's resourceVersion: older than the stored
   * Device means a stale resend, ignored. False when the change could not be stored.
   */
  private cloudTwins(deviceId: string, twin: Record<string, MsgTwin | null>, rv: string | undefined): boolean {
    const versioned: Record<string, MsgTwin | null> = {};
    const desired: Record<string, string> = {};
    const types: Record<string, string> = {};
    for (const [k, t] of Object.entries(twin)) {
      if (t?.expected && !t.expected_version && !t.actual_version) {
        desired[k] = t.expected.value ?? "";
        if (t.metadata?.type) types[k] = t.metadata.type;
      } else versioned[k] = t;
    }
    if (Object.keys(versioned).length) this.syncTwins(deviceId, versioned);
    return Object.keys(desired).length ? this.applyCloudValues(deviceId, desired, types, rv) : true;
  }

  private applyCloudValues(deviceId: string, desired: Record<string, string>, types: Record<string, string>, rv: string | undefined): boolean {
    const dev = this.devices.get(deviceId);
    if (!dev) {
      this.log?.warn("desired values for an unknown device dropped", { device: deviceId });
      return true;
    }
    if (isOlderRv(rv, dev.object?.metadata.resourceVersion)) {
      this.log?.debug("stale desired values ignored", { device: deviceId, rv });
      return true;
    }
    const now = Date.now();
    const work = new Map(dev.twins);
    const changed = new Map<string, TwinRecord>();
    const document: Record<string, { last: MsgTwin | null; current: MsgTwin | null }> = {};
    const desiredChanged: string[] = [];
    for (const [k, value] of Object.entries(desired)) {
      const prev = work.get(k);
      if (prev && prev.metadata.type !== TWIN_TYPE_DELETED && (prev.expected?.value ?? "") === value) continue;
      const type = prev && prev.metadata.type !== TWIN_TYPE_DELETED ? prev.metadata.type : this.declaredType(dev, k, types[k]);
      if (!prev && value === "") {
        // a property without a desired value: the twin exists, nothing changed for apps
        const twin: TwinRecord = { optional: false, metadata: { type } };
        work.set(k, twin);
        changed.set(k, twin);
        continue;
      }
      const r = applyCloudDesired(prev, value, type, now);
      if (r.error) {
        this.log?.warn("desired value does not fit the property type; ignored", { device: deviceId, property: k, type, err: r.error });
        continue;
      }
      work.set(k, r.twin);
      changed.set(k, r.twin);
      desiredChanged.push(k);
      document[k] = { last: documentSide(prev), current: toMsgTwin(r.twin, false) };
    }
    // The stored Device keeps step: its desired values and resourceVersion, so a stale resend of it is known.
    const object = dev.object ? withDesired(dev.object, desired, rv) : undefined;
    try {
      this.db.transaction(() => {
        for (const [k, t] of changed) this.db.upsertTwin(twinToRow(deviceId, k, t));
        if (object) this.db.upsertDevice(deviceRow({ ...dev, object }, now));
      });
    } catch (e) {
      this.log?.error("desired values not stored", { device: deviceId, err: String(e) });
      return false;
    }
    dev.twins = work;
    if (object) dev.object = object;
    if (desiredChanged.length) this.afterChange(dev, { changed, result: {}, sync: {}, document, expectedChanged: desiredChanged }, "", now);
    this.fireDesired(dev, desiredChanged);
    return true;
  }

  /** A property's twin type: from the device's model, else as the cloud named it, else string. */
  private declaredType(dev: DeviceEntry, prop: string, named: string | undefined): string {
    const modelType = this.modelProperty(dev.namespace, dev.object, prop)?.type;
    return modelType ? twinTypeOf(modelType) : (named ?? "string");
  }

  /** Acknowledges a message of Outpost's cloud once handled (its outbox keeps it until then). */
  private ackCloud(msg: Message): void {
    if (!this.ctx || this.stopped || msg.route.source !== "devicecontroller") return;
    this.ctx.router.send(this.hubModule, responseTo(msg, "OK"));
  }

  /** A versioned update from the cloud (membership twins, `twin/cloud_updated`). */
  private syncTwins(deviceId: string, twin: Record<string, MsgTwin | null>): void {
    const dev = this.devices.get(deviceId);
    if (!dev) {
      this.log?.warn("cloud twin sync for an unknown device", { device: deviceId });
      return;
    }
    const now = Date.now();
    const work = new Map(dev.twins);
    const res = dealMsgTwin(work, twin, DealType.Sync, now);
    const failed = this.commitTwins(dev, res);
    if (failed) {
      this.log?.error("twin sync not stored", { device: deviceId, err: failed });
      return;
    }
    dev.twins = work;
    this.afterChange(dev, res, "", now);
    // Refused (older) cloud values: tell the cloud what the edge holds.
    if (Object.keys(res.sync).length) this.queueSync(deviceId, res.sync);
    this.fireDesired(dev, res.expectedChanged);
  }

  private commitTwins(dev: DeviceEntry, res: DealResult): string | null {
    if (!res.changed.size) return null;
    try {
      this.db.transaction(() => {
        for (const [k, t] of res.changed) this.db.upsertTwin(twinToRow(dev.id, k, t));
      });
      return null;
    } catch (e) {
      return `writing the twin failed: ${String(e)}`;
    }
  }

  /** Document and delta after a stored change. */
  private afterChange(dev: DeviceEntry, res: DealResult, eventId: string, now: number): void {
    if (Object.keys(res.document).length) this.publish(deviceTopic(dev.id, TwinAction.document), { event_id: eventId, timestamp: now, twin: res.document });
    const delta = buildDelta(dev.twins);
    if (delta) this.publish(deviceTopic(dev.id, TwinAction.delta), { event_id: randomUUID(), timestamp: now, ...delta });
  }

  // ---- state ------------------------------------------------------------------------------

  private updateState(deviceId: string, state: string, eventId: string, fromMqtt: boolean): TwinOutcome {
    const dev = this.devices.get(deviceId);
    const fail = (code: 400 | 404 | 500, reason: string): TwinOutcome => {
      if (fromMqtt) this.publishError(deviceId, TwinAction.stateUpdateResult, eventId, code, reason);
      return { ok: false, code, reason };
    };
    if (!dev) return fail(404, `Device ${deviceId} not found`);
    const lower = state.toLowerCase();
    if (!(DeviceStates as readonly string[]).includes(lower)) return fail(400, `state must be one of ${DeviceStates.join(", ")}`);
    const now = Date.now();
    const lastOnline = lower === "online" || lower === "ok" ? rfc3339(now) : dev.lastOnline;
    try {
      this.db.updateDeviceState(deviceId, state, lastOnline);
    } catch (e) {
      return fail(500, `writing the state failed: ${String(e)}`);
    }
    dev.state = state;
    dev.lastOnline = lastOnline;
    const payload: StateResult = {
      event_id: eventId || randomUUID(),
      timestamp: now,
      device: { name: dev.name, state, ...(lastOnline ? { lastOnlineTime: lastOnline } : {}) },
    };
    this.publish(deviceTopic(deviceId, TwinAction.stateUpdateResult), payload);
    this.upstream(`device/${deviceId}/${TwinAction.stateUpdate}`, payload);
    return { ok: true };
  }

  // ---- cloud objects ----------------------------------------------------------------------

  private handleDeviceObject(operation: string, namespace: string, name: string, content: unknown): void {
    const id = `${namespace}/${name}`;
    if (operation === "delete") {
      this.removeDevice(id);
      return;
    }
    if (operation !== "insert" && operation !== "update" && operation !== "patch") return;
    const parsed = parseDevice(content);
    if (!parsed.ok) {
      this.log?.warn("invalid Device skipped", { device: id, err: parsed.error });
      return;
    }
    const nodeName = parsed.value.spec.nodeName;
    if (nodeName && nodeName !== this.opts.nodeName) {
      // Bound elsewhere (or moved away): not ours.
      this.removeDevice(id);
      return;
    }
    this.applyDevice(id, namespace, parsed.value);
  }

  private modelProperty(namespace: string, device: Device | undefined, prop: string) {
    const model = this.modelOf(namespace, device);
    return model?.spec.properties?.find((p) => p.name === prop);
  }

  private modelOf(namespace: string, device: Device | undefined): DeviceModel | undefined {
    const ref = device?.spec.deviceModelRef?.name;
    return ref ? this.models.get(`${namespace}/${ref}`) : undefined;
  }

  private applyDevice(id: string, namespace: string, device: Device): void {
    const prev = this.devices.get(id);
    if (prev?.object && isOlderRv(device.metadata.resourceVersion, prev.object.metadata.resourceVersion)) {
      this.log?.debug("stale Device ignored", { device: id, rv: device.metadata.resourceVersion });
      return;
    }
    const now = Date.now();
    const work = new Map(prev?.twins ?? []);
    const changed = new Map<string, TwinRecord>();
    const removed: string[] = [];
    const desiredChanged: string[] = [];
    const props = device.spec.properties ?? [];
    const oldProps = new Map((prev?.object?.spec.properties ?? []).map((p) => [p.name, p] as const));

    for (const p of props) {
      const type = twinTypeOf(this.modelProperty(namespace, device, p.name)?.type);
      const desired = p.desired?.value ?? "";
      const twin = work.get(p.name);
      const old = oldProps.get(p.name);
      const cloudChanged = old ? desired !== (old.desired?.value ?? "") : twin ? desired !== "" && desired !== (twin.expected?.value ?? "") : desired !== "";
      let next: TwinRecord | undefined;
      if (cloudChanged) {
        const r = applyCloudDesired(twin, desired, type, now);
        if (r.error) {
          this.log?.warn("desired value does not fit the property type; ignored", { device: id, property: p.name, type, err: r.error });
          if (twin) continue;
          next = { optional: false, metadata: { type } };
        } else {
          next = r.twin;
          desiredChanged.push(p.name);
        }
      } else if (!twin) {
        next = { optional: false, metadata: { type } };
      } else if (twin.optional || (twin.metadata.type !== type && twin.metadata.type !== TWIN_TYPE_DELETED)) {
        // A property of the Device: required, typed by the model.
        next = cloneTwin(twin);
        next.optional = false;
        if (next.metadata.type !== TWIN_TYPE_DELETED) next.metadata = { ...next.metadata, type };
      }
      if (next) {
        work.set(p.name, next);
        changed.set(p.name, next);
      }
    }
    // Required twins whose property left the spec go with it; twins apps added stay.
    const names = new Set(props.map((p) => p.name));
    for (const [k, t] of work) {
      if (!t.optional && !names.has(k)) {
        work.delete(k);
        removed.push(k);
      }
    }

    const entry: DeviceEntry = {
      id,
      namespace,
      name: device.metadata.name,
      description: prev?.description ?? "",
      state: prev?.state ?? "",
      lastOnline: prev?.lastOnline ?? "",
      object: device,
      attributes: prev?.attributes ?? new Map(),
      twins: work,
    };
    try {
      this.db.transaction(() => {
        this.db.upsertDevice(deviceRow(entry, now));
        for (const [k, t] of changed) this.db.upsertTwin(twinToRow(id, k, t));
        for (const k of removed) this.db.deleteTwin(id, k);
      });
    } catch (e) {
      this.log?.error("device not stored", { device: id, err: String(e) });
      return;
    }
    this.devices.set(id, entry);
    if (!prev) this.publishMembership([entry], []);
    if (desiredChanged.length || removed.length) {
      const document: Record<string, { last: MsgTwin | null; current: MsgTwin | null }> = {};
      for (const k of desiredChanged) {
        document[k] = { last: documentSide(prev?.twins.get(k)), current: toMsgTwin(work.get(k)!, false) };
      }
      for (const k of removed) {
        const last = prev?.twins.get(k);
        document[k] = { last: last ? toMsgTwin(last, false) : null, current: null };
      }
      this.afterChange(entry, { changed, result: {}, sync: {}, document, expectedChanged: desiredChanged }, "", now);
    }
    this.fireDesired(entry, desiredChanged);
    this.log?.debug("device stored", { device: id, twins: work.size, desiredChanged: desiredChanged.length });
  }

  private handleModelObject(operation: string, namespace: string, name: string, content: unknown): void {
    const id = `${namespace}/${name}`;
    if (operation === "delete") {
      try {
        this.db.deleteModel(id);
      } catch (e) {
        this.log?.error("device model not deleted", { model: id, err: String(e) });
        return;
      }
      this.models.delete(id);
      return;
    }
    if (operation !== "insert" && operation !== "update" && operation !== "patch") return;
    const parsed = parseDeviceModel(content);
    if (!parsed.ok) {
      this.log?.warn("invalid DeviceModel skipped", { model: id, err: parsed.error });
      return;
    }
    try {
      this.db.upsertModel(id, JSON.stringify(parsed.value));
    } catch (e) {
      this.log?.error("device model not stored", { model: id, err: String(e) });
      return;
    }
    this.models.set(id, parsed.value);
    // Devices using it get their twins typed by it.
    for (const dev of this.devices.values()) {
      if (dev.namespace === namespace && dev.object?.spec.deviceModelRef?.name === name) this.applyDevice(dev.id, namespace, dev.object);
    }
  }

  private removeDevice(id: string): void {
    const dev = this.devices.get(id);
    if (!dev) return;
    try {
      this.db.transaction(() => this.db.deleteDevice(id));
    } catch (e) {
      this.log?.error("device not deleted", { device: id, err: String(e) });
      return;
    }
    this.devices.delete(id);
    const p = this.pending.get(id);
    if (p?.timer) clearTimeout(p.timer);
    this.pending.delete(id);
    this.publishMembership([], [dev]);
  }

  /** False when a change could not be stored (the cloud then sends it again). */
  private handleMembership(content: unknown, rv?: string): boolean {
    const doc = decodePayload(content);
    const parsed = doc.ok ? validate(MembershipUpdateSchema, doc.value) : doc;
    if (!parsed.ok) {
      this.log?.warn("membership update dropped", { err: parsed.error });
      return true;
    }
    let stored = true;
    const idOf = (d: MembershipDevice) => d.id || (d.name?.includes("/") ? d.name : d.name ? `default/${d.name}` : "");
    const added: DeviceEntry[] = [];
    for (const d of parsed.value.added_devices ?? []) {
      const id = idOf(d);
      if (!id.includes("/")) continue;
      let dev = this.devices.get(id);
      if (!dev) {
        const [namespace, ...rest] = id.split("/");
        dev = { id, namespace: namespace!, name: d.name && !d.name.includes("/") ? d.name : rest.join("/"), description: d.description ?? "", state: d.state ?? "", lastOnline: "", attributes: new Map(), twins: new Map() };
        try {
          this.db.upsertDevice(deviceRow(dev, Date.now()));
        } catch (e) {
          this.log?.error("device not stored", { device: id, err: String(e) });
          stored = false;
          continue;
        }
        this.devices.set(id, dev);
        added.push(dev);
      }
      if (d.attributes) this.applyAttributes(dev, d.attributes);
      if (d.twin && !this.cloudTwins(id, d.twin, rv)) stored = false;
    }
    if (added.length) this.publishMembership(added, []);
    for (const d of parsed.value.removed_devices ?? []) {
      const id = idOf(d);
      const dev = this.devices.get(id);
      // a stale removal (resent after the device came back) must not remove the newer device
      if (dev?.object && isOlderRv(rv, dev.object.metadata.resourceVersion)) continue;
      this.removeDevice(id);
    }
    return stored;
  }

  private applyAttributes(dev: DeviceEntry, attrs: Record<string, MsgAttr | null>): void {
    try {
      this.db.transaction(() => {
        for (const [k, a] of Object.entries(attrs)) {
          if (a === null) {
            if (dev.attributes.get(k)?.optional !== false) {
              this.db.deleteAttr(dev.id, k);
              dev.attributes.delete(k);
            }
            continue;
          }
          const { type, ...meta } = a.metadata ?? {};
          const rec: AttrRecord = { value: a.value, optional: a.optional ?? true, metadata: { ...meta, type: type || "string" }, description: dev.attributes.get(k)?.description ?? "" };
          this.db.upsertAttr({ deviceid: dev.id, name: k, description: rec.description, value: rec.value, optional: rec.optional ? 1 : 0, attr_type: rec.metadata.type, metadata: Object.keys(meta).length ? JSON.stringify(meta) : "" });
          dev.attributes.set(k, rec);
        }
      });
    } catch (e) {
      this.log?.error("device attributes not stored", { device: dev.id, err: String(e) });
    }
  }

  // ---- output -----------------------------------------------------------------------------

  private publish(topic: string, payload: unknown): void {
    if (this.deferred) return void this.deferred.push(() => this.publish(topic, payload));
    if (!this.ctx || this.stopped) return;
    if (this.opts.publisher) {
      void this.opts.publisher.publish(topic, payload);
      return;
    }
    this.ctx.router.send(this.busModule, newMessage({ source: "twin", group: "bus", operation: "publish", resource: topic }, payload));
  }

  private publishError(deviceId: string, action: string, eventId: string, code: ErrorResult["code"], reason: string): void {
    this.publish(deviceTopic(deviceId, action), { event_id: eventId, timestamp: Date.now(), code, reason } satisfies ErrorResult);
  }

  private upstream(resource: string, content: unknown): void {
    if (this.deferred) return void this.deferred.push(() => this.upstream(resource, content));
    if (!this.ctx || this.stopped) return;
    this.ctx.router.send(this.hubModule, newMessage({ source: "twin", group: "resource", operation: "update", resource }, content));
  }

  private publishMembership(added: DeviceEntry[], removed: DeviceEntry[]): void {
    this.publish(nodeTopic(this.opts.nodeName, NodeAction.membershipUpdated), {
      event_id: randomUUID(),
      timestamp: Date.now(),
      added_devices: added.map((d) => ({ ...this.memberInfo(d), twin: this.twinsForApps(d) })),
      removed_devices: removed.map((d) => ({ id: d.id, name: d.name })),
    });
  }

  private memberInfo(d: DeviceEntry): MembershipDeviceInfo {
    const info: MembershipDeviceInfo = { id: d.id, name: d.name };
    if (d.description) info.description = d.description;
    if (d.state) info.state = d.state;
    if (d.lastOnline) info.last_online = d.lastOnline;
    if (d.attributes.size) info.attributes = Object.fromEntries([...d.attributes].map(([k, a]) => [k, { value: a.value, optional: a.optional, metadata: { ...a.metadata } }]));
    return info;
  }

  /** Twins as apps see them: versions stripped, deleted twins as null (KubeEdge's twin/get result). */
  private twinsForApps(d: DeviceEntry): Record<string, MsgTwin | null> {
    const out: Record<string, MsgTwin | null> = {};
    for (const [k, t] of d.twins) if (t.metadata.type !== TWIN_TYPE_DELETED) out[k] = toMsgTwin(t, false);
    return out;
  }

  /** Queues changed twins for `twin/edge_updated`: at most one message per device per coalesceMs. */
  private queueSync(deviceId: string, twins: Record<string, MsgTwin>): void {
    let p = this.pending.get(deviceId);
    if (!p) this.pending.set(deviceId, (p = { twin: {}, lastSent: 0 }));
    for (const [k, t] of Object.entries(twins)) p.twin[k] = mergeSync(p.twin[k], t);
    if (p.timer) return;
    const wait = p.lastSent + this.coalesceMs - Date.now();
    if (wait <= 0) this.flushSync(deviceId);
    else p.timer = setTimeout(() => this.flushSync(deviceId), wait);
  }

  private flushSync(deviceId: string): void {
    const p = this.pending.get(deviceId);
    if (!p) return;
    if (p.timer) clearTimeout(p.timer);
    p.timer = undefined;
    if (!Object.keys(p.twin).length) return;
    const content: EdgeUpdated = { event_id: randomUUID(), timestamp: Date.now(), twin: p.twin };
    p.twin = {};
    p.lastSent = Date.now();
    this.upstream(`device/${deviceId}/${TwinAction.edgeUpdated}`, content);
  }

  /** Sends every device's twins (with versions) up again, e.g. after the cloud link comes back. */
  resync(): void {
    for (const d of this.devices.values()) {
      const twins: Record<string, MsgTwin> = {};
      for (const [k, t] of d.twins) if (t.metadata.type !== TWIN_TYPE_DELETED && (t.actual || t.expected)) twins[k] = toMsgTwin(t, true);
      if (Object.keys(twins).length) this.queueSync(d.id, twins);
    }
  }

  private fireDesired(dev: DeviceEntry, keys: string[]): void {
    if (!keys.length || !this.listeners.size) return;
    if (this.deferred) return void this.deferred.push(() => this.fireDesired(dev, keys));
    for (const k of keys) {
      const t = dev.twins.get(k);
      const value = t?.expected?.value;
      if (value === undefined || t?.metadata.type === TWIN_TYPE_DELETED) continue;
      if (this.modelProperty(dev.namespace, dev.object, k)?.accessMode === "ReadOnly") continue;
      for (const l of this.listeners) {
        try {
          l(dev.id, k, value);
        } catch (e) {
          this.log?.warn("desired-value listener failed", { device: dev.id, property: k, err: String(e) });
        }
      }
    }
  }

  // ---- in-process API (mappers) -----------------------------------------------------------

  /** A reported value from a mapper: `actual` of the property's twin (created, typed by the model, if missing). */
  reportValue(deviceId: string, property: string, value: string | number | boolean, opts: { timestamp?: number; observedDesired?: string } = {}): TwinOutcome {
    const dev = this.devices.get(deviceId);
    if (!dev) return { ok: false, code: 404, reason: NOT_FOUND };
    const twin: MsgTwin = { actual: { value: String(value) } };
    if (opts.observedDesired !== undefined) twin.expected = { value: opts.observedDesired };
    if (!dev.twins.has(property)) twin.metadata = { type: twinTypeOf(this.modelProperty(dev.namespace, dev.object, property)?.type) };
    const parsed = validate(TwinUpdateSchema, { twin: { [property]: twin } });
    if (!parsed.ok) return { ok: false, code: 400, reason: parsed.error };
    return this.updateTwins(deviceId, parsed.value.twin, "", { fromApi: true, ...(opts.timestamp !== undefined ? { stamp: opts.timestamp } : {}) });
  }

  /** A device state from a mapper (online/offline/ok/unknown/unhealthy, any case). */
  reportState(deviceId: string, state: string): TwinOutcome {
    return this.updateState(deviceId, state, "", false);
  }

  /**
   * Called with (deviceId, property, value) when a desired value changes (cloud, or an app over
   * MQTT) and, right after registering, for every writable property that has one. Properties the
   * model marks ReadOnly are skipped. Returns a function that unregisters the listener.
   */
  onDesired(listener: DesiredListener): () => void {
    this.listeners.add(listener);
    queueMicrotask(() => {
      if (!this.listeners.has(listener)) return;
      for (const dev of this.devices.values()) {
        for (const [k, t] of dev.twins) {
          const value = t.expected?.value;
          if (value === undefined || t.metadata.type === TWIN_TYPE_DELETED) continue;
          if (this.modelProperty(dev.namespace, dev.object, k)?.accessMode === "ReadOnly") continue;
          try {
            listener(dev.id, k, value);
          } catch (e) {
            this.log?.warn("desired-value listener failed", { device: dev.id, property: k, err: String(e) });
          }
        }
      }
    });
    return () => void this.listeners.delete(listener);
  }

  getDevice(deviceId: string): TwinDevice | undefined {
    const d = this.devices.get(deviceId);
    return d ? this.view(d) : undefined;
  }

  listDevices(): TwinDevice[] {
    return [...this.devices.values()].map((d) => this.view(d));
  }

  private view(d: DeviceEntry): TwinDevice {
    const spec = d.object?.spec;
    const model = this.modelOf(d.namespace, d.object);
    const modelProps = new Map((model?.spec.properties ?? []).map((p) => [p.name, p] as const));
    const props: TwinDeviceProperty[] = (spec?.properties ?? []).map((p: DeviceProperty) => {
      const mp = modelProps.get(p.name);
      const t = d.twins.get(p.name);
      const visitors = p.visitors ?? mp?.visitors;
      const out: TwinDeviceProperty = { name: p.name, twinType: t?.metadata.type ?? twinTypeOf(mp?.type) };
      if (mp?.type) out.type = mp.type;
      if (mp?.accessMode) out.accessMode = mp.accessMode;
      if (mp?.minimum !== undefined) out.minimum = mp.minimum;
      if (mp?.maximum !== undefined) out.maximum = mp.maximum;
      if (mp?.unit !== undefined) out.unit = mp.unit;
      if (t?.expected) out.desired = t.expected.value;
      if (t?.actual) out.reported = t.actual.value;
      if (visitors) out.visitors = visitors;
      if (p.collectCycle !== undefined) out.collectCycle = p.collectCycle;
      if (p.reportCycle !== undefined) out.reportCycle = p.reportCycle;
      if (p.reportToCloud !== undefined) out.reportToCloud = p.reportToCloud;
      if (p.pushMethod) out.pushMethod = p.pushMethod;
      return out;
    });
    const twins: Record<string, MsgTwin> = {};
    for (const [k, t] of d.twins) twins[k] = toMsgTwin(t, true);
    const view: TwinDevice = {
      id: d.id,
      namespace: d.namespace,
      name: d.name,
      description: d.description,
      state: d.state,
      lastOnline: d.lastOnline,
      properties: props,
      twins,
      attributes: Object.fromEntries([...d.attributes].map(([k, a]) => [k, { value: a.value, optional: a.optional, metadata: { ...a.metadata } }])),
    };
    if (spec?.nodeName) view.nodeName = spec.nodeName;
    if (spec?.deviceModelRef?.name) view.modelName = spec.deviceModelRef.name;
    if (model) view.model = model;
    if (spec?.protocol) view.protocol = spec.protocol;
    if (model?.spec.protocolConfigData) view.modelProtocolConfigData = model.spec.protocolConfigData;
    if (spec?.methods) view.methods = spec.methods;
    if (spec?.stateReport) view.stateReport = spec.stateReport;
    if (d.object) view.object = d.object;
    return view;
  }
}

/** A copy of `device` with these desired values and resourceVersion. */
function withDesired(device: Device, desired: Record<string, string>, rv: string | undefined): Device {
  const properties = device.spec.properties?.map((p) => (p.name in desired ? { ...p, desired: { ...p.desired, value: desired[p.name]! } } : p));
  return { ...device, metadata: { ...device.metadata, ...(rv ? { resourceVersion: rv } : {}) }, spec: { ...device.spec, ...(properties ? { properties } : {}) } };
}
