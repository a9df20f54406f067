/**
 * Server side of a WebSocket connection (RFC 6455) over an already-authenticated socket.
 * The hub needs the TLS peer certificate, which Bun's node:https hides, so the hub reads the
 * upgrade request itself (lib/net/http1.ts) and speaks the framing here: masked client frames,
 * fragmentation, ping/pong, close, and a hard limit on message size.
 */
import { isUtf8 } from "node:buffer";
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export function acceptKey(key: string): string {
  return createHash("sha1").update(key + GUID).digest("base64");
}

export const CloseCode = { normal: 1000, goingAway: 1001, protocol: 1002, badData: 1007, policy: 1008, tooBig: 1009, internal: 1011 } as const;

export interface WsConnectionEvents {
  message: [text: string];
  pong: [];
  close: [code: number, reason: string];
}


export class WsConnection extends EventEmitter<WsConnectionEvents> {
  private buf: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private closed = false;
  /** Set by hold(): frames stay unparsed in `buf` and the socket is paused until release(). */
  private held = false;

  constructor(readonly socket: Duplex, private readonly maxMessageBytes: number) {
    super();
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("close", () => this.finish(1006, "connection lost"));
    socket.on("error", () => this.finish(1006, "socket error"));
  }

  /** Completes the handshake (101) and starts reading frames; `head` = bytes already read after the request. */
  static accept(socket: Duplex, key: string, head: Buffer, maxMessageBytes: number): WsConnection {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`);
    const conn = new WsConnection(socket, maxMessageBytes);
    if (head.length) conn.onData(head);
    return conn;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  send(text: string): boolean {
    if (this.closed) return false;
    return this.socket.write(textFrame(text));
  }

  ping(): void {
    if (!this.closed) this.socket.write(frame(0x9, Buffer.alloc(0)));
  }

  close(code: number = CloseCode.normal, reason = ""): void {
    if (this.closed) return;
    const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
    payload.writeUInt16BE(code, 0);
    payload.write(reason, 2);
    this.socket.end(frame(0x8, payload.subarray(0, 125)));
    this.finish(code, reason);
    setTimeout(() => this.socket.destroy(), 1000).unref?.();
  }

  terminate(): void {
    this.socket.destroy();
    this.finish(1006, "terminated");
  }

  private finish(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.fragments = [];
    this.buf = Buffer.alloc(0);
    this.emit("close", code, reason);
  }

  /**
   * Stops handing out messages: what was read stays buffered (at most what the socket had already
   * read) and the socket is paused, so the peer's writes back up in TCP. For rate limits.
   */
  hold(): void {
    if (this.held || this.closed) return;
    this.held = true;
    this.socket.pause();
  }

  /** Undoes hold(): handles the buffered frames, then reads on. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    if (this.closed) return;
    this.socket.resume();
    if (this.buf.length) this.onData(Buffer.alloc(0));
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.buf = this.buf.length === 0 ? chunk : chunk.length === 0 ? this.buf : Buffer.concat([this.buf, chunk]);
    let off = 0;
    while (!this.closed && !this.held) {
      const avail = this.buf.length - off;
      if (avail < 2) break;
      const b0 = this.buf[off]!;
      const b1 = this.buf[off + 1]!;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if (b0 & 0x70) return this.close(CloseCode.protocol, "reserved bits set");
      if (!(b1 & 0x80)) return this.close(CloseCode.protocol, "client frames must be masked");
      let len = b1 & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (avail < 4) break;
        len = this.buf.readUInt16BE(off + 2);
        hdr = 4;
      } else if (len === 127) {
        if (avail < 10) break;
        const hi = this.buf.readUInt32BE(off + 2);
        const lo = this.buf.readUInt32BE(off + 6);
        if (hi > 0x1fffff) return this.close(CloseCode.tooBig, "frame too large");
        len = hi * 2 ** 32 + lo;
        hdr = 10;
      }
      const control = opcode >= 0x8;
      if (control && (!fin || len > 125)) return this.close(CloseCode.protocol, "bad control frame");
      if (!control && this.fragmentBytes + len > this.maxMessageBytes) return this.close(CloseCode.tooBig, `message larger than ${this.maxMessageBytes} bytes`);
      if (avail < hdr + 4 + len) break;
      const maskAt = off + hdr;
      const start = maskAt + 4;
      // Unmask in place: the bytes are ours once read off the socket, so no copy is needed.
      const b = this.buf;
      const m0 = b[maskAt]!, m1 = b[maskAt + 1]!, m2 = b[maskAt + 2]!, m3 = b[maskAt + 3]!;
      let i = start;
      const end = start + len;
      for (; i + 3 < end; i += 4) {
        b[i]! ^= m0;
        b[i + 1]! ^= m1;
        b[i + 2]! ^= m2;
        b[i + 3]! ^= m3;
      }
      for (let k = 0; i < end; i++, k++) b[i]! ^= k === 0 ? m0 : k === 1 ? m1 : m2;
      const payload = b.subarray(start, end);
      off = end;
      this.onFrame(fin, opcode, payload);
    }
    this.buf = off >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }

  private onFrame(fin: boolean, opcode: number, payload: Buffer): void {
    switch (opcode) {
      case 0x0:
      case 0x1:
      case 0x2: {
        const continuation = opcode === 0x0;
        if (continuation !== this.fragments.length > 0) return this.close(CloseCode.protocol, "unexpected continuation frame");
        this.fragments.push(payload);
        this.fragmentBytes += payload.length;
        if (!fin) return;
        const whole = this.fragments.length === 1 ? this.fragments[0]! : Buffer.concat(this.fragments);
        this.fragments = [];
        this.fragmentBytes = 0;
        if (!isUtf8(whole)) return this.close(CloseCode.badData, "message is not UTF-8");
        this.emit("message", whole.toString("utf8"));
        return;
      }
      case 0x8:
        this.close(CloseCode.normal);
        return;
      case 0x9:
        if (!this.closed) this.socket.write(frame(0xa, payload));
        return;
      case 0xa:
        this.emit("pong");
        return;
      default:
        this.close(CloseCode.protocol, `unknown opcode ${opcode}`);
    }
  }
}

function frame(opcode: number, payload: Buffer): Buffer {
  const out = frameHeader(opcode, payload.length);
  payload.copy(out, out.length - payload.length);
  return out;
}

/** A text frame encoded straight into its output buffer (one copy of the text, not two). */
function textFrame(text: string): Buffer {
  const len = Buffer.byteLength(text);
  const out = frameHeader(0x1, len);
  out.write(text, out.length - len);
  return out;
}

/** A buffer for a whole unmasked frame with its header filled in and room for `len` payload bytes. */
function frameHeader(opcode: number, len: number): Buffer {
  const hdr = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(hdr + len);
  out[0] = 0x80 | opcode;
  if (hdr === 2) out[1] = len;
  else if (hdr === 4) {
    out[1] = 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
  return out;
}
