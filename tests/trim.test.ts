/**
 * Releasing the executable's startup code pages (lib/runtime/trim.ts). The kernel only pages out
 * what no other process maps, and other Bun processes share this machine's bun executable, so the
 * probe runs from a private copy of it.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ROOT, run, tmpDir } from "./helpers/daemons.ts";

const dir = tmpDir("trim");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const probe = `
import { readFileSync } from "node:fs";
import { releaseStartupCodePages } from ${JSON.stringify(join(ROOT, "lib/runtime/trim.ts"))};
const rssFile = () => Number(/^RssFile:\\s+(\\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))[1]);
const before = rssFile();
const released = await releaseStartupCodePages();
const after = rssFile();
console.log(JSON.stringify({ before, after, released, works: JSON.parse(JSON.stringify({ ok: [1, 2] })).ok.length }));
`;

describe.skipIf(process.platform !== "linux")("startup code pages", () => {
  test("MADV_PAGEOUT on the executable's read-only mappings lowers the file-backed RSS, and the process runs on", async () => {
    const bun = join(dir, "bun");
    copyFileSync(process.execPath, bun);
    const r = await run("/bin/sh", ["-c", `chmod +x ${bun} && ${bun} -e '${probe.replace(/'/g, "'\\''")}'`], { timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { before: number; after: number; released: number; works: number };
    expect(out.released).toBeGreaterThan(0);
    expect(out.after).toBeLessThan(out.before * 0.8);
    expect(out.works).toBe(2);
    console.log(`file-backed RSS ${Math.round(out.before / 1024)} → ${Math.round(out.after / 1024)} MiB (${Math.round(out.released / 1048576)} MiB of mappings advised)`);
  });
});
