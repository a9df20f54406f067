/**
 * bench/hub.ts: messages/s and one-way latency through the real hub (mutual TLS, KubeEdge framing,
 * validation, routing) in both directions, next to a raw `ws` client/server pair over TLS with the
 * same certificates and JSON payloads, in the same process and run.
 *   bun bench/hub.ts [--quick]
 */
import "reflect-metadata";
import https from "node:https";
import { WebSocket, WebSocketServer } from "ws";
import { newMessage, type Message } from "../lib/message.ts";
import { loadEdgeCredentials } from "../lib/pki/edgecreds.ts";
import { joinNode, startTestCloud, startTestEdge } from "../tests/helpers/hubs.ts";
import { percentile, printTable, quick, recordResults, rssMiB, type Row } from "./lib.ts";

const N = quick ? 20_000 : 100_000;
const RATE = 2000; // messages/s while measuring latency (well under capacity: latency, not queueing)
const LAT_N = quick ? 2000 : 10_000;
const pad = { metadata: { name: "nginx", namespace: "default", uid: "0f6d6a57-3c55-4b8e-9d5b-9f4c4a1d2e3f" }, status: { phase: "Running", conditions: [{ type: "Ready", status: "True" }], containerStatuses: [{ name: "nginx", ready: true, restartCount: 0, state: { running: { startedAt: "2026-11-25T20:00:00Z" } } }] } };

interface Pipe {
  send(content: unknown): void;
  onReceive(fn: (content: unknown) => void): void;
}

async function throughput(pipe: Pipe): Promise<number> {
  let got = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  pipe.onReceive(() => {
    if (++got === N) done();
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i++) pipe.send(pad);
  await Promise.race([all, new Promise((_, rej) => setTimeout(() => rej(new Error(`only ${got}/${N} arrived in 120 s`)), 120_000))]);
  return N / ((performance.now() - t0) / 1000);
}

async function latency(pipe: Pipe): Promise<number[]> {
  const samples: number[] = [];
  pipe.onReceive((c) => samples.push(performance.now() - (c as { t: number }).t));
  const perTick = RATE / 1000;
  let sent = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      for (let i = 0; i < perTick && sent < LAT_N; i++, sent++) pipe.send({ ...pad, t: performance.now() });
      if (sent >= LAT_N) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  const end = Date.now() + 10_000;
  while (samples.length < LAT_N && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return samples.sort((a, b) => a - b);
}

/** Warms up, then runs throughput and latency on a pipe factory (fresh receive handler per phase). */
async function measure(make: () => Pipe) {
  await throughput(make()); // warm-up, so neither side is measured before the JIT has seen it
  const tp = await throughput(make());
  const lat = await latency(make());
  return { tp, p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

// ---- Outpost hub -------------------------------------------------------------------------
// The throughput phase queues all N messages in one synchronous loop (as the raw ws side does), so
// up to ~45 MB sit unsent at once: above the slow-consumer cut-off (4 × max frame = 32 MiB), which
// would take the burst for a node that does not read. Allow that much here.
const cloud = await startTestCloud({ record: false, maxBufferedBytes: 128 * 1024 * 1024 });
const dir = await joinNode(cloud, "bench-node");
const edge = await startTestEdge(`127.0.0.1:${cloud.hub.port}`, "bench-node", dir, {}, [{ name: "sink", group: "sink", start() {}, stop() {}, handle() {} }]);
while (!cloud.hub.isConnected("bench-node")) await new Promise((r) => setTimeout(r, 10));

let downHandler: (c: unknown) => void = () => {};
let upHandler: (c: unknown) => void = () => {};
edge.hub.on("message", (m: Message) => downHandler(m.content));
cloud.hub.on("message", (_n: string, m: Message) => upHandler(m.content));
const down = () => ({
  send: (c: unknown) => void cloud.hub.sendToNode("bench-node", newMessage({ source: "edgecontroller", group: "resource", operation: "update", resource: "default/pod/nginx" }, c)),
  onReceive: (fn: (c: unknown) => void) => void (downHandler = fn),
});
const up = () => ({
  send: (c: unknown) => edge.hub.send(newMessage({ source: "edged", group: "resource", operation: "update", resource: "default/podstatus/nginx" }, c)),
  onReceive: (fn: (c: unknown) => void) => void (upHandler = fn),
});
const hubDown = await measure(down);
const hubUp = await measure(up);
const hubRss = rssMiB();

// ---- raw ws pair (TLS, same certificates, same JSON) ---------------------------------------
const serverCert = await cloud.ca.issueServerCert({ ips: ["127.0.0.1"], dns: ["localhost"] });
const creds = loadEdgeCredentials(dir)!;
const server = https.createServer({ cert: serverCert.certPem, key: serverCert.keyPem });
const wss = new WebSocketServer({ server, perMessageDeflate: false });
await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
const serverSide = new Promise<WebSocket>((r) => wss.on("connection", (ws: WebSocket) => r(ws)));
const client = new WebSocket(`wss://127.0.0.1:${(server.address() as { port: number }).port}/`, { ca: creds.caPem, perMessageDeflate: false });
await new Promise((r) => client.on("open", r));
const srv = await serverSide;
let rawDownHandler: (c: unknown) => void = () => {};
let rawUpHandler: (c: unknown) => void = () => {};
client.on("message", (d: Buffer) => rawDownHandler((JSON.parse(String(d)) as Message).content));
srv.on("message", (d: Buffer) => rawUpHandler((JSON.parse(String(d)) as Message).content));
const wire = (c: unknown) => JSON.stringify(newMessage({ source: "x", group: "resource", operation: "update", resource: "default/pod/nginx" }, c)) + "\n";
const rawDown = await measure(() => ({ send: (c) => srv.send(wire(c)), onReceive: (fn) => void (rawDownHandler = fn) }));
const rawUp = await measure(() => ({ send: (c) => client.send(wire(c)), onReceive: (fn) => void (rawUpHandler = fn) }));

const rows: Row[] = [
  { metric: "cloud_to_edge_msgs_per_s", baseline: rawDown.tp, outpost: hubDown.tp, unit: "msg/s", higherIsBetter: true },
  { metric: "edge_to_cloud_msgs_per_s", baseline: rawUp.tp, outpost: hubUp.tp, unit: "msg/s", higherIsBetter: true },
  { metric: "cloud_to_edge_p50", baseline: rawDown.p50, outpost: hubDown.p50, unit: "ms" },
  { metric: "cloud_to_edge_p99", baseline: rawDown.p99, outpost: hubDown.p99, unit: "ms" },
  { metric: "edge_to_cloud_p50", baseline: rawUp.p50, outpost: hubUp.p50, unit: "ms" },
  { metric: "edge_to_cloud_p99", baseline: rawUp.p99, outpost: hubUp.p99, unit: "ms" },
  { metric: "rss_after_hub_runs", outpost: hubRss, unit: "MiB" },
];
printTable(`hub: ${N} msgs for throughput, ${LAT_N} at ${RATE}/s for latency, ~${JSON.stringify(pad).length} B payload, TLS on`, rows);
recordResults("hub", rows);

client.close();
server.close();
await edge.close();
await cloud.close();
process.exit(0);
