/**
 * Container logs: stdout and stderr of a container appended, as the bytes come, to one file,
 * rotated by size: `<c>.log` → `<c>.log.1` → … → `<c>.log.<maxFiles-1>`, the oldest dropped.
 * Writes are synchronous so lines of one container never interleave out of order.
 */
import { closeSync, mkdirSync, openSync, renameSync, rmSync, fstatSync, writeSync } from "node:fs";
import { dirname } from "node:path";

export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;
export const DEFAULT_LOG_MAX_FILES = 3;

export class RotatingLog {
  private fd: number | null = null;
  private size = 0;

  constructor(
    readonly path: string,
    private readonly maxBytes = DEFAULT_LOG_MAX_BYTES,
    private readonly maxFiles = DEFAULT_LOG_MAX_FILES,
  ) {}

  write(chunk: Uint8Array | string): void {
    const buf = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (buf.length === 0) return;
    if (this.fd === null) this.open();
    // Fill the current file up to maxBytes (cutting after a newline when one fits), then rotate.
    let off = 0;
    while (off < buf.length) {
      let room = this.maxBytes - this.size;
      if (room <= 0) {
        this.rotate();
        room = this.maxBytes;
      }
      let end = Math.min(buf.length, off + room);
      if (end < buf.length) {
        const nl = buf.lastIndexOf(0x0a, end - 1);
        if (nl >= off) end = nl + 1;
      }
      this.writeAll(buf, off, end);
      this.size += end - off;
      off = end;
      if (off < buf.length) this.rotate();
    }
  }

  private writeAll(buf: Uint8Array, from: number, to: number): void {
    let off = from;
    while (off < to) off += writeSync(this.fd!, buf, off, to - off);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private open(): void {
    mkdirSync(dirname(this.path), { recursive: true });
    this.fd = openSync(this.path, "a", 0o640);
    this.size = fstatSync(this.fd).size;
  }

  private rotate(): void {
    this.close();
    if (this.maxFiles <= 1) {
      rmSync(this.path, { force: true });
    } else {
      rmSync(`${this.path}.${this.maxFiles - 1}`, { force: true });
      for (let i = this.maxFiles - 2; i >= 1; i--) {
        try {
          renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        } catch {
          /* not there yet */
        }
      }
      renameSync(this.path, `${this.path}.1`);
    }
    this.open();
  }
}
