/** CI smoke run: the compiled binaries start, join on loopback, exchange keepalives and stop on SIGTERM. */
import { eventually, joinToken, metric, startCloud, startEdge } from "../helpers/daemons.ts";

const cloud = await startCloud({ flavour: "binary" });
const token = await joinToken(cloud.dataDir, "binary");
const edge = await startEdge({ node: "smoke-node", cloud: cloud.endpoints, token, flavour: "binary" });
try {
  await eventually(async () => (await metric(cloud.endpoints.metrics, "outpost_cloudhub_connected_nodes")) === 1, 10_000, "edge connected");
  await eventually(async () => ((await metric(cloud.endpoints.metrics, "outpost_cloudhub_messages_total", { direction: "in" })) ?? 0) >= 1, 10_000, "keepalive received");
  const codes = [await edge.daemon.stop(), await cloud.daemon.stop()];
  if (codes.some((c) => c !== 0)) throw new Error(`exit codes ${codes}`);
  console.log("binaries joined and stopped cleanly");
} catch (e) {
  console.error(String(e));
  console.error(cloud.daemon.output.join("\n"), "\n", edge.daemon.output.join("\n"));
  await edge.daemon.stop("SIGKILL");
  await cloud.daemon.stop("SIGKILL");
  process.exit(1);
}
