/**
 * The device twin's tables in edgecore.db, laid out like KubeEdge's (device / device_attr /
 * device_twin) plus the Device and DeviceModel objects the cloud sent, and synchronous access
 * through prepared statements: a twin update is one short transaction with no await inside, so
 * nothing else can interleave with it on the shared connection.
 */
import { sql, type Kysely, type Migration } from "kysely";
import type { SqliteDatabase, SqliteStatement } from "../../runtime/index.ts";

export interface DeviceTable {
  /** `<namespace>/<name>`. */
  id: string;
  namespace: string;
  name: string;
  description: string;
  state: string;
  last_online: string;
  /** The v1beta1 Device object as JSON ("" for devices known only through membership). */
  object: string;
  updated_at: number;
}

export interface DeviceModelTable {
  /** `<namespace>/<name>`. */
  id: string;
  value: string;
  updated_at: number;
}

export interface DeviceAttrTable {
  id: number;
  deviceid: string;
  name: string;
  description: string;
  value: string;
  optional: number;
  attr_type: string;
  metadata: string;
}

export interface DeviceTwinTable {
  id: number;
  deviceid: string;
  name: string;
  description: string;
  /** Desired value ("" = none). */
  expected: string;
  /** Reported value ("" = none). */
  actual: string;
  /** JSON `{"timestamp":ms}`. */
  expected_meta: string;
  actual_meta: string;
  /** JSON `{"cloud":n,"edge":n}` ("" = never set). */
  expected_version: string;
  actual_version: string;
  optional: number;
  /** Value type: string/int/integer/float/boolean, or `deleted`. */
  attr_type: string;
  /** JSON of the twin's metadata other than its type. */
  metadata: string;
}

export interface DeviceTwinDb {
  device: DeviceTable;
  device_model: DeviceModelTable;
  device_attr: DeviceAttrTable;
  device_twin: DeviceTwinTable;
}

