/** Crash-safe file replacement (credentials, endpoints.json, join records): a reader sees the old file or the new one, never half of one. */
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, writeFileSync } from "node:fs";

export function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", mode);
  try {
    fchmodSync(fd, mode); // the temp file may be left over from a crash, with other permissions
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
