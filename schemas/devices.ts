/**
 * devices.kubeedge.io/v1beta1 (KubeEdge v1.23): Device, DeviceModel, DeviceStatus, and the JSON
 * payloads of KubeEdge's device-twin MQTT API ($hw/events/...). Shared by cloud and edge.
 *
 * Objects are checked field by field; unknown top-level and metadata keys are kept (forward
 * compatibility), protocol and visitor `configData` are kept as free-form records that each mapper
 * validates for its own protocol. `validate()` turns the first problem into a message that names
 * the field, e.g. `spec.properties.0.reportCycle: expected number but received "1s"`.
 */
import * as v from "valibot";

export const DEVICES_GROUP = "devices.kubeedge.io";
export const DEVICES_API_VERSION = "devices.kubeedge.io/v1beta1";

// ---- helpers ------------------------------------------------------------------------------

export type Validated<T> = { ok: true; value: T } | { ok: false; error: string };

/** Validates `input`; on failure the error names the field (dot path) and what is wrong with it. */
export function validate<S extends v.GenericSchema>(schema: S, input: unknown): Validated<v.InferOutput<S>> {
  const r = v.safeParse(schema, input);
  if (r.success) return { ok: true, value: r.output };
  return { ok: false, error: describeIssues(r.issues) };
}

export function describeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  const issue = issues[0];
  if (!issue) return "invalid";
  const path = v.getDotPath(issue);
  return `${path ? `${path}: ` : ""}${issue.message}`;
}

const int64 = v.pipe(v.number(), v.integer());
const stringMap = v.record(v.string(), v.string());
/** Free-form configuration (CustomizedValue): any JSON object; each protocol's mapper checks it. */
export const ConfigDataSchema = v.record(v.string(), v.unknown());

export const ObjectMetaSchema = v.looseObject({
  name: v.pipe(v.string(), v.minLength(1), v.maxLength(253)),
  namespace: v.optional(v.string()),
  uid: v.optional(v.string()),
  resourceVersion: v.optional(v.string()),
  generation: v.optional(v.number()),
  labels: v.optional(stringMap),
  annotations: v.optional(stringMap),
  creationTimestamp: v.nullish(v.string()),
  deletionTimestamp: v.nullish(v.string()),
  ownerReferences: v.optional(v.array(v.looseObject({ apiVersion: v.string(), kind: v.string(), name: v.string(), uid: v.string() }))),
});

// ---- Device -------------------------------------------------------------------------------

export const TwinPropertySchema = v.object({
  value: v.optional(v.string(), ""),
  metadata: v.optional(stringMap),
});

export const ProtocolConfigSchema = v.object({
  protocolName: v.optional(v.string()),
  configData: v.optional(ConfigDataSchema),
});

export const VisitorConfigSchema = v.object({
  protocolName: v.optional(v.string()),
  configData: v.optional(ConfigDataSchema),
});

export const PushMethodSchema = v.object({
  http: v.optional(v.object({ hostName: v.optional(v.string()), port: v.optional(int64), requestPath: v.optional(v.string()), timeout: v.optional(int64) })),
  mqtt: v.optional(v.object({ address: v.optional(v.string()), topic: v.optional(v.string()), qos: v.optional(v.pipe(int64, v.minValue(0), v.maxValue(2))), retained: v.optional(v.boolean()) })),
  otel: v.optional(v.object({ endpointURL: v.optional(v.string()) })),
  dbMethod: v.optional(
    v.object({
      influxdb2: v.optional(
        v.object({
          influxdb2ClientConfig: v.optional(v.object({ url: v.optional(v.string()), org: v.optional(v.string()), bucket: v.optional(v.string()) })),
          influxdb2DataConfig: v.optional(v.object({ measurement: v.optional(v.string()), tag: v.optional(stringMap), fieldKey: v.optional(v.string()) })),
        }),
      ),
      redis: v.optional(
        v.object({
          redisClientConfig: v.optional(v.object({ addr: v.optional(v.string()), db: v.optional(int64), poolsize: v.optional(int64), minIdleConns: v.optional(int64) })),
        }),
      ),
      TDEngine: v.optional(v.object({ TDEngineClientConfig: v.optional(v.object({ addr: v.optional(v.string()), dbName: v.optional(v.string()) })) })),
      mysql: v.optional(v.object({ mysqlClientConfig: v.optional(v.object({ addr: v.optional(v.string()), database: v.optional(v.string()), userName: v.optional(v.string()) })) })),
    }),
  ),
  /** AnomalyDetectionConfig (v1.23): free-form. */
  anomalyDetection: v.optional(ConfigDataSchema),
});

