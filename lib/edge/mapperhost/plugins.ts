/**
 * Where mapper plugins come from: the built-in protocols, imported only when a device needs them
 * (node-opcua and noble are heavy), and external modules given with --mapper PATH.
 */
import * as v from "valibot";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { defineMapper, type MapperPlugin, type MapperSdk } from "../../../mappers/plugin.ts";

const builtIn: Record<string, () => Promise<{ default: MapperPlugin }>> = {
  modbus: () => import("../../../mappers/modbus/index.ts") as Promise<{ default: MapperPlugin }>,
  opcua: () => import("../../../mappers/opcua/index.ts") as Promise<{ default: MapperPlugin }>,
  ble: () => import("../../../mappers/ble/index.ts") as Promise<{ default: MapperPlugin }>,
  mqtt: () => import("../../../mappers/mqtt/index.ts") as Promise<{ default: MapperPlugin }>,
};

export const builtInProtocols = (): string[] => Object.keys(builtIn);

/** The shape every plugin module's default export must have. */
const PluginShape = v.looseObject({
  protocol: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be a protocol name")),
  protocolSchema: v.looseObject({ kind: v.literal("schema") }, "must be a valibot schema"),
  visitorSchema: v.looseObject({ kind: v.literal("schema") }, "must be a valibot schema"),
  open: v.function("must be a function"),
});

export class PluginRegistry {
  private readonly external = new Map<string, MapperPlugin>();
  private readonly loaded = new Map<string, Promise<MapperPlugin>>();

  /**
   * Loads a plugin module (.ts or .js) and registers it under its protocol; external ones win over
   * built-ins. A default export that is a function is called with the SDK (valibot, defineMapper).
   */
  async loadExternal(path: string): Promise<MapperPlugin> {
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(resolve(path)).href)) as { default?: unknown };
    } catch (e) {
      throw new Error(`--mapper ${path}: cannot load: ${(e as Error).message}`);
    }
    const exported = typeof mod.default === "function" ? await (mod.default as (sdk: MapperSdk) => unknown)({ v, defineMapper }) : mod.default;
    const r = v.safeParse(PluginShape, exported);
    if (!r.success) {
      const issue = r.issues[0]!;
      throw new Error(`--mapper ${path}: the default export is not a mapper plugin: ${v.getDotPath(issue) ?? "default"}: ${issue.message}`);
    }
    const plugin = exported as MapperPlugin;
    this.external.set(plugin.protocol, plugin);
    return plugin;
  }

  has(protocol: string): boolean {
    return this.external.has(protocol) || protocol in builtIn;
  }

  protocols(): string[] {
    return [...new Set([...this.external.keys(), ...Object.keys(builtIn)])];
  }

  /** The plugin for a protocol; a built-in one is imported on first use. */
  get(protocol: string): Promise<MapperPlugin> | undefined {
    const ext = this.external.get(protocol);
    if (ext) return Promise.resolve(ext);
    const load = builtIn[protocol];
    if (!load) return undefined;
    let p = this.loaded.get(protocol);
    if (!p) this.loaded.set(protocol, (p = load().then((m) => m.default)));
    return p;
  }
}
