/**
 * KubeEdge's twin rules (edge/pkg/devicetwin/dtmanager/twin.go), as pure functions over one
 * device's twins:
 *  - an edge update (MQTT app, mapper) bumps the `edge` version of what it touches and always wins
 *    for reported values; a value must fit the twin's type or the whole update is refused (400);
 *  - a cloud sync carries versions and is refused for a value when the local `cloud` or `edge`
 *    version is newer (the current value is then sent back up);
 *  - the cloud's desired value (Device spec) bumps the `cloud` version: the cloud wins for desired;
 *  - a twin is deleted with `null` (optional twins only) or with metadata type `deleted`.
 * The caller hands in a copy of the twins and keeps it only when the update succeeds.
 */
import { TWIN_TYPE_DELETED, TwinValueTypes, checkTwinValue, type MsgTwin, type TwinVersion } from "../../../schemas/devices.ts";

export interface TwinValueRecord {
  value: string;
  metadata?: { timestamp?: number };
}

/** One twin as held in memory (and in a device_twin row). */
export interface TwinRecord {
  expected?: TwinValueRecord;
  actual?: TwinValueRecord;
  optional: boolean;
  /** `type` is the value type (or `deleted`); other keys are kept as given. */
  metadata: { type: string; [k: string]: unknown };
  expected_version?: TwinVersion;
  actual_version?: TwinVersion;
  description?: string;
}

export const DealType = {
  /** From the edge: MQTT `…/twin/update`, mappers. */
  Rest: 0,
  /** From the cloud, with versions (membership twins, legacy `twin/cloud_updated`). */
  Sync: 1,
} as const;
export type DealType = (typeof DealType)[keyof typeof DealType];

export interface TwinDoc {
  last: MsgTwin | null;
  current: MsgTwin | null;
}

export interface DealResult {
  /** Twins to write (the new records). */
  changed: Map<string, TwinRecord>;
  /** For `…/twin/update/result`: changed twins, versions stripped (null = deleted). */
  result: Record<string, MsgTwin | null>;
  /** For upstream `twin/edge_updated`: changed twins with versions (Rest), or refused syncs. */
  sync: Record<string, MsgTwin>;
  document: Record<string, TwinDoc>;
  /** Keys whose desired (expected) value changed. */
  expectedChanged: string[];
  error?: { code: 400 | 404 | 409 | 500; reason: string };
}

const validType = (t: string) => (TwinValueTypes as readonly string[]).includes(t);

/** MsgTwin view of a record; `withVersions` false strips the versions (what apps see). */
export function toMsgTwin(t: TwinRecord, withVersions: boolean): MsgTwin {
  const out: MsgTwin = {};
  if (t.expected) out.expected = { value: t.expected.value, ...(t.expected.metadata ? { metadata: { ...t.expected.metadata } } : {}) };
  if (t.actual) out.actual = { value: t.actual.value, ...(t.actual.metadata ? { metadata: { ...t.actual.metadata } } : {}) };
  out.optional = t.optional;
  out.metadata = { ...t.metadata };
  if (withVersions) {
    if (t.expected_version) out.expected_version = { ...t.expected_version };
    if (t.actual_version) out.actual_version = { ...t.actual_version };
  }
  return out;
}

export function cloneTwin(t: TwinRecord): TwinRecord {
  return {
    ...(t.expected ? { expected: { value: t.expected.value, ...(t.expected.metadata ? { metadata: { ...t.expected.metadata } } : {}) } } : {}),
    ...(t.actual ? { actual: { value: t.actual.value, ...(t.actual.metadata ? { metadata: { ...t.actual.metadata } } : {}) } } : {}),
    optional: t.optional,
    metadata: { ...t.metadata },
    ...(t.expected_version ? { expected_version: { ...t.expected_version } } : {}),
    ...(t.actual_version ? { actual_version: { ...t.actual_version } } : {}),
    ...(t.description !== undefined ? { description: t.description } : {}),
  };
}

/** KubeEdge's dealVersion: Rest → edge+1; Sync → refused if a local version is newer, else copied. */
function dealVersion(local: TwinVersion, req: TwinVersion | null | undefined, deal: DealType, deleting = false): string | null {
  if (deal === DealType.Rest) {
    local.edge += 1;
    return null;
  }
  if (!req) return deleting ? null : "Version not allowed be nil while syncing";
  if (local.cloud > req.cloud) return "Version not allowed";
  if (local.edge > req.edge) return "Not allowed to sync due to version conflict";
  local.cloud = req.cloud;
  local.edge = req.edge;
  return null;
}

