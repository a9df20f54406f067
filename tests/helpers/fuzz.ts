/**
 * Seeded generators for the fuzz tests: a small PRNG, hostile JSON-ish values (wrong types, huge
 * strings, deep nesting, prototype-pollution keys, odd unicode) and structural mutations of valid
 * objects. Everything is reproducible from one seed; `fuzzLoop` names the seed and case on failure.
 * Set FUZZ_SEED=<n> to replay a run, FUZZ_SCALE=<f> to run more (or fewer) cases.
 */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** mulberry32: fast, decent, deterministic. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

export function seedFor(name: string, fallback: number): number {
  const env = process.env.FUZZ_SEED;
  return env !== undefined && env !== "" ? Number(env) >>> 0 : fallback;
}

export function cases(n: number): number {
  const scale = Number(process.env.FUZZ_SCALE ?? "1");
  return Math.max(1, Math.round(n * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}

/** Runs `n` cases; a failing case is rethrown with the seed and case number that reproduce it. */
export function fuzzLoop(name: string, seed: number, n: number, body: (g: Gen, i: number) => void): void {
  const g = new Gen(new Rng(seed));
  for (let i = 0; i < n; i++) {
    try {
      body(g, i);
    } catch (e) {
      throw new Error(`${name}: case ${i} failed (replay with FUZZ_SEED=${seed}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
}

/** Async variant for live parts. */
export async function fuzzLoopAsync(name: string, seed: number, n: number, body: (g: Gen, i: number) => Promise<void>): Promise<void> {
  const g = new Gen(new Rng(seed));
  for (let i = 0; i < n; i++) {
    try {
      await body(g, i);
    } catch (e) {
      throw new Error(`${name}: case ${i} failed (replay with FUZZ_SEED=${seed}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
}

// Precomputed so a case costs nothing to build: the same large values are reused.
const HUGE = ["x".repeat(70_000), "é".repeat(40_000), "\u{1F600}".repeat(20_000), "a".repeat(1 << 20)];
export const PROTO_KEYS = ["__proto__", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty", "__defineGetter__", "isPrototypeOf"];
const ODD_STRINGS = [
  "",
  " ",
  "\u0000",
  "\ud800",
  "\udfff\ud800",
  "\u202e",
  "\ufeff",
  "e\u0301",
  "\u{10ffff}",
  "null",
  "true",
  "undefined",
  "NaN",
  "-1",
  "1e999",
  "0x10",
  "../../etc/passwd",
  "a/b/c",
  "$hw/events/#",
  "+",
  "#",
  "%00",
  "${x}",
  "<script>",
  "' OR 1=1 --",
  "\r\n\r\n",
  "A".repeat(129),
  "a".repeat(254),
  "a".repeat(1025),
  ...PROTO_KEYS,
];
const NUMBERS = [0, -0, 1, -1, 0.5, -1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e21, 1e308, -1e308, 5e-324, Number.MAX_SAFE_INTEGER, 65535, 65536, 256, 255, 128, 127];

export class Gen {
  constructor(readonly r: Rng) {}

  int(n: number): number {
    return this.r.int(n);
  }
  chance(p: number): boolean {
    return this.r.chance(p);
  }
  pick<T>(xs: readonly T[]): T {
    return this.r.pick(xs);
  }

  /** A short random string: ASCII, any BMP char, astral chars, lone surrogates. */
  shortString(max = 16): string {
    const n = this.int(max + 1);
    let s = "";
    const mode = this.int(4);
    for (let i = 0; i < n; i++) {
      if (mode === 0) s += String.fromCharCode(0x61 + this.int(26));
      else if (mode === 1) s += String.fromCharCode(0x20 + this.int(95));
      else if (mode === 2) s += String.fromCharCode(this.int(0x10000));
      else s += String.fromCodePoint(this.int(0x110000));
    }
    return s;
  }

  string(): string {
    const k = this.int(20);
    if (k < 8) return this.shortString();
    if (k < 15) return this.pick(ODD_STRINGS);
    if (k < 19 || !this.chance(0.2)) return this.shortString(300);
    return this.pick(HUGE);
  }

  number(): number {
    const k = this.int(6);
    if (k === 0) return this.pick(NUMBERS);
    if (k === 1) return this.r.next() * 1e6 - 5e5;
    if (k === 2) return this.int(2000) - 1000;
    if (k === 3) return (this.r.next() - 0.5) * 10 ** this.int(300);
    if (k === 4) return this.pick([NaN, Infinity, -Infinity]);
    return this.int(100);
  }

  key(): string {
    return this.chance(0.25) ? this.pick(PROTO_KEYS) : this.chance(0.5) ? this.shortString(12) : this.string().slice(0, 300);
  }

  /** Any value, JSON-serialisable except NaN/Infinity (which JSON turns into null). */
  value(depth = 0): Json {
    const k = this.int(depth > 3 ? 6 : 10);
    switch (k) {
      case 0:
        return null;
      case 1:
        return this.chance(0.5);
      case 2:
      case 3:
        return this.number();
      case 4:
      case 5:
        return this.string();
      case 6:
      case 7: {
        const n = this.int(5);
        const a: Json[] = [];
        for (let i = 0; i < n; i++) a.push(this.value(depth + 1));
        return a;
      }
      case 8: {
        const n = this.int(5);
        const o: Record<string, Json> = {};
        for (let i = 0; i < n; i++) setOwn(o, this.key(), this.value(depth + 1));
        if (this.chance(0.2)) setOwn(o, "__proto__", { polluted: "yes", toString: "x" });
        return o;
      }
      default:
        return this.chance(0.2) ? this.deep() : this.value(depth + 1);
    }
  }

  /** A deeply nested array or object (depth 50…5000). */
  deep(): Json {
    const depth = this.chance(0.05) ? 5000 : this.pick([20, 50, 101, 300]);
    let v: Json = this.chance(0.5) ? 1 : "leaf";
    const arr = this.chance(0.5);
    for (let i = 0; i < depth; i++) v = arr ? [v] : { a: v };
    return v;
  }

  /** A value of a different JSON type than `v`. */
  wrongType(v: unknown): Json {
    for (;;) {
      const w = this.value(2);
      if (jsonType(w) !== jsonType(v)) return w;
    }
  }

  /**
   * 1–3 structural mutations of a clone of `base`: a value replaced by a wrong type or a hostile
   * value, a key removed, a hostile key added, a string truncated or blown up, a container emptied.
   * Returns the mutated clone and the dot paths touched.
   */
  mutate<T extends Json>(base: T, maxEdits = 3): { doc: Json; paths: string[][] } {
    let doc = clone(base) as Json;
    const touched: string[][] = [];
    const edits = 1 + this.int(maxEdits);
    for (let e = 0; e < edits; e++) {
      const all = paths(doc);
      const path = this.pick(all);
      touched.push(path);
      if (path.length === 0) {
        doc = this.chance(0.5) ? this.wrongType(doc) : this.value();
        continue;
      }
      const parent = get(doc, path.slice(0, -1)) as Record<string, Json> | Json[];
      const key = path[path.length - 1]!;
      const cur = (parent as Record<string, Json>)[key];
      const op = this.int(8);
      if (op === 0) deleteKey(parent, key);
      else if (op === 1) {
        // arrays get elements, objects keys: a named property on an array cannot come off the wire
        if (Array.isArray(parent)) parent.splice(this.int(parent.length + 1), 0, this.value(1));
        else setOwn(parent, this.key(), this.value(1));
      }
      else if (op === 2 && typeof cur === "string") setOwn(parent as Record<string, Json>, key, this.chance(0.5) ? cur.slice(0, this.int(cur.length + 1)) : cur + this.string());
      else if (op === 3) setOwn(parent as Record<string, Json>, key, this.wrongType(cur));
      else if (op === 4 && cur !== null && typeof cur === "object") setOwn(parent as Record<string, Json>, key, Array.isArray(cur) ? [] : {});
      else if (op === 5) setOwn(parent as Record<string, Json>, key, [cur ?? null]);
      else setOwn(parent as Record<string, Json>, key, this.value(1));
    }
    return { doc, paths: touched };
  }

  /** Text-level damage to a serialised document: truncation, removed, inserted or replaced characters. */
  damageText(text: string): string {
    const op = this.int(4);
    if (op === 0) return text.slice(0, this.int(text.length));
    const edits = 1 + this.int(4);
    for (let e = 0; e < edits; e++) {
      const at = this.int(text.length + 1);
      if (op === 1) text = text.slice(0, at) + text.slice(at + 1);
      else if (op === 2) text = text.slice(0, at) + this.pick(['"', "{", "}", "[", "]", ",", ":", "\\", "\u0000", "\ud800", "1e", "-", "tru", " "]) + text.slice(at);
      else text = text.slice(0, at) + String.fromCharCode(this.int(128)) + text.slice(at + 1);
    }
    return text;
  }
}

export function jsonType(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/** Sets an own property, even `__proto__` (plain assignment would change the prototype). */
export function setOwn(o: Record<string, unknown> | unknown[], k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function deleteKey(o: Record<string, Json> | Json[], k: string): void {
  if (Array.isArray(o)) o.splice(Number(k), 1);
  else delete o[k];
}

export function clone(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(clone);
  const o: Record<string, unknown> = {};
  for (const k of Object.keys(v)) setOwn(o, k, clone((v as Record<string, unknown>)[k]));
  return o;
}

/** Every path to a value inside `v` (not descending into very deep values). */
export function paths(v: unknown, prefix: string[] = [], out: string[][] = []): string[][] {
  out.push(prefix);
  if (prefix.length > 12 || v === null || typeof v !== "object") return out;
  for (const k of Object.keys(v)) paths((v as Record<string, unknown>)[k], [...prefix, k], out);
  return out;
}

export function get(v: unknown, path: string[]): unknown {
  let cur = v;
  for (const k of path) cur = cur !== null && typeof cur === "object" ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

/** Deeply nested JSON text (cheap: cached per depth). */
const deepTexts = new Map<number, string>();
export function deepText(depth: number, arr = true): string {
  const key = arr ? depth : -depth;
  let t = deepTexts.get(key);
  if (!t) deepTexts.set(key, (t = arr ? "[".repeat(depth) + "1" + "]".repeat(depth) : '{"a":'.repeat(depth) + "1" + "}".repeat(depth)));
  return t;
}

/** Asserts that nothing leaked onto Object.prototype (the `polluted` marker the generators plant). */
export function assertNoPollution(): void {
  const probe = {} as Record<string, unknown>;
  if (probe.polluted !== undefined || Object.prototype.hasOwnProperty.call(Object.prototype, "polluted")) throw new Error("Object.prototype was polluted");
  if (typeof probe.toString !== "function") throw new Error("Object.prototype.toString was overwritten");
}
