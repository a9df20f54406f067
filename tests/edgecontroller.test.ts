/**
 * EdgeController in-process against the real embedded API, CloudHub and an EdgeHub over TLS: bursts
 * of upstream reports are all written and acked, unchanged node status is not rewritten, leases are
 * renewed while the node is connected. Plus the keyed work queue it writes through.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DeviceController } from "../lib/cloud/devicecontroller.ts";
import { EdgeController } from "../lib/cloud/edgecontroller.ts";
import { Outbox, outboxMigrations } from "../lib/cloud/outbox.ts";
import { KeyedWorkQueue } from "../lib/cloud/workqueue.ts";
import { apiserverMigrations, startApiServer } from "../lib/kube/apiserver/index.ts";
import { InformerFactory, KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { newMessage, Op, type Message } from "../lib/message.ts";
import { openStore } from "../lib/store/db.ts";
import { eventually } from "./helpers/daemons.ts";
import { joinNode, quietLog, startTestCloud, startTestEdge, type TestEdge } from "./helpers/hubs.ts";
import { startProxy } from "./helpers/proxy.ts";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(node: string, opts: { leaseRenewMs?: number } = {}) {
  const cloud = await startTestCloud({ record: false });
  cleanups.push(() => cloud.close());
  const store = await openStore<unknown>(join(cloud.dataDir, "cloudcore.db"), { ...apiserverMigrations, ...outboxMigrations } as never);
  cleanups.push(() => store.close());
  const api = await startApiServer({ store, host: "127.0.0.1", port: 0, dataDir: cloud.dataDir, log: quietLog });
  cleanups.push(() => api.close());
  const client = new KubeClient({ server: api.url, caPem: api.caCert, token: api.adminToken });
  cleanups.push(() => client.close());
  const informers = new InformerFactory(client);
  cleanups.push(() => informers.stop());
  const outbox = new Outbox({ hub: cloud.hub, raw: store.raw, log: quietLog, metrics: cloud.metrics });
  outbox.start();
  cleanups.push(() => outbox.stop());
  const ctl = new EdgeController({ client, informers, hub: cloud.hub, outbox, log: quietLog, ...opts });
  cloud.router.register(ctl);
  await ctl.start({ router: cloud.router } as never);
  cleanups.push(() => ctl.stop());
  const dir = await joinNode(cloud, node);
  const edge: TestEdge = await startTestEdge(`127.0.0.1:${cloud.hub.port}`, node, dir);
  cleanups.push(() => edge.close());
  // the DeviceController writes through a proxy that can hold its requests: a slow API
  const proxy = await startProxy(Number(new URL(api.url).port));
  cleanups.push(() => proxy.close());
  const slowClient = new KubeClient({ server: `https://127.0.0.1:${proxy.port}`, caPem: api.caCert, token: api.adminToken });
  cleanups.push(() => slowClient.close());
  const devices = new DeviceController({ client: slowClient, informers, hub: cloud.hub, outbox, log: quietLog, coalesceMs: 20 });
  cloud.router.register(devices);
  await devices.start({ router: cloud.router } as never);
  const acks: Message[] = [];
  edge.hub.on("message", (m: Message) => m.route.operation === Op.response && acks.push(m));
  type NodeObj = KubeObject & { status?: { capacity?: Record<string, string>; conditions?: { type: string; status: string }[] } };
  await eventually(async () => (await client.get<NodeObj>(Resources.nodes, node).catch(() => null))?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"), 10_000, "node registered and Ready");
  return { cloud, client, edge, acks, proxy, getNode: () => client.get<NodeObj>(Resources.nodes, node) };
}

describe("edgecontroller", () => {
  test("a burst of pod status reports larger than the router's inbox: every report acked, the newest written", async () => {
    const { client, edge, acks } = await setup("burst-node");
    const pods = 20;
    for (let p = 0; p < pods; p++) await client.create(Resources.pods, { apiVersion: "v1", kind: "Pod", metadata: { name: `b${p}`, namespace: "default" }, spec: { nodeName: "burst-node", containers: [{ name: "c", image: "x" }] } } as KubeObject);
    const perPod = 150; // 3,000 reports in one go: the router's inbox holds 1,024
    const sent = new Set<string>();
    for (let i = 0; i < perPod; i++)
      for (let p = 0; p < pods; p++) {
        const m = newMessage({ source: "edged", group: "resource", operation: Op.update, resource: `default/podstatus/b${p}` }, { status: { phase: "Running", message: `report ${i}` } });
        sent.add(m.header.msg_id);
        edge.hub.send(m);
      }
    await eventually(() => acks.filter((a) => sent.has(a.header.parent_msg_id ?? "")).length === sent.size, 30_000, `all ${sent.size} reports acked`);
    for (let p = 0; p < pods; p++) {
      const pod = await client.get<KubeObject & { status?: { message?: string } }>(Resources.pods, `b${p}`, "default");
      expect(pod.status?.message).toBe(`report ${perPod - 1}`);
    }
  }, 60_000);

  test("unchanged node status is acked without a write; a change is written; the lease is renewed while connected", async () => {
    const { client, edge, acks, getNode } = await setup("status-node", { leaseRenewMs: 200 });
    const report = (cpu: string) => {
      const m = newMessage({ source: "edged", group: "resource", operation: Op.update, resource: "null/nodestatus/status-node" }, { metadata: { name: "status-node" }, status: { capacity: { cpu }, conditions: [] } });
      edge.hub.send(m);
      return m.header.msg_id;
    };
    const acked = (id: string) => eventually(() => acks.some((a) => a.header.parent_msg_id === id), 10_000, "node status acked");
    await acked(report("2"));
    const first = await getNode();
    expect(first.status?.capacity?.cpu).toBe("2");
    await Bun.sleep(1100); // a rewrite would carry a newer heartbeat time (second resolution)
    await acked(report("2"));
    expect((await getNode()).metadata?.resourceVersion).toBe(first.metadata?.resourceVersion);
    await acked(report("4"));
    expect((await getNode()).status?.capacity?.cpu).toBe("4");

    type Lease = KubeObject & { spec?: { renewTime?: string } };
    const t0 = (await client.get<Lease>(Resources.leases, "status-node", "kube-node-lease")).spec?.renewTime;
    await eventually(async () => (await client.get<Lease>(Resources.leases, "status-node", "kube-node-lease")).spec?.renewTime !== t0, 5000, "lease renewed");
  }, 60_000);
});

describe("devicecontroller", () => {
  test("a slow API: a batch of twin reports waits for the write in flight; every report acked, the newest value kept", async () => {
    const { client, edge, acks, proxy } = await setup("twin-node");
    await client.create(Resources.devicemodels, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "m", namespace: "default" }, spec: { protocol: "modbus", properties: [{ name: "t", type: "FLOAT", accessMode: "ReadOnly" }] } } as KubeObject);
    await client.create(Resources.devices, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name: "d1", namespace: "default" }, spec: { nodeName: "twin-node", deviceModelRef: { name: "m" }, protocol: { protocolName: "modbus" }, properties: [{ name: "t" }] } } as KubeObject);
    await Bun.sleep(300); // the controller's informer has the Device
    const report = (v: string) => {
      const m = newMessage({ source: "twin", group: "resource", operation: Op.update, resource: "device/default/d1/twin/edge_updated" }, { event_id: "", timestamp: Date.now(), twin: { t: { actual: { value: v }, metadata: { type: "float" } } } });
      edge.hub.send(m);
      return m.header.msg_id;
    };
    proxy.hold();
    const ids = [report("1")];
    await Bun.sleep(200); // the first batch is being written (held in the proxy)
    ids.push(report("2"));
    await Bun.sleep(200); // the second batch is due while the first is in flight
    proxy.release();
    await eventually(() => ids.every((id) => acks.some((a) => a.header.parent_msg_id === id)), 15_000, "every twin report acked");
    const st = await client.get<KubeObject & { status?: { twins?: { propertyName: string; reported?: { value: string } }[] } }>(Resources.devicestatuses, "d1", "default");
    expect(st.status?.twins?.find((t) => t.propertyName === "t")?.reported?.value).toBe("2");
  }, 60_000);
});

describe("keyed work queue", () => {
  test("bounded concurrency, one job per key at a time, items queued for a waiting key join it", async () => {
    const runs: { key: string; items: number[] }[] = [];
    let active = 0;
    let peak = 0;
    const release: (() => void)[] = [];
    const q = new KeyedWorkQueue<number>(2, async (key, items) => {
      runs.push({ key, items });
      peak = Math.max(peak, ++active);
      await new Promise<void>((r) => release.push(r));
      active--;
    });
    q.push("a", 1);
    q.push("a", 2); // a is running: waits, as a new batch
    q.push("b", 1);
    q.push("c", 1); // limit 2: waits
    q.push("a", 3); // joins a's waiting batch
    expect(runs.map((r) => r.key)).toEqual(["a", "b"]);
    expect(q.pending()).toBe(3);
    while (runs.length < 4 || active > 0) {
      release.shift()?.();
      await Bun.sleep(1);
    }
    expect(peak).toBe(2);
    expect(runs).toEqual([
      { key: "a", items: [1] },
      { key: "b", items: [1] },
      { key: "a", items: [2, 3] },
      { key: "c", items: [1] },
    ]);
  });

  test("a failing job reports its error and the queue goes on", async () => {
    const errors: string[] = [];
    const done: string[] = [];
    const q = new KeyedWorkQueue<number>(1, async (key) => {
      if (key === "bad") throw new Error("boom");
      done.push(key);
    }, (key, e) => errors.push(`${key}: ${(e as Error).message}`));
    q.push("bad", 1);
    q.push("good", 1);
    await eventually(() => done.length === 1, 2000, "next job ran");
    expect(errors).toEqual(["bad: boom"]);
  });
});
