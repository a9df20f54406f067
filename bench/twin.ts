/**
 * bench/twin.ts (issue 5): device property updates from MQTT into the twin and up to the API.
 *  Stage A, in process (EventBus with its embedded aedes broker + DeviceTwin on edgecore.db, wired
 *  as edgecore wires them): an MQTT client publishes K `…/twin/update` messages (QoS 0), one
 *  property of a 10-property Device each; updates/s until the twin has stored the last one, and
 *  publish → `…/twin/update/document` received by a subscribing client (paced at 2,000/s).
 *  Raw baselines in the same run: aedes alone (client → broker → subscribing client, same payloads
 *  and count) and SQLite alone (the twin's prepared upsert of the same row, in transactions of up to
 *  500 rows as the twin commits a drained burst, and for reference one transaction per row). Issue 5's
 *  goal: ≥ 20,000 updates/s and ≥ 50 % of the slowest raw stage (each raw stage at its best).
 *  Stage B, real cloudcore + edgecore processes: reported values published on the edge broker →
 *  visible in the DeviceStatus (an informer on devicestatuses). Several devices, one value per
 *  device per second, since the DeviceController coalesces each device's reports for 500 ms.
 *   bun bench/twin.ts [--quick]
 */
import { createServer } from "node:net";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Aedes } from "aedes";
import { connectAsync, type MqttClient } from "mqtt";
import { DeviceTwin, deviceTwinMigrations } from "../lib/edge/devicetwin/index.ts";
import { EventBus } from "../lib/edge/eventbus/index.ts";
import { edgeMigrations } from "../lib/edge/store.ts";
import { InformerFactory, KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { createLogger } from "../lib/log.ts";
import { newMessage } from "../lib/message.ts";
import { Router } from "../lib/router.ts";
import { openSqlite } from "../lib/runtime/index.ts";
import { openStore } from "../lib/store/db.ts";
import { eventually, joinToken, startCloud, startEdge, tmpDir, type Daemon } from "../tests/helpers/daemons.ts";
import { percentile, printTable, quick, recordResults, rssMiB, type Row } from "./lib.ts";

const K = quick ? 20_000 : 100_000;
const RATE = 2000;
const LAT_N = quick ? 2000 : 10_000;
const PROPS = 10;
const NODE = "bench-twin";
const B_DEVICES = 10;
const B_SAMPLES = quick ? 50 : 200;
const B_PERIOD_MS = 1000; // per device: one value each period, staggered across devices
const log = createLogger({ level: "error" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const base = (id: string) => `$hw/events/device/${id}`;
const payload = (i: number, t = Date.now()) => JSON.stringify({ event_id: `e${i}`, timestamp: t, twin: { [`p${i % PROPS}`]: { actual: { value: String(i) } } } });
/** Waits (bounded) until `done()`; throws with `what` on timeout. */
async function until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > end) throw new Error(`${what}: not done within ${timeoutMs} ms`);
    await sleep(2);
  }
}
/** Sends `n` messages at `rate`/s (1 ms ticks); `send(i)` stamps its own time. */
async function paced(n: number, rate: number, send: (i: number) => void): Promise<void> {
  const perTick = rate / 1000;
  let sent = 0;
  let credit = 0;
  const t0 = performance.now();
  while (sent < n && performance.now() - t0 < 120_000) {
    credit = ((performance.now() - t0) * perTick) - sent;
    for (; credit >= 1 && sent < n; credit--, sent++) send(sent);
    await sleep(1);
  }
}
const model = (name: string, props: string[]) => ({
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "DeviceModel",
  metadata: { name, namespace: "default" },
  spec: { protocol: "bench", properties: props.map((p) => ({ name: p, type: "INT", accessMode: "ReadOnly" })) },
});
const device = (name: string, modelName: string, props: string[]) => ({
  apiVersion: "devices.kubeedge.io/v1beta1",
  kind: "Device",
  metadata: { name, namespace: "default", uid: `uid-${name}` },
  spec: { deviceModelRef: { name: modelName }, nodeName: NODE, protocol: { protocolName: "bench" }, properties: props.map((p) => ({ name: p, reportToCloud: true })) },
});
const propNames = Array.from({ length: PROPS }, (_, i) => `p${i}`);
const payloads = Array.from({ length: K }, (_, i) => payload(i));

