/**
 * Fuzzing the hub input path (issue 7): parseFrame and the WebSocket reader in process with
 * ≥ 100,000 generated inputs each, then a real CloudHub taking hostile frames over mutual TLS.
 * An independent oracle says which documents are messages, so every refusal is the right one.
 * Replay: FUZZ_SEED=<seed> bun test tests/fuzz-frames.test.ts
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Duplex } from "node:stream";
import { WebSocket } from "ws";
import { CloseCode, WsConnection } from "../lib/hub/wsconn.ts";
import { FrameError, encodeFrame, newMessage, parseFrame, responseTo, type Message } from "../lib/message.ts";
import { loadEdgeCredentials } from "../lib/pki/edgecreds.ts";
import { eventually } from "./helpers/daemons.ts";
import { assertNoPollution, cases, deepText, fuzzLoop, fuzzLoopAsync, seedFor, type Gen, type Json } from "./helpers/fuzz.ts";
import { joinNode, startTestCloud, waitForEvent, type TestCloud } from "./helpers/hubs.ts";

// ---- valid KubeEdge messages to mutate ------------------------------------------------------

const pod = newMessage(
  { source: "edgecontroller", group: "resource", operation: "insert", resource: "default/pod/nginx" },
  { apiVersion: "v1", kind: "Pod", metadata: { name: "nginx", namespace: "default", labels: { app: "web" } }, spec: { nodeName: "edge-1", containers: [{ name: "c", image: "nginx:1.27", ports: [{ containerPort: 80 }] }] } },
  { resourceversion: "42", sync: true },
);
const BASES: Json[] = [
  pod,
  newMessage({ source: "edged", group: "resource", operation: "update", resource: "default/podstatus/nginx" }, { phase: "Running", conditions: [{ type: "Ready", status: "True" }] }),
  newMessage({ source: "edged", group: "resource", operation: "keepalive", resource: "" }, "ping"),
  newMessage({ source: "twin", group: "twin", operation: "update", resource: "device/default/thermo-1/twin/edge_updated" }, { event_id: "e", timestamp: 1, twin: { t: { actual: { value: "21" } } } }),
  responseTo(pod, "OK"),
  newMessage({ source: "edged", group: "resource", operation: "query", resource: "default/configmap/cfg", destination: "edgecontroller" }, null, { type: "x" }),
].map((m) => JSON.parse(JSON.stringify(m)));

// ---- the oracle: what MessageSchema accepts, written out independently ------------------------

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v); // parseFrame refuses arrays
const optStr = (v: unknown, max = Infinity) => v === undefined || (typeof v === "string" && v.length <= max);

function isMessage(doc: unknown): boolean {
  if (!isObj(doc)) return false;
  const h = doc.header;
  const r = doc.route;
  if (!isObj(h) || !isObj(r)) return false;
  if (typeof h.msg_id !== "string" || h.msg_id.length < 1 || h.msg_id.length > 128) return false;
  if (!optStr(h.parent_msg_id, 128) || !optStr(h.resourceversion) || !optStr(h.type)) return false;
  if (!(h.timestamp === undefined || (typeof h.timestamp === "number" && Number.isInteger(h.timestamp)))) return false;
  if (!(h.sync === undefined || typeof h.sync === "boolean")) return false;
  return ["source", "destination", "group", "operation", "resource"].every((k) => optStr(r[k], 1024));
}

/** Parses like the hub does and checks the answer against the oracle; returns whether accepted. */
function checkParse(text: string): boolean {
  let expected: boolean;
  try {
    expected = isMessage(JSON.parse(text));
  } catch {
    expected = false;
  }
  let msg: Message;
  try {
    msg = parseFrame(text);
  } catch (e) {
    if (!(e instanceof FrameError)) throw new Error(`parseFrame threw ${String(e)} (not a FrameError) for ${text.slice(0, 200)}`);
    if (expected) throw new Error(`parseFrame refused a valid message (${e.message}): ${text.slice(0, 200)}`);
    if (!/^not (JSON|a message)/.test(e.message)) throw new Error(`unclear refusal: ${e.message}`);
    return false;
  }
  if (!expected) throw new Error(`parseFrame accepted an invalid message: ${text.slice(0, 300)}`);
  if (Object.getPrototypeOf(msg) !== Object.prototype || Object.getPrototypeOf(msg.header) !== Object.prototype || Object.getPrototypeOf(msg.route) !== Object.prototype)
    throw new Error("parsed message has a foreign prototype");
  for (const k of ["source", "group", "operation", "resource"] as const) if (typeof msg.route[k] !== "string") throw new Error(`route.${k} is not a string after parsing`);
  return true;
}

