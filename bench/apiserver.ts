/**
 * bench/apiserver.ts: the embedded Kubernetes API over HTTPS on 127.0.0.1.
 *  - writes/s: ConfigMap creates from 16 concurrent clients (each committed to SQLite before the
 *    201), beside a baseline of the same rows inserted with prepared statements, one transaction each;
 *  - watch delivery latency p50/p99 with 1,000 concurrent watch streams: write → event parsed by
 *    every watcher (clients live in the same process, so this includes their parsing);
 *  - writes/s while the 1,000 watchers receive every write, and the events delivered per second;
 *  - RSS after the runs.
 *   bun bench/apiserver.ts [--quick]     (--quick finishes in well under 20 s)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { openStore } from "../lib/store/db.ts";
import { openSqlite } from "../lib/runtime/index.ts";
import { apiserverMigrations, startApiServer } from "../lib/kube/apiserver/index.ts";
import { openRawWatch, type RawWatch } from "../lib/kube/apiserver/watch-client.ts";
import { percentile, printTable, quick, recordResults, rssMiB, type Row } from "./lib.ts";

const WRITES = quick ? 3000 : 20_000;
const WRITE_SECONDS = quick ? 5 : 30;
const CONCURRENCY = 16;
const WATCHERS = 1000;
const EVENTS = quick ? 30 : 200;
const EVENT_GAP_MS = 20;

const dir = mkdtempSync(join(tmpdir(), "outpost-bench-apiserver-"));
const store = await openStore<any>(join(dir, "cloudcore.db"), apiserverMigrations);
const server = await startApiServer({ store, host: "127.0.0.1", port: 0, dataDir: dir, log: createLogger({ level: "error" }) });
const tls = { ca: server.caCert };
const headers = { Authorization: `Bearer ${server.adminToken}`, "Content-Type": "application/json" };
await fetch(server.url + "/api/v1/namespaces", { method: "POST", headers: { Authorization: `Bearer ${server.adminToken}`, "Content-Type": "application/json" }, body: JSON.stringify({ metadata: { name: "watched" } }), tls } as RequestInit);
const post = (path: string, body: unknown) => fetch(server.url + path, { method: "POST", headers, body: JSON.stringify(body), tls } as RequestInit);
const cm = (name: string, extra: Record<string, string> = {}) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, labels: { bench: "yes" } }, data: { payload: "x".repeat(200), ...extra } });

// --- writes/s through the API ---
await post("/api/v1/namespaces", { metadata: { name: "bench" } });
let next = 0;
let done = 0;
const writeDeadline = performance.now() + WRITE_SECONDS * 1000;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (next < WRITES && performance.now() < writeDeadline) {
      const i = next++;
      const r = await post("/api/v1/namespaces/bench/configmaps", cm(`cm-${i}`));
      if (r.status !== 201) throw new Error(`create failed: ${r.status} ${await r.text()}`);
      await r.arrayBuffer();
      done++;
    }
  }),
);
const apiWritesPerS = done / ((performance.now() - t0) / 1000);

// --- baseline: the same rows straight into SQLite, one transaction per row ---
const raw = await openSqlite(join(dir, "baseline.db"));
raw.exec("PRAGMA journal_mode = WAL");
raw.exec("PRAGMA synchronous = NORMAL");
raw.exec("CREATE TABLE t (k TEXT PRIMARY KEY, rv INTEGER, data TEXT)");
const ins = raw.prepare("INSERT INTO t (k, rv, data) VALUES (?, ?, ?)");
const b0 = performance.now();
let bn = 0;
while (bn < done && performance.now() - b0 < WRITE_SECONDS * 1000) {
  raw.exec("BEGIN");
  ins.run([`bench/cm-${bn}`, bn, JSON.stringify(cm(`cm-${bn}`))]);
  raw.exec("COMMIT");
  bn++;
}
const rawWritesPerS = bn / ((performance.now() - b0) / 1000);
raw.close();

// --- watch latency with 1,000 watchers ---
const sentAt = new Map<string, number>();
const samples: number[] = [];
const received = new Map<string, number>();
let delivered = 0;
const rv = (await (await fetch(`${server.url}/api/v1/namespaces/watched/configmaps?limit=1`, { headers, tls } as RequestInit)).json()) as { metadata: { resourceVersion: string } };
const watchers: RawWatch[] = [];
for (let i = 0; i < WATCHERS; i++) {
  const w = openRawWatch(server.url, `/api/v1/namespaces/watched/configmaps?watch=1&resourceVersion=${rv.metadata.resourceVersion}`, server.adminToken, server.caCert);
  w.onEvent = (ev) => {
    const name = ev.object?.metadata?.name as string;
    delivered++;
    const t = sentAt.get(name);
    if (t === undefined) return;
    samples.push(performance.now() - t);
    received.set(name, (received.get(name) ?? 0) + 1);
  };
  watchers.push(w);
}
const statuses = await Promise.all(watchers.map((w) => w.status));
if (statuses.some((s) => s !== 200)) throw new Error("some watches failed to open");
for (let i = 0; i < 300 && server.watchCount() < WATCHERS; i++) await Bun.sleep(10);
if (server.watchCount() < WATCHERS) throw new Error(`only ${server.watchCount()} watches registered`);
const rssWithWatchers = rssMiB();

let lost = 0;
for (let i = 0; i < EVENTS; i++) {
  const name = `probe-${i}`;
  sentAt.set(name, performance.now());
  const r = await post("/api/v1/namespaces/watched/configmaps", cm(name));
  await r.arrayBuffer();
  const deadline = performance.now() + 5000;
  while ((received.get(name) ?? 0) < WATCHERS && performance.now() < deadline) await Bun.sleep(1);
  lost += WATCHERS - (received.get(name) ?? 0);
  await Bun.sleep(EVENT_GAP_MS);
}
samples.sort((a, b) => a - b);

// --- writes/s while 1,000 watchers receive every write ---
let wn = 0;
let wdone = 0;
const deliveredBefore = delivered;
const w0 = performance.now();
const wDeadline = w0 + (quick ? 3000 : 15_000);
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (wn < WRITES && performance.now() < wDeadline) {
      const i = wn++;
      const r = await post("/api/v1/namespaces/watched/configmaps", cm(`fan-${i}`));
      if (r.status !== 201) throw new Error(`create failed: ${r.status}`);
      await r.arrayBuffer();
      wdone++;
    }
  }),
);
const fanDeadline = performance.now() + 10_000;
while (delivered - deliveredBefore < wdone * WATCHERS && performance.now() < fanDeadline) await Bun.sleep(5);
const wElapsed = (performance.now() - w0) / 1000;
const fanWritesPerS = wdone / wElapsed;
const fanEventsPerS = (delivered - deliveredBefore) / wElapsed;
lost += wdone * WATCHERS - (delivered - deliveredBefore);
for (const w of watchers) w.close();

const rows: Row[] = [
  { metric: "configmap_creates_per_s", baseline: rawWritesPerS, outpost: apiWritesPerS, unit: "writes/s", higherIsBetter: true },
  { metric: "watch_delivery_p50_1000_watchers", outpost: percentile(samples, 50), unit: "ms" },
  { metric: "watch_delivery_p99_1000_watchers", outpost: percentile(samples, 99), unit: "ms" },
  { metric: "creates_per_s_with_1000_watchers", outpost: fanWritesPerS, unit: "writes/s", higherIsBetter: true },
  { metric: "watch_events_delivered_per_s", outpost: fanEventsPerS, unit: "events/s", higherIsBetter: true },
  { metric: "watch_events_lost", outpost: lost, unit: "events" },
  { metric: "rss_with_1000_watchers", outpost: rssWithWatchers, unit: "MiB" },
  { metric: "rss_after_runs", outpost: rssMiB(), unit: "MiB" },
];
printTable("Embedded API (baseline: same rows inserted straight into SQLite, one transaction each)", rows);
recordResults("apiserver", rows);
await server.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
process.exit(lost > 0 ? 1 : 0);
