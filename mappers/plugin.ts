/**
 * The mapper plugin interface. A protocol is one module whose default export is a MapperPlugin:
 * it names its protocol, validates its configData with valibot, and opens a driver per device.
 * Everything protocol-independent (scheduling, type conversion, desired-value writes, state,
 * reconnects, push methods) is the host's job (lib/edge/mapperhost/). See docs/writing-a-mapper.md.
 */
import type { GenericSchema } from "valibot";
import type { Logger } from "../lib/log.ts";

/** What a driver reads or writes: the host converts it to the DeviceModel's type. */
export type RawValue = number | bigint | string | boolean | Uint8Array;

export type PropertyType = "int" | "float" | "double" | "string" | "boolean" | "bytes";

export interface PropertySpec<V> {
  name: string;
  /** The property's visitor configData, already validated by the plugin's visitorSchema. */
  visitor: V;
  type: PropertyType;
  accessMode: "ReadWrite" | "ReadOnly";
}

export interface DeviceSpec<P, V> {
  /** `<namespace>/<name>`, as KubeEdge names devices since v1.17. */
  id: string;
  /** The device's protocol configData, already validated by the plugin's protocolSchema. */
  protocol: P;
  properties: PropertySpec<V>[];
}

export interface DriverContext {
  log: Logger;
  /** Aborted when the host closes the driver. */
  signal: AbortSignal;
}

export type DeviceHealth = "ok" | "unhealthy" | "disconnected";

export interface DeviceDriver<V> {
  read(property: PropertySpec<V>): Promise<RawValue>;
  /** Optional: read several properties in as few device requests as possible. */
  readMany?(properties: PropertySpec<V>[]): Promise<Map<string, RawValue | Error>>;
  /** Needed for ReadWrite properties. */
  write?(property: PropertySpec<V>, value: RawValue): Promise<void>;
  /**
   * Optional push instead of polling; returns an unsubscribe function, or null when this property
   * is not pushed (the host polls it instead).
   */
  subscribe?(property: PropertySpec<V>, onValue: (value: RawValue) => void): Promise<(() => Promise<void>) | null>;
  health?(): Promise<DeviceHealth>;
  close(): Promise<void>;
}

export interface MapperPlugin<P = unknown, V = unknown> {
  /** Matches a Device's `spec.protocol.protocolName`. */
  protocol: string;
  protocolSchema: GenericSchema<unknown, P>;
  visitorSchema: GenericSchema<unknown, V>;
  open(device: DeviceSpec<P, V>, ctx: DriverContext): Promise<DeviceDriver<V>>;
}

/** Identity helper that gives a plugin its types from its schemas. */
export function defineMapper<P, V>(plugin: MapperPlugin<P, V>): MapperPlugin<P, V> {
  return plugin;
}

/**
 * What the host hands a plugin module whose default export is a factory function. An external
 * plugin should use this instead of importing valibot itself: a compiled edgecore cannot resolve
 * packages for modules it loads from disk, and the plugin then needs no node_modules at all.
 */
export interface MapperSdk {
  v: typeof import("valibot");
  defineMapper: typeof defineMapper;
}

/** An external plugin module's default export: a plugin, or a factory that builds one from the SDK. */
export type MapperModule = MapperPlugin | ((sdk: MapperSdk) => MapperPlugin | Promise<MapperPlugin>);
