/**
 * Issue 7, reliable delivery both ways, all real: cloudcore and edgecore processes, the embedded API,
 * pods as processes, a device streaming values through the edge's MQTT broker, and a TCP proxy
 * between edge and cloud that the test freezes and cuts. Faults: the edge stopped, kill -9 of
 * cloudcore, kill -9 of edgecore, the link cut (≥ 5 times each); every test counts what was created
 * or published and what arrived, and the final states must match.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type MqttClient } from "mqtt";
import { KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { eventually, freePort, joinToken, metric, requireTool, run, startCloud, startEdge, tmpDir, type Cloud, type Daemon, type Edge } from "./helpers/daemons.ts";
import { startProxy, type Proxy } from "./helpers/proxy.ts";

const haveKubectl = requireTool("/usr/bin/kubectl", "pods are applied with kubectl");
const NODE = "edge-rel";
const MARK = `outpost-rel-${process.pid}`;
const ROUNDS = 5;
const running: Daemon[] = [];
let cloud: Cloud;
let edge: Edge;
let proxy: Proxy;
let client: KubeClient;
let mqttPort: number;
const out = tmpDir("rel-out");
const home = tmpDir("kubectl-home");
const fast = ["--restart-backoff-ms", "300", "--ping-interval-ms", "300", "--pong-timeout-ms", "700", "--reconnect-max-ms", "1000", "--upstream-retry-ms", "1000", "--node-status-interval", "2"];

type Pod = KubeObject & { status?: { phase?: string; containerStatuses?: { state?: { running?: { startedAt?: string } } }[] } };

const kubectl = async (...args: string[]) => {
  const r = await run("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), ...args], { env: { HOME: home }, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
};
const pgrep = async (marker: string) => (await run("pgrep", ["-f", marker])).stdout.split("\n").filter(Boolean).length;

/** A pod that writes its configmap value to <out>/<name>.txt and then sleeps (its shell carries the marker). */
function podSpec(name: string, cm?: string): Record<string, unknown> {
  const env = cm ? [{ name: "VALUE", valueFrom: { configMapKeyRef: { name: cm, key: "value" } } }] : [];
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "default" },
    spec: {
      nodeName: NODE,
      terminationGracePeriodSeconds: 1,
      containers: [{ name: "main", image: "busybox", command: ["sh", "-c", `echo "$VALUE" > $OUTPOST_MOUNT_OUT/${name}.txt; sleep 600; echo done # ${MARK}-${name}-`], env, volumeMounts: [{ name: "out", mountPath: "/out" }] }],
      volumes: [{ name: "out", hostPath: { path: out, type: "Directory" } }],
    },
  };
}
const createPod = (name: string, cm?: string) => client.create(Resources.pods, podSpec(name, cm) as KubeObject, { namespace: "default" });
const phase = async (name: string) => (await client.get<Pod>(Resources.pods, name, "default")).status?.phase;

/** Every pod runs exactly once on the edge and is Running in the API. */
async function allRunning(names: string[], timeoutMs = 30_000): Promise<void> {
  await eventually(async () => {
    for (const n of names) if ((await pgrep(`${MARK}-${n}-`)) !== 1) return false;
    return true;
  }, timeoutMs, `all ${names.length} pods running once on the edge`);
  await eventually(async () => {
    for (const n of names) if ((await phase(n)) !== "Running") return false;
    return true;
  }, timeoutMs, `all ${names.length} pods Running in the API`);
  for (const n of names) expect(await pgrep(`${MARK}-${n}-`)).toBe(1);
}

async function reported(device: string, prop: string): Promise<string | undefined> {
  try {
    const ds = await client.get<KubeObject & { status?: { twins?: { propertyName: string; reported?: { value: string } }[] } }>(Resources.devicestatuses, device, "default");
    return ds.status?.twins?.find((t) => t.propertyName === prop)?.reported?.value;
  } catch {
    return undefined;
  }
}

async function mqttApp(): Promise<MqttClient> {
  const app = connect(`mqtt://127.0.0.1:${mqttPort}`, { reconnectPeriod: 200 });
  await new Promise((r, j) => {
    app.once("connect", r);
    app.once("error", j);
  });
  return app;
}
const twinUpdate = (app: MqttClient, device: string, value: string) =>
  app.publishAsync(`$hw/events/device/default/${device}/twin/update`, JSON.stringify({ event_id: `e${value}`, timestamp: Date.now(), twin: { value: { actual: { value } } } }), { qos: 1 });

async function restartEdge(): Promise<void> {
  edge = await startEdge({ node: NODE, dataDir: edge.dataDir, args: [...fast, "--mqtt-listen", `127.0.0.1:${mqttPort}`] });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/connected to cloud/, 20_000);
}

