/**
 * Configuration: a YAML file plus command-line flags (flags win), validated with valibot.
 * Each daemon declares its options once (flag, type, default, help); the same keys are the YAML keys.
 */
import * as v from "valibot";
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";

export type OptionType = "string" | "int" | "bool" | "list" | "listen";

export interface OptionSpec {
  /** Flag name without dashes, kebab-case; the YAML key is its camelCase form. */
  flag: string;
  type: OptionType;
  default?: string | number | boolean | string[];
  help: string;
}

export class ConfigError extends Error {}

export const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

const listenRe = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/;

export interface Listen {
  host: string;
  port: number;
}

export function parseListen(s: string): Listen {
  const m = listenRe.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`"${s}" is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, "") || "0.0.0.0", port };
}

const ListenSchema = v.pipe(v.string(), v.regex(listenRe, "must be HOST:PORT"));

function schemaFor(o: OptionSpec) {
  switch (o.type) {
    case "string": return v.string();
    case "int": return v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+$/), v.transform(Number))], "must be an integer"), v.number(), v.integer("must be an integer"), v.minValue(0, "must not be negative"));
    case "bool": return v.union([v.boolean(), v.pipe(v.picklist(["true", "false"]), v.transform((s) => s === "true"))], "must be true or false");
    case "list": return v.array(v.string());
    case "listen": return ListenSchema;
  }
}

/** A value for an error message; YAML aliases can make cyclic values JSON.stringify throws on. */
function shown(x: unknown): string {
  try {
    return JSON.stringify(x) ?? String(x);
  } catch {
    return Array.isArray(x) ? "a cyclic list" : "a cyclic value";
  }
}

export function helpText(usage: string, specs: OptionSpec[]): string {
  const argName: Record<OptionType, string> = { string: " VALUE", int: " N", bool: "", list: " VALUE", listen: " HOST:PORT" };
  const rows: [string, string][] = specs.map((o) => {
    const hasDefault = o.default !== undefined && !(Array.isArray(o.default) && o.default.length === 0);
    const def = hasDefault ? ` (default ${Array.isArray(o.default) ? o.default.join(",") : String(o.default)})` : "";
    return [`  --${o.flag}${argName[o.type]}`, `${o.help}${o.type === "list" ? " (repeatable)" : ""}${def}`];
  });
  rows.push(["  --help", "print this help"]);
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  return `${usage}\n\nFlags:\n${rows.map(([a, b]) => a.padEnd(w) + b).join("\n")}\n`;
}

/**
 * Parses argv (without the program name and sub-command) into a typed config object:
 * defaults < YAML file (`--config`) < flags. Throws ConfigError naming the bad field.
 */
export function loadConfig<T>(specs: OptionSpec[], argv: string[]): T & { help: boolean } {
  const byFlag = new Map(specs.map((o) => [o.flag, o]));
  const fromFlags: Record<string, unknown> = {};
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) throw new ConfigError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = byFlag.get(name);
    if (!spec) throw new ConfigError(`unknown flag --${name} (see --help)`);
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (spec.type === "bool" && (argv[i + 1] === undefined || argv[i + 1]!.startsWith("--"))) value = "true";
    else {
      if (argv[i + 1] === undefined) throw new ConfigError(`flag --${name} needs a value`);
      value = argv[++i]!;
    }
    const key = camel(name);
    if (spec.type === "list") (fromFlags[key] = (fromFlags[key] as string[] | undefined) ?? []) && (fromFlags[key] as string[]).push(value);
    else fromFlags[key] = value;
  }

  let fromFile: Record<string, unknown> = {};
  const file = (fromFlags.config as string | undefined) ?? undefined;
  if (file) {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(file, "utf8"));
    } catch (e) {
      throw new ConfigError(`config file ${file}: ${(e as Error).message}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== "object" || Array.isArray(doc)) throw new ConfigError(`config file ${file}: must be a YAML mapping`);
      const known = new Set(specs.map((o) => camel(o.flag)));
      for (const k of Object.keys(doc)) if (!known.has(k)) throw new ConfigError(`config file ${file}: unknown field "${k}"`);
      fromFile = doc as Record<string, unknown>;
    }
  }

  const out: Record<string, unknown> = { help };
  for (const o of specs) {
    const key = camel(o.flag);
    const [raw, where] = key in fromFlags ? [fromFlags[key], `--${o.flag}`] : key in fromFile ? [fromFile[key], `${file}: ${key}`] : [o.default, `default of --${o.flag}`];
    if (raw === undefined) continue;
    const r = v.safeParse(schemaFor(o), raw);
    if (!r.success) throw new ConfigError(`${where}: ${r.issues[0]?.message ?? "invalid"} (got ${shown(raw)})`);
    out[key] = r.output;
  }
  return out as T & { help: boolean };
}

/**
 * Validates an already-parsed config document (what a `--config` YAML file holds) against `specs`:
 * a mapping (or empty), known keys only, each value of its option's type. Returns the typed values
 * (no defaults applied); throws ConfigError naming the field. loadConfig applies the same rules to
 * the file's values that are not overridden by flags.
 */
export function validateConfigDoc(specs: OptionSpec[], doc: unknown, source = "config"): Record<string, unknown> {
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) throw new ConfigError(`${source}: must be a YAML mapping`);
  const byKey = new Map(specs.map((o) => [camel(o.flag), o]));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(doc)) {
    const spec = byKey.get(k);
    if (!spec) throw new ConfigError(`${source}: unknown field "${k}"`);
    const raw = (doc as Record<string, unknown>)[k];
    const r = v.safeParse(schemaFor(spec), raw);
    if (!r.success) throw new ConfigError(`${source}: ${k}: ${r.issues[0]?.message ?? "invalid"} (got ${shown(raw)})`);
    Object.defineProperty(out, k, { value: r.output, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
