/**
 * Devices through MQTT apps and a flaky link, all real: cloudcore and edgecore processes, kubectl,
 * the edge's broker, and a TCP proxy between edge and cloud that the test black-holes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type MqttClient } from "mqtt";
import { eventually, joinToken, requireTool, run, startCloud, startEdge, tmpDir, type Cloud, type Daemon, type Edge } from "./helpers/daemons.ts";
import { startProxy, type Proxy } from "./helpers/proxy.ts";

const haveKubectl = requireTool("/usr/bin/kubectl", "devices are managed with kubectl");
const running: Daemon[] = [];
let cloud: Cloud;
let edge: Edge;
let proxy: Proxy;
let app: MqttClient;
const got: { topic: string; body: Record<string, unknown> }[] = [];
const home = tmpDir("kubectl-home");
const base = "$hw/events/device/default/panel";

const kubectl = async (...args: string[]) => {
  const r = await run("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), ...args], { env: { HOME: home }, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
};
const reported = async (prop: string) => {
  const r = await run("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), "get", "devicestatus", "panel", "-o", "json"], { env: { HOME: home } });
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout).status?.twins as { propertyName: string; reported?: { value: string } }[] | undefined)?.find((t) => t.propertyName === prop)?.reported?.value;
};
const publish = (action: string, body: unknown) => app.publish(`${base}/${action}`, typeof body === "string" ? body : JSON.stringify(body));
const since = (n: number, topic: string) => got.slice(n).filter((m) => m.topic === topic);
const twinGet = async () => {
  const n = got.length;
  publish("twin/get", { event_id: `g${n}`, timestamp: Date.now() });
  return (await eventually(() => since(n, `${base}/twin/get/result`)[0], 5000, "twin/get result"))!.body;
};

beforeAll(async () => {
  if (!haveKubectl) return;
  cloud = await startCloud();
  running.push(cloud.daemon);
  proxy = await startProxy(Number(cloud.endpoints.hub.split(":")[1]));
  const fast = ["--ping-interval-ms", "300", "--pong-timeout-ms", "700", "--reconnect-max-ms", "1000"];
  edge = await startEdge({ node: "edge-panel", cloud: { hub: `127.0.0.1:${proxy.port}`, https: cloud.endpoints.https }, token: await joinToken(cloud.dataDir), args: fast });
  running.push(edge.daemon);
  await edge.daemon.waitFor(/connected to cloud/);
  const f = join(tmpDir("yaml"), "panel.yaml");
  writeFileSync(f, `
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: panel-model, namespace: default }
spec:
  properties:
  - { name: humidity, type: FLOAT, accessMode: ReadOnly }
  - { name: mode, type: STRING, accessMode: ReadWrite }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: panel, namespace: default }
spec:
  deviceModelRef: { name: panel-model }
  nodeName: edge-panel
  properties:
  - { name: humidity }
  - { name: mode, desired: { value: auto } }
`);
  await kubectl("apply", "-f", f);
  app = connect(`mqtt://${edge.endpoints.mqtt}`);
  await new Promise((r) => app.on("connect", r));
  app.on("message", (topic, payload) => {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(String(payload));
    } catch {
      body = { raw: String(payload) };
    }
    got.push({ topic, body });
  });
  await app.subscribeAsync(`${base}/#`);
});
afterAll(async () => {
  await app?.endAsync();
  await proxy?.close();
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
});

describe.skipIf(!haveKubectl)("device twins through MQTT and a flaky link", () => {
  test("kubectl apply → the edge twin exists with the desired value", async () => {
    await eventually(async () => ((await twinGet()).twin as Record<string, { expected?: { value: string } }> | undefined)?.mode?.expected?.value === "auto", 10_000, "twin on the edge");
  });

  test("an app's reported value reaches the DeviceStatus; a kubectl desired change arrives as a delta", async () => {
    publish("twin/update", { event_id: "r1", timestamp: Date.now(), twin: { humidity: { actual: { value: "40.5" } } } });
    await eventually(async () => (await reported("humidity")) === "40.5", 10_000, "reported in the API");
    const n = got.length;
    await kubectl("patch", "device", "panel", "--type", "json", "-p", JSON.stringify([{ op: "replace", path: "/spec/properties/1/desired/value", value: "eco" }]));
    const delta = await eventually(() => since(n, `${base}/twin/update/delta`).find((m) => (m.body.delta as Record<string, string>)?.mode === "eco"), 10_000, "delta on the broker");
    expect(delta).toBeDefined();
  });

  test("link down: reports made meanwhile (latest wins) and desired changes made meanwhile converge after reconnect", async () => {
    proxy.freeze();
    await edge.daemon.waitForNew(/link to cloud lost|no pong/, 10_000);
    for (const value of ["41", "42", "43.25"]) publish("twin/update", { event_id: `o${value}`, timestamp: Date.now(), twin: { humidity: { actual: { value } } } });
    await kubectl("patch", "device", "panel", "--type", "json", "-p", JSON.stringify([{ op: "replace", path: "/spec/properties/1/desired/value", value: "off" }]));
    await Bun.sleep(500);
    expect(await reported("humidity")).toBe("40.5"); // nothing got through the dead link
    proxy.cut();
    proxy.thaw();
    await edge.daemon.waitForNew(/connected to cloud/, 15_000);
    await eventually(async () => (await reported("humidity")) === "43.25", 10_000, "latest offline report in the API");
    await eventually(async () => ((await twinGet()).twin as Record<string, { expected?: { value: string } }>).mode?.expected?.value === "off", 10_000, "offline desired change on the edge");
  });

  test("bad input gets KubeEdge's error results; the broker and edgecore go on", async () => {
    let n = got.length;
    publish("twin/update", "{not json");
    await eventually(() => since(n, `${base}/twin/update/result`).find((m) => m.body.code === 400), 5000, "400 for garbage");
    n = got.length;
    publish("twin/update", { event_id: "bad-type", timestamp: Date.now(), twin: { humidity: { actual: { value: "very wet" } } } });
    await eventually(() => since(n, `${base}/twin/update/result`).find((m) => m.body.code === 400 || (typeof m.body.reason === "string" && /float/i.test(m.body.reason))), 5000, "error for a value of the wrong type");
    n = got.length;
    app.publish("$hw/events/device/default/nosuch/twin/update", JSON.stringify({ event_id: "u", timestamp: Date.now(), twin: { a: { actual: { value: "1" } } } }));
    await app.subscribeAsync("$hw/events/device/default/nosuch/#");
    app.publish("$hw/events/device/default/nosuch/twin/get", JSON.stringify({ event_id: "u2", timestamp: Date.now() }));
    await eventually(() => got.slice(n).find((m) => m.topic.startsWith("$hw/events/device/default/nosuch/") && m.body.code === 404), 5000, "404 for an unknown device");
    publish("twin/update", { event_id: "after", timestamp: Date.now(), twin: { humidity: { actual: { value: "39" } } } });
    await eventually(async () => (await reported("humidity")) === "39", 10_000, "a good report still works");
    expect(edge.daemon.proc.exitCode).toBeNull();
  });

  test("deleting the Device removes its twin on the edge", async () => {
    await kubectl("delete", "device", "panel");
    await eventually(async () => (await twinGet()).code === 404, 10_000, "twin gone (404)");
    await eventually(async () => (await run("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), "get", "devicestatus", "panel"], { env: { HOME: home } })).code !== 0, 10_000, "DeviceStatus garbage-collected with its Device");
  });
});
