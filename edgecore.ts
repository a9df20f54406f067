#!/usr/bin/env bun
/** edgecore: EdgeHub, MetaManager and the rest of the edge node. */
import { configOrExit, dataFile, ensureDir, loggerFor, logOptions, onSignals, writeJsonAtomic } from "./lib/daemon.ts";
import { edgeOptions, startEdge, type EdgeConfig } from "./lib/edge/edgecore.ts";

const usage = `Usage:
  edgecore [flags]   run the edge node (the first start needs --cloudcore and --token)
  edgecore --help`;

const cfg = configOrExit<EdgeConfig>(usage, [...edgeOptions, ...logOptions], process.argv.slice(2));
const log = loggerFor(cfg, "edgecore");
ensureDir(cfg.dataDir);
let edge;
try {
  edge = await startEdge(cfg, log);
} catch (e) {
  log.error("edgecore failed to start", { err: e instanceof Error ? e.message : String(e) });
  process.exit(1);
}
writeJsonAtomic(dataFile(cfg.dataDir, "endpoints.json"), edge.endpoints);
// handlers before the announcement: a SIGTERM sent as soon as "ready" is read must find them in place
onSignals(log, edge.stop);
log.info("edgecore ready", { node: edge.nodeName, ...edge.endpoints });
