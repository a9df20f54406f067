/**
 * Issue 7: certificates expire and rotate end to end, real processes. cloudcore issues 12-second
 * node certificates (--cert-validity-seconds); the edge renews at 80 % of the lifetime with its
 * current certificate, re-dials with the new one (the old link closes only once the new one is up)
 * and is still connected after the first certificate expired. The expired certificate itself is
 * refused by the hub (401, reason="cert-expired").
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { cpSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { loadEdgeCredentials } from "../lib/pki/edgecreds.ts";
import { eventually, joinToken, metric, startCloud, startEdge, tmpDir, type Cloud, type Edge } from "./helpers/daemons.ts";
import { rawUpgrade } from "./helpers/hubs.ts";

const NODE = "edge-rotating";
let cloud: Cloud;
let edge: Edge;
const old = tmpDir("rotation-old");

const serialOf = (dir: string) => new X509Certificate(readFileSync(join(dir, "certs", "node.crt"))).serialNumber.toLowerCase();

beforeAll(async () => {
  cloud = await startCloud({ args: ["--cert-validity-seconds", "12"] });
  edge = await startEdge({ node: NODE, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: ["--reconnect-max-ms", "500"] });
  await edge.daemon.waitFor(/connected to cloud/);
  cpSync(join(edge.dataDir, "certs"), join(old, "certs"), { recursive: true });
});

afterAll(async () => {
  await edge?.daemon.stop("SIGKILL");
  await cloud?.daemon.stop("SIGKILL");
  for (const d of [edge?.dataDir, cloud?.dataDir, old]) if (d) rmSync(d, { recursive: true, force: true });
});

test("the edge renews before expiry, re-dials with the new certificate and stays connected; the expired one is refused", async () => {
  const first = loadEdgeCredentials(old)!;
  const firstSerial = serialOf(old);
  expect(first.notAfter.getTime() - Date.now()).toBeLessThan(13_000);
  const connectedWith = (serial: string) => cloud.daemon.output.some((l) => l.includes("node connected") && l.includes(NODE) && l.toLowerCase().includes(`certserial=${serial}`));
  expect(connectedWith(firstSerial)).toBe(true);

  await edge.daemon.waitFor(/node certificate renewed/, 20_000);
  const second = serialOf(edge.dataDir);
  expect(second).not.toBe(firstSerial);
  await eventually(() => connectedWith(second), 5000, "the hub sees the renewed certificate");
  const linesAfterRenewal = edge.daemon.output.length;

  // past the first certificate's end: still connected, never dropped
  const wait = first.notAfter.getTime() + 1500 - Date.now();
  if (wait > 0) await Bun.sleep(wait);
  expect(await metric(edge.endpoints.metrics!, "outpost_edgehub_connected")).toBe(1);
  expect(edge.daemon.output.slice(linesAfterRenewal).some((l) => /link to cloud lost|cloud refused/.test(l))).toBe(false);

  // the expired certificate: the TLS handshake completes, the upgrade is refused
  const { sock, first: reply } = await rawUpgrade(cloud.endpoints.hub, old, NODE);
  const answer = String(reply);
  sock.destroy();
  expect(answer).toStartWith("HTTP/1.1 401");
  expect(answer).toContain("expired");
  expect(await metric(cloud.endpoints.metrics, "outpost_cloudhub_refused_connections_total", { reason: "cert-expired" })).toBe(1);
  expect(await metric(edge.endpoints.metrics!, "outpost_edgehub_connected")).toBe(1);
}, 60_000);