export const DevicePropertySchema = v.object({
  name: v.pipe(v.string(), v.minLength(1)),
  desired: v.optional(TwinPropertySchema),
  visitors: v.optional(VisitorConfigSchema),
  /** Milliseconds. */
  reportCycle: v.optional(int64),
  /** Milliseconds. */
  collectCycle: v.optional(int64),
  reportToCloud: v.optional(v.boolean()),
  pushMethod: v.optional(PushMethodSchema),
});

export const DeviceMethodSchema = v.object({
  name: v.pipe(v.string(), v.minLength(1)),
  description: v.optional(v.string()),
  propertyNames: v.optional(v.array(v.string())),
});

export const StateReportConfigSchema = v.object({
  reportToCloud: v.optional(v.boolean()),
  /** Milliseconds. */
  reportCycle: v.optional(int64),
});

const uniqueNames = <T extends { name: string }>(what: string) =>
  v.check<T[], string>((items) => new Set(items.map((i) => i.name)).size === items.length, `${what} names must be unique`);

export const DeviceSpecSchema = v.object({
  deviceModelRef: v.optional(v.object({ name: v.optional(v.string()) })),
  nodeName: v.optional(v.string()),
  properties: v.optional(v.pipe(v.array(DevicePropertySchema), uniqueNames("property"))),
  protocol: v.optional(ProtocolConfigSchema),
  methods: v.optional(v.array(DeviceMethodSchema)),
  stateReport: v.optional(StateReportConfigSchema),
});

export const TwinSchema = v.object({
  propertyName: v.optional(v.string()),
  reported: v.optional(TwinPropertySchema),
  observedDesired: v.optional(TwinPropertySchema),
});

/** Device.status: v1.23 keeps only reportToCloud/reportCycle; the older fields are accepted too. */
export const DeviceObjectStatusSchema = v.object({
  reportToCloud: v.optional(v.boolean()),
  reportCycle: v.optional(int64),
  twins: v.optional(v.array(TwinSchema)),
  state: v.optional(v.string()),
  lastOnlineTime: v.optional(v.string()),
});

export const DeviceSchema = v.looseObject({
  apiVersion: v.optional(v.string()),
  kind: v.optional(v.string()),
  metadata: ObjectMetaSchema,
  spec: v.optional(DeviceSpecSchema, {}),
  status: v.optional(DeviceObjectStatusSchema),
});

// ---- DeviceModel --------------------------------------------------------------------------

export const PropertyTypes = ["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM"] as const;
export const AccessModes = ["ReadWrite", "ReadOnly"] as const;

export const ModelPropertySchema = v.object({
  name: v.pipe(v.string(), v.minLength(1)),
  description: v.optional(v.string()),
  type: v.optional(v.picklist(PropertyTypes)),
  accessMode: v.optional(v.picklist(AccessModes)),
  minimum: v.optional(v.string()),
  maximum: v.optional(v.string()),
  unit: v.optional(v.string()),
  visitors: v.optional(VisitorConfigSchema),
});

export const DeviceModelSpecSchema = v.object({
  properties: v.optional(v.pipe(v.array(ModelPropertySchema), uniqueNames("property"))),
  protocol: v.optional(v.string()),
  protocolConfigData: v.optional(ConfigDataSchema),
});

