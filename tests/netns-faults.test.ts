/**
 * Issue 7, faults on a real link. cloudcore runs in the root network namespace, edgecore in a
 * namespace of its own joined by a veth pair (tests/helpers/netns.ts); the edge dials the hub
 * across the veth through a TCP proxy that only adds delay when told to. While a device app inside
 * the edge's namespace streams numbered twin values into the edge's broker and pods are created and
 * deleted in the API, the test
 *   - cuts the link 5 times (`ip link set <veth> down`, then up),
 *   - kills edgecore with SIGKILL 5 times while the link is down (5 more cuts), and cloudcore 5 times,
 *   - drops 30 % of the packets both ways for a while (iptables `statistic` in the namespace),
 *   - delays every byte on the hub link by 200 ms each way for a while (the proxy),
 * counts what was sent and acknowledged (twin values: `twin/update/result`, published after the edge
 * stored the twin; pods: the API's answer to create/delete) and what arrived, and asserts that
 * nothing acknowledged was lost and the final states match. Around each fault the stream pauses on
 * its newest acknowledged value, so that exact value must reach DeviceStatus (a newer one cannot
 * hide its loss). It prints one `[netns-faults]` summary line.
 *
 * Needs root and `ip netns` for the real link. Without them (or with OUTPOST_FAULT_LINK=proxy) it
 * says so loudly and runs the same scenario with everything in one namespace, the link cut by
 * freezing and then resetting the TCP proxy, and no packet-loss phase. As root under CI=true, a
 * broken `ip netns` or a missing iptables fails the test.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { Daemon, ROOT, eventually, freePort, joinToken, metric, run, startCloud, tmpDir, type Cloud } from "./helpers/daemons.ts";
import { createNetnsLink, iptablesPath, netnsUnavailable, type NetnsLink } from "./helpers/netns.ts";
import { startProxy, type Proxy } from "./helpers/proxy.ts";

const CI = process.env.CI === "true";
const isRoot = process.getuid?.() === 0;
const forceProxy = process.env.OUTPOST_FAULT_LINK === "proxy";
const unavailable = forceProxy ? "OUTPOST_FAULT_LINK=proxy" : netnsUnavailable();
if (unavailable && isRoot && CI && !forceProxy) throw new Error(`ip netns must work in CI when running as root: ${unavailable}`);
/** netns: edgecore in its own namespace, the veth is cut; proxy: one namespace, the proxy is frozen and reset. */
const MODE: "netns" | "proxy" = unavailable ? "proxy" : "netns";
if (unavailable)
  console.warn(`\n!!! tests/netns-faults.test.ts: no network namespace (${unavailable}). The link is cut by freezing and resetting a TCP proxy instead of taking a veth down, and the packet-loss phase is SKIPPED. Run as root for the real link. !!!\n`);
const haveIptables = MODE === "netns" && iptablesPath() !== null;
if (MODE === "netns" && !haveIptables) {
  if (CI) throw new Error("iptables is required in CI for the packet-loss phase (apt-get install iptables)");
  console.warn("\n!!! SKIPPING the packet-loss phase of tests/netns-faults.test.ts: iptables not found. Run .ci/run to install it. !!!\n");
}

const NODE = "edge-netns";
const MARK = `outpost-netns-${process.pid}`;
const CUTS = 5;
const KILLS = 5;
const LOSS = 0.3;
const LOSS_MS = 8000;
const DELAY_MS = 200;
const DELAY_PHASE_MS = 6000;
const fast = ["--restart-backoff-ms", "300", "--ping-interval-ms", "300", "--pong-timeout-ms", "700", "--reconnect-max-ms", "1000", "--upstream-retry-ms", "1000", "--node-status-interval", "2"];

/** Where the edge runs and how its link to the cloud is cut. */
interface FaultLink {
  /** argv prefix that runs a command where the edge runs (empty: here). */
  exec: string[];
  /** Address the cloud's side listens on for the edge, and the edge's own address. */
  hostIp: string;
  nsIp: string;
  down(): Promise<void>;
  up(): Promise<void>;
  destroy(): Promise<void>;
}
let link: FaultLink | undefined;
let veth: NetnsLink | undefined;
let mqttPort = 1883; // netns: inside the edge's own namespace nothing else listens there
let cloud: Cloud | undefined;
let proxy: Proxy | undefined;
let edge: Daemon | undefined;
let streamer: Daemon | undefined;
let client: KubeClient;
let edgeMetrics = "";
const edges: Daemon[] = [];
/** Dropped-from-queue counters of daemons that were killed (their metrics die with them). */
let droppedBeforeKills = 0;

type Pod = KubeObject & { status?: { phase?: string } };

