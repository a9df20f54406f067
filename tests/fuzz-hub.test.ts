/** Generated hostile input against the hub's frame reader and message parser: refusals, never throws. */
import { describe, expect, test } from "bun:test";
import { Duplex } from "node:stream";
import { WsConnection } from "../lib/hub/wsconn.ts";
import { FrameError, encodeFrame, newMessage, parseFrame } from "../lib/message.ts";

/** A deterministic PRNG so a failure can be replayed from its seed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

class Sink extends Duplex {
  written = 0;
  override _read() {}
  override _write(chunk: Buffer, _e: string, cb: () => void) {
    this.written += chunk.length;
    cb();
  }
}

function maskedFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const len = payload.length;
  const hdr = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.alloc(hdr + 4 + len);
  out[0] = (fin ? 0x80 : 0) | opcode;
  if (hdr === 2) out[1] = 0x80 | len;
  else if (hdr === 4) (out[1] = 0x80 | 126), out.writeUInt16BE(len, 2);
  else (out[1] = 0x80 | 127), out.writeUInt32BE(0, 2), out.writeUInt32BE(len, 6);
  const mask = [1, 2, 3, 4];
  out.set(mask, hdr);
  for (let i = 0; i < len; i++) out[hdr + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

describe("fuzzing the hub input path", () => {
  test("20,000 random byte streams never throw out of the WebSocket reader", () => {
    const rand = rng(42);
    let messages = 0;
    let closes = 0;
    for (let n = 0; n < 20_000; n++) {
      const sink = new Sink();
      const conn = new WsConnection(sink, 1024);
      conn.on("message", () => messages++);
      conn.on("close", () => closes++);
      const size = Math.floor(rand() * 64);
      const bytes = Buffer.alloc(size);
      for (let i = 0; i < size; i++) bytes[i] = Math.floor(rand() * 256);
      // half the cases start with a plausible header so the deeper paths are reached
      if (rand() < 0.5 && size > 2) bytes[1] = 0x80 | (bytes[1]! & 0x7f);
      expect(() => sink.emit("data", bytes)).not.toThrow();
    }
    expect(closes).toBeGreaterThan(1000); // many inputs are protocol errors and must close
  });

  test("valid frames split at every byte boundary reassemble to the same messages", () => {
    const text = encodeFrame(newMessage({ operation: "update", resource: "default/pod/p" }, { a: "ü".repeat(50) }));
    const stream = Buffer.concat([maskedFrame(0x1, Buffer.from(text.slice(0, 20)), false), maskedFrame(0x9, Buffer.from("hi")), maskedFrame(0x0, Buffer.from(text.slice(20)))]);
    for (let cut = 1; cut < stream.length; cut++) {
      const sink = new Sink();
      const conn = new WsConnection(sink, 1 << 20);
      const got: string[] = [];
      conn.on("message", (t) => got.push(t));
      // copies: the reader unmasks in place, as it owns what a socket hands it
      sink.emit("data", Buffer.from(stream.subarray(0, cut)));
      sink.emit("data", Buffer.from(stream.subarray(cut)));
      expect(got).toEqual([text]);
      expect(sink.written).toBeGreaterThan(0); // the ping was answered
    }
  });

  test("oversize, unmasked and non-UTF-8 frames close with the right code", () => {
    const cases: [Buffer, number][] = [
      [maskedFrame(0x1, Buffer.alloc(2000, 0x41)), 1009],
      [Buffer.from([0x81, 0x02, 0x41, 0x42]), 1002],
      [maskedFrame(0x1, Buffer.from([0xff, 0xfe, 0xfd])), 1007],
      [maskedFrame(0x0, Buffer.from("x")), 1002],
      [maskedFrame(0x3, Buffer.from("x")), 1002],
    ];
    for (const [bytes, code] of cases) {
      const sink = new Sink();
      const conn = new WsConnection(sink, 1024);
      let closed = 0;
      conn.on("close", (c) => (closed = c));
      sink.emit("data", bytes);
      expect(closed).toBe(code);
    }
  });

  test("20,000 mutated messages: parseFrame accepts or throws FrameError, nothing else", () => {
    const rand = rng(7);
    const base = encodeFrame(newMessage({ source: "edged", group: "resource", operation: "update", resource: "default/podstatus/p" }, { phase: "Running" }, { resourceversion: "5" }));
    let accepted = 0;
    for (let n = 0; n < 20_000; n++) {
      const chars = [...base];
      const edits = 1 + Math.floor(rand() * 4);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * chars.length);
        const op = rand();
        if (op < 0.33) chars.splice(at, 1);
        else if (op < 0.66) chars.splice(at, 0, String.fromCharCode(Math.floor(rand() * 128)));
        else chars[at] = '{}[]":,0an'[Math.floor(rand() * 10)]!;
      }
      try {
        parseFrame(chars.join(""));
        accepted++;
      } catch (e) {
        expect(e).toBeInstanceOf(FrameError);
      }
    }
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(20_000);
  });
});
