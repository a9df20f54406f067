/** Shared bench helpers: percentiles, a printed table, and bench/results.json (name → value, unit). */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const quick = process.argv.includes("--quick");

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface Row {
  metric: string;
  baseline?: number;
  outpost: number;
  unit: string;
  /** Whether a bigger number is better (throughput) or worse (latency, memory). */
  higherIsBetter?: boolean;
}

const fmt = (n: number | undefined) => (n === undefined ? "-" : Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2));

/** Prints the table: each row with its raw baseline, Outpost's figure and Outpost/baseline. */
export function printTable(title: string, rows: Row[]): void {
  const head = ["metric", "baseline", "outpost", "unit", "ratio"];
  const body = rows.map((r) => [r.metric, fmt(r.baseline), fmt(r.outpost), r.unit, r.baseline ? `${((r.outpost / r.baseline) * 100).toFixed(0)} %` : "-"]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ") + " |";
  console.log(`\n${title}${quick ? " (quick)" : ""}`);
  console.log(line(head));
  console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
  for (const b of body) console.log(line(b));
}

/** Merges `rows` (prefixed by `bench`) into bench/results.json. */
export function recordResults(bench: string, rows: Row[]): void {
  const path = join(fileURLToPath(new URL(".", import.meta.url)), "results.json");
  const all: Record<string, { value: number; unit: string; baseline?: number }> = existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) : {};
  for (const r of rows) all[`${bench}.${r.metric}`] = { value: Number(r.outpost.toFixed(3)), unit: r.unit, ...(r.baseline !== undefined ? { baseline: Number(r.baseline.toFixed(3)) } : {}) };
  writeFileSync(path, JSON.stringify(all, null, 2) + "\n");
}

export const rssMiB = () => process.memoryUsage().rss / 1024 / 1024;
