/**
 * Tables of the embedded API. Names start with "0100-apiserver-" so they sort after the other
 * components' migrations when they share cloudcore.db.
 */
import { sql, type Kysely, type Migration } from "kysely";

export const apiserverMigrations: Record<string, Migration> = {
  "0100-apiserver-001-objects": {
    async up(db: Kysely<any>) {
      // One row per live object; `grp` is "" for the core group, `namespace` "" for cluster scope.
      await sql`CREATE TABLE apiserver_objects (
        grp TEXT NOT NULL,
        resource TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        rv INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (grp, resource, namespace, name)
      ) WITHOUT ROWID`.execute(db);
      // The recent change log, so watches resume across restarts; trimmed to the event window.
      await sql`CREATE TABLE apiserver_events (
        rv INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        grp TEXT NOT NULL,
        resource TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL
      )`.execute(db);
      await sql`CREATE TABLE apiserver_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`.execute(db);
    },
    async down(db: Kysely<any>) {
      await sql`DROP TABLE apiserver_meta`.execute(db);
      await sql`DROP TABLE apiserver_events`.execute(db);
      await sql`DROP TABLE apiserver_objects`.execute(db);
    },
  },
};
