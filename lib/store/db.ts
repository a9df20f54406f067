import { Kysely, Migrator, SqliteDialect, type Migration } from "kysely";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { openSqlite, type SqliteDatabase } from "../runtime/index.ts";

export interface Store<T> {
  db: Kysely<T>;
  /** The raw connection, for the few hot paths that want prepared statements without Kysely. */
  raw: SqliteDatabase;
  close(): Promise<void>;
}

/**
 * Opens an SQLite store: WAL journal (readers never block the single writer), synchronous=NORMAL
 * (a committed transaction survives a process crash; only an OS crash may lose the last ones),
 * then applies the given versioned migrations in name order.
 */
export async function openStore<T>(path: string, migrations: Record<string, Migration>): Promise<Store<T>> {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const raw = await openSqlite(path);
  raw.exec("PRAGMA journal_mode = WAL");
  raw.exec("PRAGMA synchronous = NORMAL");
  raw.exec("PRAGMA busy_timeout = 5000");
  raw.exec("PRAGMA foreign_keys = ON");
  // Kysely's dialect asks for the database through a factory; one connection = one writer.
  const db = new Kysely<T>({ dialect: new SqliteDialect({ database: async () => raw as never }) });
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    await db.destroy();
    throw new Error(`store ${path}: migration ${failed} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { db, raw, close: () => db.destroy() };
}