async function restartCloud(): Promise<void> {
  const e = cloud.endpoints;
  cloud = await startCloud({ dataDir: cloud.dataDir, ports: { hub: e.hub, https: e.https, metrics: e.metrics, api: e.api?.replace(/^https?:\/\//, "") }, args: ["--outbox-retry-ms", "1000"] });
  running.push(cloud.daemon);
  client.close();
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
}

const cloudMetric = (name: string, labels: Record<string, string> = {}) => metric(cloud.endpoints.metrics, name, labels);
const edgeMetric = (name: string) => metric(edge.endpoints.metrics!, name);

beforeAll(async () => {
  if (!haveKubectl) return;
  cloud = await startCloud({ args: ["--outbox-retry-ms", "1000"] });
  running.push(cloud.daemon);
  client = KubeClient.fromKubeconfig(join(cloud.dataDir, "kubeconfig"));
  proxy = await startProxy(Number(cloud.endpoints.hub.split(":").pop()));
  mqttPort = await freePort();
  edge = await startEdge({ node: NODE, cloud: { hub: `127.0.0.1:${proxy.port}`, https: cloud.endpoints.https }, token: await joinToken(cloud.dataDir), args: [...fast, "--mqtt-listen", `127.0.0.1:${mqttPort}`] });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/connected to cloud/);
  await client.create(Resources.devicemodels, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "DeviceModel", metadata: { name: "meter-model", namespace: "default" }, spec: { properties: [{ name: "value", type: "STRING", accessMode: "ReadOnly" }] } } as KubeObject, { namespace: "default" });
  await client.create(Resources.devices, { apiVersion: "devices.kubeedge.io/v1beta1", kind: "Device", metadata: { name: "meter", namespace: "default" }, spec: { deviceModelRef: { name: "meter-model" }, nodeName: NODE, properties: [{ name: "value" }] } } as KubeObject, { namespace: "default" });
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
  client?.close();
  await run("pkill", ["-f", MARK]);
});

describe.skipIf(!haveKubectl)("reliable delivery", () => {
  test("(a) pods created while edgecore is stopped all arrive after it starts, none twice", async () => {
    const names: string[] = [];
    for (let round = 0; round < 2; round++) {
      await edge.daemon.stop("SIGTERM");
      for (let i = 0; i < 3; i++) {
        const name = `down-${round}-${i}`;
        await createPod(name);
        names.push(name);
      }
      await restartEdge();
      await allRunning(names);
    }
    expect(names.length).toBe(6);
    console.log(`[reliability] (a) edgecore stopped x2: pods created while down=${names.length} running once on the edge and Running in the API=${names.length} lost=0`);
  }, 120_000);

  test("(e) outbox compaction: 100 updates of a configmap while the node is offline → a handful of sends, final content on the edge", async () => {
    await client.create(Resources.configmaps, { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "churn", namespace: "default" }, data: { value: "v0" } } as KubeObject, { namespace: "default" });
    await createPod("churner", "churn");
    await allRunning(["churner"]);
    await edge.daemon.stop("SIGTERM");
    await eventually(async () => (await cloudMetric("outpost_cloudhub_connected_nodes")) === 0, 10_000, "the cloud saw the node leave");
    for (let i = 1; i <= 100; i++) await client.patch(Resources.configmaps, "churn", { data: { value: `v${i}` } }, "merge", { namespace: "default" });
    await eventually(async () => (await cloudMetric("outpost_cloud_outbox_compacted_total"))! >= 99, 10_000, "updates compacted in the outbox");
    const pendingOffline = (await cloudMetric("outpost_cloud_outbox_pending", { node: NODE }))!;
    expect(pendingOffline).toBeLessThanOrEqual(3);
    const sentBefore = (await cloudMetric("outpost_cloud_outbox_sent_total")) ?? 0;
    const resentBefore = (await cloudMetric("outpost_cloud_outbox_resends_total")) ?? 0;
    await restartEdge();
    const cmOnEdge = async () => {
      const r = await fetch(`http://${edge.endpoints.metaserver}/api/v1/namespaces/default/configmaps/churn`);
      return r.ok ? ((await r.json()) as { data?: { value?: string } }).data?.value : undefined;
    };
    await eventually(async () => (await cmOnEdge()) === "v100", 15_000, "final configmap content on the edge");
    await eventually(async () => (await cloudMetric("outpost_cloud_outbox_pending", { node: NODE })) === 0, 15_000, "outbox drained");
    const sends = (await cloudMetric("outpost_cloud_outbox_sent_total"))! - sentBefore + ((await cloudMetric("outpost_cloud_outbox_resends_total"))! - resentBefore);
    // the pending configmap + the reconnect resync (7 pods, the configmap, a device, its model, 2 lists)
    expect(sends).toBeLessThanOrEqual(15);
    console.log(`[reliability] (e) outbox compaction: configmap updates while offline=100 pending in the outbox=${pendingOffline} sends after reconnect=${sends} final value on the edge=v100`);
  }, 120_000);

  test("(d) the link cut while a device streams values and pods are created: latest value and every pod arrive", async () => {
    const app = await mqttApp();
    let published = 0;
    let streaming = true;
    const stream = (async () => {
      while (streaming) {
        await twinUpdate(app, "meter", String(++published)).catch(() => published--);
        await Bun.sleep(50);
      }
    })();
    const names: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      proxy.freeze();
      await edge.daemon.waitForNew(/link to cloud lost|no pong/, 10_000);
      for (let i = 0; i < 2; i++) {
        const name = `cut-${round}-${i}`;
        await createPod(name);
        names.push(name);
      }
      await Bun.sleep(300);
      const back = edge.daemon.waitForNew(/connected to cloud/, 15_000);
      proxy.cut();
      proxy.thaw();
      await back;
    }
    streaming = false;
    await stream;
    await app.endAsync();
    expect(published).toBeGreaterThan(20);
    await eventually(async () => (await reported("meter", "value")) === String(published), 20_000, `last streamed value (${published}) in the API`);
    await allRunning(names);
    await eventually(async () => (await edgeMetric("outpost_edge_upstream_pending")) === 0, 15_000, "edge upstream queue drained");
    await eventually(async () => (await cloudMetric("outpost_cloud_outbox_pending", { node: NODE })) === 0, 15_000, "cloud outbox drained");
    console.log(`[reliability] (d) proxy link cuts x${ROUNDS}: twin values published (PUBACK)=${published} last in the API=${await reported("meter", "value")}; pods created while cut=${names.length} running=${names.length} lost=0`);
  }, 180_000);

  test("(c) kill -9 edgecore while pod statuses and twin reports are pending: the API converges", async () => {
    await createPod("victim");
    await allRunning(["victim"]);
    let last = "";
    for (let round = 0; round < ROUNDS; round++) {
      proxy.freeze();
      await edge.daemon.waitForNew(/link to cloud lost|no pong/, 10_000);
      // a new pod status (the container restarts) and twin reports, all made while the link is dead
      const killedAt = Date.now();
      await run("pkill", ["-f", `${MARK}-victim-`]);
      const app = await mqttApp();
      for (let i = 0; i < 10; i++) await twinUpdate(app, "meter", (last = `c${round}-${i}`));
      await app.endAsync();
      await eventually(async () => (await edgeMetric("outpost_edge_upstream_pending"))! >= 1, 5000, "reports pending in edgecore.db");
      await eventually(async () => (await pgrep(`${MARK}-victim-`)) === 1, 15_000, "victim restarted by the edge");
      await Bun.sleep(300); // the new status is queued (edged reports within ~200 ms)
      await edge.daemon.stop("SIGKILL");
      proxy.cut();
      proxy.thaw();
      await restartEdge();
      await eventually(async () => (await reported("meter", "value")) === last, 20_000, `round ${round}: last twin report (${last}) in the API`);
      await eventually(async () => {
        const p = await client.get<Pod>(Resources.pods, "victim", "default");
        const started = Date.parse(p.status?.containerStatuses?.[0]?.state?.running?.startedAt ?? "");
        return p.status?.phase === "Running" && started >= Math.floor(killedAt / 1000) * 1000;
      }, 20_000, `round ${round}: the restarted container's status in the API`);
      expect(await pgrep(`${MARK}-victim-`)).toBe(1);
    }
    await eventually(async () => (await edgeMetric("outpost_edge_upstream_pending")) === 0, 15_000, "edge upstream queue drained");
    console.log(`[reliability] (c) kill -9 edgecore x${ROUNDS} with reports pending: twin reports made while the link was dead=${ROUNDS * 10} last of each round in the API=${ROUNDS}/${ROUNDS}; restarted-container statuses in the API=${ROUNDS}/${ROUNDS}`);
  }, 240_000);

  test("(b) kill -9 cloudcore right after kubectl apply of configmap-using pods: all of them run on the edge", async () => {
    const names: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const docs = [`apiVersion: v1\nkind: ConfigMap\nmetadata: { name: cfg-${round}, namespace: default }\ndata: { value: "round-${round}" }`];
      for (let i = 0; i < 3; i++) {
        const name = `crash-${round}-${i}`;
        names.push(name);
        docs.push(JSON.stringify(podSpec(name, `cfg-${round}`)));
      }
      const f = join(tmpDir("yaml"), "pods.yaml");
      writeFileSync(f, docs.join("\n---\n"));
      await kubectl("apply", "-f", f);
      await cloud.daemon.stop("SIGKILL");
      await restartCloud();
    }
    await allRunning(names, 60_000);
    for (const n of names) {
      const file = join(out, `${n}.txt`);
      await eventually(() => existsSync(file), 5000, `${n} wrote its file`);
      expect(readFileSync(file, "utf8").trim()).toBe(`round-${n.split("-")[1]}`);
    }
    await eventually(async () => (await cloudMetric("outpost_cloud_outbox_pending", { node: NODE })) === 0, 15_000, "cloud outbox drained");
    console.log(`[reliability] (b) kill -9 cloudcore x${ROUNDS} right after kubectl apply: pods applied=${names.length} running once on the edge=${names.length} with the right configmap value=${names.length} lost=0`);
  }, 240_000);
});
