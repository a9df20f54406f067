/**
 * Issue 7: CloudHub's per-session rate limit. A node floods the hub over a real mutual-TLS
 * WebSocket; the hub must take in no more than burst + rate × elapsed (plus what one read chunk
 * holds), stop reading meanwhile (back-pressure, nothing dropped), count the throttled messages,
 * and keep the session. A second node on the same hub is not slowed by the first one's debt.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import tls from "node:tls";
import { encodeFrame, newMessage } from "../lib/message.ts";
import { joinNode, maskedTextFrame, rawUpgrade, startTestCloud, type TestCloud } from "./helpers/hubs.ts";

const RATE = 500;
const BURST = 100;
let cloud: TestCloud;
beforeAll(async () => {
  cloud = await startTestCloud({ rateLimit: { rate: RATE, burst: BURST } });
});
afterAll(async () => {
  await cloud.close();
});

async function connectNode(node: string): Promise<tls.TLSSocket> {
  const { sock, first } = await rawUpgrade(`127.0.0.1:${cloud.hub.port}`, await joinNode(cloud, node), node);
  expect(String(first)).toStartWith("HTTP/1.1 101");
  for (let i = 0; i < 200 && !cloud.hub.isConnected(node); i++) await Bun.sleep(10);
  return sock;
}

const frames = (node: string, n: number) =>
  Buffer.concat(Array.from({ length: n }, (_, i) => maskedTextFrame(encodeFrame(newMessage({ source: "edged", group: "resource", operation: "update", resource: `default/podstatus/${node}-${i}` }, { status: { phase: "Running" }, pad: "x".repeat(200) })))));
const received = (node: string) => cloud.upstream.got.filter((m) => m.route.resource.startsWith(`node/${node}/`)).length;

test("a flood is taken in at the configured rate, none of it dropped; the session stays", async () => {
  const sock = await connectNode("flooder");
  const N = 2500;
  const t0 = performance.now();
  sock.write(frames("flooder", N));
  // one batch (rate/20) of timer slack
  const SLACK = RATE / 20 + 5;
  let worst = -Infinity;
  for (let i = 0; i < 300 && received("flooder") < N; i++) {
    await Bun.sleep(50);
    const got = received("flooder");
    const allowed = BURST + (RATE * (performance.now() - t0)) / 1000 + SLACK;
    worst = Math.max(worst, got - allowed);
  }
  expect(received("flooder")).toBe(N); // back-pressure, not drops
  expect(worst).toBeLessThanOrEqual(0); // never more than the bucket allows
  // each pause waits for a batch of rate/20 tokens: about (N - BURST) / 25 pauses
  expect(cloud.metrics.value("outpost_cloudhub_throttled_total")).toBeGreaterThan((N - BURST) / 25 / 2);
  expect(cloud.hub.isConnected("flooder")).toBe(true);
  sock.destroy();
}, 30_000);

test("one node's flood does not slow another node's messages", async () => {
  const a = await connectNode("flood-a");
  const b = await connectNode("calm-b");
  a.write(frames("flood-a", 2000));
  await Bun.sleep(100);
  b.write(frames("calm-b", 50)); // within b's own burst
  for (let i = 0; i < 40 && received("calm-b") < 50; i++) await Bun.sleep(25);
  expect(received("calm-b")).toBe(50);
  expect(received("flood-a")).toBeLessThan(2000); // a is still being held back
  a.destroy();
  b.destroy();
}, 30_000);
