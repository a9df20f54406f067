/** In-process CloudHub + EdgeHub pairs on real TLS sockets, for tests and benches. */
import "reflect-metadata";
import tls from "node:tls";
import { createLogger, type Logger } from "../../lib/log.ts";
import { Metrics } from "../../lib/metrics.ts";
import { Router, type Module } from "../../lib/router.ts";
import { CloudHub } from "../../lib/hub/cloudhub.ts";
import { EdgeHub, type EdgeHubOptions } from "../../lib/hub/edgehub.ts";
import { loadOrCreateCa, type Ca } from "../../lib/pki/ca.ts";
import { startCertService } from "../../lib/pki/certservice.ts";
import { createToken } from "../../lib/pki/token.ts";
import { joinCloud, loadEdgeCredentials } from "../../lib/pki/edgecreds.ts";
import type { Message } from "../../lib/message.ts";
import { tmpDir } from "./daemons.ts";

export const quietLog: Logger = createLogger({ level: process.env.OUTPOST_TEST_LOGS ? "debug" : "error" });

/** A module that records what it receives. */
export function recorder(name: string, group: string): Module & { got: Message[] } {
  const got: Message[] = [];
  return { name, group, got, start() {}, stop() {}, handle: (m) => void got.push(m) };
}

export interface TestCloud {
  ca: Ca;
  dataDir: string;
  hub: CloudHub;
  router: Router;
  metrics: Metrics;
  certPort: number;
  /** Records upstream messages the hub routes to the edgecontroller group. */
  upstream: ReturnType<typeof recorder>;
  logs: string[];
  close(): Promise<void>;
}

export async function startTestCloud(opts: { hubPort?: number; maxFrameBytes?: number; maxBufferedBytes?: number; keepaliveTimeoutMs?: number; dataDir?: string; record?: boolean; rateLimit?: { rate: number; burst: number } } = {}): Promise<TestCloud> {
  const dataDir = opts.dataDir ?? tmpDir("hub-cloud");
  const logs: string[] = [];
  const log = createLogger({ level: "info", write: (l) => void logs.push(l) });
  const ca = await loadOrCreateCa(dataDir);
  const serverCert = await ca.issueServerCert({ ips: ["127.0.0.1"], dns: ["localhost"] });
  const certService = await startCertService({ ca, listen: { host: "127.0.0.1", port: 0 }, serverCert, log, certValidityDays: 30 });
  const metrics = new Metrics();
  const router = new Router(log);
  const hub = new CloudHub({
    listen: { host: "127.0.0.1", port: opts.hubPort ?? 0 },
    tls: { certPem: serverCert.certPem, keyPem: serverCert.keyPem, caPem: ca.certPem },
    log,
    metrics,
    maxFrameBytes: opts.maxFrameBytes ?? 8 * 1024 * 1024,
    keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? 30_000,
    ...(opts.maxBufferedBytes !== undefined ? { maxBufferedBytes: opts.maxBufferedBytes } : {}),
    ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}),
  });
  const upstream = recorder("edgecontroller", "edgecontroller");
  router.register(hub);
  if (opts.record !== false) router.register(upstream);
  await router.startAll();
  return {
    ca, dataDir, hub, router, metrics, upstream, logs, certPort: certService.port,
    async close() {
      await router.stopAll();
      await certService.close();
    },
  };
}

/** Joins a node through the real certificate service and returns its data dir. */
export async function joinNode(cloud: TestCloud, node: string): Promise<string> {
  const dataDir = tmpDir(`hub-edge-${node}`);
  await joinCloud({ httpsAddr: `127.0.0.1:${cloud.certPort}`, token: createToken(cloud.ca), nodeName: node, dataDir, log: quietLog });
  return dataDir;
}

export interface TestEdge {
  hub: EdgeHub;
  router: Router;
  metrics: Metrics;
  meta: ReturnType<typeof recorder>;
  close(): Promise<void>;
}

export async function startTestEdge(server: string, node: string, dataDir: string, over: Partial<EdgeHubOptions> = {}, modules: Module[] = []): Promise<TestEdge> {
  const metrics = new Metrics();
  const router = new Router(quietLog);
  const hub = new EdgeHub({
    server,
    nodeName: node,
    credentials: () => loadEdgeCredentials(dataDir)!,
    log: quietLog,
    metrics,
    heartbeatMs: 15_000,
    pingIntervalMs: 2000,
    pongTimeoutMs: 4000,
    reconnectBaseMs: 100,
    reconnectMaxMs: 2000,
    queueLimit: 1000,
    maxFrameBytes: 8 * 1024 * 1024,
    ...over,
  });
  const meta = recorder("meta-recorder", "meta");
  router.register(hub);
  if (modules.length === 0) router.register(meta);
  for (const m of modules) router.register(m);
  await router.startAll();
  return { hub, router, metrics, meta, close: () => router.stopAll() };
}

export function waitForEvent(emitter: { once(ev: string, fn: (...a: unknown[]) => void): unknown }, ev: string, timeoutMs = 10_000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${ev} within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(ev, (...a) => {
      clearTimeout(t);
      resolve(a);
    });
  });
}

/** A masked client text frame (RFC 6455), for tests that speak to the hub over a raw socket. */
export function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const out = Buffer.alloc(2 + ext + 4 + len);
  out[0] = 0x81;
  out[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) out.writeUInt16BE(len, 2);
  if (ext === 8) out.writeBigUInt64BE(BigInt(len), 2);
  const mask = [0x12, 0x34, 0x56, 0x78];
  out.set(mask, 2 + ext);
  for (let i = 0; i < len; i++) out[2 + ext + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

/**
 * A raw WebSocket upgrade to the hub at `hub` (HOST:PORT) with the node credentials in `dir`: the
 * TLS socket (still open) and the first bytes of the hub's answer, for tests that speak to the hub
 * byte by byte or only want its verdict.
 */
export async function rawUpgrade(hub: string, dir: string, node: string): Promise<{ sock: tls.TLSSocket; first: Buffer }> {
  const c = loadEdgeCredentials(dir)!;
  const [host, port] = hub.split(":");
  const sock = tls.connect({ host, port: Number(port), ca: c.caPem, cert: c.certPem, key: c.keyPem, servername: "localhost" });
  sock.on("error", () => {});
  await new Promise((r) => sock.once("secureConnect", r));
  sock.write(`GET /p/${node}/events HTTP/1.1\r\nHost: x\r\nnode_id: ${node}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  const first = (await new Promise((r) => sock.once("data", r))) as Buffer;
  return { sock, first };
}
