/** Shapes shared by the embedded API's modules. Objects are plain JSON, as on the wire. */
import type { ObjectMeta } from "../meta.ts";

export type KObject = Record<string, unknown> & {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
};

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

/** One committed change; `rv` is the global resourceVersion it got. */
export interface StoreEvent {
  rv: number;
  type: WatchEventType;
  group: string;
  resource: string;
  namespace: string;
  name: string;
  object: KObject;
  /** The object before the change (MODIFIED/DELETED), when known (not after a restart). */
  prev?: KObject;
}

export function meta(obj: KObject): ObjectMeta {
  if (!obj.metadata || typeof obj.metadata !== "object") obj.metadata = {};
  return obj.metadata;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function clone<T>(v: T): T {
  return structuredClone(v);
}
