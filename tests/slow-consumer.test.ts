/** A node that stops reading is disconnected once its unsent bytes pass the bound; the cloud's memory stays bounded. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import tls from "node:tls";
import { newMessage } from "../lib/message.ts";
import { loadEdgeCredentials } from "../lib/pki/edgecreds.ts";
import { joinNode, startTestCloud, type TestCloud } from "./helpers/hubs.ts";

let cloud: TestCloud;
beforeAll(async () => {
  cloud = await startTestCloud({ maxBufferedBytes: 512 * 1024 });
});
afterAll(async () => {
  await cloud.close();
});

test("a node that does not read is cut off instead of buffering without bound", async () => {
  const dir = await joinNode(cloud, "sleepy");
  const c = loadEdgeCredentials(dir)!;
  // a real TLS + WebSocket handshake with the node's certificate, then the client never reads again
  const sock = tls.connect({ host: "127.0.0.1", port: cloud.hub.port, ca: c.caPem, cert: c.certPem, key: c.keyPem, servername: "localhost" });
  await new Promise((r) => sock.once("secureConnect", r));
  sock.write("GET /p/sleepy/events HTTP/1.1\r\nHost: x\r\nnode_id: sleepy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  await new Promise((r) => sock.once("data", r)); // 101
  sock.pause();
  sock.on("error", () => {});
  for (let i = 0; i < 200 && !cloud.hub.isConnected("sleepy"); i++) await Bun.sleep(10);
  expect(cloud.hub.isConnected("sleepy")).toBe(true);

  const payload = "x".repeat(32 * 1024);
  let sent = 0;
  for (; sent < 4000; sent++) {
    if (!cloud.hub.sendToNode("sleepy", newMessage({ source: "edgecontroller", group: "resource", operation: "update", resource: `default/configmap/c${sent}` }, payload))) break;
    if (sent % 50 === 0) await Bun.sleep(1); // let the socket flush what the kernel takes
  }
  expect(sent).toBeLessThan(4000); // the bound was hit long before 128 MB were queued
  expect(cloud.hub.isConnected("sleepy")).toBe(false);
  expect(cloud.metrics.value("outpost_cloudhub_slow_consumers_total")).toBe(1);
  expect(cloud.logs.some((l) => l.includes("does not read its messages") && l.includes("sleepy"))).toBe(true);
  sock.destroy();
});