/** Merged by the integrator into edgecore.db's migrations. */
export const deviceTwinMigrations: Record<string, Migration> = {
  "0200-devicetwin-tables": {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable("device")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("namespace", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("name", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("state", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("last_online", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("object", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("updated_at", "integer", (c) => c.notNull().defaultTo(sql`0`))
        .execute();
      await db.schema
        .createTable("device_model")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("value", "text", (c) => c.notNull())
        .addColumn("updated_at", "integer", (c) => c.notNull().defaultTo(sql`0`))
        .execute();
      await db.schema
        .createTable("device_attr")
        .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
        .addColumn("deviceid", "text", (c) => c.notNull().references("device.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("value", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("optional", "integer", (c) => c.notNull().defaultTo(sql`1`))
        .addColumn("attr_type", "text", (c) => c.notNull().defaultTo("string"))
        .addColumn("metadata", "text", (c) => c.notNull().defaultTo(""))
        .addUniqueConstraint("device_attr_device_name", ["deviceid", "name"])
        .execute();
      await db.schema
        .createTable("device_twin")
        .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
        .addColumn("deviceid", "text", (c) => c.notNull().references("device.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("expected", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("actual", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("expected_meta", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("actual_meta", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("expected_version", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("actual_version", "text", (c) => c.notNull().defaultTo(""))
        .addColumn("optional", "integer", (c) => c.notNull().defaultTo(sql`1`))
        .addColumn("attr_type", "text", (c) => c.notNull().defaultTo("string"))
        .addColumn("metadata", "text", (c) => c.notNull().defaultTo(""))
        .addUniqueConstraint("device_twin_device_name", ["deviceid", "name"])
        .execute();
    },
  },
};

type Row<T> = Omit<T, "id">;

/** Synchronous access to the twin tables over the store's raw connection. */
export class TwinStore {
  private readonly stmts = new Map<string, SqliteStatement>();

  /** Open transactions of ours (the outer one plus savepoints). */
  private depth = 0;

  constructor(private readonly raw: SqliteDatabase) {}

  private stmt(text: string): SqliteStatement {
    let s = this.stmts.get(text);
    if (!s) this.stmts.set(text, (s = this.raw.prepare(text)));
    return s;
  }

  /**
   * Runs `fn` in one transaction; rolls back and rethrows on error. Nested inside another of ours it
   * is a savepoint: only its own writes roll back, the outer transaction goes on.
   */
  transaction<T>(fn: () => T): T {
    const nested = this.depth > 0;
    try {
      this.raw.exec(nested ? "SAVEPOINT twin_part" : "BEGIN IMMEDIATE");
    } catch (e) {
      // Another user of the shared connection holds a transaction open: join it.
      if (!nested && /within a transaction/i.test(String(e))) return fn();
      throw e;
    }
    this.depth++;
    try {
      const out = fn();
      this.raw.exec(nested ? "RELEASE twin_part" : "COMMIT");
      return out;
    } catch (e) {
      try {
        if (nested) {
          this.raw.exec("ROLLBACK TO twin_part");
          this.raw.exec("RELEASE twin_part");
        } else this.raw.exec("ROLLBACK");
      } catch {
        // already rolled back by SQLite
      }
      throw e;
    } finally {
      this.depth--;
    }
  }

  upsertDevice(d: DeviceTable): void {
    this.stmt(
      `INSERT INTO device (id, namespace, name, description, state, last_online, object, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET namespace = excluded.namespace, name = excluded.name, description = excluded.description,
       state = excluded.state, last_online = excluded.last_online, object = excluded.object, updated_at = excluded.updated_at`,
    ).run([d.id, d.namespace, d.name, d.description, d.state, d.last_online, d.object, d.updated_at]);
  }

  updateDeviceState(id: string, state: string, lastOnline: string): void {
    this.stmt("UPDATE device SET state = ?, last_online = ?, updated_at = ? WHERE id = ?").run([state, lastOnline, Date.now(), id]);
  }

  deleteDevice(id: string): void {
    // The foreign keys cascade; delete explicitly too in case the pragma is off on this connection.
    this.stmt("DELETE FROM device_twin WHERE deviceid = ?").run([id]);
    this.stmt("DELETE FROM device_attr WHERE deviceid = ?").run([id]);
    this.stmt("DELETE FROM device WHERE id = ?").run([id]);
  }

  upsertTwin(t: Row<DeviceTwinTable>): void {
    this.stmt(
      `INSERT INTO device_twin (deviceid, name, description, expected, actual, expected_meta, actual_meta, expected_version, actual_version, optional, attr_type, metadata)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(deviceid, name) DO UPDATE SET description = excluded.description, expected = excluded.expected, actual = excluded.actual,
       expected_meta = excluded.expected_meta, actual_meta = excluded.actual_meta, expected_version = excluded.expected_version,
       actual_version = excluded.actual_version, optional = excluded.optional, attr_type = excluded.attr_type, metadata = excluded.metadata`,
    ).run([t.deviceid, t.name, t.description, t.expected, t.actual, t.expected_meta, t.actual_meta, t.expected_version, t.actual_version, t.optional, t.attr_type, t.metadata]);
  }

  deleteTwin(deviceId: string, name: string): void {
    this.stmt("DELETE FROM device_twin WHERE deviceid = ? AND name = ?").run([deviceId, name]);
  }

  upsertAttr(a: Row<DeviceAttrTable>): void {
    this.stmt(
      `INSERT INTO device_attr (deviceid, name, description, value, optional, attr_type, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(deviceid, name) DO UPDATE SET description = excluded.description, value = excluded.value, optional = excluded.optional,
       attr_type = excluded.attr_type, metadata = excluded.metadata`,
    ).run([a.deviceid, a.name, a.description, a.value, a.optional, a.attr_type, a.metadata]);
  }

  deleteAttr(deviceId: string, name: string): void {
    this.stmt("DELETE FROM device_attr WHERE deviceid = ? AND name = ?").run([deviceId, name]);
  }

  upsertModel(id: string, value: string): void {
    this.stmt("INSERT INTO device_model (id, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at").run([
      id,
      value,
      Date.now(),
    ]);
  }

  deleteModel(id: string): void {
    this.stmt("DELETE FROM device_model WHERE id = ?").run([id]);
  }

  loadAll(): { devices: DeviceTable[]; models: DeviceModelTable[]; attrs: DeviceAttrTable[]; twins: DeviceTwinTable[] } {
    return {
      devices: this.raw.prepare("SELECT * FROM device ORDER BY id").all([]) as DeviceTable[],
      models: this.raw.prepare("SELECT * FROM device_model ORDER BY id").all([]) as DeviceModelTable[],
      attrs: this.raw.prepare("SELECT * FROM device_attr ORDER BY id").all([]) as DeviceAttrTable[],
      twins: this.raw.prepare("SELECT * FROM device_twin ORDER BY id").all([]) as DeviceTwinTable[],
    };
  }
}
