/** CloudHub ⇄ EdgeHub in-process, on real TLS sockets through the real certificate service. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import tls from "node:tls";
import { WebSocket } from "ws";
import { newMessage, encodeFrame, Op } from "../lib/message.ts";
import { loadEdgeCredentials } from "../lib/pki/edgecreds.ts";
import { MetaManager } from "../lib/edge/metamanager.ts";
import { openStore } from "../lib/store/db.ts";
import { edgeMigrations, type EdgeDb } from "../lib/edge/store.ts";
import { eventually, tmpDir } from "./helpers/daemons.ts";
import { joinNode, startTestCloud, startTestEdge, waitForEvent, type TestCloud } from "./helpers/hubs.ts";
import { startProxy } from "./helpers/proxy.ts";
import { join } from "node:path";

let cloud: TestCloud;
let addr: string;
const dirs: Record<string, string> = {};

beforeAll(async () => {
  cloud = await startTestCloud({ maxFrameBytes: 64 * 1024 });
  addr = `127.0.0.1:${cloud.hub.port}`;
  for (const n of ["edge-a", "edge-b", "edge-c"]) dirs[n] = await joinNode(cloud, n);
});
afterAll(async () => {
  await cloud.close();
});

/** A raw WebSocket client with node `node`'s certificate, claiming to be `claim`. */
function rawClient(node: string, claim = node): WebSocket {
  const c = loadEdgeCredentials(dirs[node]!)!;
  return new WebSocket(`wss://${addr}/e632aba927ea4ac2b575ec1603d56f10/${claim}/events`, { headers: { node_id: claim }, ca: c.caPem, cert: c.certPem, key: c.keyPem });
}

function closeCode(ws: WebSocket): Promise<number> {
  return new Promise((r) => ws.on("close", (code: number) => r(code)));
}

describe("hub link", () => {
  test("messages flow both ways; the edge keepalives and MetaManager acks after storing", async () => {
    const store = await openStore<EdgeDb>(join(tmpDir("meta"), "edgecore.db"), edgeMigrations);
    const edge = await startTestEdge(addr, "edge-a", dirs["edge-a"]!, {}, [new MetaManager(store.db)]);
    try {
      await eventually(() => cloud.hub.isConnected("edge-a"), 5000, "edge-a connected");
      // downstream: the cloud sends a pod; MetaManager stores it and acks with parent_msg_id
      const pod = newMessage({ source: "edgecontroller", group: "resource", operation: Op.insert, resource: "default/pod/nginx" }, { kind: "Pod", metadata: { name: "nginx" } }, { resourceversion: "7" });
      const ack = cloud.router.waitForReply(pod.header.msg_id, 5000);
      expect(cloud.hub.sendToNode("edge-a", pod)).toBe(true);
      const reply = await ack;
      expect(reply.content).toBe("OK");
      expect(reply.route.operation).toBe("response");
      const rows = await store.db.selectFrom("meta").selectAll().execute();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ key: "default/pod/nginx", type: "pod", resource_version: "7" });
      // upstream: an edge module's message reaches the cloud router with the node prefix
      edge.hub.send(newMessage({ source: "edged", group: "resource", operation: Op.update, resource: "default/podstatus/nginx" }, { phase: "Running" }));
      const up = await eventually(() => cloud.upstream.got.find((m) => m.route.resource === "node/edge-a/default/podstatus/nginx"), 5000, "status upstream");
      expect(up!.content).toEqual({ phase: "Running" });
      expect(cloud.metrics.value("outpost_cloudhub_messages_total", { direction: "in" })).toBeGreaterThanOrEqual(3); // keepalive, status, ack
      expect(cloud.metrics.value("outpost_cloudhub_connected_nodes")).toBeGreaterThanOrEqual(1);
    } finally {
      await edge.close();
      await store.close();
    }
  });

  test("a malformed frame is dropped with a log line and the session goes on", async () => {
    const ws = rawClient("edge-b");
    await waitForEvent(ws, "open");
    ws.send("{not json");
    ws.send(JSON.stringify({ header: { msg_id: 5 }, route: {} }));
    ws.send(encodeFrame(newMessage({ source: "edged", group: "resource", operation: "update", resource: "default/podstatus/after-bad" }, {})));
    await eventually(() => cloud.upstream.got.some((m) => m.route.resource === "node/edge-b/default/podstatus/after-bad"), 5000, "good frame after bad ones");
    expect(cloud.logs.some((l) => l.includes("malformed frame dropped") && l.includes("edge-b"))).toBe(true);
    expect(cloud.metrics.value("outpost_cloudhub_bad_frames_total")).toBeGreaterThanOrEqual(2);
    expect(cloud.hub.isConnected("edge-b")).toBe(true);
    ws.close();
  });

  test("an oversize frame closes that session with 1009; other sessions are untouched", async () => {
    const edge = await startTestEdge(addr, "edge-a", dirs["edge-a"]!);
    try {
      await eventually(() => cloud.hub.isConnected("edge-a"), 5000, "edge-a connected");
      const ws = rawClient("edge-c");
      await waitForEvent(ws, "open");
      const code = closeCode(ws);
      ws.send("x".repeat(100 * 1024));
      expect(await code).toBe(1009);
      expect(cloud.logs.some((l) => l.includes("node disconnected") && l.includes("edge-c"))).toBe(true);
      const pong = newMessage({ source: "edgecontroller", group: "resource", operation: "update", resource: "default/configmap/still-here" }, {});
      expect(cloud.hub.sendToNode("edge-a", pong)).toBe(true);
      await eventually(() => edge.meta.got.some((m) => m.route.resource === "default/configmap/still-here"), 5000, "edge-a still served");
    } finally {
      await edge.close();
    }
  });

  test("a certificate for one node cannot claim another", async () => {
    const ws = rawClient("edge-b", "edge-c");
    const status = await new Promise<number>((r) => ws.on("unexpected-response", (_q: unknown, res: { statusCode: number }) => r(res.statusCode)));
    expect(status).toBe(403);
    expect(cloud.logs.some((l) => l.includes("connection refused") && l.includes('does not match node_id "edge-c"'))).toBe(true);
    expect(cloud.hub.isConnected("edge-c")).toBe(false);
  });

  test("no client certificate → 401; plaintext → dropped; the hub keeps serving", async () => {
    const c = loadEdgeCredentials(dirs["edge-a"]!)!;
    const anon = new WebSocket(`wss://${addr}/p/edge-a/events`, { headers: { node_id: "edge-a" }, ca: c.caPem });
    const status = await new Promise<number>((r) => anon.on("unexpected-response", (_q: unknown, res: { statusCode: number }) => r(res.statusCode)));
    expect(status).toBe(401);

    const plain = net.connect(cloud.hub.port, "127.0.0.1");
    plain.write("GET /p/edge-a/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n");
    plain.on("error", () => {});
    const answer = await new Promise<string>((r) => {
      let got = "";
      plain.on("data", (d) => (got += d.toString("latin1")));
      plain.on("close", () => r(got));
    });
    expect(answer.startsWith("HTTP/1.1 101")).toBe(false);
    await eventually(() => cloud.logs.some((l) => l.includes("TLS handshake failed")), 3000, "TLS failure logged");

    // an untrusted client certificate (self-made CA) is refused too
    const stranger = tls.connect({ port: cloud.hub.port, host: "127.0.0.1", rejectUnauthorized: false });
    await new Promise((r) => stranger.on("secureConnect", r));
    stranger.write("GET /p/edge-a/events HTTP/1.1\r\nnode_id: edge-a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    const reply = await new Promise<string>((r) => stranger.once("data", (d: Buffer) => r(d.toString())));
    expect(reply).toStartWith("HTTP/1.1 401");
    stranger.destroy();

    const edge = await startTestEdge(addr, "edge-a", dirs["edge-a"]!);
    await eventually(() => cloud.hub.isConnected("edge-a"), 5000, "good edge still accepted");
    await edge.close();
  });
});

