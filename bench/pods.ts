/**
 * bench/pods.ts (issue 4): pod start latency through real cloudcore + edgecore processes.
 * N pods bound to the edge node are created through the API client (10 in flight); each runs
 * `sh -c` that writes `<pid> <date +%s%N>` into a hostPath directory, then sleeps. Per pod:
 *  - create → process started: client call start → the timestamp the pod's shell wrote;
 *  - create → Running: client call start → an informer on pods sees phase Running.
 * Baseline, same run: the same `sh -c` spawned straight with child_process (10 in flight),
 * spawn call → the timestamp it wrote. All pods are deleted (grace 0) at the end.
 *   bun bench/pods.ts [--quick]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Resources } from "../lib/kube/client/index.ts";
import { tmpDir, type Daemon } from "../tests/helpers/daemons.ts";
import { pool, rssOf, startPodCluster, wall } from "./lib-pods.ts";
import { percentile, printTable, quick, recordResults, rssMiB, type Row } from "./lib.ts";

const N = quick ? 30 : 200;
const IN_FLIGHT = 10;
const NODE = "bench-pods";
const TAG = "outpost-bench-pod";
const WAIT_MS = quick ? 30_000 : 120_000;

const script = (file: string) => `echo "$$ $(date +%s%N)" > "${file}"; sleep 300 # ${TAG}`;
/** Pod commands expand `$(VAR)` and turn `$$` into `$`, as Kubernetes does: escape every `$`. */
const k8sEscape = (s: string) => s.replaceAll("$", () => "$$");
/** `<pid> <ns since epoch>` as the shell wrote it; undefined until complete. */
function readMarker(path: string): { pid: number; atMs: number } | undefined {
  if (!existsSync(path)) return undefined;
  const m = /^(\d+) (\d+)\s*$/.exec(readFileSync(path, "utf8"));
  return m ? { pid: Number(m[1]), atMs: Number(BigInt(m[2]!) / 1000n) / 1000 } : undefined;
}
/** Kills a pod process we know by pid, only if it is still one of ours. */
function killIfOurs(pid: number): void {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(TAG)) process.kill(-pid, "SIGKILL"); // its group: sh and its sleep
  } catch {
    /* gone */
  }
}

// ---- baseline: the same shell straight from child_process --------------------------------
const baseDir = tmpDir("bench-pods-raw");
const baseStart: number[] = [];
const children: ChildProcess[] = [];
await pool(N, IN_FLIGHT, async (i) => {
  const file = join(baseDir, `p${i}`);
  const t0 = wall();
  const child = spawn("sh", ["-c", script(file)], { stdio: "ignore", detached: true });
  children.push(child);
  await new Promise<void>((r) => child.once("spawn", () => r()));
  baseStart[i] = t0;
});
const baseLat: number[] = [];
const baseEnd = Date.now() + 10_000;
for (let i = 0; i < N; i++) {
  let m;
  while (!(m = readMarker(join(baseDir, `p${i}`))) && Date.now() < baseEnd) await Bun.sleep(5);
  if (m) baseLat.push(m.atMs - baseStart[i]!);
}
for (const c of children) if (c.pid) try { process.kill(-c.pid, "SIGKILL"); } catch { /* gone */ }
baseLat.sort((a, b) => a - b);