function newResult(): DealResult {
  return { changed: new Map(), result: {}, sync: {}, document: {}, expectedChanged: [] };
}

/** Applies `msg` (twin key → MsgTwin or null) to `twins` in place. `now` stamps value metadata. */
export function dealMsgTwin(twins: Map<string, TwinRecord>, msg: Record<string, MsgTwin | null>, deal: DealType, now: number, stamp?: number): DealResult {
  const res = newResult();
  for (const [key, m] of Object.entries(msg)) {
    const twin = twins.get(key);
    const err = twin ? (m === null || m.metadata?.type === TWIN_TYPE_DELETED ? dealDelete(res, key, twin, m, deal) : dealCompare(res, key, twin, m, deal, now, stamp)) : dealAdd(res, twins, key, m, deal, now, stamp);
    if (err) {
      res.error = { code: 400, reason: err };
      return res;
    }
  }
  for (const [k, t] of res.changed) twins.set(k, t);
  return res;
}

function dealDelete(res: DealResult, key: string, twin: TwinRecord, m: MsgTwin | null, deal: DealType): string | null {
  if (twin.metadata.type === TWIN_TYPE_DELETED) return null;
  // An app may delete only optional twins; the cloud may delete any.
  if (deal === DealType.Rest && !twin.optional) return null;
  const last = toMsgTwin(twin, false);
  const next = cloneTwin(twin);
  for (const side of ["expected", "actual"] as const) {
    const vkey = side === "expected" ? "expected_version" : "actual_version";
    const local = next[vkey];
    if (!local) continue;
    const refused = dealVersion(local, m?.[vkey], deal, true);
    if (refused) {
      res.sync[key] = toMsgTwin(twin, true);
      return null;
    }
  }
  delete next.expected;
  delete next.actual;
  next.metadata = { ...next.metadata, type: TWIN_TYPE_DELETED };
  res.changed.set(key, next);
  res.document[key] = { last, current: null };
  if (deal === DealType.Rest) {
    res.sync[key] = toMsgTwin(next, true);
    res.result[key] = null;
  }
  if (twin.expected) res.expectedChanged.push(key);
  return null;
}

function dealCompare(res: DealResult, key: string, twin: TwinRecord, m: MsgTwin, deal: DealType, now: number, stamp?: number): string | null {
  const wasDeleted = twin.metadata.type === TWIN_TYPE_DELETED;
  const valueType = wasDeleted ? (m.metadata?.type || "string") : twin.metadata.type;
  const next = cloneTwin(twin);
  const sync: MsgTwin = {};
  let changed = false;
  let syncAllowed = true;

  for (const side of ["expected", "actual"] as const) {
    const incoming = m[side];
    if (!incoming || incoming.value == null || !syncAllowed) continue;
    const bad = checkTwinValue(valueType, incoming.value);
    if (bad) {
      if (deal === DealType.Rest) return `${key}: ${bad}`;
      continue;
    }
    const vkey = side === "expected" ? "expected_version" : "actual_version";
    const version: TwinVersion = next[vkey] ? { ...next[vkey] } : { cloud: 0, edge: 0 };
    const refused = dealVersion(version, m[vkey], deal);
    if (refused) {
      if (deal === DealType.Rest) return refused;
      // Refused sync: send the current value (with versions) back up.
      if (twin[side]) sync[side] = { ...twin[side] };
      sync[vkey] = twin[vkey] ? { ...twin[vkey] } : { cloud: 0, edge: 0 };
      syncAllowed = false;
      continue;
    }
    const value = { value: incoming.value, metadata: { timestamp: stamp ?? now } };
    next[side] = value;
    next[vkey] = version;
    if (deal === DealType.Rest) {
      sync[side] = { value: value.value, metadata: { ...value.metadata } };
      sync[vkey] = { ...version };
    }
    if (side === "expected") res.expectedChanged.push(key);
    changed = true;
  }

  if (syncAllowed) {
    if (m.optional != null && m.optional !== twin.optional && twin.optional) {
      next.optional = m.optional;
      changed = true;
    }
    if (wasDeleted) {
      const t = m.metadata?.type || "string";
      if (!validType(t) && deal === DealType.Rest) return `${key}: the value type is not allowed`;
      next.metadata = { ...(m.metadata ?? {}), type: validType(t) ? t : "string" };
      changed = true;
    } else if (m.metadata) {
      const { type: _ignored, ...rest } = m.metadata;
      const { type: cur, ...curRest } = next.metadata;
      if (JSON.stringify(rest) !== JSON.stringify(curRest)) {
        next.metadata = { ...rest, type: cur };
        changed = true;
      }
    }
  }

  if (changed) {
    res.changed.set(key, next);
    res.document[key] = { last: wasDeleted ? null : toMsgTwin(twin, false), current: toMsgTwin(next, false) };
    if (deal === DealType.Rest) {
      sync.optional = next.optional;
      sync.metadata = { ...next.metadata };
      res.sync[key] = sync;
      const { expected_version: _e, actual_version: _a, ...noVersions } = sync;
      res.result[key] = noVersions;
    }
  }
  if (!syncAllowed) res.sync[key] = { ...sync, optional: twin.optional, metadata: { ...twin.metadata } };
  return null;
}