// ==== Stage A: EventBus + DeviceTwin in process ============================================
const dir = tmpDir("bench-twin");
const store = await openStore<any>(join(dir, "edgecore.db"), { ...edgeMigrations, ...deviceTwinMigrations });
const router = new Router(log);
let upstream = 0;
router.register({ name: "websocket", group: "hub", start() {}, stop() {}, handle: () => void upstream++ });
// wired as edgecore wires them: bus → twin directly (a drained burst per transaction), twin → bus directly
const bus: EventBus = new EventBus({ listen: "127.0.0.1:0", log, twin: { handleBatch: (m) => twin.handleBatch(m) } });
const ID = "default/bench-dev";
const DOC = `${base(ID)}/twin/update/document`;
let documents = 0;
const twin = new DeviceTwin({ store, nodeName: NODE, log, publisher: { publish: (t, p) => (t === DOC && documents++, bus.publish(t, p)) } });
router.register(twin);
router.register(bus);
await router.startAll();
router.sendToGroup("twin", newMessage({ source: "edgecontroller", group: "resource", operation: "insert", resource: "default/devicemodel/bench-model" }, model("bench-model", propNames)));
router.sendToGroup("twin", newMessage({ source: "edgecontroller", group: "resource", operation: "insert", resource: "default/device/bench-dev" }, device("bench-dev", "bench-model", propNames)));
await until(() => twin.getDevice(ID)?.properties.length === PROPS, 5000, "device stored");

const pub = await connectAsync(`mqtt://${bus.address}`, { reconnectPeriod: 0 });
const UPDATE = `${base(ID)}/twin/update`;
/** Publishes all K payloads as fast as the client takes them; resolves once `stored()` reaches K. */
async function burst(client: MqttClient, topic: string, stored: () => number): Promise<number> {
  const before = stored();
  const t0 = performance.now();
  for (let i = 0; i < K; i++) client.publish(topic, payloads[i]!, { qos: 0 });
  await until(() => stored() - before >= K, 120_000, `${K} messages through ${topic}`);
  return K / ((performance.now() - t0) / 1000);
}
await burst(pub, UPDATE, () => documents); // warm-up (JIT, SQLite pages)
const twinRate = await burst(pub, UPDATE, () => documents);
const last = twin.getDevice(ID)!.twins[`p${(K - 1) % PROPS}`]?.actual?.value;
if (last !== String(K - 1)) throw new Error(`twin holds ${last}, expected ${K - 1}`);

// publish → document received by a subscribing app, paced
const app = await connectAsync(`mqtt://${bus.address}`, { reconnectPeriod: 0 });
const sentAt: number[] = [];
const twinLat: number[] = [];
app.on("message", (_t, buf) => {
  const doc = JSON.parse(String(buf)) as { twin: Record<string, { current?: { actual?: { value?: string } } }> };
  for (const t of Object.values(doc.twin)) {
    const i = Number(t.current?.actual?.value) - 1e9;
    if (i >= 0 && sentAt[i] !== undefined) twinLat.push(performance.now() - sentAt[i]!);
  }
});
await app.subscribeAsync(DOC, { qos: 0 });
await paced(LAT_N, RATE, (i) => {
  sentAt[i] = performance.now();
  pub.publish(UPDATE, payload(1e9 + i), { qos: 0 });
});
await until(() => twinLat.length >= LAT_N, 10_000, "paced documents").catch((e) => console.error(String(e)));
twinLat.sort((a, b) => a - b);
const stageARss = rssMiB();
await app.endAsync();
await pub.endAsync();
await router.stopAll();
await store.close();

// ---- raw aedes: client → broker → subscribing client -------------------------------------
const broker = await Aedes.createBroker();
const server = createServer(broker.handle as never);
await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
const rawUrl = `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`;
const rawSub = await connectAsync(rawUrl, { reconnectPeriod: 0 });
const rawPub = await connectAsync(rawUrl, { reconnectPeriod: 0 });
let rawGot = 0;
let rawOnMsg: (buf: Buffer) => void = () => {};
rawSub.on("message", (_t, buf) => {
  rawGot++;
  rawOnMsg(buf);
});
await rawSub.subscribeAsync(UPDATE, { qos: 0 });
await burst(rawPub, UPDATE, () => rawGot); // warm-up
const aedesRate = await burst(rawPub, UPDATE, () => rawGot);
const rawSent: number[] = [];
const aedesLat: number[] = [];
rawOnMsg = (buf) => {
  const i = Number((JSON.parse(String(buf)) as { event_id: string }).event_id.slice(1)) - 1e9;
  if (i >= 0 && rawSent[i] !== undefined) aedesLat.push(performance.now() - rawSent[i]!);
};
await paced(LAT_N, RATE, (i) => {
  rawSent[i] = performance.now();
  rawPub.publish(UPDATE, payload(1e9 + i), { qos: 0 });
});
await until(() => aedesLat.length >= LAT_N, 10_000, "paced raw aedes").catch((e) => console.error(String(e)));
aedesLat.sort((a, b) => a - b);
await rawSub.endAsync();
await rawPub.endAsync();
await new Promise<void>((r) => broker.close(() => r()));
await new Promise<void>((r) => server.close(() => r()));

