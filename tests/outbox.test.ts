/** The cloud outbox and the edge's upstream queue in-process: compaction, acks, bounds, persistence. */
import { afterEach, describe, expect, test } from "bun:test";
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { Outbox, compaction, outboxMigrations } from "../lib/cloud/outbox.ts";
import { UpstreamQueue, reliableKey, upstreamMigrations } from "../lib/edge/upstream.ts";
import { newMessage, responseTo, type Message } from "../lib/message.ts";
import { Metrics } from "../lib/metrics.ts";
import { createLogger } from "../lib/log.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import type { CloudHub } from "../lib/hub/cloudhub.ts";
import { tmpDir } from "./helpers/daemons.ts";

const log = createLogger({ level: "error" });
const stores: Store<unknown>[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});

class FakeHub extends EventEmitter {
  readonly sent: { node: string; msg: Message }[] = [];
  readonly up = new Set<string>();
  isConnected = (n: string) => this.up.has(n);
  connectedNodes = () => [...this.up];
  sendToNode = (node: string, msg: Message) => {
    if (!this.up.has(node)) return false;
    this.sent.push({ node, msg });
    return true;
  };
  connect(n: string) {
    this.up.add(n);
    this.emit("connected", n);
  }
}

const obj = (op: string, name: string, rv: string, data = rv) => newMessage({ source: "edgecontroller", group: "resource", operation: op, resource: `default/configmap/${name}` }, { metadata: { name, resourceVersion: rv }, data }, { resourceversion: rv });

async function open(path: string, migrations: Record<string, unknown>) {
  const s = await openStore<unknown>(path, migrations as never);
  stores.push(s);
  return s;
}

describe("outbox", () => {
  test("compaction: newer replaces, older is dropped, a delete replaces anything, only a newer object beats a delete", () => {
    expect(compaction(obj("update", "a", "10"), obj("update", "a", "9"))).toBe("replace");
    expect(compaction(obj("update", "a", "9"), obj("update", "a", "10"))).toBe("keep");
    expect(compaction(obj("update", "a", "10"), obj("update", "a", "10"))).toBe("same");
    expect(compaction(obj("update", "a", "100"), obj("update", "a", "99"))).toBe("replace"); // integers, not strings
    expect(compaction(obj("delete", "a", "5"), obj("update", "a", "10"))).toBe("replace");
    expect(compaction(obj("update", "a", "10"), obj("delete", "a", "11"))).toBe("keep");
    expect(compaction(obj("insert", "a", "12"), obj("delete", "a", "11"))).toBe("replace");
  });

  test("stores before sending, sends when connected, once per session; acks remove; pending survives a restart", async () => {
    const path = join(tmpDir("outbox"), "cloudcore.db");
    let store = await open(path, outboxMigrations);
    let hub = new FakeHub();
    let box = new Outbox({ hub: hub as unknown as CloudHub, raw: store.raw, log, metrics: new Metrics(), retryMs: 60_000 });
    box.start();
    for (let i = 1; i <= 100; i++) box.send("n1", obj("update", "churn", String(i)));
    box.send("n1", obj("update", "other", "5"));
    expect(box.pending("n1")).toBe(2);
    expect(hub.sent.length).toBe(0); // offline: nothing sent, everything kept
    box.stop();
    await store.close();
    stores.length = 0;

    store = await open(path, outboxMigrations);
    hub = new FakeHub();
    box = new Outbox({ hub: hub as unknown as CloudHub, raw: store.raw, log, metrics: new Metrics(), retryMs: 60_000 });
    box.start();
    expect(box.pending("n1")).toBe(2);
    hub.connect("n1");
    expect(hub.sent.map((s) => (s.msg.content as { data: string }).data)).toEqual(["100", "5"]);
    box.send("n1", obj("update", "churn", "100")); // the controllers' resync: already pending and sent
    expect(hub.sent.length).toBe(2);
    hub.emit("ack", "n1", hub.sent[0]!.msg.header.msg_id);
    expect(box.pending("n1")).toBe(1);
    hub.emit("ack", "n1", "no-such-id");
    expect(box.pending("n1")).toBe(1);
    box.stop();
  });

  test("bounded per node: the oldest non-delete is dropped, deletes are kept", async () => {
    const store = await open(join(tmpDir("outbox"), "cloudcore.db"), outboxMigrations);
    const metrics = new Metrics();
    const box = new Outbox({ hub: new FakeHub() as unknown as CloudHub, raw: store.raw, log, metrics, limitPerNode: 3 });
    box.start();
    box.send("n1", obj("delete", "d", "1"));
    for (let i = 0; i < 5; i++) box.send("n1", obj("update", `c${i}`, "2"));
    expect(box.pending("n1")).toBe(3);
    expect(metrics.value("outpost_cloud_outbox_dropped_total")).toBe(3);
    box.stop();
  });
});

describe("edge upstream queue", () => {
  const status = (name: string, phase: string) => newMessage({ source: "edged", group: "resource", operation: "update", resource: `default/podstatus/${name}` }, { status: { phase } });
  const twin = (props: Record<string, string>) =>
    newMessage({ source: "twin", group: "resource", operation: "update", resource: "device/default/m/twin/edge_updated" }, { event_id: "x", timestamp: 1, twin: Object.fromEntries(Object.entries(props).map(([k, v]) => [k, { actual: { value: v } }])) });

  test("which messages are kept: statuses, pod deletions and twin reports; never keepalives", () => {
    expect(reliableKey(status("p", "Running"))).toBe("default/podstatus/p");
    expect(reliableKey(newMessage({ source: "edged", group: "resource", operation: "delete", resource: "default/pod/p" }, {}))).toBe("default/pod/p");
    expect(reliableKey(newMessage({ source: "edged", group: "resource", operation: "update", resource: "null/nodestatus/n" }, {}))).toBe("null/nodestatus/n");
    expect(reliableKey(twin({ a: "1" }))).toBe("device/default/m/twin/edge_updated");
    expect(reliableKey(newMessage({ source: "websocket", group: "resource", operation: "keepalive", resource: "node" }, "ping"))).toBeNull();
    expect(reliableKey(newMessage({ source: "bus", group: "user", operation: "upload", resource: "a/b" }, "x"))).toBeNull();
  });

  test("compacted per object, twins merged per property (latest wins), acked, persisted", async () => {
    const path = join(tmpDir("upstream"), "edgecore.db");
    let store = await open(path, upstreamMigrations);
    let q = new UpstreamQueue({ raw: store.raw, log, metrics: new Metrics() });
    q.put("default/podstatus/p", status("p", "Pending"));
    const running = q.put("default/podstatus/p", status("p", "Running"))!;
    q.put("device/default/m/twin/edge_updated", twin({ a: "1", b: "1" }));
    const merged = q.put("device/default/m/twin/edge_updated", twin({ a: "2" }))!;
    expect(q.size).toBe(2);
    expect((merged.content as { twin: Record<string, { actual: { value: string } }> }).twin).toEqual({ a: { actual: { value: "2" } }, b: { actual: { value: "1" } } });
    await store.close();
    stores.length = 0;
    store = await open(path, upstreamMigrations);
    q = new UpstreamQueue({ raw: store.raw, log, metrics: new Metrics() });
    const due = q.connected();
    expect(due.map((m) => m.header.msg_id)).toEqual([running.header.msg_id, merged.header.msg_id]);
    for (const m of due) q.sent(m);
    expect(q.put("default/podstatus/p", status("p", "Running"))).toBeNull(); // same and already sent
    expect(q.ack(responseTo(running, "OK").header.parent_msg_id!)).toBe(true);
    expect(q.size).toBe(1);
  });
});
