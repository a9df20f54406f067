/**
 * Hands the executable's clean code pages back to the kernel once a daemon has started.
 *
 * Starting touches far more of the Bun executable than running does (module evaluation, the
 * parser and JIT tiers, TLS and SQLite setup): about 20 MiB of code pages that stay counted in the
 * process's RSS, and in its cgroup, until memory runs short. `madvise(MADV_PAGEOUT)` on the
 * executable's read-only mappings lets the kernel drop them now; the pages the daemon still uses are
 * read back from the page cache on their next use, so RSS settles at the working set. Clean file
 * pages only: nothing is lost, nothing is written. Linux ≥ 5.4 under Bun (bun:ffi); elsewhere a no-op.
 */
import { readFileSync, readlinkSync } from "node:fs";

const MADV_PAGEOUT = 21;

/** Bytes of mappings handed back, or null where this cannot be done (not Linux, not Bun, no libc). */
export async function releaseStartupCodePages(): Promise<number | null> {
  if (process.platform !== "linux" || !("Bun" in globalThis)) return null;
  let madvise: (addr: bigint, len: bigint, advice: number) => number;
  let close: () => void;
  try {
    const { dlopen } = await import("bun:ffi");
    const libc = dlopen("libc.so.6", { madvise: { args: ["u64", "u64", "i32"], returns: "i32" } });
    madvise = libc.symbols.madvise as typeof madvise;
    close = () => libc.close();
  } catch {
    return null; // e.g. a musl system without libc.so.6
  }
  try {
    const exe = readlinkSync("/proc/self/exe");
    let released = 0;
    for (const line of readFileSync("/proc/self/maps", "utf8").split("\n")) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (r-xp|r--p) \S+ \S+ \S+\s+(.*)$/.exec(line);
      if (!m || m[4] !== exe) continue;
      const start = BigInt(`0x${m[1]}`);
      const end = BigInt(`0x${m[2]}`);
      if (madvise(start, end - start, MADV_PAGEOUT) === 0) released += Number(end - start);
    }
    return released;
  } finally {
    close();
  }
}
