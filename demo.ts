/**
 * npm start: the demo on embedded defaults. Starts cloudcore (embedded API), joins one edgecore,
 * prints the kubectl line, and runs until Ctrl-C. State lives in ./.demo so a rerun resumes it.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { joinToken, startCloud, startEdge } from "./tests/helpers/daemons.ts";

const base = resolve(".demo");
const cloudDir = join(base, "cloudcore-data");
const edgeDir = join(base, "edgecore-data");
console.log("starting cloudcore ...");
const cloud = await startCloud({ dataDir: cloudDir });
const firstJoin = !existsSync(join(edgeDir, "join.json"));
console.log("starting edgecore ...");
const edge = await startEdge({ node: "demo-edge", dataDir: edgeDir, ...(firstJoin ? { cloud: cloud.endpoints, token: await joinToken(cloudDir) } : {}) });
await cloud.daemon.waitFor(/node connected/);
console.log(`
Outpost demo is running: cloudcore (hub ${cloud.endpoints.hub}) and edge node demo-edge.
  metrics:  curl -s http://${cloud.endpoints.metrics}/metrics | grep outpost_
${cloud.endpoints.api ? `  kubectl:  kubectl --kubeconfig ${join(cloudDir, "kubeconfig")} get nodes\n` : ""}Press Ctrl-C to stop.`);
const stop = async () => {
  await edge.daemon.stop();
  await cloud.daemon.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
await Promise.race([cloud.daemon.exited, edge.daemon.exited]);
console.error("a daemon exited; stopping the demo");
await stop();
