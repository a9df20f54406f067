/** What the pod benches share: a cloudcore + edgecore pair, an API client, and when each pod went Running. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { InformerFactory, KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { eventually, joinToken, startCloud, startEdge, type Daemon } from "../tests/helpers/daemons.ts";

/** ms since the epoch, sub-ms: comparable with timestamps other processes write. */
export const wall = () => performance.timeOrigin + performance.now();

/** Runs fn(0..n-1) with at most `inFlight` calls at a time. */
export async function pool(n: number, inFlight: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** VmRSS of a process in MiB (NaN when it is gone). */
export function rssOf(pid: number | undefined): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
  } catch {
    return NaN;
  }
}

/**
 * Starts cloudcore and an edgecore for `node` (pushed onto `daemons` for the caller to stop), waits
 * for the node to be Ready, and records in `runningAt` when each pod of `default` is first Running.
 */
export async function startPodCluster(node: string, edgeArgs: string[], daemons: Daemon[]) {
  const cloud = await startCloud();
  daemons.push(cloud.daemon);
  const edge = await startEdge({ node, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: ["--node-status-interval", "2", ...edgeArgs] });
  daemons.push(edge.daemon);
  const client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  await eventually(async () => {
    const n = await client.get(Resources.nodes, node);
    return ((n as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
  }, 20_000, "node Ready");
  const factory = new InformerFactory(client);
  const pods = factory.informer(Resources.pods, { namespace: "default" });
  await pods.waitForSync(10_000);
  const runningAt = new Map<string, number>();
  const seen = (o: KubeObject) => {
    const name = o.metadata?.name ?? "";
    if ((o as { status?: { phase?: string } }).status?.phase === "Running" && !runningAt.has(name)) runningAt.set(name, wall());
  };
  pods.on("add", seen);
  pods.on("update", (_a, b) => seen(b));
  return { cloud, edge, client, factory, pods, runningAt };
}
