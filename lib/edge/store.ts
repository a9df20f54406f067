/** edgecore.db: the tables and migrations of the edge store. */
import { sql, type Kysely, type Migration } from "kysely";

export interface MetaTable {
  /** The resource string `<namespace>/<type>/<name>` as the cloud sent it. */
  key: string;
  type: string;
  value: string;
  resource_version: string;
  updated_at: number;
}

export interface EdgeDb {
  meta: MetaTable;
}

export const edgeMigrations: Record<string, Migration> = {
  "0001-meta": {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable("meta")
        .addColumn("key", "text", (c) => c.primaryKey())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("value", "text", (c) => c.notNull())
        .addColumn("resource_version", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("updated_at", "integer", (c) => c.notNull().defaultTo(sql`0`))
        .execute();
      await db.schema.createIndex("meta_type").on("meta").column("type").execute();
    },
  },
};