function hostileFrameText(g: Gen): string {
  const base = g.pick(BASES);
  const k = g.int(10);
  if (k < 6) return JSON.stringify(g.mutate(base).doc);
  if (k < 8) return g.damageText(JSON.stringify(g.chance(0.5) ? base : g.mutate(base).doc));
  if (k === 8) return g.chance(0.1) ? `{"header":{"msg_id":"m"},"route":{},"content":${deepText(g.pick([100, 10_000, 100_000]), g.chance(0.5))}}` : JSON.stringify(g.value());
  return g.string();
}

// ---- parseFrame ------------------------------------------------------------------------------

describe("fuzz: parseFrame", () => {
  test("≥ 100,000 mutated KubeEdge messages: FrameError or a well-formed message, as the oracle says", () => {
    const seed = seedFor("frames", 0xf4a3e);
    const n = cases(100_000);
    const good = encodeFrame(BASES[0] as Message);
    let accepted = 0;
    fuzzLoop("parseFrame", seed, n, (g, i) => {
      if (checkParse(hostileFrameText(g))) accepted++;
      if (i % 5000 === 0) {
        assertNoPollution();
        expect(parseFrame(good)).toEqual(BASES[0] as Message); // a valid frame still parses the same
      }
    });
    assertNoPollution();
    console.log(`parseFrame: ${n} inputs (seed ${seed}), ${accepted} accepted, ${n - accepted} refused`);
    expect(accepted).toBeGreaterThan(n / 20);
    expect(n - accepted).toBeGreaterThan(n / 2);
  }, 60_000);
});

// ---- the WebSocket reader --------------------------------------------------------------------

class Sink extends Duplex {
  written: Buffer[] = [];
  override _read() {}
  override _write(chunk: Buffer, _e: string, cb: () => void) {
    this.written.push(chunk);
    cb();
  }
}

function wsFrame(opcode: number, payload: Buffer, o: { fin?: boolean; masked?: boolean; rsv?: number; declared?: [number, number] } = {}): Buffer {
  const len = payload.length;
  const masked = o.masked ?? true;
  const ext = o.declared ? 8 : len < 126 ? 0 : len < 65536 ? 2 : 8;
  const hdr = 2 + ext + (masked ? 4 : 0);
  const out = Buffer.alloc(hdr + len);
  out[0] = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  const mbit = masked ? 0x80 : 0;
  if (ext === 0) out[1] = mbit | len;
  else if (ext === 2) (out[1] = mbit | 126), out.writeUInt16BE(len, 2);
  else (out[1] = mbit | 127), out.writeUInt32BE(o.declared?.[0] ?? 0, 2), out.writeUInt32BE(o.declared?.[1] ?? len, 6);
  const mask = [0x37, 0xfa, 0x21, 0x3d];
  if (masked) out.set(mask, 2 + ext);
  for (let i = 0; i < len; i++) out[hdr + i] = masked ? payload[i]! ^ mask[i & 3]! : payload[i]!;
  return out;
}

const MAX = 4096;

interface Plan {
  bytes: Buffer[];
  messages: string[];
  /** Close code the stream must end with (undefined: stays open). */
  close?: number;
}

