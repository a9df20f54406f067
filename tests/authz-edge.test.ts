/**
 * An edge node may write only what belongs to it (KubeEdge's NodeRestriction): a real cloudcore,
 * two nodes joined through its certificate service, each speaking through the real EdgeHub with its
 * own client certificate. Node B reports the status of node A's pod, finishes the deletion of node
 * A's pod, reports node A's status and twin values of node A's device: each is refused (logged) and
 * the API is unchanged; then node A sends the same and it is applied (so the refusals are not just
 * a broken path). Prints one `[authz-edge]` summary line.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { newMessage, Op } from "../lib/message.ts";
import { joinCloud } from "../lib/pki/edgecreds.ts";
import { eventually, joinToken, startCloud, tmpDir, type Cloud } from "./helpers/daemons.ts";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { quietLog, startTestEdge, type TestEdge } from "./helpers/hubs.ts";

let cloud: Cloud;
let client: KubeClient;
const edges: Record<"a" | "b", TestEdge> = {} as Record<"a" | "b", TestEdge>;
const dirs: string[] = [];
const NODE = { a: "authz-a", b: "authz-b" } as const;
let refused = 0;
let applied = 0;

type Pod = KubeObject & { status?: { phase?: string; message?: string } };
type NodeObj = KubeObject & { status?: { addresses?: { type: string; address: string }[] } };

/** Waits for a cloudcore log line matching `re` written after `from` lines. */
const logged = (re: RegExp, from: number) => eventually(() => cloud.daemon.output.slice(from).some((l) => re.test(l)), 10_000, `cloudcore logged ${re}`);

const podStatus = (name: string, uid: string, status: Record<string, unknown>) =>
  newMessage({ source: "edged", group: "resource", operation: Op.update, resource: `default/podstatus/${name}` }, { metadata: { name, namespace: "default", uid }, status });
const podStopped = (name: string, uid: string) => newMessage({ source: "edged", group: "resource", operation: Op.delete, resource: `default/pod/${name}` }, { metadata: { name, namespace: "default", uid } });
const nodeStatus = (node: string, address: string) =>
  newMessage({ source: "edged", group: "resource", operation: Op.update, resource: `null/nodestatus/${node}` }, { metadata: { name: node }, status: { addresses: [{ type: "InternalIP", address }] } });
const twinReport = (device: string, value: string) =>
  newMessage(
    { source: "twin", group: "resource", operation: Op.update, resource: `device/default/${device}/twin/edge_updated` },
    { event_id: `e-${value}`, timestamp: Date.now(), twin: { value: { actual: { value }, metadata: { type: "string" } } } },
  );

async function reported(device: string): Promise<string | undefined> {
  try {
    const ds = await client.get<KubeObject & { status?: { twins?: { propertyName: string; reported?: { value: string } }[] } }>(Resources.devicestatuses, device, "default");
    return ds.status?.twins?.find((t) => t.propertyName === "value")?.reported?.value;
  } catch {
    return undefined;
  }
}

beforeAll(async () => {
  cloud = await startCloud();
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  for (const k of ["a", "b"] as const) {
    const dataDir = tmpDir(`authz-${k}`);
    dirs.push(dataDir);
    await joinCloud({ httpsAddr: cloud.endpoints.https, token: await joinToken(cloud.dataDir), nodeName: NODE[k], dataDir, log: quietLog });
    edges[k] = await startTestEdge(cloud.endpoints.hub, NODE[k], dataDir);
    await cloud.daemon.waitFor(new RegExp(`node readiness changed node=${NODE[k]} ready=True`), 15_000);
  }
}, 60_000);

afterAll(async () => {
  await Promise.all(Object.values(edges).map((e) => e.close()));
  client?.close();
  await cloud?.daemon.stop("SIGKILL");
  for (const d of [cloud?.dataDir, ...dirs]) if (d) rmSync(d, { recursive: true, force: true });
  if (applied || refused) console.log(`[authz-edge] cross-node writes refused=${refused} (applied by the API: 0); the same writes by the owning node applied=${applied}`);
});

