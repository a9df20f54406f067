/** Device values ⇄ twin strings, by the DeviceModel's property type, with its minimum/maximum. */
import type { PropertyType, RawValue } from "../../../mappers/plugin.ts";

/** DeviceModel types (INT, FLOAT, …) as the plugin interface names them; unknown/absent → string. */
export function propertyType(modelType: string | undefined): PropertyType {
  switch ((modelType ?? "").toUpperCase()) {
    case "INT":
      return "int";
    case "FLOAT":
      return "float";
    case "DOUBLE":
      return "double";
    case "BOOLEAN":
      return "boolean";
    case "BYTES":
    case "STREAM":
      return "bytes";
    default:
      return "string";
  }
}

export class ConversionError extends Error {}

function toNumber(raw: RawValue): number {
  if (typeof raw === "number") return raw;
  if (typeof raw === "bigint") return Number(raw);
  if (typeof raw === "boolean") return raw ? 1 : 0;
  if (raw instanceof Uint8Array) throw new ConversionError("bytes cannot be read as a number");
  const n = Number(raw.trim());
  if (raw.trim() === "" || !Number.isFinite(n)) throw new ConversionError(`"${raw}" is not a number`);
  return n;
}

function clamp(n: number, min?: string, max?: string): number {
  const lo = min !== undefined && min !== "" ? Number(min) : NaN;
  const hi = max !== undefined && max !== "" ? Number(max) : NaN;
  if (!Number.isNaN(lo) && n < lo) return lo;
  if (!Number.isNaN(hi) && n > hi) return hi;
  return n;
}

/** A value read from a device → the twin's string form. Numbers are clamped to [minimum, maximum]. */
export function toTwinValue(raw: RawValue, type: PropertyType, limits: { minimum?: string; maximum?: string } = {}): string {
  switch (type) {
    case "int":
      return String(Math.round(clamp(toNumber(raw), limits.minimum, limits.maximum)));
    case "float":
    case "double": {
      const n = clamp(toNumber(raw), limits.minimum, limits.maximum);
      // float32 sources carry noise past ~7 digits: keep what the type can hold
      return String(type === "float" ? Number(n.toPrecision(7)) : n);
    }
    case "boolean":
      if (typeof raw === "boolean") return String(raw);
      if (typeof raw === "string") {
        const s = raw.trim().toLowerCase();
        if (["true", "1", "on"].includes(s)) return "true";
        if (["false", "0", "off"].includes(s)) return "false";
        throw new ConversionError(`"${raw}" is not a boolean`);
      }
      return String(toNumber(raw) !== 0);
    case "bytes":
      return raw instanceof Uint8Array ? Buffer.from(raw).toString("base64") : Buffer.from(String(raw)).toString("base64");
    case "string":
      return raw instanceof Uint8Array ? Buffer.from(raw).toString("utf8") : String(raw);
  }
}

/** A desired value (twin string) → what the driver writes. */
export function fromTwinValue(value: string, type: PropertyType): RawValue {
  switch (type) {
    case "int":
    case "float":
    case "double": {
      const n = Number(value);
      if (value.trim() === "" || !Number.isFinite(n)) throw new ConversionError(`desired value "${value}" is not a number`);
      return type === "int" ? Math.round(n) : n;
    }
    case "boolean": {
      const s = value.trim().toLowerCase();
      if (s === "true" || s === "1") return true;
      if (s === "false" || s === "0") return false;
      throw new ConversionError(`desired value "${value}" is not a boolean`);
    }
    case "bytes":
      return new Uint8Array(Buffer.from(value, "base64"));
    case "string":
      return value;
  }
}
