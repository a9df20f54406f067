/**
 * Issue 7: a node may read only what is bound to it. A real cloudcore; two nodes join through its
 * certificate service and talk to its hub over mutual TLS with their own certificates, sending the
 * upstream reads (`operation: query`) a KubeEdge MetaManager sends on a local miss. Node A gets its
 * pod, the configmap and secret its pod uses, its Node, its device and that device's model; node B,
 * asking for the same objects (or ones that do not exist), is refused every time, logged and counted.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { encodeFrame, newMessage, parseFrame, type Message } from "../lib/message.ts";
import { joinCloud } from "../lib/pki/edgecreds.ts";
import { maskedTextFrame, quietLog, rawUpgrade } from "./helpers/hubs.ts";
import { eventually, joinToken, metric, startCloud, tmpDir, type Cloud } from "./helpers/daemons.ts";

let cloud: Cloud;
let client: KubeClient;
const dirs: string[] = [];
const conns: NodeConn[] = [];

/** A node's hub session: sends masked frames, collects the cloud's messages. */
class NodeConn {
  readonly got: Message[] = [];
  private buf = Buffer.alloc(0);
  constructor(readonly sock: tls.TLSSocket) {}
  onData(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      let len = this.buf[1]! & 0x7f;
      let hdr = 2;
      if (len === 126) [len, hdr] = [this.buf.readUInt16BE(2), 4];
      else if (len === 127) [len, hdr] = [Number(this.buf.readBigUInt64BE(2)), 10];
      if (this.buf.length < hdr + len) return;
      const opcode = this.buf[0]! & 0x0f;
      const payload = this.buf.subarray(hdr, hdr + len).toString();
      this.buf = this.buf.subarray(hdr + len);
      if (opcode === 1) for (const line of payload.split("\n").filter(Boolean)) this.got.push(parseFrame(line));
    }
  }
  send(msg: Message): void {
    this.sock.write(maskedTextFrame(encodeFrame(msg)));
  }
  /** Sends a query for `resource` and waits for the answer to it. */
  async query(resource: string): Promise<Message> {
    const q = newMessage({ source: "metaManager", group: "meta", operation: "query", resource }, null);
    this.send(q);
    return (await eventually(() => this.got.find((m) => m.header.parent_msg_id === q.header.msg_id), 5000, `answer to ${resource}`))!;
  }
}

async function connectNode(node: string): Promise<NodeConn> {
  const dir = tmpDir(`scope-${node}`);
  dirs.push(dir);
  await joinCloud({ httpsAddr: cloud.endpoints.https, token: await joinToken(cloud.dataDir), nodeName: node, dataDir: dir, log: quietLog });
  const { sock, first } = await rawUpgrade(cloud.endpoints.hub, dir, node);
  const end = first.indexOf("\r\n\r\n");
  expect(first.subarray(0, end).toString()).toStartWith("HTTP/1.1 101");
  const conn = new NodeConn(sock);
  sock.on("data", (d: Buffer) => conn.onData(d));
  if (first.length > end + 4) conn.onData(first.subarray(end + 4));
  conns.push(conn);
  return conn;
}

const create = (res: Parameters<KubeClient["create"]>[0], obj: Record<string, unknown>) => client.create(res, obj as KubeObject, { namespace: "default" });
const pod = (name: string, node: string, env: Record<string, unknown>[]) => ({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "default" }, spec: { nodeName: node, containers: [{ name: "c", image: "busybox", ...env[0] }] } });

beforeAll(async () => {
  cloud = await startCloud();
  dirs.push(cloud.dataDir);
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  await create(Resources.configmaps, { metadata: { name: "cm-a", namespace: "default" }, data: { k: "a" } });
  await create(Resources.secrets, { metadata: { name: "sec-a", namespace: "default" }, data: { password: Buffer.from("for-a-only").toString("base64") } });
  await create(Resources.secrets, { metadata: { name: "sec-b", namespace: "default" }, data: { password: Buffer.from("for-b").toString("base64") } });
  await create(Resources.pods, pod("pa", "node-a", [{ envFrom: [{ configMapRef: { name: "cm-a" } }, { secretRef: { name: "sec-a" } }] }]));
  await create(Resources.pods, pod("pb", "node-b", [{ env: [{ name: "P", valueFrom: { secretKeyRef: { name: "sec-b", key: "password" } } }] }]));
  await create(Resources.devicemodels, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "model-a", namespace: "default" }, spec: { properties: [{ name: "t", type: "INT", accessMode: "ReadOnly" }] } });
  await create(Resources.devices, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name: "dev-a", namespace: "default" }, spec: { deviceModelRef: { name: "model-a" }, nodeName: "node-a", properties: [{ name: "t" }] } });
});

afterAll(async () => {
  for (const c of conns) c.sock.destroy();
  await cloud?.daemon.stop("SIGKILL");
  client?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("a node reads what is bound to it; another node is refused the same reads, logged and counted", async () => {
  const a = await connectNode("node-a");
  const b = await connectNode("node-b");
  await eventually(() => client.get(Resources.nodes, "node-a").then(() => true, () => false), 10_000, "node-a registered");

  const ok = async (conn: NodeConn, resource: string) => {
    const r = await conn.query(resource);
    expect({ resource, op: r.route.operation }).toEqual({ resource, op: "response" });
    return r.content as { metadata?: { name?: string }; data?: Record<string, string> };
  };
  expect((await ok(a, "default/secret/sec-a")).data?.password).toBe(Buffer.from("for-a-only").toString("base64"));
  expect((await ok(a, "default/configmap/cm-a")).data?.k).toBe("a");
  expect((await ok(a, "default/pod/pa")).metadata?.name).toBe("pa");
  expect((await ok(a, "null/node/node-a")).metadata?.name).toBe("node-a");
  expect((await ok(a, "default/device/dev-a")).metadata?.name).toBe("dev-a");
  expect((await ok(a, "default/devicemodel/model-a")).metadata?.name).toBe("model-a");
  expect(((await ok(a, "default/pod")) as unknown as { metadata: { name: string } }[]).map((p) => p.metadata.name)).toEqual(["pa"]);
  expect((await ok(b, "default/secret/sec-b")).data?.password).toBe(Buffer.from("for-b").toString("base64"));

  const refused0 = (await metric(cloud.endpoints.metrics, "outpost_cloud_queries_total", { result: "refused" })) ?? 0;
  const forbidden = ["default/secret/sec-a", "default/configmap/cm-a", "default/pod/pa", "null/node/node-a", "default/device/dev-a", "default/devicemodel/model-a", "default/secret/no-such-secret", "default/pod/no-such-pod", "default/service/kubernetes", "default/secret", "default/configmap"];
  for (const resource of forbidden) {
    const r = await b.query(resource);
    expect({ resource, op: r.route.operation, content: r.content }).toEqual({ resource, op: "error", content: `forbidden: node "node-b" cannot read ${resource}` });
  }
  // node-b's pod list holds only its own pod
  expect(((await ok(b, "default/pod")) as unknown as { metadata: { name: string } }[]).map((p) => p.metadata.name)).toEqual(["pb"]);
  expect(await metric(cloud.endpoints.metrics, "outpost_cloud_queries_total", { result: "refused" })).toBe(refused0 + forbidden.length);
  expect(cloud.daemon.output.some((l) => l.includes("read refused") && l.includes("node=node-b") && l.includes("default/secret/sec-a"))).toBe(true);
  // the secret's bytes never went to node-b in any message
  expect(JSON.stringify(b.got)).not.toContain(Buffer.from("for-a-only").toString("base64"));
});