describe("an edge node writes only its own objects", () => {
  test("pod status of another node's pod: refused; the owner's is applied", async () => {
    const pod = await client.create<Pod>(Resources.pods, { apiVersion: "v1", kind: "Pod", metadata: { name: "owned-by-a", namespace: "default" }, spec: { nodeName: NODE.a, containers: [{ name: "c", image: "busybox" }] } } as KubeObject, { namespace: "default" });
    const uid = pod.metadata!.uid!;
    const from = cloud.daemon.output.length;
    edges.b.hub.send(podStatus("owned-by-a", uid, { phase: "Failed", message: "spoofed by b" }));
    await logged(/update for a pod not bound to the sending node refused node=authz-b/, from);
    expect((await client.get<Pod>(Resources.pods, "owned-by-a", "default")).status?.message).not.toBe("spoofed by b");
    refused++;
    edges.a.hub.send(podStatus("owned-by-a", uid, { phase: "Running", message: "from a" }));
    await eventually(async () => (await client.get<Pod>(Resources.pods, "owned-by-a", "default")).status?.message === "from a", 10_000, "the owner's status applied");
    applied++;
  });

  test("finishing the deletion of another node's pod: refused; the owner's finishes it", async () => {
    const pod = await client.create<Pod>(Resources.pods, { apiVersion: "v1", kind: "Pod", metadata: { name: "leaving-a", namespace: "default" }, spec: { nodeName: NODE.a, terminationGracePeriodSeconds: 30, containers: [{ name: "c", image: "busybox" }] } } as KubeObject, { namespace: "default" });
    const uid = pod.metadata!.uid!;
    await client.delete(Resources.pods, "leaving-a", { namespace: "default" }); // graceful: waits for the node
    const from = cloud.daemon.output.length;
    edges.b.hub.send(podStopped("leaving-a", uid));
    await logged(/update for a pod not bound to the sending node refused node=authz-b pod=default\/leaving-a/, from);
    const still = await client.get<Pod>(Resources.pods, "leaving-a", "default");
    expect(still.metadata?.deletionTimestamp).toBeTruthy();
    refused++;
    edges.a.hub.send(podStopped("leaving-a", uid));
    await eventually(() => client.get(Resources.pods, "leaving-a", "default").then(() => false, (e: { code?: number }) => e.code === 404), 10_000, "the owner finished the deletion");
    applied++;
  });

  test("node status for another node: refused; the node's own is applied", async () => {
    const from = cloud.daemon.output.length;
    edges.b.hub.send(nodeStatus(NODE.a, "192.0.2.66"));
    await logged(/node status for another node refused node=authz-b for=authz-a/, from);
    const addrs = (await client.get<NodeObj>(Resources.nodes, NODE.a)).status?.addresses ?? [];
    expect(addrs.some((a) => a.address === "192.0.2.66")).toBe(false);
    refused++;
    edges.a.hub.send(nodeStatus(NODE.a, "192.0.2.10"));
    await eventually(async () => ((await client.get<NodeObj>(Resources.nodes, NODE.a)).status?.addresses ?? []).some((a) => a.address === "192.0.2.10"), 10_000, "the node's own status applied");
    applied++;
  });

  test("twin report for another node's device: refused; the owner's is applied", async () => {
    await client.create(Resources.devicemodels, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "authz-model", namespace: "default" }, spec: { properties: [{ name: "value", type: "STRING", accessMode: "ReadOnly" }] } } as KubeObject, { namespace: "default" });
    await client.create(Resources.devices, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name: "dev-a", namespace: "default" }, spec: { deviceModelRef: { name: "authz-model" }, nodeName: NODE.a, properties: [{ name: "value" }] } } as KubeObject, { namespace: "default" });
    // the cloud's device cache has it once node A is sent the device
    await Bun.sleep(500);
    const from = cloud.daemon.output.length;
    edges.b.hub.send(twinReport("dev-a", "spoofed"));
    await logged(/report for a device not bound to the sending node refused node=authz-b device=default\/dev-a/, from);
    await Bun.sleep(700); // past the controller's 500 ms coalescing: a wrongly accepted report would be written by now
    expect(await reported("dev-a")).not.toBe("spoofed");
    refused++;
    edges.a.hub.send(twinReport("dev-a", "from-a"));
    await eventually(async () => (await reported("dev-a")) === "from-a", 10_000, "the owner's twin report applied");
    applied++;
  });
});