/** A stream of valid frames (whole, fragmented, with control frames between), maybe ended by one defect. */
let pool: Buffer[] = [];
function framePool(g: Gen): Buffer[] {
  // The reader does not look inside messages: a pool of hostile texts keeps the cases cheap.
  if (pool.length === 0) {
    for (const b of BASES) pool.push(Buffer.from(encodeFrame(b as Message)));
    while (pool.length < 3000) {
      const buf = Buffer.from(hostileFrameText(g), "utf8");
      if (buf.length <= MAX) pool.push(buf);
    }
  }
  return pool;
}

function planStream(g: Gen): Plan {
  const plan: Plan = { bytes: [], messages: [] };
  const frames = g.int(5);
  const texts = framePool(g);
  for (let f = 0; f < frames; f++) {
    const buf = Buffer.from(g.pick(texts));
    plan.messages.push(buf.toString("utf8"));
    const k = g.int(4);
    if (k < 2 || buf.length < 3) plan.bytes.push(wsFrame(g.chance(0.8) ? 0x1 : 0x2, buf));
    else {
      const cut1 = 1 + g.int(buf.length - 2);
      const cut2 = cut1 + g.int(buf.length - cut1);
      plan.bytes.push(wsFrame(0x1, buf.subarray(0, cut1), { fin: false }));
      if (g.chance(0.5)) plan.bytes.push(wsFrame(0x9, Buffer.from(g.shortString(20).slice(0, 20))));
      if (cut2 > cut1) plan.bytes.push(wsFrame(0x0, buf.subarray(cut1, cut2), { fin: false }));
      if (g.chance(0.3)) plan.bytes.push(wsFrame(0xa, Buffer.alloc(0)));
      plan.bytes.push(wsFrame(0x0, buf.subarray(cut2)));
    }
  }
  const defect = g.int(14);
  const payload = Buffer.from(g.shortString(40));
  switch (defect) {
    case 0:
      plan.bytes.push(wsFrame(0x1, payload, { rsv: 1 + g.int(7) }));
      plan.close = CloseCode.protocol;
      break;
    case 1:
      plan.bytes.push(wsFrame(0x1, payload, { masked: false }));
      plan.close = CloseCode.protocol;
      break;
    case 2:
      plan.bytes.push(wsFrame(g.pick([3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]), payload));
      plan.close = CloseCode.protocol;
      break;
    case 3:
      plan.bytes.push(wsFrame(0x9, Buffer.alloc(126 + g.int(200)))); // control frame > 125 bytes
      plan.close = CloseCode.protocol;
      break;
    case 4:
      plan.bytes.push(wsFrame(g.pick([0x8, 0x9, 0xa]), Buffer.alloc(2), { fin: false }));
      plan.close = CloseCode.protocol;
      break;
    case 5:
      plan.bytes.push(wsFrame(0x0, payload)); // continuation with nothing to continue
      plan.close = CloseCode.protocol;
      break;
    case 6:
      plan.bytes.push(wsFrame(0x1, payload, { fin: false }), wsFrame(0x1, payload)); // new message inside a fragmented one
      plan.close = CloseCode.protocol;
      break;
    case 7:
      plan.bytes.push(wsFrame(0x1, Buffer.alloc(MAX + 1 + g.int(5000), 0x41)));
      plan.close = CloseCode.tooBig;
      break;
    case 8: {
      // fragments that only together exceed the limit
      const part = Buffer.alloc(MAX / 2 + 1, 0x42);
      plan.bytes.push(wsFrame(0x1, part, { fin: false }), wsFrame(0x0, part, { fin: false }));
      plan.close = CloseCode.tooBig;
      break;
    }
    case 9:
      // a 64-bit length: absurd (> 2^53) or merely above the limit; no payload follows
      plan.bytes.push(wsFrame(0x1, Buffer.alloc(0), { declared: g.chance(0.5) ? [0xffffffff, 0xffffffff] : [g.int(0x1fffff), 0x10000 + g.int(1 << 30)] }).subarray(0, 14));
      plan.close = CloseCode.tooBig;
      break;
    case 10: {
      const bad = Buffer.from([0x41, g.pick([0xc0, 0xc1, 0xf5, 0xff, 0x80, 0xed]), 0xa0, 0x80]);
      plan.bytes.push(wsFrame(0x1, bad));
      plan.close = CloseCode.badData;
      break;
    }
    case 11:
      plan.bytes.push(wsFrame(0x8, Buffer.from([0x03, 0xe8])));
      plan.bytes.push(wsFrame(0x1, Buffer.from("after close"))); // must be ignored
      plan.close = CloseCode.normal;
      break;
    case 12: {
      // truncated: a frame cut short stays pending, nothing is emitted for it
      const f = wsFrame(0x1, Buffer.from(g.shortString(200)));
      plan.bytes.push(f.subarray(0, g.int(f.length)));
      break;
    }
    default:
      break; // a clean stream
  }
  return plan;
}

