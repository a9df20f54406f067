/**
 * Issue 5/6 end to end, all real: cloudcore + edgecore processes, kubectl, a Modbus device process
 * driven by the modbus mapper, and an MQTT app on the edge's broker.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "mqtt";
import { Daemon, ROOT, eventually, freePort, joinToken, requireTool, run, startCloud, startEdge, tmpDir, type Cloud, type Edge } from "./helpers/daemons.ts";

const haveKubectl = requireTool("/usr/bin/kubectl", "devices are managed with kubectl");
const running: Daemon[] = [];
let cloud: Cloud;
let edge: Edge;
let device: Daemon;
const home = tmpDir("kubectl-home");

const kubectl = async (...args: string[]) => {
  const r = await run("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), ...args], { env: { HOME: home }, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
};
type Twin = { propertyName: string; reported?: { value: string }; observedDesired?: { value: string } };
const status = async () => {
  const r = await run("kubectl", ["--kubeconfig", join(cloud.dataDir, "kubeconfig"), "get", "devicestatus", "thermostat", "-o", "json"], { env: { HOME: home } });
  return r.code === 0 ? (JSON.parse(r.stdout).status as { twins?: Twin[]; state?: string; lastOnlineTime?: string }) : undefined;
};
const twin = async (name: string) => (await status())?.twins?.find((t) => t.propertyName === name);

beforeAll(async () => {
  if (!haveKubectl) return;
  const port = await freePort();
  device = new Daemon(spawn(process.execPath, [join(ROOT, "tests/devices/modbus-device.ts"), "--tcp", `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] }), "modbus-device");
  running.push(device);
  await device.waitFor(/modbus device listening/);
  cloud = await startCloud();
  running.push(cloud.daemon);
  edge = await startEdge({ node: "edge-dev", cloud: cloud.endpoints, token: await joinToken(cloud.dataDir) });
  running.push(edge.daemon);
  await eventually(async () => (await kubectl("get", "node", "edge-dev", "-o", "name")).includes("edge-dev"), 10_000, "node registered");
  const yaml = readFileSync(join(ROOT, "examples/thermostat.yaml"), "utf8").replace("nodeName: NODE", "nodeName: edge-dev").replace("port: PORT", `port: ${port}`);
  const f = join(tmpDir("yaml"), "thermostat.yaml");
  writeFileSync(f, yaml);
  await kubectl("apply", "-f", f);
});
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
});

describe.skipIf(!haveKubectl)("a Modbus device end to end", () => {
  test("reported values reach the DeviceStatus within collectCycle + reportCycle + 1 s of the device being reachable", async () => {
    const t0 = Date.now();
    await eventually(async () => (await twin("temperature"))?.reported?.value !== undefined, 15_000, "temperature reported");
    const s = (await status())!;
    expect(Number(s.twins!.find((t) => t.propertyName === "temperature")!.reported!.value)).toBeGreaterThan(19);
    expect(s.state).toBe("ok");
    expect(s.lastOnlineTime).toBeTruthy();
    await eventually(async () => (await twin("pressure"))?.reported?.value === "1013", 5000, "pressure reported");
    // the owner reference ties the status to its Device
    const ds = JSON.parse(await kubectl("get", "devicestatus", "thermostat", "-o", "json"));
    expect(ds.metadata.ownerReferences[0]).toMatchObject({ kind: "Device", name: "thermostat" });
    console.log(`first value in the API after ${Date.now() - t0} ms (device applied in beforeAll)`);
  });

  test("a desired value is written to the device and observedDesired follows", async () => {
    await kubectl("patch", "device", "thermostat", "--type", "json", "-p", JSON.stringify([{ op: "replace", path: "/spec/properties/1/desired/value", value: "24.5" }]));
    await device.waitFor(/"event":"write","register":"holding","addr":1,"value":245/, 10_000);
    await eventually(async () => (await twin("setpoint"))?.observedDesired?.value === "24.5", 10_000, "observedDesired");
    await eventually(async () => Number((await twin("setpoint"))?.reported?.value) === 24.5, 10_000, "read back reported");
  });

  test("an MQTT app reads and sets twins through KubeEdge's topics on the edge broker", async () => {
    const app = connect(`mqtt://${edge.endpoints.mqtt}`);
    await new Promise((r) => app.on("connect", r));
    const got: Record<string, unknown[]> = {};
    app.on("message", (topic, payload) => void (got[topic] ??= []).push(JSON.parse(String(payload))));
    const base = "$hw/events/device/default/thermostat";
    await app.subscribeAsync([`${base}/twin/get/result`, `${base}/twin/update/result`, `${base}/twin/update/document`]);
    app.publish(`${base}/twin/get`, JSON.stringify({ event_id: "e1", timestamp: Date.now() }));
    const doc = (await eventually(() => got[`${base}/twin/get/result`]?.[0], 5000, "get result")) as { twin: Record<string, { actual?: { value: string } }> };
    expect(Number(doc.twin.temperature?.actual?.value)).toBeGreaterThan(19);
    // the app turns the fan on: the mapper writes the coil
    app.publish(`${base}/twin/update`, JSON.stringify({ event_id: "e2", timestamp: Date.now(), twin: { fan: { expected: { value: "true" } } } }));
    await device.waitFor(/"event":"write","register":"coil","addr":0,"value":true/, 10_000);
    await eventually(() => got[`${base}/twin/update/document`]?.length, 5000, "document published");
    app.publish(`${base}/twin/update`, "not json");
    await eventually(() => (got[`${base}/twin/update/result`] ?? []).some((r) => (r as { code?: number }).code === 400), 5000, "error result for garbage");
    await app.endAsync();
  });

  test("device power-off: state goes disconnected; power-on: values flow again", async () => {
    await device.stop("SIGKILL");
    await eventually(async () => (await status())?.state === "disconnected", 15_000, "state disconnected");
    const port = Number(JSON.parse(await kubectl("get", "device", "thermostat", "-o", "json")).spec.protocol.configData.port);
    device = new Daemon(spawn(process.execPath, [join(ROOT, "tests/devices/modbus-device.ts"), "--tcp", `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] }), "modbus-device");
    running.push(device);
    await device.waitFor(/modbus device listening/);
    await eventually(async () => (await status())?.state === "ok", 20_000, "state ok again");
    // desired values are written again on reconnect
    await device.waitFor(/"event":"write","register":"holding","addr":1,"value":245/, 10_000);
  });
});
