#!/usr/bin/env bun
/** cloudcore: CloudHub, the certificate service, metrics and (without a cluster) the embedded API. */
import "reflect-metadata";
import { configOrExit, dataFile, ensureDir, loggerFor, logOptions, onSignals, writeJsonAtomic } from "./lib/daemon.ts";
import { startCloud, cloudOptions, type CloudConfig } from "./lib/cloud/cloudcore.ts";
import { loadOrCreateCa } from "./lib/pki/ca.ts";
import { createToken } from "./lib/pki/token.ts";

const usage = `Usage:
  cloudcore [flags]                run cloudcore
  cloudcore token [--data-dir DIR] print a join token for edge nodes
  cloudcore --help`;

const argv = process.argv.slice(2);
if (argv[0] === "token") {
  const cfg = configOrExit<CloudConfig>(usage, [...cloudOptions, ...logOptions], argv.slice(1));
  const ca = await loadOrCreateCa(cfg.dataDir);
  process.stdout.write(createToken(ca, cfg.tokenTtl) + "\n");
  process.exit(0);
}

const cfg = configOrExit<CloudConfig>(usage, [...cloudOptions, ...logOptions], argv);
const log = loggerFor(cfg, "cloudcore");
ensureDir(cfg.dataDir);
let cloud;
try {
  cloud = await startCloud(cfg, log);
} catch (e) {
  log.error("cloudcore failed to start", { err: e instanceof Error ? e.message : String(e) });
  process.exit(1);
}
// handlers first: whoever reads "ready" may signal at once
onSignals(log, cloud.stop);
writeJsonAtomic(dataFile(cfg.dataDir, "endpoints.json"), cloud.endpoints);
log.info("cloudcore ready", cloud.endpoints);