// ---- raw SQLite: the twin's upsert, one transaction per update ----------------------------
const raw = await openSqlite(join(dir, "raw.db"));
for (const p of ["journal_mode = WAL", "synchronous = NORMAL", "busy_timeout = 5000", "foreign_keys = ON"]) raw.exec(`PRAGMA ${p}`);
raw.exec(`CREATE TABLE device_twin (id INTEGER PRIMARY KEY AUTOINCREMENT, deviceid TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
  expected TEXT NOT NULL DEFAULT '', actual TEXT NOT NULL DEFAULT '', expected_meta TEXT NOT NULL DEFAULT '', actual_meta TEXT NOT NULL DEFAULT '',
  expected_version TEXT NOT NULL DEFAULT '', actual_version TEXT NOT NULL DEFAULT '', optional INTEGER NOT NULL DEFAULT 1,
  attr_type TEXT NOT NULL DEFAULT 'string', metadata TEXT NOT NULL DEFAULT '', UNIQUE (deviceid, name))`);
const upsert = raw.prepare(
  `INSERT INTO device_twin (deviceid, name, description, expected, actual, expected_meta, actual_meta, expected_version, actual_version, optional, attr_type, metadata)
   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
   ON CONFLICT(deviceid, name) DO UPDATE SET description = excluded.description, expected = excluded.expected, actual = excluded.actual,
   expected_meta = excluded.expected_meta, actual_meta = excluded.actual_meta, expected_version = excluded.expected_version,
   actual_version = excluded.actual_version, optional = excluded.optional, attr_type = excluded.attr_type, metadata = excluded.metadata`,
);
/** `perTxn` rows per transaction: 1 = a commit per update; 500 = the EventBus slice the twin commits at most. */
const sqliteRun = (from: number, perTxn: number) => {
  const t0 = performance.now();
  for (let i = from; i < from + K; ) {
    raw.exec("BEGIN IMMEDIATE");
    for (const end = Math.min(from + K, i + perTxn); i < end; i++)
      upsert.run([ID, `p${i % PROPS}`, "", "", String(i), "", JSON.stringify({ timestamp: Date.now() }), "", JSON.stringify({ cloud: 0, edge: i }), 0, "int", ""]);
    raw.exec("COMMIT");
  }
  return K / ((performance.now() - t0) / 1000);
};
sqliteRun(0, 1); // warm-up
const sqliteRate = sqliteRun(K, 1);
const sqliteBatchedRate = sqliteRun(2 * K, 500);
raw.close();
rmSync(dir, { recursive: true, force: true });

