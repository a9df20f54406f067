/**
 * bench/footprint.ts: the compiled edgecore's footprint (issue 8, item 1) next to a bare
 * `bun build --compile` hello world built and run in the same run:
 *  - RSS (VmRSS from /proc) of edgecore idle and connected to a real cloudcore (compiled), every
 *    module running and the four built-in mappers available (they load when a device needs them),
 *    beside the hello world idling at least as long: after a restart on stored credentials (an edge
 *    node's steady state; also the peak, VmHWM) and after the first start, which joined;
 *    RSS is sampled after IDLE_MS idle (edgecore releases the code pages only starting needed 2 s
 *    after it connects, and the pages it still uses fault back in over the next seconds), again
 *    after some activity (MQTT twin requests, MetaServer and metrics reads), and once more for a
 *    start with `--release-startup-pages false`, for comparison;
 *  - startup to connected with stored credentials: edgecore restarted N times on its data dir,
 *    spawn → the "connected to cloud" log line (p50);
 *  - binary sizes and the difference.
 * dist/ is rebuilt first unless it is newer than every source file.
 *   bun bench/footprint.ts [--quick]
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectAsync } from "mqtt";
import { joinToken, ROOT, spawnDaemon, startCloud, startEdge, type Daemon } from "../tests/helpers/daemons.ts";
import { percentile, printTable, quick, recordResults, type Row } from "./lib.ts";

const IDLE_MS = quick ? 5_000 : 60_000;
const SETTLE_MS = quick ? 3_000 : 15_000;
const RESTARTS = quick ? 3 : 10;
const MiB = 1024 * 1024;

/** Newest modification time among the files a build reads. */
function newestSource(): number {
  let newest = 0;
  const walk = (p: string) => {
    const st = statSync(p);
    if (st.isDirectory()) for (const f of readdirSync(p)) walk(join(p, f));
    else if (/\.(ts|proto|json)$/.test(p)) newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ["edgecore.ts", "cloudcore.ts", "lib", "mappers", "schemas", "package.json", "scripts/build.ts"]) walk(join(ROOT, p));
  return newest;
}

