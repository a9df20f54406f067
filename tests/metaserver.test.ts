/** MetaManager + MetaServer: objects from the cloud are stored, acked, forwarded and served to local apps. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Router } from "../lib/router.ts";
import { newMessage, Op, type Message } from "../lib/message.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { edgeMigrations, type EdgeDb } from "../lib/edge/store.ts";
import { MetaManager } from "../lib/edge/metamanager.ts";
import { MetaServer } from "../lib/edge/metaserver.ts";
import { quietLog, recorder } from "./helpers/hubs.ts";
import { eventually, requireTool, run, tmpDir } from "./helpers/daemons.ts";

let store: Store<EdgeDb>;
let router: Router;
let meta: MetaManager;
let server: MetaServer;
let base: string;
const hub = recorder("websocket", "hub");
const edged = recorder("edged", "edged");
const twin = recorder("twin", "twin");

const pod = (name: string, rv: string, labels: Record<string, string> = {}, node = "n1") => ({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "default", uid: `uid-${name}`, resourceVersion: rv, labels }, spec: { nodeName: node, containers: [{ name: "c", image: "busybox" }] } });
const send = (op: string, resource: string, content: unknown, rv?: string): Message => {
  const m = newMessage({ source: "edgecontroller", group: "resource", operation: op, resource }, content, rv ? { resourceversion: rv } : {});
  router.send("metamanager", m);
  return m;
};

beforeAll(async () => {
  store = await openStore<EdgeDb>(join(tmpDir("metaserver"), "edgecore.db"), edgeMigrations);
  router = new Router(quietLog);
  meta = new MetaManager(store.db);
  for (const m of [meta, hub, edged, twin]) router.register(m);
  await router.startAll();
  server = new MetaServer(meta, quietLog);
  base = `http://127.0.0.1:${await server.start({ host: "127.0.0.1", port: 0 })}`;
});
afterAll(async () => {
  await server.stop();
  await store.close();
});

describe("MetaManager", () => {
  test("stores, acks after storing, forwards pods to edged and devices to twin", async () => {
    const m = send(Op.insert, "default/pod/web", pod("web", "10", { app: "web" }), "10");
    const ack = await eventually(() => hub.got.find((x) => x.header.parent_msg_id === m.header.msg_id), 3000, "ack");
    expect(ack!.content).toBe("OK");
    expect(await meta.get("pod", "default", "web")).toMatchObject({ metadata: { name: "web" } });
    await eventually(() => edged.got.some((x) => x.route.resource === "default/pod/web"), 3000, "forwarded to edged");
    send(Op.insert, "default/device/thermo", { kind: "Device", metadata: { name: "thermo", namespace: "default" } }, "11");
    await eventually(() => twin.got.some((x) => x.route.resource === "default/device/thermo"), 3000, "forwarded to twin");
  });

  test("a stale resend is acked but does not overwrite the newer copy", async () => {
    send(Op.update, "default/pod/web", pod("web", "20", { app: "web", v: "2" }), "20");
    const stale = send(Op.update, "default/pod/web", pod("web", "15", { app: "web", v: "old" }), "15");
    await eventually(() => hub.got.some((x) => x.header.parent_msg_id === stale.header.msg_id), 3000, "stale acked");
    expect(((await meta.get("pod", "default", "web")) as { metadata: { labels: Record<string, string> } }).metadata.labels.v).toBe("2");
  });

  test("queries are answered from the store", async () => {
    const q = newMessage({ source: "edged", group: "meta", operation: Op.query, resource: "default/pod" }, null);
    const reply = router.waitForReply(q.header.msg_id, 3000);
    router.send("metamanager", q);
    const list = (await reply).content as { metadata: { name: string } }[];
    expect(list.map((p) => p.metadata.name)).toContain("web");
  });
});

const getJson = async (url: string): Promise<any> => (await fetch(url)).json();

describe("MetaServer", () => {
  test("list, get, selectors, 404 and read-only", async () => {
    send(Op.insert, "default/pod/db", pod("db", "30", { app: "db" }, "n2"), "30");
    send(Op.insert, "default/configmap/cfg", { kind: "ConfigMap", metadata: { name: "cfg", namespace: "default", resourceVersion: "31" }, data: { a: "1" } }, "31");
    await eventually(async () => (await meta.list("configmap")).length === 1, 3000, "stored");
    const list = await getJson(`${base}/api/v1/namespaces/default/pods`);
    expect(list.kind).toBe("PodList");
    expect(list.items.map((p: { metadata: { name: string } }) => p.metadata.name).sort()).toEqual(["db", "web"]);
    const byLabel = await getJson(`${base}/api/v1/pods?labelSelector=app%3Ddb`);
    expect(byLabel.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toEqual(["db"]);
    const byField = await getJson(`${base}/api/v1/pods?fieldSelector=spec.nodeName%3Dn1`);
    expect(byField.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toEqual(["web"]);
    expect((await getJson(`${base}/api/v1/namespaces/default/configmaps/cfg`)).data).toEqual({ a: "1" });
    const missing = await fetch(`${base}/api/v1/namespaces/default/pods/nope`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { reason: string }).reason).toBe("NotFound");
    expect((await fetch(`${base}/api/v1/namespaces/default/pods`, { method: "POST", body: "{}" })).status).toBe(405);
    expect((await fetch(`${base}/api/v1/widgets`)).status).toBe(404);
  });

  test("watch streams the current objects, then changes as they are stored", async () => {
    const ctrl = new AbortController();
    const res = await fetch(`${base}/api/v1/namespaces/default/pods?watch=1`, { signal: ctrl.signal });
    const reader = res.body!.getReader();
    const events: { type: string; object: { metadata: { name: string } } }[] = [];
    let buf = "";
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        buf += new TextDecoder().decode(value);
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          events.push(JSON.parse(buf.slice(0, i)));
          buf = buf.slice(i + 1);
        }
      }
    })();
    await eventually(() => events.length >= 2, 3000, "initial ADDED events");
    send(Op.update, "default/pod/db", pod("db", "40", { app: "db", v: "3" }, "n2"), "40");
    send(Op.delete, "default/pod/web", null);
    await eventually(() => events.some((e) => e.type === "DELETED" && e.object.metadata.name === "web"), 3000, "DELETED");
    expect(events.find((e) => e.type === "MODIFIED")?.object.metadata.name).toBe("db");
    ctrl.abort();
    await pump;
  });

  test("real kubectl reads pods from the MetaServer", async () => {
    if (!requireTool("/usr/bin/kubectl", "kubectl reads the MetaServer")) return;
    const r = await run("kubectl", ["--server", base, "get", "pods", "-n", "default", "-o", "name"], { env: { HOME: tmpDir("kubectl-home") } });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("pod/db");
  });
});
