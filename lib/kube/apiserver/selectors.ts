/** Label selectors (=, ==, !=, in, notin, exists, !key, gt, lt) and field selectors (=, ==, !=). */
import { errors } from "./errors.ts";
import { isRecord, type KObject } from "./types.ts";

type LabelReq =
  | { op: "eq" | "ne"; key: string; value: string }
  | { op: "in" | "notin"; key: string; values: string[] }
  | { op: "exists" | "notexists"; key: string }
  | { op: "gt" | "lt"; key: string; value: number };

export type LabelSelector = LabelReq[];
export type FieldSelector = Array<{ op: "eq" | "ne"; path: string; value: string }>;

const KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/** Splits on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out.map((p) => p.trim()).filter((p) => p !== "");
}

function checkKey(key: string, whole: string): string {
  if (!KEY.test(key) || key.length > 317) throw errors.badRequest(`unable to parse requirement: invalid label key "${key}" in selector "${whole}"`);
  return key;
}
function checkValue(v: string, whole: string): string {
  if (!VALUE.test(v) || v.length > 63) throw errors.badRequest(`unable to parse requirement: invalid label value "${v}" in selector "${whole}"`);
  return v;
}

export function parseLabelSelector(s: string | null | undefined): LabelSelector {
  if (!s || !s.trim()) return [];
  const reqs: LabelSelector = [];
  for (const part of splitTop(s)) {
    let m: RegExpExecArray | null;
    if ((m = /^(\S+?)\s+(in|notin)\s*\((.*)\)$/.exec(part))) {
      const values = m[3]!.split(",").map((v) => checkValue(v.trim(), s));
      reqs.push({ op: m[2] as "in" | "notin", key: checkKey(m[1]!, s), values });
    } else if ((m = /^([^=!<>\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(part))) {
      reqs.push({ op: m[2] === "!=" ? "ne" : "eq", key: checkKey(m[1]!, s), value: checkValue(m[3]!, s) });
    } else if ((m = /^([^=!<>\s]+)\s*([<>])\s*(-?\d+)$/.exec(part))) {
      reqs.push({ op: m[2] === ">" ? "gt" : "lt", key: checkKey(m[1]!, s), value: Number(m[3]) });
    } else if ((m = /^!\s*(\S+)$/.exec(part))) {
      reqs.push({ op: "notexists", key: checkKey(m[1]!, s) });
    } else if ((m = /^(\S+)$/.exec(part))) {
      reqs.push({ op: "exists", key: checkKey(m[1]!, s) });
    } else {
      throw errors.badRequest(`unable to parse requirement: "${part}" in label selector "${s}"`);
    }
  }
  return reqs;
}

export function matchLabels(sel: LabelSelector, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  for (const r of sel) {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case "eq":
        if (!has || v !== r.value) return false;
        break;
      case "ne":
        if (has && v === r.value) return false;
        break;
      case "in":
        if (!has || !r.values.includes(v!)) return false;
        break;
      case "notin":
        if (has && r.values.includes(v!)) return false;
        break;
      case "exists":
        if (!has) return false;
        break;
      case "notexists":
        if (has) return false;
        break;
      case "gt":
      case "lt": {
        const n = Number(v);
        if (!has || !Number.isFinite(n) || (r.op === "gt" ? !(n > r.value) : !(n < r.value))) return false;
        break;
      }
    }
  }
  return true;
}

export function parseFieldSelector(s: string | null | undefined): FieldSelector {
  if (!s || !s.trim()) return [];
  const out: FieldSelector = [];
  for (const part of s.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^([A-Za-z0-9_.\-/]+)\s*(==|=|!=)\s*(.*)$/.exec(part);
    if (!m) throw errors.badRequest(`invalid selector: '${s}'; can't understand '${part}'`);
    out.push({ op: m[2] === "!=" ? "ne" : "eq", path: m[1]!, value: m[3]!.replace(/\\(.)/g, "$1") });
  }
  return out;
}

/** The value of a dotted field path as the API compares it: a string, "" when absent. */
export function fieldValue(obj: KObject, path: string): string {
  let cur: unknown = obj;
  for (const seg of path.split(".")) {
    if (!isRecord(cur)) return "";
    cur = cur[seg];
  }
  if (cur === undefined || cur === null) return "";
  return typeof cur === "object" ? JSON.stringify(cur) : String(cur);
}

export function matchFields(sel: FieldSelector, obj: KObject): boolean {
  for (const r of sel) {
    const v = fieldValue(obj, r.path);
    if (r.op === "eq" ? v !== r.value : v === r.value) return false;
  }
  return true;
}

export interface Selector {
  labels: LabelSelector;
  fields: FieldSelector;
}

export function matches(sel: Selector, obj: KObject): boolean {
  return (sel.labels.length === 0 || matchLabels(sel.labels, obj.metadata?.labels)) && (sel.fields.length === 0 || matchFields(sel.fields, obj));
}

export function isEmpty(sel: Selector): boolean {
  return sel.labels.length === 0 && sel.fields.length === 0;
}
