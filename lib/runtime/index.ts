/**
 * The runtime seam: the only module that knows whether we run on Bun, Node or Deno.
 * Everything runtime-specific (today: the SQLite driver) is reached through here.
 */

export type RuntimeName = "bun" | "node" | "deno";

declare const Deno: unknown;

export const runtimeName: RuntimeName =
  typeof (globalThis as { Bun?: unknown }).Bun !== "undefined"
    ? "bun"
    : typeof Deno !== "undefined"
      ? "deno"
      : "node";

/** The statement shape Kysely's SqliteDialect drives (better-sqlite3's API, which we adapt Bun's to). */
export interface SqliteStatement {
  readonly reader: boolean;
  all(parameters: ReadonlyArray<unknown>): unknown[];
  run(parameters: ReadonlyArray<unknown>): { changes: number | bigint; lastInsertRowid: number | bigint };
  iterate(parameters: ReadonlyArray<unknown>): IterableIterator<unknown>;
}

export interface SqliteDatabase {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): void;
  close(): void;
}

interface BunStatement {
  columnNames: string[];
  all(...params: unknown[]): unknown[];
  run(...params: unknown[]): { changes: number; lastInsertRowid: number | bigint };
  iterate(...params: unknown[]): IterableIterator<unknown>;
}
interface BunDatabase {
  prepare(sql: string): BunStatement;
  run(sql: string): unknown;
  close(): void;
}

/** Opens (creating if needed) an SQLite file with the driver native to this runtime. */
export async function openSqlite(path: string): Promise<SqliteDatabase> {
  if (runtimeName === "bun") {
    const { Database } = (await import("bun:sqlite")) as unknown as {
      Database: new (p: string, o: { create: boolean; strict: boolean }) => BunDatabase;
    };
    const db = new Database(path, { create: true, strict: true });
    return {
      prepare(sql) {
        const stmt = db.prepare(sql);
        return {
          reader: stmt.columnNames.length > 0,
          all: (p) => stmt.all(...p),
          run: (p) => stmt.run(...p),
          iterate: (p) => stmt.iterate(...p),
        };
      },
      exec: (sql) => void db.run(sql),
      close: () => db.close(),
    };
  }
  // Node (and Deno through its npm compatibility): better-sqlite3. The name is kept out of the
  // static import graph so Bun's bundler never tries to pack a native addon into the binary.
  const driver = "better-sqlite3";
  const mod = (await import(driver)) as {
    default: new (p: string) => SqliteDatabase & { exec(sql: string): unknown };
  };
  const db = new mod.default(path);
  return {
    prepare: (sql) => db.prepare(sql),
    exec: (sql) => void db.exec(sql),
    close: () => db.close(),
  };
}
