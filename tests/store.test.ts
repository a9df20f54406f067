import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../lib/store/db.ts";
import { edgeMigrations, type EdgeDb } from "../lib/edge/store.ts";
import { runtimeName } from "../lib/runtime/index.ts";

describe("store", () => {
  test("migrations run once, data survives reopening, WAL is on", async () => {
    expect(runtimeName).toBe("bun");
    const path = join(mkdtempSync(join(tmpdir(), "outpost-store-")), "edgecore.db");
    const s1 = await openStore<EdgeDb>(path, edgeMigrations);
    await s1.db.insertInto("meta").values({ key: "default/pod/p", type: "pod", value: "{}", resource_version: "1", updated_at: 1 }).execute();
    const mode = s1.raw.prepare("PRAGMA journal_mode").all([]) as { journal_mode: string }[];
    expect(mode[0]?.journal_mode).toBe("wal");
    await s1.close();
    const s2 = await openStore<EdgeDb>(path, edgeMigrations);
    const rows = await s2.db.selectFrom("meta").selectAll().execute();
    expect(rows.map((r) => r.key)).toEqual(["default/pod/p"]);
    const applied = s2.raw.prepare("SELECT name FROM kysely_migration").all([]) as { name: string }[];
    expect(applied.map((r) => r.name)).toEqual(Object.keys(edgeMigrations));
    await s2.close();
  });

  test("a failing migration is reported with its name", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "outpost-store-")), "x.db");
    const bad = { "0001-bad": { up: async () => { throw new Error("nope"); } } };
    await expect(openStore(path, bad)).rejects.toThrow(/migration 0001-bad failed: nope/);
  });
});
