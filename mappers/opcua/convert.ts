/**
 * Value conversion between OPC UA variants and the mapper's RawValue, by OPC UA built-in type id
 * (Part 6 §5.1.2: the ids are fixed by the standard, so this file needs no node-opcua import).
 */
import type { RawValue } from "../plugin.ts";

export const BuiltinType = {
  Null: 0,
  Boolean: 1,
  SByte: 2,
  Byte: 3,
  Int16: 4,
  UInt16: 5,
  Int32: 6,
  UInt32: 7,
  Int64: 8,
  UInt64: 9,
  Float: 10,
  Double: 11,
  String: 12,
  DateTime: 13,
  Guid: 14,
  ByteString: 15,
  XmlElement: 16,
  NodeId: 17,
  ExpandedNodeId: 18,
  StatusCode: 19,
  QualifiedName: 20,
  LocalizedText: 21,
  ExtensionObject: 22,
  DataValue: 23,
  Variant: 24,
  DiagnosticInfo: 25,
} as const;

export const builtinName = (id: number): string => Object.entries(BuiltinType).find(([, v]) => v === id)?.[0] ?? `type ${id}`;

const intRange: Record<number, [number, number]> = {
  [BuiltinType.SByte]: [-128, 127],
  [BuiltinType.Byte]: [0, 255],
  [BuiltinType.Int16]: [-32768, 32767],
  [BuiltinType.UInt16]: [0, 65535],
  [BuiltinType.Int32]: [-2147483648, 2147483647],
  [BuiltinType.UInt32]: [0, 4294967295],
};

/** node-opcua carries Int64/UInt64 as [high, low] 32-bit words. */
export function int64ToRaw(words: [number, number], signed: boolean): number | bigint {
  const [hi, lo] = words;
  const big = (BigInt(signed ? hi | 0 : hi >>> 0) << 32n) | BigInt(lo >>> 0);
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

export function rawToInt64(value: bigint, signed: boolean): [number, number] {
  const min = signed ? -(1n << 63n) : 0n;
  const max = signed ? (1n << 63n) - 1n : (1n << 64n) - 1n;
  if (value < min || value > max) throw new RangeError(`${value} is out of range for ${signed ? "Int64" : "UInt64"}`);
  const u = BigInt.asUintN(64, value);
  return [Number(u >> 32n), Number(u & 0xffffffffn)];
}

/** A variant's value (as node-opcua decodes it) → RawValue. Arrays and structures become JSON text. */
export function fromVariant(dataType: number, value: unknown): RawValue {
  if (value === null || value === undefined) throw new Error(`the node has no value (${builtinName(dataType)})`);
  if (Array.isArray(value) && dataType !== BuiltinType.Int64 && dataType !== BuiltinType.UInt64) return JSON.stringify(value, jsonSafe);
  if (ArrayBuffer.isView(value) && !(value instanceof Uint8Array && dataType === BuiltinType.ByteString)) return JSON.stringify(Array.from(value as unknown as ArrayLike<number>));
  switch (dataType) {
    case BuiltinType.Boolean:
      return Boolean(value);
    case BuiltinType.SByte:
    case BuiltinType.Byte:
    case BuiltinType.Int16:
    case BuiltinType.UInt16:
    case BuiltinType.Int32:
    case BuiltinType.UInt32:
    case BuiltinType.Float:
    case BuiltinType.Double:
      return Number(value);
    case BuiltinType.Int64:
    case BuiltinType.UInt64:
      if (Array.isArray(value) && value.length === 2 && value.every((n) => typeof n === "number")) return int64ToRaw(value as [number, number], dataType === BuiltinType.Int64);
      if (typeof value === "bigint" || typeof value === "number") return value;
      return JSON.stringify(value, jsonSafe);
    case BuiltinType.String:
    case BuiltinType.XmlElement:
      return String(value);
    case BuiltinType.ByteString:
      return new Uint8Array(value as Uint8Array);
    case BuiltinType.DateTime:
      return (value as Date).toISOString();
    case BuiltinType.LocalizedText:
      return String((value as { text?: string | null }).text ?? "");
    case BuiltinType.QualifiedName:
      return String((value as { name?: string | null }).name ?? "");
    case BuiltinType.StatusCode:
      return String((value as { name?: string }).name ?? value);
    default:
      if (typeof value === "number" || typeof value === "string" || typeof value === "boolean" || typeof value === "bigint") return value;
      return typeof (value as { toString?: unknown }).toString === "function" && (value as object).toString !== Object.prototype.toString
        ? String(value)
        : JSON.stringify(value, jsonSafe);
  }
}

function jsonSafe(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? v.toString() : v;
}

function toBoolean(value: RawValue): boolean {
  if (typeof value === "boolean") return value;
  if (typeof value === "number" || typeof value === "bigint") return value !== 0 && value !== 0n;
  if (typeof value === "string") {
    const s = value.trim().toLowerCase();
    if (s === "true" || s === "1" || s === "on") return true;
    if (s === "false" || s === "0" || s === "off") return false;
  }
  throw new TypeError(`"${describe(value)}" is not a boolean`);
}

function toNumber(value: RawValue): number {
  if (typeof value === "number") return value;
  if (typeof value === "bigint") return Number(value);
  if (typeof value === "boolean") return value ? 1 : 0;
  if (typeof value === "string" && value.trim() !== "" && Number.isFinite(Number(value))) return Number(value);
  throw new TypeError(`"${describe(value)}" is not a number`);
}

function toBigInt(value: RawValue): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  if (typeof value === "string" && /^\s*-?\d+\s*$/.test(value)) return BigInt(value.trim());
  if (typeof value === "boolean") return value ? 1n : 0n;
  throw new TypeError(`"${describe(value)}" is not an integer`);
}

