/**
 * bench/pods-cri.ts (issue 9): pod start latency with the cri runtime, through real cloudcore +
 * edgecore (`--runtime cri`) on a private containerd (tests/helpers/containerd.ts, busybox image
 * built and imported locally). N pods (`sleep 300`) are created through the API client, 10 in
 * flight; create → Running is the client call start → an informer seeing phase Running.
 * Baseline, same containerd: the same container started straight through the CRI runtime class
 * (sandbox + create + start per pod, 10 in flight), without cloud, hub or Edged.
 *   bun bench/pods-cri.ts [--quick]     (needs root, containerd, runc, busybox-static: skipped otherwise)
 */
import { join } from "node:path";
import { CriRuntime } from "../lib/edge/edged/cri-runtime.ts";
import { Resources } from "../lib/kube/client/index.ts";
import { BUSYBOX_IMAGE, containerdMissing, startContainerd, type Containerd } from "../tests/helpers/containerd.ts";
import { tmpDir, type Daemon } from "../tests/helpers/daemons.ts";
import { pool, rssOf, startPodCluster, wall } from "./lib-pods.ts";
import { percentile, printTable, quick, recordResults, rssMiB, type Row } from "./lib.ts";

const N = quick ? 10 : 50;
const IN_FLIGHT = 10;
const NODE = "bench-cri";
const WAIT_MS = quick ? 60_000 : 180_000;

const missing = containerdMissing();
if (missing) {
  console.log(`\npods-cri: SKIPPED (${missing}; .ci/run installs containerd, runc and busybox-static; run as root)`);
  process.exit(0);
}


let containerd: Containerd | undefined;
const daemons: Daemon[] = [];
let exitCode = 0;
try {
  containerd = await startContainerd();

  // ---- baseline: the same containers straight through the CRI runtime ------------------
  const rt = new CriRuntime({ endpoint: containerd.endpoint, nodeName: "bench-cri-direct" });
  await rt.recover();
  const baseDir = tmpDir("bench-cri-direct");
  const baseLat: number[] = [];
  await pool(N, IN_FLIGHT, async (i) => {
    const t0 = wall();
    const id = await rt.createContainer({
      podUid: `direct-${i}`,
      podName: `direct-${i}`,
      podNamespace: "default",
      name: "main",
      image: BUSYBOX_IMAGE,
      argv: ["sleep", "300"],
      env: {},
      workingDir: "",
      logPath: join(baseDir, `direct-${i}`, "main.log"),
      mounts: [],
    });
    await rt.startContainer(id);
    baseLat.push(wall() - t0);
  });
  await pool(N, IN_FLIGHT, (i) => rt.removePod(`direct-${i}`));
  await rt.close();
  baseLat.sort((a, b) => a - b);

  // ---- Outpost: cloudcore + edgecore --runtime cri, pods through the API ----------------
  const { cloud, edge, client, factory, pods, runningAt } = await startPodCluster(NODE, ["--runtime", "cri", "--cri-endpoint", containerd.endpoint], daemons);

  const createdAt = new Map<string, number>();
  const name = (i: number) => `cri-${i}`;
  const t0 = performance.now();
  await pool(N, IN_FLIGHT, async (i) => {
    const pod = {
      metadata: { name: name(i), namespace: "default", labels: { bench: "pods-cri" } },
      spec: { nodeName: NODE, restartPolicy: "Never", terminationGracePeriodSeconds: 0, containers: [{ name: "main", image: BUSYBOX_IMAGE, command: ["sleep", "300"] }] },
    };
    const t = wall();
    await client.create(Resources.pods, pod);
    createdAt.set(name(i), t);
  });
  const deadline = Date.now() + WAIT_MS;
  while (runningAt.size < N && Date.now() < deadline) await Bun.sleep(20);
  const allRunningSeconds = (performance.now() - t0) / 1000;
  const edgeRss = rssOf(edge.daemon.proc.pid);
  const toRunning: number[] = [];
  for (let i = 0; i < N; i++) {
    const c = createdAt.get(name(i));
    const r = runningAt.get(name(i));
    if (c !== undefined && r !== undefined) toRunning.push(r - c);
  }
  toRunning.sort((a, b) => a - b);
  if (toRunning.length < N) {
    console.error(`only ${toRunning.length}/${N} pods Running within ${WAIT_MS} ms`);
    exitCode = 1;
  }

  await pool(N, IN_FLIGHT, async (i) => {
    await client.delete(Resources.pods, name(i), { namespace: "default", gracePeriodSeconds: 0 }).catch(() => {});
  });
  const delDeadline = Date.now() + 60_000;
  while (pods.list("default").some((p) => p.metadata?.labels?.bench === "pods-cri") && Date.now() < delDeadline) await Bun.sleep(50);
  await factory.stop();
  client.close();

  const rows: Row[] = [
    { metric: "create_to_running_p50", baseline: percentile(baseLat, 50), outpost: percentile(toRunning, 50), unit: "ms" },
    { metric: "create_to_running_p99", baseline: percentile(baseLat, 99), outpost: percentile(toRunning, 99), unit: "ms" },
    { metric: "all_running_after", outpost: allRunningSeconds, unit: "s" },
    { metric: `edgecore_rss_${N}_pods`, outpost: edgeRss, unit: "MiB" },
    { metric: "bench_rss", outpost: rssMiB(), unit: "MiB" },
  ];
  printTable(`pods-cri: ${N} pods (busybox sleep, ${IN_FLIGHT} creates in flight) on containerd ${containerd.snapshotter}; baseline = sandbox+create+start through CriRuntime directly`, rows);
  recordResults("pods-cri", rows);
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  await Promise.all(daemons.map((d) => d.stop("SIGTERM")));
  await containerd?.stop();
}
process.exit(exitCode);
