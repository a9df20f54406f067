/**
 * Issue 7: the router inbox and EventBus inbound bounds are flags, and their drops are counted.
 * A real edgecore with a small --eventbus-queue-limit is flooded over MQTT; a router with a small
 * limit and a stuck module counts refusals per module; a limit of 0 is refused at start.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { connectAsync } from "mqtt";
import { createLogger } from "../lib/log.ts";
import { Metrics } from "../lib/metrics.ts";
import { Router } from "../lib/router.ts";
import { newMessage } from "../lib/message.ts";
import { eventually, joinToken, metric, spawnDaemon, startCloud, startEdge, type Cloud, type Edge } from "./helpers/daemons.ts";

let cloud: Cloud;
let edge: Edge;
beforeAll(async () => {
  cloud = await startCloud();
  edge = await startEdge({ node: "edge-limits", cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: ["--eventbus-queue-limit", "20", "--router-inbox-limit", "64"] });
});
afterAll(async () => {
  await edge?.daemon.stop("SIGKILL");
  await cloud?.daemon.stop("SIGKILL");
  for (const d of [edge?.dataDir, cloud?.dataDir]) if (d) rmSync(d, { recursive: true, force: true });
});

test("--eventbus-queue-limit: an MQTT flood past the bound is dropped and counted in outpost_eventbus_dropped_total; the edge serves on", async () => {
  const m = edge.endpoints.metrics!;
  expect(await metric(m, "outpost_eventbus_dropped_total")).toBe(0);
  const app = await connectAsync(`mqtt://${edge.endpoints.mqtt}`, { reconnectPeriod: 0 });
  const N = 5000;
  const payload = JSON.stringify({ event_id: "f", timestamp: 1 });
  for (let i = 0; i < N; i++) app.publish("$hw/events/device/default/nodev/twin/get", payload, { qos: 0 });
  await new Promise<void>((r) => app.publish("flush/done", "x", { qos: 1 }, () => r()));
  // every publish is either received by the twin path or dropped at the bound
  const dropped = await eventually(async () => {
    const d = (await metric(m, "outpost_eventbus_dropped_total")) ?? 0;
    return d > 0 && d;
  }, 20_000, "drops counted");
  expect(dropped).toBeGreaterThan(0);
  expect(dropped).toBeLessThan(N);
  await app.endAsync();
  expect(edge.daemon.output.some((l) => l.includes("mqtt inbound queue full"))).toBe(true);
  expect(edge.daemon.proc.exitCode).toBe(null);
  expect(await metric(m, "outpost_router_dropped_total", { module: "twin" })).toBeUndefined(); // the bus feeds the twin directly
});

test("router: a stuck module's refusals are counted per module in outpost_router_dropped_total", async () => {
  const metrics = new Metrics();
  const router = new Router(createLogger({ level: "error" }), 10, metrics);
  let release!: () => void;
  const stuck = new Promise<void>((r) => (release = r));
  router.register({ name: "stuck", group: "g", start() {}, stop() {}, handle: () => stuck });
  await router.startAll();
  let accepted = 0;
  for (let i = 0; i < 100; i++) if (router.send("stuck", newMessage({ source: "t", group: "g", operation: "update", resource: `r/${i}` }, null))) accepted++;
  // one message is being handled, ten wait
  expect(accepted).toBe(11);
  expect(metrics.value("outpost_router_dropped_total", { module: "stuck" })).toBe(89);
  release();
  await router.stopAll();
});

test("a router inbox limit of 0 is refused at start", async () => {
  const d = spawnDaemon("edgecore", ["--data-dir", edge.dataDir, "--router-inbox-limit", "0", "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--metaserver-listen", "127.0.0.1:0"]);
  expect(await d.exited).not.toBe(0);
  expect(d.output.join("\n")).toContain("--router-inbox-limit: must be at least 1");
});