const describe = (value: RawValue) => (value instanceof Uint8Array ? `bytes[${value.length}]` : String(value));

/** RawValue → the JS value node-opcua expects in a Variant of built-in type `dataType`. */
export function toVariantValue(dataType: number, value: RawValue): unknown {
  switch (dataType) {
    case BuiltinType.Boolean:
      return toBoolean(value);
    case BuiltinType.SByte:
    case BuiltinType.Byte:
    case BuiltinType.Int16:
    case BuiltinType.UInt16:
    case BuiltinType.Int32:
    case BuiltinType.UInt32: {
      const n = toNumber(value);
      const [min, max] = intRange[dataType]!;
      if (!Number.isInteger(n)) throw new TypeError(`${n} is not an integer (${builtinName(dataType)})`);
      if (n < min || n > max) throw new RangeError(`${n} is out of range for ${builtinName(dataType)} [${min}, ${max}]`);
      return n;
    }
    case BuiltinType.Float:
    case BuiltinType.Double:
      return toNumber(value);
    case BuiltinType.Int64:
    case BuiltinType.UInt64:
      return rawToInt64(toBigInt(value), dataType === BuiltinType.Int64);
    case BuiltinType.String:
    case BuiltinType.XmlElement:
      return value instanceof Uint8Array ? new TextDecoder().decode(value) : String(value);
    case BuiltinType.ByteString:
      return Buffer.from(value instanceof Uint8Array ? value : new TextEncoder().encode(String(value)));
    case BuiltinType.DateTime: {
      const d = typeof value === "number" ? new Date(value) : new Date(String(value));
      if (Number.isNaN(d.getTime())) throw new TypeError(`"${describe(value)}" is not a date`);
      return d;
    }
    case BuiltinType.LocalizedText:
      return { text: String(value) };
    case BuiltinType.QualifiedName:
      return { name: String(value) };
    default:
      throw new TypeError(`writing ${builtinName(dataType)} values is not supported`);
  }
}