export const DeviceModelSchema = v.looseObject({
  apiVersion: v.optional(v.string()),
  kind: v.optional(v.string()),
  metadata: ObjectMetaSchema,
  spec: v.optional(DeviceModelSpecSchema, {}),
});

// ---- DeviceStatus (v1.23 CR, same name/namespace as its Device, owned by it) ---------------

export const DeviceStatusStatusSchema = v.object({
  twins: v.optional(v.array(TwinSchema)),
  state: v.optional(v.string()),
  lastOnlineTime: v.optional(v.string()),
  extensions: v.optional(ConfigDataSchema),
});

export const DeviceStatusSchema = v.looseObject({
  apiVersion: v.optional(v.string()),
  kind: v.optional(v.string()),
  metadata: ObjectMetaSchema,
  spec: v.optional(v.record(v.string(), v.unknown())),
  status: v.optional(DeviceStatusStatusSchema),
});

export type ObjectMeta = v.InferOutput<typeof ObjectMetaSchema>;
export type TwinProperty = v.InferOutput<typeof TwinPropertySchema>;
export type ProtocolConfig = v.InferOutput<typeof ProtocolConfigSchema>;
export type VisitorConfig = v.InferOutput<typeof VisitorConfigSchema>;
export type PushMethod = v.InferOutput<typeof PushMethodSchema>;
export type DeviceProperty = v.InferOutput<typeof DevicePropertySchema>;
export type DeviceMethod = v.InferOutput<typeof DeviceMethodSchema>;
export type DeviceSpec = v.InferOutput<typeof DeviceSpecSchema>;
export type Twin = v.InferOutput<typeof TwinSchema>;
export type Device = v.InferOutput<typeof DeviceSchema>;
export type PropertyType = (typeof PropertyTypes)[number];
export type AccessMode = (typeof AccessModes)[number];
export type ModelProperty = v.InferOutput<typeof ModelPropertySchema>;
export type DeviceModel = v.InferOutput<typeof DeviceModelSchema>;
export type DeviceStatusStatus = v.InferOutput<typeof DeviceStatusStatusSchema>;
export type DeviceStatus = v.InferOutput<typeof DeviceStatusSchema>;

/** Accepts the object itself or a JSON string of it (KubeEdge sometimes sends JSON in a string). */
function decodeContent(input: unknown): Validated<unknown> {
  if (typeof input !== "string") return { ok: true, value: input };
  try {
    return { ok: true, value: JSON.parse(input) };
  } catch (e) {
    return { ok: false, error: `not JSON: ${(e as Error).message}` };
  }
}

export const parseDevice = (input: unknown): Validated<Device> => {
  const d = decodeContent(input);
  return d.ok ? validate(DeviceSchema, d.value) : d;
};
export const parseDeviceModel = (input: unknown): Validated<DeviceModel> => {
  const d = decodeContent(input);
  return d.ok ? validate(DeviceModelSchema, d.value) : d;
};
export const parseDeviceStatus = (input: unknown): Validated<DeviceStatus> => {
  const d = decodeContent(input);
  return d.ok ? validate(DeviceStatusSchema, d.value) : d;
};

// ---- twin values --------------------------------------------------------------------------

/** Value types a twin may declare in `metadata.type` (KubeEdge's ValidateValue). Empty = string. */
export const TwinValueTypes = ["string", "int", "integer", "float", "boolean", "deleted"] as const;
export type TwinValueType = (typeof TwinValueTypes)[number];
export const TWIN_TYPE_DELETED = "deleted";

const INT_RE = /^[+-]?\d+$/;
const FLOAT_RE = /^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf(inity)?|nan)$/i;