/** Runs a command inside the edge's namespace as a Daemon (`ip netns exec` execs, so the pid is the command's). */
function inNs(name: string, args: string[]): Daemon {
  const argv = [...link!.exec, ...args];
  const proc = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] });
  return new Daemon(proc, name);
}

const pgrep = async (marker: string) => (await run("pgrep", ["-f", marker])).stdout.split("\n").filter(Boolean).length;

function podSpec(name: string): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "default" },
    spec: {
      nodeName: NODE,
      terminationGracePeriodSeconds: 1,
      containers: [{ name: "main", image: "busybox", command: ["sh", "-c", `sleep 600; echo done # ${MARK}-${name}-`] }],
    },
  } as KubeObject;
}

async function reported(): Promise<number> {
  try {
    const ds = await client.get<KubeObject & { status?: { twins?: { propertyName: string; reported?: { value: string } }[] } }>(Resources.devicestatuses, "meter", "default");
    return Number(ds.status?.twins?.find((t) => t.propertyName === "value")?.reported?.value ?? 0);
  } catch {
    return 0;
  }
}

/** The highest value the edge acknowledged so far (the streamer's `ack N` lines). */
function lastAcked(): number {
  let max = 0;
  for (const l of streamer!.output) {
    const m = /^ack (\d+)$/.exec(l);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max;
}

// what the test did and saw, for the assertions and the summary line
const created: string[] = [];
const deleted: string[] = [];
const checkpoints: { fault: string; acked: number }[] = [];
let seq = 0;

async function createPod(): Promise<void> {
  const name = `np-${seq++}`;
  await client.create(Resources.pods, podSpec(name), { namespace: "default" });
  created.push(name);
}

/** Deletes the oldest pod still alive (the API accepted the delete: the edge must finish it). */
async function deleteOnePod(): Promise<void> {
  const victim = created.find((n) => !deleted.includes(n));
  if (!victim) return;
  await client.delete(Resources.pods, victim, { namespace: "default" });
  deleted.push(victim);
}

/** Stops the stream and returns the newest value the edge acknowledged (nothing newer is sent until resume). */
async function pauseStream(): Promise<number> {
  const line = streamer!.waitForNew(/^paused /, 10_000);
  streamer!.proc.stdin!.write("pause\n");
  return Number(/lastAcked=(\d+)/.exec(await line)![1]);
}
const resumeStream = () => void streamer!.proc.stdin!.write("resume\n");

/**
 * The stream is paused and `acked` is its newest acknowledged value: after the fault that value, and
 * no other, must be DeviceStatus's reported value (nothing newer was sent, so nothing can hide a loss).
 */
async function checkpoint(fault: string, acked: number): Promise<void> {
  await eventually(async () => (await reported()) === acked, 30_000, `${fault}: value ${acked}, acknowledged by the edge before the fault, in DeviceStatus (last seen ${await reported()})`);
  checkpoints.push({ fault, acked });
  resumeStream();
}

async function startEdge(first: { token: string; https: string } | null): Promise<void> {
  const dataDir = first ? tmpDir("netns-edge") : edgeDataDir;
  edgeDataDir = dataDir;
  const args = [process.execPath, join(ROOT, "edgecore.ts"), "--data-dir", dataDir, "--node-name", NODE, "--metrics-listen", `${link!.nsIp}:0`, "--mqtt-listen", `127.0.0.1:${mqttPort}`, "--metaserver-listen", "127.0.0.1:0", ...fast];
  if (first) args.push("--cloudcore", `${link!.hostIp}:${proxy!.port}`, "--cert-service", first.https, "--token", first.token);
  edge = inNs("edgecore", args);
  edges.push(edge);
  await edge.waitFor(/edgecore ready/, 20_000);
  edgeMetrics = JSON.parse(readFileSync(join(dataDir, "endpoints.json"), "utf8")).metrics;
  await edge.waitFor(/connected to cloud/, 20_000);
}
let edgeDataDir = "";

async function restartCloud(): Promise<void> {
  const e = cloud!.endpoints;
  cloud = await startCloud({ dataDir: cloud!.dataDir, ports: { hub: e.hub, https: e.https, metrics: e.metrics, api: e.api?.replace(/^https?:\/\//, "") }, args: cloudArgs() });
  client.close();
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
}

const cloudArgs = () => [...(MODE === "netns" ? ["--advertise-address", link!.hostIp] : []), "--outbox-retry-ms", "1000"];

beforeAll(async () => {
  if (MODE === "netns") {
    const v = (veth = await createNetnsLink());
    link = { exec: v.exec, hostIp: v.hostIp, nsIp: v.nsIp, down: () => v.down(), up: () => v.up(), destroy: () => v.destroy() };
  } else {
    mqttPort = await freePort();
    link = {
      exec: [],
      hostIp: "127.0.0.1",
      nsIp: "127.0.0.1",
      down: async () => proxy!.freeze(),
      up: async () => (proxy!.cut(), proxy!.thaw()),
      destroy: async () => {},
    };
  }
  cloud = await startCloud({ ports: { https: `${link.hostIp}:0` }, args: cloudArgs() });
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  // the edge dials the hub through the proxy: across the veth (netns), or on loopback (proxy mode)
  proxy = await startProxy(Number(cloud.endpoints.hub.split(":").pop()), "127.0.0.1", link.hostIp);
  await startEdge({ token: await joinToken(cloud.dataDir), https: cloud.endpoints.https });
  await client.create(Resources.devicemodels, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "meter-model", namespace: "default" }, spec: { properties: [{ name: "value", type: "STRING", accessMode: "ReadOnly" }] } } as KubeObject, { namespace: "default" });
  await client.create(Resources.devices, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name: "meter", namespace: "default" }, spec: { deviceModelRef: { name: "meter-model" }, nodeName: NODE, properties: [{ name: "value" }] } } as KubeObject, { namespace: "default" });
}, 60_000);

afterAll(async () => {
  try {
    await Promise.all([streamer?.stop("SIGKILL"), edge?.stop("SIGKILL"), cloud?.daemon.stop("SIGKILL")]);
    await proxy?.close();
    client?.close();
    await run("pkill", ["-f", MARK]);
  } finally {
    await link?.destroy();
    for (const d of [cloud?.dataDir, edgeDataDir]) if (d) rmSync(d, { recursive: true, force: true });
  }
});

describe(MODE === "netns" ? "faults on a real link (network namespace + veth)" : "faults on a TCP-proxy link (no network namespace here)", () => {
  test(`${MODE === "netns" ? "veth" : "proxy"} link cut ×${CUTS}, kill -9 edgecore ×${KILLS}, kill -9 cloudcore ×${KILLS}, ${LOSS * 100} % loss, ${DELAY_MS} ms delay while a device streams and pods come and go: nothing acknowledged lost`, async () => {
    // the device reaches the edge: its twin starts acknowledging
    streamer = inNs("streamer", [process.execPath, join(ROOT, "tests/helpers/twin-streamer.ts"), String(mqttPort), "default/meter", "value", "40", "5000"]);
    await eventually(() => lastAcked() > 0, 20_000, "the first twin value acknowledged by the edge");
    for (let i = 0; i < 3; i++) await createPod();

    // link cuts: values the edge acknowledges while the link is down exist only on the edge
    for (let round = 0; round < CUTS; round++) {
      const lost = edge!.waitForNew(/link to cloud lost|no pong/, 10_000);
      await link!.down();
      await lost;
      await createPod();
      await createPod();
      await deleteOnePod();
      await Bun.sleep(300);
      const acked = await pauseStream();
      const back = edge!.waitForNew(/connected to cloud/, 30_000);
      await link!.up();
      await back;
      await checkpoint(`link cut ${round + 1}`, acked);
    }

    // kill -9 edgecore while the link is down: what it acknowledged is only in edgecore.db
    for (let round = 0; round < KILLS; round++) {
      droppedBeforeKills += (await metric(edgeMetrics, "outpost_edge_upstream_dropped_total")) ?? 0;
      const lost = edge!.waitForNew(/link to cloud lost|no pong/, 10_000);
      await link!.down();
      await lost;
      await Bun.sleep(300);
      const acked = await pauseStream();
      await edge!.stop("SIGKILL");
      await createPod();
      await deleteOnePod();
      await link!.up();
      await startEdge(null);
      await checkpoint(`kill -9 edgecore ${round + 1}`, acked);
    }

    // kill -9 cloudcore right after the API acknowledged pod changes; the edge goes on acknowledging
    // twin values while cloudcore is dead, and they must reach the API once it is back
    for (let round = 0; round < KILLS; round++) {
      droppedBeforeKills += (await metric(cloud!.endpoints.metrics, "outpost_cloud_outbox_dropped_total")) ?? 0;
      await createPod();
      await deleteOnePod();
      const back = edge!.waitForNew(/connected to cloud/, 30_000);
      await cloud!.daemon.stop("SIGKILL");
      await Bun.sleep(300);
      const acked = await pauseStream();
      await restartCloud();
      await back;
      await checkpoint(`kill -9 cloudcore ${round + 1}`, acked);
    }

    let lossDropped = 0;
    let lossReconnects = 0;
    let lossPackets = 0;
    if (haveIptables) {
      const packets0 = veth!.packets();
      const before = edge!.output.filter((l) => /connected to cloud/.test(l)).length;
      await veth!.setLoss(LOSS);
      let acked: number;
      try {
        const end = Date.now() + LOSS_MS;
        await createPod();
        await deleteOnePod();
        await createPod();
        await Bun.sleep(Math.max(0, end - Date.now()));
        acked = await pauseStream();
        lossDropped = await veth!.dropped();
        lossPackets = veth!.packets() - packets0;
        lossReconnects = edge!.output.filter((l) => /connected to cloud/.test(l)).length - before;
      } finally {
        await veth!.setLoss(0);
      }
      await checkpoint(`${LOSS * 100} % loss`, acked);
    }

    proxy!.setDelay(DELAY_MS);
    try {
      const end = Date.now() + DELAY_PHASE_MS;
      await createPod();
      await deleteOnePod();
      await createPod();
      await Bun.sleep(Math.max(0, end - Date.now()));
      await checkpoint(`${DELAY_MS} ms delay`, await pauseStream());
    } finally {
      proxy!.setDelay(0);
    }

    // the stream ends on a healthy link: its last value must be acknowledged and be the API's
    streamer!.proc.stdin!.write("stop\n");
    const summary = await streamer!.waitFor(/^summary /, 10_000);
    const [, sent, acked, last, lastSent, errors] = /sent=(\d+) acked=(\d+) lastAcked=(\d+) lastSent=(\d+) errors=(\d+)/.exec(summary)!.map(Number) as number[];
    expect(errors).toBe(0);
    expect(last).toBe(lastSent!);
    await eventually(async () => (await reported()) === last, 30_000, `the last acknowledged value (${last}) in DeviceStatus`);

    // pods: every live one Running in the API and running once on the edge; every deleted one gone from both
    const alive = created.filter((n) => !deleted.includes(n));
    await eventually(async () => {
      for (const n of alive) if ((await pgrep(`${MARK}-${n}-`)) !== 1) return false;
      for (const n of deleted) if ((await pgrep(`${MARK}-${n}-`)) !== 0) return false;
      return true;
    }, 30_000, `${alive.length} pods running once and ${deleted.length} stopped on the edge`);
    await eventually(async () => {
      for (const n of alive) if ((await client.get<Pod>(Resources.pods, n, "default")).status?.phase !== "Running") return false;
      return true;
    }, 30_000, `${alive.length} pods Running in the API`);
    const gone = async (n: string) => client.get(Resources.pods, n, "default").then(() => false, (e: { code?: number }) => e.code === 404);
    await eventually(async () => {
      for (const n of deleted) if (!(await gone(n))) return false;
      return true;
    }, 30_000, `${deleted.length} deleted pods finalised in the API`);
    const listed = (await client.list<Pod>(Resources.pods, { namespace: "default" })).items.map((p) => p.metadata?.name).sort();
    expect(listed).toEqual([...alive].sort());

    // nothing left in either queue, nothing dropped from them
    await eventually(async () => (await metric(edgeMetrics, "outpost_edge_upstream_pending")) === 0, 15_000, "edge upstream queue drained");
    await eventually(async () => (await metric(cloud!.endpoints.metrics, "outpost_cloud_outbox_pending", { node: NODE })) === 0, 15_000, "cloud outbox drained");
    expect((await metric(edgeMetrics, "outpost_edge_upstream_dropped_total")) ?? 0).toBe(0);
    expect((await metric(cloud!.endpoints.metrics, "outpost_cloud_outbox_dropped_total")) ?? 0).toBe(0);
    expect(droppedBeforeKills).toBe(0);
    const reconnects = edges.reduce((n, d) => n + d.output.filter((l) => /connected to cloud/.test(l)).length, 0);
    expect(checkpoints.length).toBe(CUTS + 2 * KILLS + (haveIptables ? 1 : 0) + 1);

    console.log(
      `[netns-faults] faults: link cuts=${CUTS + KILLS} (${MODE === "netns" ? "veth down/up" : "proxy freeze/reset"}; ${KILLS} of them around the edgecore kills), kill -9 edgecore=${KILLS}, kill -9 cloudcore=${KILLS}, ` +
        `loss=${haveIptables ? `${LOSS * 100}%/${LOSS_MS}ms (${lossDropped} packets dropped, ${lossPackets} crossed the veth, ${lossReconnects} reconnects)` : "SKIPPED"}, delay=${DELAY_MS}ms/${DELAY_PHASE_MS}ms; ` +
        `edge connects=${reconnects}; ` +
        `twin values: sent=${sent} acked=${acked} unacked=${sent! - acked!} lastAcked=${last} inAPI=${await reported()} lost=0; ` +
        `checkpoints (newest value acked before the fault = DeviceStatus after it): ${checkpoints.length}/${checkpoints.length}; ` +
        `pods: created=${created.length} deleted=${deleted.length} running=${alive.length} finalised=${deleted.length} lost=0`,
    );
  }, 150_000);
});
