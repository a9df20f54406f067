/**
 * Modbus RTU over a serial line without the serialport package: serialport's native binding needs
 * libuv's uv_poll, which Bun does not provide (it panics), so the tty is opened as a file, set raw
 * with `stty`, and read as a stream. This port plugs into modbus-serial (which does the protocol)
 * and cuts the byte stream into response frames by the length the request implies.
 */
import { EventEmitter } from "node:events";
import { execFileSync } from "node:child_process";
import fs from "node:fs";

/** CRC-16/MODBUS (reflected 0xA001, init 0xFFFF), low byte first on the wire. */
export function crc16(buf: Uint8Array): number {
  let crc = 0xffff;
  for (const b of buf) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

/** Appends the CRC to a frame body. */
export function withCrc(body: Uint8Array): Buffer {
  const out = Buffer.alloc(body.length + 2);
  out.set(body);
  out.writeUInt16LE(crc16(body), body.length);
  return out;
}

/** Expected length of the response to an RTU request frame (without knowing it yet). */
export function responseLength(request: Uint8Array): number {
  const fc = request[1]!;
  const qty = ((request[4] ?? 0) << 8) | (request[5] ?? 0);
  switch (fc) {
    case 1:
    case 2:
      return 5 + Math.ceil(qty / 8);
    case 3:
    case 4:
      return 5 + 2 * qty;
    case 5:
    case 6:
    case 15:
    case 16:
      return 8;
    default:
      return 0; // unknown: emit whatever arrives
  }
}

export interface TtyOptions {
  baudRate: number;
  dataBits: number;
  parity: "none" | "even" | "odd";
  stopBits: number;
}

/** Puts a tty into raw mode at the given line settings (pseudo-terminals accept and ignore them). */
export function configureTty(path: string, o: TtyOptions): void {
  const parity = o.parity === "none" ? ["-parenb"] : o.parity === "even" ? ["parenb", "-parodd"] : ["parenb", "parodd"];
  execFileSync("stty", ["-F", path, String(o.baudRate), "raw", "-echo", `cs${o.dataBits}`, o.stopBits === 2 ? "cstopb" : "-cstopb", ...parity], { stdio: "ignore" });
}

/** A serial line as a modbus-serial port: open/close/write plus "data" events of whole frames. */
export class TtyRtuPort extends EventEmitter {
  private fd = -1;
  private stream?: fs.ReadStream;
  private buffer: Buffer = Buffer.alloc(0);
  private expected = 0;
  private unit = 0;
  isOpen = false;

  constructor(private readonly path: string, private readonly options: TtyOptions) {
    super();
  }

  open(callback: (err?: Error | null) => void): void {
    try {
      configureTty(this.path, this.options);
      this.fd = fs.openSync(this.path, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    } catch (e) {
      callback(e as Error);
      return;
    }
    this.isOpen = true;
    this.stream = fs.createReadStream("", { fd: this.fd, highWaterMark: 256, autoClose: false });
    this.stream.on("data", (chunk) => this.onData(chunk as Buffer));
    this.stream.on("error", (e) => {
      if (this.isOpen) this.emit("error", e); // a read still in flight at close fails with EBADF: expected
    });
    callback(null);
  }

  close(callback?: () => void): void {
    if (!this.isOpen) return void callback?.();
    this.isOpen = false;
    this.stream?.destroy();
    try {
      fs.closeSync(this.fd);
    } catch {
      // already gone
    }
    this.emit("close");
    callback?.();
  }

  write(data: Buffer): void {
    this.buffer = Buffer.alloc(0);
    this.unit = data[0]!;
    this.expected = responseLength(data);
    try {
      fs.writeSync(this.fd, data);
    } catch (e) {
      this.emit("error", e);
    }
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    // skip noise before a frame from the addressed unit
    const start = this.buffer.indexOf(this.unit);
    if (start < 0) return void (this.buffer = Buffer.alloc(0));
    if (start > 0) this.buffer = this.buffer.subarray(start);
    if (this.buffer.length >= 5 && this.buffer[1]! & 0x80) return this.emitFrame(5); // exception response
    if (this.expected === 0 || this.buffer.length >= this.expected) this.emitFrame(this.expected || this.buffer.length);
  }

  private emitFrame(length: number): void {
    const frame = this.buffer.subarray(0, length);
    this.buffer = this.buffer.subarray(length);
    this.emit("data", Buffer.from(frame));
  }
}