/** null when `value` is acceptable for `type`, else KubeEdge's reason. */
export function checkTwinValue(type: string | undefined, value: string): string | null {
  switch (type ?? "") {
    case "":
    case "string":
    case "deleted":
      return null;
    case "int":
    case "integer": {
      if (!INT_RE.test(value)) return "the value is not int or integer";
      const n = BigInt(value);
      return n > 9223372036854775807n || n < -9223372036854775808n ? "the value is not int or integer" : null;
    }
    case "float":
      return FLOAT_RE.test(value) ? null : "the value is not float";
    case "boolean":
      return value === "true" || value === "false" ? null : "the bool value must be true or false";
    default:
      return "the value type is not allowed";
  }
}

export const TWIN_KEY_RE = /^[a-zA-Z0-9\-_.,:/@#]{1,128}$/;
export const TWIN_VALUE_RE = /^[a-zA-Z0-9\-_.,:/@#]{1,512}$/;
export const TWIN_KEY_ERROR =
  "The key of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of key should be less than 128 bytes";
export const TWIN_VALUE_ERROR =
  "The value of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of value should be less than 512 bytes";

/** A DeviceModel property type → the twin value type used for its twin. */
export function twinTypeOf(t: PropertyType | undefined): TwinValueType {
  switch (t) {
    case "INT":
      return "int";
    case "FLOAT":
    case "DOUBLE":
      return "float";
    case "BOOLEAN":
      return "boolean";
    default:
      return "string";
  }
}

// ---- MQTT payloads ($hw/events/...) -------------------------------------------------------

/** `{event_id, timestamp}`; both optional on requests, as Go's decoder leaves them zero. */
export const BaseMessageSchema = v.object({
  event_id: v.optional(v.string(), ""),
  timestamp: v.optional(v.number(), 0),
});

export const TwinVersionSchema = v.object({ cloud: v.optional(int64, 0), edge: v.optional(int64, 0) });
export const ValueMetadataSchema = v.object({ timestamp: v.optional(v.number()) });
export const TwinValueSchema = v.object({
  value: v.nullish(v.string()),
  metadata: v.nullish(ValueMetadataSchema),
});
export const TypeMetadataSchema = v.looseObject({ type: v.optional(v.string()) });

export const MsgTwinSchema = v.object({
  expected: v.nullish(TwinValueSchema),
  actual: v.nullish(TwinValueSchema),
  optional: v.nullish(v.boolean()),
  metadata: v.nullish(TypeMetadataSchema),
  expected_version: v.nullish(TwinVersionSchema),
  actual_version: v.nullish(TwinVersionSchema),
});

const twinValueOk = (tv: { value?: string | null } | null | undefined) => !tv || tv.value == null || tv.value === "" || TWIN_VALUE_RE.test(tv.value);

/** Keys valibot's records skip (and JS objects treat specially): refused by name, never dropped silently. */
const RESERVED_KEYS = ["__proto__", "constructor", "prototype"];
const noReservedKeys = v.check(
  (m: unknown) => !m || typeof m !== "object" || !RESERVED_KEYS.some((k) => Object.hasOwn(m, k)),
  `keys ${RESERVED_KEYS.join(", ")} are reserved`,
);

/** A record whose reserved keys are refused rather than skipped. */
const strictRecord = <K extends v.GenericSchema<string, string>, V extends v.GenericSchema>(key: K, value: V) => v.pipe(v.unknown(), noReservedKeys, v.record(key, value));

/** A twin map `{<key>: MsgTwin | null}` with KubeEdge's key and value character rules. */
export const TwinMapSchema = v.pipe(
  strictRecord(v.pipe(v.string(), v.regex(TWIN_KEY_RE, TWIN_KEY_ERROR)), v.nullable(MsgTwinSchema)),
  v.check((m) => Object.values(m).every((t) => !t || (twinValueOk(t.expected) && twinValueOk(t.actual))), TWIN_VALUE_ERROR),
);

/** `…/twin/update` (and legacy `…/twin/cloud_updated`): `{event_id, timestamp, twin}`. */
export const TwinUpdateSchema = v.object({ ...BaseMessageSchema.entries, twin: TwinMapSchema });
/** `…/twin/get` and `$hw/events/node/<node>/membership/get`: `{event_id, timestamp}`. */
export const TwinGetSchema = BaseMessageSchema;
export const MembershipGetSchema = BaseMessageSchema;
/** `…/state/update`: `{event_id, timestamp, state}`; state is checked (case-insensitively) by the twin. */
export const StateUpdateSchema = v.object({ ...BaseMessageSchema.entries, state: v.string() });

/** KubeEdge's twin states, plus the mapper framework's `disconnected` (a device the mapper cannot reach). */
export const DeviceStates = ["online", "offline", "ok", "unknown", "unhealthy", "disconnected"] as const;

export const MsgAttrSchema = v.object({
  value: v.optional(v.string(), ""),
  optional: v.nullish(v.boolean()),
  metadata: v.nullish(TypeMetadataSchema),
});

/** A device as it appears in membership messages. */
export const MembershipDeviceSchema = v.object({
  id: v.optional(v.string()),
  name: v.optional(v.string()),
  description: v.optional(v.string()),
  state: v.optional(v.string()),
  last_online: v.optional(v.string()),
  attributes: v.nullish(strictRecord(v.string(), v.nullable(MsgAttrSchema))),
  twin: v.nullish(TwinMapSchema),
});

/** Cloud → edge membership update, and `$hw/events/node/<node>/membership/updated`. */
export const MembershipUpdateSchema = v.object({
  event_id: v.optional(v.string(), ""),
  timestamp: v.optional(v.number(), 0),
  added_devices: v.nullish(v.array(MembershipDeviceSchema)),
  removed_devices: v.nullish(v.array(MembershipDeviceSchema)),
});

export type TwinVersion = v.InferOutput<typeof TwinVersionSchema>;
export type TwinValue = v.InferOutput<typeof TwinValueSchema>;
export type MsgTwin = v.InferOutput<typeof MsgTwinSchema>;
export type TwinUpdate = v.InferOutput<typeof TwinUpdateSchema>;
export type StateUpdate = v.InferOutput<typeof StateUpdateSchema>;
export type MsgAttr = v.InferOutput<typeof MsgAttrSchema>;
export type MembershipDevice = v.InferOutput<typeof MembershipDeviceSchema>;
export type MembershipUpdate = v.InferOutput<typeof MembershipUpdateSchema>;

// Results the edge publishes (types only: the edge builds them).
export interface BaseMessage {
  event_id: string;
  timestamp: number;
}
/** `…/twin/update/result` and `…/twin/get/result` on success (versions stripped). */
export interface TwinResult extends BaseMessage {
  twin: Record<string, MsgTwin | null>;
}
/** Error result on any `…/result` topic. */
export interface ErrorResult extends BaseMessage {
  code: 400 | 404 | 409 | 500;
  reason: string;
}
export interface TwinDelta extends BaseMessage {
  twin: Record<string, MsgTwin>;
  delta: Record<string, string>;
}
export interface TwinDocument extends BaseMessage {
  twin: Record<string, { last: MsgTwin | null; current: MsgTwin | null }>;
}
/** `…/state/update/result`; also the content of the upstream `device/<id>/state/update` message. */
export interface StateResult extends BaseMessage {
  device: { name: string; state: string; lastOnlineTime?: string };
}
export interface MembershipDeviceInfo {
  id: string;
  name: string;
  description?: string;
  state?: string;
  last_online?: string;
  attributes?: Record<string, MsgAttr>;
}
export interface MembershipGetResult extends BaseMessage {
  devices: MembershipDeviceInfo[];
}
export interface MembershipUpdated extends BaseMessage {
  added_devices: MembershipDeviceInfo[];
  removed_devices: MembershipDeviceInfo[];
}
/** Upstream `device/<id>/twin/edge_updated` content: changed twins with their versions. */
export interface EdgeUpdated extends BaseMessage {
  twin: Record<string, MsgTwin>;
}
