/** The runtime seam outside Bun: the store (better-sqlite3) and the hub run on Node 20 too. */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { ROOT } from "./helpers/daemons.ts";

describe("Node.js", () => {
  test("store and hub work under node", () => {
    // inside the project (.tmp/ is ignored) so node resolves better-sqlite3 from node_modules
    const out = join(ROOT, ".tmp", `node-smoke-${process.pid}.mjs`);
    const build = spawnSync(process.execPath, ["build", "tests/smoke/node-store-hub.ts", "--target", "node", "--format", "esm", "--outfile", out, "--external", "better-sqlite3"], { cwd: ROOT, encoding: "utf8" });
    expect(build.status, build.stderr).toBe(0);
    const run = spawnSync("node", [out], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
    rmSync(out, { force: true });
    expect(run.status, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout.trim().split("\n").pop()!);
    expect(result.runtime).toBe("node");
    expect(result.node).toMatch(/^v\d+/);
    expect(result.ack).toBe("OK");
    expect(result.rows).toEqual([{ key: "default/configmap/c", resource_version: "3" }]);
  });
});