function builtAt(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

const dist = (name: string) => join(ROOT, "dist", name);
if (Math.min(builtAt(dist("edgecore")), builtAt(dist("cloudcore"))) <= newestSource()) {
  console.log("dist/ is older than the sources: npm run build");
  const r = spawnSync(process.execPath, [join(ROOT, "scripts/build.ts")], { cwd: ROOT, stdio: "inherit" });
  if (r.status !== 0) throw new Error(`build failed (exit ${r.status})`);
}

// the baseline: a hello world that stays up, compiled with the same flags as scripts/build.ts
const scratch = mkdtempSync(join(tmpdir(), "outpost-footprint-"));
writeFileSync(join(scratch, "hello.ts"), `console.log("hello world");\nsetInterval(() => {}, 1 << 30);\n`);
const hb = spawnSync(process.execPath, ["build", "--compile", "--minify", "--sourcemap=none", join(scratch, "hello.ts"), "--outfile", join(scratch, "hello")], { cwd: scratch, encoding: "utf8" });
if (hb.status !== 0) throw new Error(`hello world build failed: ${hb.stderr}`);

function vmRssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Some of what an edge node does besides idling: 1,000 twin requests over MQTT, MetaServer lists, metrics scrapes. */
async function activity(dataDir: string): Promise<void> {
  const ep = JSON.parse(readFileSync(join(dataDir, "endpoints.json"), "utf8")) as { mqtt: string; metaserver: string; metrics: string };
  const mq = await connectAsync(`mqtt://${ep.mqtt}`, { reconnectPeriod: 0 });
  let answers = 0;
  mq.on("message", () => void answers++);
  await mq.subscribeAsync("$hw/events/device/default/footprint-probe/twin/get/result");
  for (let i = 0; i < 1000; i++) mq.publish("$hw/events/device/default/footprint-probe/twin/get", JSON.stringify({ event_id: `f${i}`, timestamp: Date.now() }));
  const end = Date.now() + 10_000;
  while (answers < 1000 && Date.now() < end) await sleep(10);
  await mq.endAsync();
  for (let i = 0; i < 20; i++) await (await fetch(`http://${ep.metaserver}/api/v1/pods`)).text();
  for (let i = 0; i < 5; i++) await (await fetch(`http://${ep.metrics}/metrics`)).text();
}

const edgeArgs = (dir: string) => ["--data-dir", dir, "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--metaserver-listen", "127.0.0.1:0"];
const cloud = await startCloud({ flavour: "binary" });
let edge: Daemon | undefined;
let edgeDir: string | undefined;
const hello = spawn(join(scratch, "hello"), [], { stdio: "ignore" });
try {
  const token = await joinToken(cloud.dataDir, "binary");
  const first = await startEdge({ node: "footprint", cloud: cloud.endpoints, token, flavour: "binary" });
  edge = first.daemon;
  edgeDir = first.dataDir;
  await edge.waitFor(/connected to cloud/);
  await sleep(IDLE_MS);
  const joinedRss = vmRssMiB(edge.proc.pid!); // this start joined: the certificate tooling was loaded

  // restarts on the stored credentials and join record: no token, no cloud address
  const startups: number[] = [];
  for (let i = 0; i < RESTARTS; i++) {
    await edge.stop();
    const t0 = performance.now();
    edge = spawnDaemon("edgecore", edgeArgs(first.dataDir), "binary");
    await edge.waitFor(/connected to cloud/);
    startups.push(performance.now() - t0);
  }
  startups.sort((a, b) => a - b);
  // the steady state of an edge node: started on stored credentials, connected, idle
  await sleep(IDLE_MS); // the hello world has been idling longer
  const status = readFileSync(`/proc/${edge.proc.pid}/status`, "utf8");
  const edgeRss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) / 1024;
  const edgePeak = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) / 1024;
  const helloRss = vmRssMiB(hello.pid!);
  await activity(first.dataDir);
  await sleep(SETTLE_MS);
  const activeRss = vmRssMiB(edge.proc.pid!);
  // the same start without releasing the startup pages
  await edge.stop();
  edge = spawnDaemon("edgecore", [...edgeArgs(first.dataDir), "--release-startup-pages", "false"], "binary");
  await edge.waitFor(/connected to cloud/);
  await sleep(IDLE_MS);
  const keptRss = vmRssMiB(edge.proc.pid!);
  await activity(first.dataDir);
  await sleep(SETTLE_MS);
  const keptActiveRss = vmRssMiB(edge.proc.pid!);

  const edgeSize = statSync(dist("edgecore")).size / MiB;
  const helloSize = statSync(join(scratch, "hello")).size / MiB;
  const rows: Row[] = [
    { metric: "rss_idle_connected", baseline: helloRss, outpost: edgeRss, unit: "MiB" },
    { metric: "rss_over_hello_world", outpost: edgeRss - helloRss, unit: "MiB" },
    { metric: "rss_after_activity", baseline: helloRss, outpost: activeRss, unit: "MiB" },
    { metric: "rss_idle_pages_kept", baseline: helloRss, outpost: keptRss, unit: "MiB" },
    { metric: "rss_after_activity_pages_kept", baseline: helloRss, outpost: keptActiveRss, unit: "MiB" },
    { metric: "rss_peak", outpost: edgePeak, unit: "MiB" },
    { metric: "rss_idle_after_first_join", outpost: joinedRss, unit: "MiB" },
    { metric: "restart_to_connected_p50", outpost: percentile(startups, 50), unit: "ms" },
    { metric: "restart_to_connected_max", outpost: startups[startups.length - 1]!, unit: "ms" },
    { metric: "binary_size", baseline: helloSize, outpost: edgeSize, unit: "MiB" },
    { metric: "binary_over_hello_world", outpost: edgeSize - helloSize, unit: "MiB" },
  ];
  printTable(`footprint: compiled edgecore idle and connected (${IDLE_MS / 1000} s) vs a compiled hello world; ${RESTARTS} restarts with stored credentials`, rows);
  recordResults("footprint", rows);
} finally {
  hello.kill();
  await edge?.stop();
  await cloud.daemon.stop();
  for (const d of [scratch, cloud.dataDir, edgeDir]) if (d) rmSync(d, { recursive: true, force: true });
}
process.exit(0);