// ---- Outpost: cloudcore + edgecore, pods through the API ----------------------------------
const daemons: Daemon[] = [];
const markDir = tmpDir("bench-pods-mark");
let exitCode = 0;
try {
  const { cloud, edge, client, factory, pods, runningAt } = await startPodCluster(NODE, [], daemons);

  const createdAt = new Map<string, number>();
  const name = (i: number) => `bench-${i}`;
  const t0 = performance.now();
  await pool(N, IN_FLIGHT, async (i) => {
    const pod = {
      metadata: { name: name(i), namespace: "default", labels: { bench: "pods" } },
      spec: {
        nodeName: NODE,
        restartPolicy: "Never",
        terminationGracePeriodSeconds: 0,
        containers: [{ name: "main", image: "busybox", command: ["sh", "-c", k8sEscape(script(`$OUTPOST_MOUNT_MARK/${name(i)}`))], volumeMounts: [{ name: "mark", mountPath: "/mark" }] }],
        volumes: [{ name: "mark", hostPath: { path: markDir, type: "Directory" } }],
      },
    };
    const t = wall();
    await client.create(Resources.pods, pod);
    createdAt.set(name(i), t);
  });
  const createSeconds = (performance.now() - t0) / 1000;
  const deadline = Date.now() + WAIT_MS;
  while ((runningAt.size < N || readdirSync(markDir).length < N) && Date.now() < deadline) await Bun.sleep(20);
  const allRunningSeconds = (performance.now() - t0) / 1000;
  const edgeRss = rssOf(edge.daemon.proc.pid);
  const cloudRss = rssOf(cloud.daemon.proc.pid);

  const toProcess: number[] = [];
  const toRunning: number[] = [];
  const pids: number[] = [];
  for (let i = 0; i < N; i++) {
    const c = createdAt.get(name(i));
    if (c === undefined) continue;
    const m = readMarker(join(markDir, name(i)));
    if (m) {
      toProcess.push(m.atMs - c);
      pids.push(m.pid);
    }
    const r = runningAt.get(name(i));
    if (r !== undefined) toRunning.push(r - c);
  }
  toProcess.sort((a, b) => a - b);
  toRunning.sort((a, b) => a - b);
  if (toProcess.length < N || toRunning.length < N) {
    console.error(`only ${toProcess.length}/${N} processes and ${toRunning.length}/${N} Running within ${WAIT_MS} ms`);
    exitCode = 1;
  }

  // ---- clean up: delete every pod (grace 0) and wait until the edge has stopped them ----
  await pool(N, IN_FLIGHT, async (i) => {
    await client.delete(Resources.pods, name(i), { namespace: "default", gracePeriodSeconds: 0 }).catch(() => {});
  });
  const delDeadline = Date.now() + 30_000;
  while (pods.list("default").some((p) => p.metadata?.labels?.bench === "pods") && Date.now() < delDeadline) await Bun.sleep(50);
  const left = pods.list("default").filter((p) => p.metadata?.labels?.bench === "pods").length;
  if (left) console.error(`${left} pods still in the API after 30 s`);
  await factory.stop();
  client.close();

  const rows: Row[] = [
    { metric: "create_to_process_p50", baseline: percentile(baseLat, 50), outpost: percentile(toProcess, 50), unit: "ms" },
    { metric: "create_to_process_p99", baseline: percentile(baseLat, 99), outpost: percentile(toProcess, 99), unit: "ms" },
    { metric: "create_to_running_p50", baseline: percentile(baseLat, 50), outpost: percentile(toRunning, 50), unit: "ms" },
    { metric: "create_to_running_p99", baseline: percentile(baseLat, 99), outpost: percentile(toRunning, 99), unit: "ms" },
    { metric: "creates_per_s", outpost: N / createSeconds, unit: "pods/s", higherIsBetter: true },
    { metric: "all_running_after", outpost: allRunningSeconds, unit: "s" },
    { metric: `edgecore_rss_${N}_pods`, outpost: edgeRss, unit: "MiB" },
    { metric: `cloudcore_rss_${N}_pods`, outpost: cloudRss, unit: "MiB" },
    { metric: "bench_rss", outpost: rssMiB(), unit: "MiB" },
  ];
  printTable(`pods: ${N} pods (sh -c, ${IN_FLIGHT} creates in flight) on one edge node; baseline = the same sh spawned by child_process`, rows);
  recordResults("pods", rows);
  // Safety net: a pod process the edge did not stop (by its pid, only if it is still ours).
  await Bun.sleep(200);
  for (const pid of pids) killIfOurs(pid);
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  await Promise.all(daemons.map((d) => d.stop("SIGTERM")));
  rmSync(baseDir, { recursive: true, force: true });
  rmSync(markDir, { recursive: true, force: true });
}
process.exit(exitCode);
