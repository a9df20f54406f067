/** cloudcore and edgecore as real child processes: join, restarts, refusals, signals, binaries. */
import "reflect-metadata";
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadOrCreateCa } from "../lib/pki/ca.ts";
import { createToken } from "../lib/pki/token.ts";
import { spawnSync } from "node:child_process";
import { ROOT, eventually, joinToken, metric, requireTool, spawnDaemon, startCloud, startEdge, tmpDir, type Daemon } from "./helpers/daemons.ts";

const running: Daemon[] = [];
const track = <T extends { daemon: Daemon }>(x: T) => (running.push(x.daemon), x);
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
});

describe("cloudcore and edgecore processes", () => {
  test("--help lists the contract's flags with defaults; bad flags name the field", async () => {
    const cloud = spawnDaemon("cloudcore", ["--help"]);
    expect(await cloud.exited).toBe(0);
    const text = cloud.output.join("\n");
    for (const f of ["--config", "--data-dir", "--kubeconfig", "--api-listen", "--hub-listen", "--https-listen", "--metrics-listen"]) expect(text).toContain(f);
    expect(text).toContain("(default 0.0.0.0:10000)");
    const edge = spawnDaemon("edgecore", ["--help"]);
    expect(await edge.exited).toBe(0);
    for (const f of ["--cloudcore", "--token", "--node-name", "--mqtt", "--mqtt-listen", "--metaserver-listen", "--metrics-listen", "--runtime", "--mapper"]) expect(edge.output.join("\n")).toContain(f);
    const bad = spawnDaemon("cloudcore", ["--hub-listen", "nowhere"]);
    expect(await bad.exited).toBe(2);
    expect(bad.output.join("\n")).toContain("--hub-listen: must be HOST:PORT");
  });

  test("join, keepalive, restart of cloudcore on the same ports (back within 2 s), restart of edgecore without token", async () => {
    const cloud = track(await startCloud());
    expect(cloud.endpoints.hub).toMatch(/^127\.0\.0\.1:\d+$/);
    const token = await joinToken(cloud.dataDir);
    expect(token.split(".")).toHaveLength(4);
    const edge = track(await startEdge({ node: "node-1", cloud: cloud.endpoints, token }));
    await eventually(async () => (await metric(cloud.endpoints.metrics, "outpost_cloudhub_connected_nodes")) === 1, 10_000, "node connected");
    await eventually(async () => ((await metric(cloud.endpoints.metrics, "outpost_cloudhub_messages_total", { direction: "in" })) ?? 0) >= 1, 10_000, "keepalive");
    expect(existsSync(join(edge.dataDir, "certs", "node.crt"))).toBe(true);
    expect(JSON.parse(readFileSync(join(edge.dataDir, "endpoints.json"), "utf8")).metrics).toMatch(/^127\.0\.0\.1:\d+$/);

    // cloudcore restarts on the same ports
    expect(await cloud.daemon.stop()).toBe(0);
    // listen before the new cloud starts: the edge may be back before startCloud() returns
    let backAt = 0;
    const back = edge.daemon.waitForNew(/connected to cloud/, 10_000).then(() => (backAt = Date.now()));
    const ports = { hub: cloud.endpoints.hub, https: cloud.endpoints.https, metrics: cloud.endpoints.metrics };
    const cloud2 = track(await startCloud({ dataDir: cloud.dataDir, ports }));
    const ready = Date.now();
    await back;
    expect(backAt - ready).toBeLessThan(2000);
    await eventually(async () => (await metric(cloud2.endpoints.metrics, "outpost_cloudhub_connected_nodes")) === 1, 5000, "node back");

    // edgecore restarts with neither token nor --cloudcore: stored certificate and join record
    expect(await edge.daemon.stop()).toBe(0);
    const edge2 = track(await startEdge({ node: "node-1", dataDir: edge.dataDir }));
    await edge2.daemon.waitFor(/connected to cloud/, 10_000);
    expect(edge2.daemon.output.join("\n")).not.toContain("joining cloud");
    expect(await edge2.daemon.stop()).toBe(0);
    expect(await cloud2.daemon.stop()).toBe(0);
  });

  test("wrong, expired and foreign tokens are refused with a clear error; the cloud serves on", async () => {
    const cloud = track(await startCloud());
    const ca = await loadOrCreateCa(cloud.dataDir);
    const good = createToken(ca);
    const [hash, ...jwt] = good.split(".");
    const cases: [string, string, RegExp][] = [
      ["tampered", `${hash}.${jwt[0]}.${jwt[1]}.${"A".repeat(43)}`, /401/],
      ["expired", createToken(ca, -60), /401/],
      ["other CA", `${"0".repeat(64)}.${jwt.join(".")}`, /CA|hash|pin/i],
      ["garbage", "not-a-token", /token/i],
    ];
    for (const [what, token, why] of cases) {
      const edge = await startEdge({ node: `bad-${what.replace(/ /g, "-")}`, cloud: cloud.endpoints, token, waitReady: false });
      running.push(edge.daemon);
      expect(await edge.daemon.exited).toBe(1);
      expect(edge.daemon.output.join("\n")).toMatch(why);
      expect(existsSync(join(edge.dataDir, "certs", "node.crt"))).toBe(false);
    }
    const lines = cloud.daemon.output.join("\n");
    expect(lines).toMatch(/expired/);
    const ok = track(await startEdge({ node: "good-node", cloud: cloud.endpoints, token: good }));
    await ok.daemon.waitFor(/connected to cloud/);
    await ok.daemon.stop();
    await cloud.daemon.stop();
  });

  test("SIGTERM stops both within 5 s with exit 0", async () => {
    const cloud = track(await startCloud());
    const edge = track(await startEdge({ node: "sig-node", cloud: cloud.endpoints, token: await joinToken(cloud.dataDir) }));
    await edge.daemon.waitFor(/connected to cloud/);
    const t = Date.now();
    expect(await edge.daemon.stop("SIGTERM")).toBe(0);
    expect(await cloud.daemon.stop("SIGINT")).toBe(0);
    expect(Date.now() - t).toBeLessThan(5000);
  });

  const haveBinaries = existsSync(join(ROOT, "dist", "cloudcore")) && existsSync(join(ROOT, "dist", "edgecore"));
  if (!haveBinaries && process.env.CI === "true") throw new Error("dist/ binaries are required in CI (npm run build runs before npm test)");
  if (!haveBinaries) console.warn("\n!!! SKIPPING compiled-binary test: run `npm run build` first !!!\n");
  test.skipIf(!haveBinaries)("the compiled binaries join and exchange messages", async () => {
    const cloud = track(await startCloud({ flavour: "binary" }));
    const token = await joinToken(cloud.dataDir, "binary");
    const edge = track(await startEdge({ node: "bin-node", cloud: cloud.endpoints, token, flavour: "binary", dataDir: tmpDir("bin-edge") }));
    await eventually(async () => (await metric(cloud.endpoints.metrics, "outpost_cloudhub_connected_nodes")) === 1, 10_000, "binary edge connected");
    await eventually(async () => ((await metric(cloud.endpoints.metrics, "outpost_cloudhub_messages_total", { direction: "in" })) ?? 0) >= 1, 10_000, "keepalive");
    // the binary carries the device CRDs (no schemas/ beside it) and kubectl sees them
    if (requireTool("/usr/bin/kubectl", "kubectl drives the embedded API")) {
      const r = spawnSync("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), "api-resources", "--api-group", "devices.kubeedge.io", "-o", "name"], { encoding: "utf8", env: { ...process.env, HOME: tmpDir("kubectl-home") } });
      expect(r.stderr).toBe("");
      expect(r.stdout.split("\n").filter(Boolean).sort()).toEqual(["devicemodels.devices.kubeedge.io", "devices.devices.kubeedge.io", "devicestatuses.devices.kubeedge.io"]);
    }
    expect(await edge.daemon.stop()).toBe(0);
    expect(await cloud.daemon.stop()).toBe(0);
  });
});