function runStream(g: Gen, plan: Plan): void {
  const sink = new Sink();
  const conn = new WsConnection(sink, MAX);
  const got: string[] = [];
  let closed: number | undefined;
  conn.on("message", (t) => got.push(t));
  conn.on("close", (c) => (closed ??= c));
  const all = Buffer.concat(plan.bytes);
  // deliver whole, in random chunks as TCP might, or (short streams) a few bytes at a time
  const mode = g.int(3);
  let off = 0;
  while (off < all.length) {
    const n = mode === 0 ? all.length : mode === 2 && all.length < 1000 ? 1 + g.int(8) : 1 + g.int(all.length);
    const chunk = Buffer.from(all.subarray(off, off + n)); // a fresh buffer: the reader unmasks in place
    off += n;
    sink.emit("data", chunk);
  }
  if (closed !== plan.close) throw new Error(`close code ${closed} (expected ${plan.close}) for frames ${all.subarray(0, 80).toString("hex")}`);
  if (got.length !== plan.messages.length || got.some((t, i) => t !== plan.messages[i])) throw new Error(`got ${got.length} messages, expected ${plan.messages.length}`);
  sink.destroy();
}

describe("fuzz: WebSocket reader", () => {
  test("≥ 100,000 frame streams (split at random) give exactly the messages and the close code expected", () => {
    const seed = seedFor("wsreader", 0x5eed1);
    const n = cases(100_000);
    let closedStreams = 0;
    fuzzLoop("WsConnection", seed, n, (g) => {
      const plan = planStream(g);
      if (plan.close !== undefined) closedStreams++;
      runStream(g, plan);
    });
    console.log(`WsConnection: ${n} streams (seed ${seed}), ${closedStreams} ending in a close`);
    expect(closedStreams).toBeGreaterThan(n / 2);
  }, 60_000);

  test("100,000 raw random byte chunks never throw; every close uses a defined code", () => {
    const seed = seedFor("wsbytes", 0xb17e5);
    const n = cases(100_000);
    const codes = new Set<number>(Object.values(CloseCode));
    fuzzLoop("WsConnection bytes", seed, n, (g) => {
      const sink = new Sink();
      const conn = new WsConnection(sink, 256);
      let code: number | undefined;
      conn.on("close", (c) => (code = c));
      const bytes = Buffer.alloc(g.int(300));
      for (let i = 0; i < bytes.length; i++) bytes[i] = g.int(256);
      if (bytes.length > 1 && g.chance(0.7)) bytes[1]! |= 0x80; // mostly masked, to reach the deeper paths
      if (bytes.length > 0 && g.chance(0.5)) bytes[0]! &= 0x8f; // no reserved bits
      sink.emit("data", bytes);
      if (code !== undefined && !codes.has(code)) throw new Error(`undefined close code ${code}`);
      sink.destroy();
    });
  }, 60_000);
});

// ---- live: a real CloudHub over mutual TLS --------------------------------------------------