describe("edge link resilience", () => {
  test("a dead (black-holed) link is noticed by ping/pong and redialled", async () => {
    const proxy = await startProxy(cloud.hub.port);
    const edge = await startTestEdge(`127.0.0.1:${proxy.port}`, "edge-b", dirs["edge-b"]!, { pingIntervalMs: 200, pongTimeoutMs: 400, reconnectBaseMs: 50 });
    try {
      await waitForEvent(edge.hub, "connected");
      proxy.freeze();
      const lost = Date.now();
      await waitForEvent(edge.hub, "disconnected", 5000);
      expect(Date.now() - lost).toBeLessThan(2000);
      proxy.thaw();
      await waitForEvent(edge.hub, "connected", 5000);
      expect(edge.hub.connected).toBe(true);
    } finally {
      await edge.close();
      await proxy.close();
    }
  });

  test("messages are queued (bounded) while disconnected and delivered in order after reconnect", async () => {
    const proxy = await startProxy(cloud.hub.port);
    const edge = await startTestEdge(`127.0.0.1:${proxy.port}`, "edge-c", dirs["edge-c"]!, { queueLimit: 5, reconnectBaseMs: 50, reconnectMaxMs: 200 });
    try {
      await waitForEvent(edge.hub, "connected");
      await proxy.close(); // the cloud is unreachable now
      await waitForEvent(edge.hub, "disconnected", 5000);
      for (let i = 0; i < 8; i++) edge.hub.send(newMessage({ source: "edged", group: "resource", operation: "update", resource: `default/podstatus/q${i}` }, i));
      expect(edge.metrics.value("outpost_edgehub_queue_length")).toBe(5);
      expect(edge.metrics.value("outpost_edgehub_dropped_total")).toBe(3);
      // the cloud comes back on a new address: point a new proxy at it on the same port
      const again = await startProxyOn(proxy.port, cloud.hub.port);
      try {
        const got = await eventually(() => {
          const r = cloud.upstream.got.filter((m) => /node\/edge-c\/default\/podstatus\/q\d$/.test(m.route.resource)).map((m) => m.content);
          return r.length === 5 ? r : null;
        }, 10_000, "queued messages delivered");
        expect(got).toEqual([3, 4, 5, 6, 7]);
      } finally {
        again.close();
      }
    } finally {
      await edge.close();
    }
  });
});

/** A plain forwarder on a fixed port (the cloud "returning" where the edge dials). */
function startProxyOn(port: number, target: number): Promise<net.Server> {
  const server = net.createServer((c) => {
    const u = net.connect(target, "127.0.0.1");
    c.pipe(u).pipe(c);
    c.on("error", () => u.destroy());
    u.on("error", () => c.destroy());
  });
  return new Promise((r) => server.listen(port, "127.0.0.1", () => r(server)));
}
