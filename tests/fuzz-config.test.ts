/**
 * Fuzzing what the daemons read from files and devices (issue 7): config documents (the real
 * cloudcore/edgecore option specs), Device/DeviceModel/DeviceStatus objects, Modbus register words
 * and BLE characteristic bytes. Each only ever fails with its documented error.
 * Replay: FUZZ_SEED=<seed> bun test tests/fuzz-config.test.ts
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { ConfigError, camel, loadConfig, validateConfigDoc, type OptionSpec } from "../lib/config.ts";
import { cloudOptions } from "../lib/cloud/cloudcore.ts";
import { edgeOptions } from "../lib/edge/edgecore.ts";
import { logOptions } from "../lib/daemon.ts";
import { parseDevice, parseDeviceModel, parseDeviceStatus } from "../schemas/devices.ts";
import { decodeWords, encodeWords, type NumberKind } from "../mappers/modbus/codec.ts";
import { BleDataConverterSchema } from "../mappers/ble/index.ts";
import { convertReadData } from "../mappers/ble/converter.ts";
import { assertNoPollution, cases, clone, fuzzLoop, seedFor, type Gen, type Json } from "./helpers/fuzz.ts";

// ---- config files ----------------------------------------------------------------------------

const SPECS: { name: string; specs: OptionSpec[] }[] = [
  { name: "cloudcore", specs: [...cloudOptions, ...logOptions.filter((o) => !cloudOptions.some((c) => c.flag === o.flag))] },
  { name: "edgecore", specs: [...edgeOptions, ...logOptions.filter((o) => !edgeOptions.some((c) => c.flag === o.flag))] },
];

/** A valid document: every option at a plausible value of its type. */
function validDoc(specs: OptionSpec[]): Record<string, Json> {
  const d: Record<string, Json> = {};
  for (const o of specs) {
    if (o.flag === "config") continue;
    const k = camel(o.flag);
    d[k] = o.type === "int" ? 7 : o.type === "bool" ? true : o.type === "list" ? ["a", "b"] : o.type === "listen" ? "127.0.0.1:1234" : typeof o.default === "string" ? o.default : "x";
  }
  return d;
}

/** Independent statement of what a value of each option type may be. */
function typedOk(o: OptionSpec, out: unknown): boolean {
  switch (o.type) {
    case "int":
      return typeof out === "number" && Number.isInteger(out) && out >= 0;
    case "bool":
      return typeof out === "boolean";
    case "list":
      return Array.isArray(out) && out.every((x) => typeof x === "string");
    case "listen":
      return typeof out === "string" && /:\d{1,5}$/.test(out);
    case "string":
      return typeof out === "string";
  }
}

function hostileConfig(g: Gen, base: Record<string, Json>): unknown {
  const k = g.int(10);
  if (k < 6) return g.mutate(base).doc;
  if (k < 8) {
    // wrong type (or a near miss) for one field
    const d = clone(base) as Record<string, Json>;
    const key = g.pick(Object.keys(d));
    d[key] = g.pick<Json>(["1", "-1", "1.5", "true", "yes", "on", 1.5, -3, 2 ** 53, "0x10", "", " 5", "5 ", ["x", 1], [["x"]], "host", "host:", ":80", "[::1]:80", "h:99999", "h:-1", null, {}, g.value(1)]);
    return d;
  }
  if (k === 8) return { ...base, [g.key()]: g.value(1) }; // an unknown key
  return g.value();
}