describe("fuzz: a live CloudHub", () => {
  let cloud: TestCloud;
  let dir: string;
  beforeAll(async () => {
    cloud = await startTestCloud({ maxFrameBytes: 64 * 1024 });
    dir = await joinNode(cloud, "fuzz-edge");
  });
  afterAll(async () => {
    await cloud?.close();
  });

  function client(): WebSocket {
    const c = loadEdgeCredentials(dir)!;
    return new WebSocket(`wss://127.0.0.1:${cloud.hub.port}/e632aba927ea4ac2b575ec1603d56f10/fuzz-edge/events`, { headers: { node_id: "fuzz-edge" }, ca: c.caPem, cert: c.certPem, key: c.keyPem });
  }

  test("3,000 hostile frames from an authenticated node: each refused or routed, session kept, a good message routed after", async () => {
    const seed = seedFor("livehub", 0x11fe);
    const n = cases(3000);
    const ws = client();
    await waitForEvent(ws, "open");
    let closed = false;
    ws.on("close", () => (closed = true));
    const bad0 = cloud.metrics.value("outpost_cloudhub_bad_frames_total") ?? 0;
    const up0 = cloud.upstream.got.length;
    let refused = 0;
    let accepted = 0;
    let handedOn = 0;
    const onMessage = (node: string) => {
      expect(node).toBe("fuzz-edge");
      handedOn++;
    };
    cloud.hub.on("message", onMessage);
    await fuzzLoopAsync("live CloudHub", seed, n, async (g, i) => {
      const text = hostileFrameText(g);
      if (Buffer.byteLength(text) > 64 * 1024) return; // the size limit has its own test
      if (text.length < 4 && text.trim() === "") return; // KubeEdge's empty shutdown message
      let ok: boolean;
      try {
        const doc = JSON.parse(text);
        ok = isMessage(doc);
        if (ok && doc.route?.operation !== "keepalive") accepted++;
      } catch {
        ok = false;
      }
      if (!ok) refused++;
      ws.send(text, { binary: g.chance(0.2) });
      if (i % 200 === 0) await new Promise<void>((r) => ws.ping(undefined, undefined, () => r()));
    });
    const good = newMessage({ source: "edged", group: "resource", operation: "update", resource: "default/podstatus/after-fuzz" }, { phase: "Running" });
    ws.send(encodeFrame(good));
    await eventually(() => cloud.upstream.got.some((m) => m.route.resource === "node/fuzz-edge/default/podstatus/after-fuzz"), 20_000, "good message after the hostile ones");
    expect(closed).toBe(false);
    expect(cloud.hub.isConnected("fuzz-edge")).toBe(true);
    expect((cloud.metrics.value("outpost_cloudhub_bad_frames_total") ?? 0) - bad0).toBe(refused);
    cloud.hub.off("message", onMessage);
    expect(handedOn).toBe(accepted + 1); // every accepted message (but keepalives) was handed on, and the good one
    for (const m of cloud.upstream.got.slice(up0)) expect(m.route.resource.startsWith("node/fuzz-edge/")).toBe(true); // no escaping the node prefix
    assertNoPollution();
    console.log(`live CloudHub: ${n} frames (seed ${seed}), ${refused} refused`);
    ws.close();
  }, 60_000);

  test("protocol-level hostility (non-UTF-8, oversize) closes only that session; the hub still serves", async () => {
    const a = client();
    await waitForEvent(a, "open");
    const codeA = new Promise<number>((r) => a.on("close", (c: number) => r(c)));
    a.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect(await codeA).toBe(CloseCode.badData);
    const b = client();
    await waitForEvent(b, "open");
    const codeB = new Promise<number>((r) => b.on("close", (c: number) => r(c)));
    b.send("[".repeat(64 * 1024 + 1));
    expect(await codeB).toBe(CloseCode.tooBig);
    const c = client();
    await waitForEvent(c, "open");
    c.send(encodeFrame(newMessage({ source: "edged", group: "resource", operation: "update", resource: "default/podstatus/after-close" }, {})));
    await eventually(() => cloud.upstream.got.some((m) => m.route.resource === "node/fuzz-edge/default/podstatus/after-close"), 10_000, "served after hostile sessions");
    c.close();
  }, 30_000);
});