function dealAdd(res: DealResult, twins: Map<string, TwinRecord>, key: string, m: MsgTwin | null, deal: DealType, now: number, stamp?: number): string | null {
  // Deleting a twin that does not exist changes nothing.
  if (m === null) return null;
  const type = m.metadata?.type || "string";
  if (!validType(type)) return deal === DealType.Rest ? `${key}: the value type is not allowed` : null;
  const twin: TwinRecord = { optional: m.optional ?? true, metadata: { ...(m.metadata ?? {}), type } };
  if (deal === DealType.Sync && type === TWIN_TYPE_DELETED) {
    if (m.expected_version) twin.expected_version = { ...m.expected_version };
    if (m.actual_version) twin.actual_version = { ...m.actual_version };
  }
  for (const side of ["expected", "actual"] as const) {
    const incoming = m[side];
    if (!incoming || incoming.value == null || type === TWIN_TYPE_DELETED) continue;
    const vkey = side === "expected" ? "expected_version" : "actual_version";
    const version: TwinVersion = { cloud: 0, edge: 0 };
    const refused = dealVersion(version, m[vkey], deal);
    if (refused) return deal === DealType.Rest ? refused : null;
    const bad = checkTwinValue(type, incoming.value);
    if (bad) return deal === DealType.Rest ? `${key}: ${bad}` : null;
    twin[side] = { value: incoming.value, metadata: { timestamp: stamp ?? now } };
    twin[vkey] = version;
    if (side === "expected") res.expectedChanged.push(key);
  }
  twins.set(key, twin);
  res.changed.set(key, twin);
  res.document[key] = { last: null, current: type === TWIN_TYPE_DELETED ? null : toMsgTwin(twin, false) };
  if (deal === DealType.Rest) {
    res.sync[key] = toMsgTwin(twin, true);
    res.result[key] = toMsgTwin(twin, false);
  }
  return null;
}

/**
 * The cloud's desired value for one property (from the Device spec): sets `expected` and bumps the
 * `cloud` version (the cloud wins for desired). Creates the twin (required, typed) when missing.
 * Returns the new record, or an error when the value does not fit the type.
 */
export function applyCloudDesired(prev: TwinRecord | undefined, value: string, type: string, now: number): { twin: TwinRecord; error?: string } {
  const twin: TwinRecord = prev ? cloneTwin(prev) : { optional: false, metadata: { type } };
  if (twin.metadata.type === TWIN_TYPE_DELETED || !prev) twin.metadata = { ...twin.metadata, type };
  const bad = value === "" ? null : checkTwinValue(twin.metadata.type, value);
  if (bad) return { twin: prev ?? twin, error: bad };
  const v = twin.expected_version ? { ...twin.expected_version } : { cloud: 0, edge: 0 };
  v.cloud += 1;
  twin.expected_version = v;
  if (value === "") delete twin.expected;
  else twin.expected = { value, metadata: { timestamp: now } };
  return { twin };
}

/** KubeEdge's delta: every non-deleted twin with a desired value, and those whose desired ≠ reported. */
export function buildDelta(twins: Map<string, TwinRecord>): { twin: Record<string, MsgTwin>; delta: Record<string, string> } | null {
  const twin: Record<string, MsgTwin> = {};
  const delta: Record<string, string> = {};
  for (const [k, t] of twins) {
    if (t.metadata.type === TWIN_TYPE_DELETED) continue;
    const expected = t.expected?.value ?? "";
    if (expected === "") continue;
    if (expected !== (t.actual?.value ?? "")) delta[k] = expected;
    twin[k] = toMsgTwin(t, false);
  }
  return Object.keys(delta).length ? { twin, delta } : null;
}

/** Merges a later edge_updated twin into a pending one (the later fields win). */
export function mergeSync(prev: MsgTwin | undefined, next: MsgTwin): MsgTwin {
  if (!prev || next.metadata?.type === TWIN_TYPE_DELETED) return next;
  return { ...prev, ...next };
}