describe("fuzz: config files", () => {
  const dir = mkdtempSync(join(tmpdir(), "outpost-fuzz-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("≥ 100,000 parsed documents: typed values or a ConfigError naming the field", () => {
    const seed = seedFor("config-docs", 0xc0f);
    const n = cases(100_000);
    let accepted = 0;
    const bases = SPECS.map(({ specs }) => ({ specs, base: validDoc(specs) }));
    fuzzLoop("config docs", seed, n, (g, i) => {
      const { specs, base } = bases[i % bases.length]!;
      let doc = hostileConfig(g, base);
      if (i % 100 === 0 && (JSON.stringify(doc)?.length ?? 0) < 20_000) {
        // through YAML text, sometimes damaged, as a file would arrive
        try {
          const yaml = toYaml(doc);
          doc = parseYaml(g.chance(0.3) ? g.damageText(yaml) : yaml, { maxAliasCount: 100, logLevel: "error" });
        } catch {
          return; // too deep to print, or broken YAML: loadConfig's "config file X: …" (checked below with real files)
        }
      }
      let out: Record<string, unknown>;
      try {
        out = validateConfigDoc(specs, doc, "fuzz.yaml");
      } catch (e) {
        if (!(e instanceof ConfigError)) throw new Error(`threw ${String(e)} (not a ConfigError) for ${JSON.stringify(doc)?.slice(0, 200)}`);
        if (!e.message.startsWith("fuzz.yaml: ")) throw new Error(`refusal does not name the file: ${e.message}`);
        return;
      }
      accepted++;
      for (const [k, val] of Object.entries(out)) {
        const o = specs.find((s) => camel(s.flag) === k);
        if (!o) throw new Error(`unknown key ${k} accepted`);
        if (!typedOk(o, val)) throw new Error(`${k} accepted as ${JSON.stringify(val)}`);
      }
    });
    assertNoPollution();
    console.log(`config docs: ${n} (seed ${seed}), ${accepted} accepted`);
    for (const { specs } of SPECS) expect(Object.keys(validateConfigDoc(specs, validDoc(specs)))).toHaveLength(specs.length - 1);
    expect(accepted).toBeGreaterThan(n / 50);
  }, 60_000);

  test("500 real YAML files through loadConfig (incl. cyclic aliases, tags, damage): a config or a ConfigError", () => {
    const seed = seedFor("config-files", 0xf11e);
    const specs = SPECS[1]!.specs;
    const base = validDoc(specs);
    const special = ["dataDir: &a [*a]\n", "nodeName: &a {b: *a}\n", "dataDir: !!binary aGVsbG8=\n", "mqtt: !!set {a, b}\n", "nodeName: !!omap [a: 1]\n", "? [a, b]\n: c\n", "logLevel: 1e400\n", "[1, 2]\n", "just a string\n", "", "---\n---\n", "a: &x [1]\nb: *y\n", "\t\u0000\n"];
    let i = 0;
    fuzzLoop("config files", seed, cases(500), (g) => {
      const file = join(dir, `c${i++ % 20}.yaml`);
      const doc = hostileConfig(g, base);
      if (!g.chance(0.15) && (JSON.stringify(doc)?.length ?? 0) > 20_000) return;
      let text: string;
      try {
        text = g.chance(0.15) ? g.pick(special) : g.chance(0.3) ? g.damageText(toYaml(doc)) : toYaml(doc);
      } catch {
        return; // too deep for the YAML printer
      }
      writeFileSync(file, text);
      try {
        const c = loadConfig<Record<string, unknown>>(specs, ["--config", file]);
        for (const o of specs) if (o.flag !== "config" && c[camel(o.flag)] !== undefined && !typedOk(o, c[camel(o.flag)])) throw new Error(`${o.flag} loaded as ${JSON.stringify(c[camel(o.flag)])}`);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw new Error(`loadConfig threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)} for ${JSON.stringify(text.slice(0, 200))}`);
      }
    });
    // and a good file afterwards
    writeFileSync(join(dir, "good.yaml"), "nodeName: edge-9\n");
    expect(loadConfig<Record<string, unknown>>(specs, ["--config", join(dir, "good.yaml")]).nodeName).toBe("edge-9");
  });
});

// ---- Device / DeviceModel / DeviceStatus objects ---------------------------------------------