// ==== Stage B: real cloudcore + edgecore, MQTT on the edge → DeviceStatus in the API ========
const daemons: Daemon[] = [];
const e2eLat: number[] = [];
let edgeRss = NaN;
let exitCode = 0;
try {
  const cloud = await startCloud();
  daemons.push(cloud.daemon);
  const edge = await startEdge({ node: NODE, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir) });
  daemons.push(edge.daemon);
  const client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  await eventually(async () => (await client.get(Resources.nodes, NODE)).metadata?.name === NODE, 15_000, "node registered");
  const names = Array.from({ length: B_DEVICES }, (_, d) => `bench-b${d}`);
  await client.create(Resources.devicemodels, model("bench-b-model", ["value"]));
  for (const n of names) await client.create(Resources.devices, device(n, "bench-b-model", ["value"]));
  const factory = new InformerFactory(client);
  const statuses = factory.informer(Resources.devicestatuses, { namespace: "default" });
  await statuses.waitForSync(10_000);
  const sent = new Map<string, number>(); // "<device>/<value>" → publish time
  const onStatus = (o: KubeObject) => {
    const twins = (o as { status?: { twins?: { propertyName: string; reported?: { value?: string } }[] } }).status?.twins ?? [];
    const v = twins.find((t) => t.propertyName === "value")?.reported?.value;
    const key = `${o.metadata?.name}/${v}`;
    const t = sent.get(key);
    if (t !== undefined) {
      e2eLat.push(performance.now() - t);
      sent.delete(key);
    }
  };
  statuses.on("add", onStatus);
  statuses.on("update", (_a, b) => onStatus(b));
  const mq = await connectAsync(`mqtt://${edge.endpoints.mqtt}`, { reconnectPeriod: 0 });
  // The edge must hold the devices before their updates count: ask each twin until it answers.
  const ready = new Set<string>();
  mq.on("message", (topic) => ready.add(topic.split("/")[4]!));
  await mq.subscribeAsync(names.map((n) => `${base(`default/${n}`)}/twin/get/result`));
  await eventually(() => {
    for (const n of names) if (!ready.has(n)) mq.publish(`${base(`default/${n}`)}/twin/get`, JSON.stringify({ event_id: "g", timestamp: Date.now() }));
    return ready.size === B_DEVICES;
  }, 15_000, "devices on the edge");
  await sleep(200);
  // One value per device per period, devices staggered; sample i goes to device i % B_DEVICES.
  let i = 0;
  const gap = B_PERIOD_MS / B_DEVICES;
  const t0 = performance.now();
  while (i < B_SAMPLES && performance.now() - t0 < 120_000) {
    const n = names[i % B_DEVICES]!;
    const value = String(1000 + i);
    sent.set(`${n}/${value}`, performance.now());
    mq.publish(`${base(`default/${n}`)}/twin/update`, JSON.stringify({ event_id: `b${i}`, timestamp: Date.now(), twin: { value: { actual: { value } } } }), { qos: 0 });
    i++;
    await sleep(Math.max(0, t0 + i * gap - performance.now()));
  }
  await until(() => sent.size === 0, 10_000, "values in the DeviceStatus").catch((e) => console.error(`${String(e)}; ${sent.size} values never seen`));
  edgeRss = Number(/VmRSS:\s+(\d+)/.exec(await Bun.file(`/proc/${edge.daemon.proc.pid}/status`).text())?.[1]) / 1024;
  await mq.endAsync();
  await factory.stop();
  client.close();
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  await Promise.all(daemons.map((d) => d.stop("SIGTERM")));
}
e2eLat.sort((a, b) => a - b);

// each raw stage at its best: aedes, and SQLite committing as the twin does (up to 500 rows per transaction)
const slowest = Math.min(aedesRate, sqliteBatchedRate);
const rows: Row[] = [
  { metric: "updates_per_s_vs_slowest_raw", baseline: slowest, outpost: twinRate, unit: "upd/s", higherIsBetter: true },
  { metric: "updates_per_s_vs_raw_aedes", baseline: aedesRate, outpost: twinRate, unit: "upd/s", higherIsBetter: true },
  { metric: "updates_per_s_vs_raw_sqlite_batched", baseline: sqliteBatchedRate, outpost: twinRate, unit: "upd/s", higherIsBetter: true },
  { metric: "updates_per_s_vs_raw_sqlite_txn_each", baseline: sqliteRate, outpost: twinRate, unit: "upd/s", higherIsBetter: true },
  { metric: "publish_to_document_p50", baseline: percentile(aedesLat, 50), outpost: percentile(twinLat, 50), unit: "ms" },
  { metric: "publish_to_document_p99", baseline: percentile(aedesLat, 99), outpost: percentile(twinLat, 99), unit: "ms" },
  { metric: "rss_after_stage_a", outpost: stageARss, unit: "MiB" },
  { metric: "publish_to_devicestatus_p50", outpost: percentile(e2eLat, 50), unit: "ms" },
  { metric: "publish_to_devicestatus_p99", outpost: percentile(e2eLat, 99), unit: "ms" },
  { metric: "devicestatus_samples", outpost: e2eLat.length, unit: "values" },
  { metric: "edgecore_rss_stage_b", outpost: edgeRss, unit: "MiB" },
];
printTable(
  `twin: A) ${K} MQTT twin updates (QoS 0, 10-property device) → twin in SQLite; latency paced at ${RATE}/s, baseline = raw aedes; ` +
    `B) real processes, ${B_DEVICES} devices × 1 value/s → DeviceStatus (DeviceController coalesces 500 ms per device by design)`,
  rows,
);
recordResults("twin", rows);
process.exit(exitCode);