const DEVICE: Json = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "Device",
  metadata: { name: "thermo-1", namespace: "default", uid: "u1", resourceVersion: "5", labels: { a: "b" }, annotations: { n: "x" }, creationTimestamp: null, ownerReferences: [{ apiVersion: "v1", kind: "Node", name: "n", uid: "u" }] },
  spec: {
    deviceModelRef: { name: "thermo-model" },
    nodeName: "edge-1",
    protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port: 502, slaveID: 1 } },
    properties: [
      { name: "temperature", desired: { value: "20", metadata: { type: "float" } }, visitors: { protocolName: "modbus", configData: { register: "HoldingRegister", offset: 0, limit: 2 } }, reportCycle: 1000, collectCycle: 500, reportToCloud: true, pushMethod: { mqtt: { address: "tcp://x:1883", topic: "t", qos: 1, retained: false }, http: { hostName: "h", port: 80, requestPath: "/", timeout: 1 } } },
      { name: "switch", desired: { value: "ON" } },
    ],
    methods: [{ name: "reset", description: "d", propertyNames: ["switch"] }],
    stateReport: { reportToCloud: true, reportCycle: 5000 },
  },
  status: { reportToCloud: true, reportCycle: 1000, twins: [{ propertyName: "temperature", reported: { value: "21" }, observedDesired: { value: "20" } }], state: "online", lastOnlineTime: "2026-01-01T00:00:00Z" },
};
const MODEL: Json = {
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "DeviceModel",
  metadata: { name: "thermo-model", namespace: "default" },
  spec: { protocol: "modbus", protocolConfigData: { a: 1 }, properties: [{ name: "temperature", description: "t", type: "FLOAT", accessMode: "ReadOnly", minimum: "0", maximum: "100", unit: "C", visitors: { protocolName: "modbus", configData: { x: 1 } } }, { name: "switch", type: "STRING", accessMode: "ReadWrite" }] },
};
const STATUS: Json = { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceStatus", metadata: { name: "thermo-1", namespace: "default" }, status: { twins: [{ propertyName: "temperature", reported: { value: "21", metadata: { timestamp: "1" } } }], state: "ok", extensions: { a: 1 } } };

describe("fuzz: device CRD objects", () => {
  test("≥ 100,000 mutated Device/DeviceModel/DeviceStatus objects: a value or an error naming the field", () => {
    const seed = seedFor("crd-objects", 0xde71ce);
    const n = cases(100_000);
    const targets = [
      { parse: parseDevice, base: DEVICE },
      { parse: parseDeviceModel, base: MODEL },
      { parse: parseDeviceStatus, base: STATUS },
    ];
    let accepted = 0;
    fuzzLoop("crd objects", seed, n, (g, i) => {
      const t = targets[i % 3]!;
      let input: unknown = g.chance(0.9) ? g.mutate(t.base).doc : g.value();
      if (g.chance(0.2)) input = g.chance(0.3) ? g.damageText(JSON.stringify(input)) : JSON.stringify(input); // KubeEdge sometimes sends JSON in a string
      const r = t.parse(input);
      if (!r.ok) {
        if (typeof r.error !== "string" || !r.error) throw new Error("empty error");
        return;
      }
      accepted++;
      const o = r.value as { metadata: { name: unknown }; spec?: { properties?: { name: string }[] } };
      if (typeof o.metadata.name !== "string" || o.metadata.name.length < 1 || o.metadata.name.length > 253) throw new Error(`accepted name ${JSON.stringify(o.metadata.name)}`);
      const names = (o.spec?.properties ?? []).map((p) => p.name);
      if (new Set(names).size !== names.length) throw new Error("duplicate property names accepted");
    });
    assertNoPollution();
    console.log(`CRD objects: ${n} (seed ${seed}), ${accepted} accepted`);
    expect(parseDevice(DEVICE).ok).toBe(true);
    expect(parseDeviceModel(MODEL).ok).toBe(true);
    expect(parseDeviceStatus(STATUS).ok).toBe(true);
    expect(accepted).toBeGreaterThan(n / 20);
  }, 60_000);
});

// ---- device bytes ----------------------------------------------------------------------------

describe("fuzz: device bytes", () => {
  test("100,000 Modbus register sets: decodeWords gives a number or its documented register-count error", () => {
    const seed = seedFor("modbus", 0x30d);
    const n = cases(100_000);
    const kinds: NumberKind[] = ["int", "uint", "float"];
    fuzzLoop("decodeWords", seed, n, (g) => {
      const count = g.chance(0.8) ? g.pick([1, 2, 4]) : g.int(9);
      const words = Array.from({ length: count }, () => (g.chance(0.9) ? g.int(0x10000) : g.pick([-1, 0x10000, 0x1ffff, 1.5, NaN, 2 ** 40])));
      const kind = g.chance(0.95) ? g.pick(kinds) : (g.shortString(4) as NumberKind);
      const layout = { isSwap: g.chance(0.5), isRegisterSwap: g.chance(0.5) };
      let out: number;
      try {
        out = decodeWords(words, kind, layout);
      } catch (e) {
        if (!(e instanceof Error) || !e.message.startsWith(`cannot decode ${count} registers`)) throw new Error(`undocumented error ${String(e)}`);
        if ([1, 2, 4].includes(count)) throw new Error(`refused ${count} registers`);
        return;
      }
      if (typeof out !== "number") throw new Error("not a number");
      if (kind !== "float" && !Number.isFinite(out)) throw new Error(`integer kind decoded to ${out}`);
      // a clean in-range set round-trips through encodeWords
      if (words.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffff) && (kind === "int" || kind === "uint") && count < 4) {
        const back = encodeWords(out, count, kind, layout);
        if (back.some((w, i) => w !== words[i])) throw new Error(`round trip ${JSON.stringify(words)} -> ${out} -> ${JSON.stringify(back)}`);
      }
    });
  });

  test("100,000 BLE values × converter configs: a number, the schema's refusal, or the documented range error", () => {
    const seed = seedFor("ble", 0xb1e);
    const n = cases(100_000);
    let converted = 0;
    fuzzLoop("convertReadData", seed, n, (g) => {
      const raw: Record<string, unknown> = {
        startIndex: g.chance(0.8) ? g.int(10) : g.pick([-1, 1.5, "0", 2 ** 31 - 1, 1e9, null]),
        endIndex: g.chance(0.8) ? g.int(10) : g.pick([-1, 0.5, 2 ** 31 - 1, 1e9]),
      };
      if (g.chance(0.5)) raw.shiftLeft = g.chance(0.9) ? g.int(64) : g.pick([64, -1, 1.5, 1000]);
      if (g.chance(0.5)) raw.shiftRight = g.chance(0.9) ? g.int(64) : g.pick([64, -1, 2.5]);
      if (g.chance(0.5)) raw.orderOfOperations = Array.from({ length: g.int(4) }, () => ({ operationType: g.pick(["Add", "subtract", "MULTIPLY", "Divide", "Pow", ""]), operationValue: g.chance(0.9) ? g.number() : "3" }));
      if (g.chance(0.2)) raw.decimalConcat = g.chance(0.8) ? true : "yes";
      const parsed = v.safeParse(BleDataConverterSchema, raw);
      if (!parsed.success) return;
      const data = new Uint8Array(g.int(12));
      for (let i = 0; i < data.length; i++) data[i] = g.int(256);
      let out: number;
      try {
        out = convertReadData(data, parsed.output);
      } catch (e) {
        if (!(e instanceof Error) || !e.message.startsWith("dataConverter: needs byte")) throw new Error(`undocumented error ${String(e)} for ${JSON.stringify(raw)}`);
        if (Math.max(parsed.output.startIndex, parsed.output.endIndex) < data.length) throw new Error("range error for an in-range config");
        return;
      }
      if (typeof out !== "number") throw new Error("not a number");
      converted++;
    });
    console.log(`BLE: ${n} (seed ${seed}), ${converted} converted`);
    expect(converted).toBeGreaterThan(n / 10);
  });
});
