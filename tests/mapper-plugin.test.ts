/** A third-party mapper loaded with --mapper, from source and in the compiled binary, end to end. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, eventually, joinToken, requireTool, run, spawnDaemon, startCloud, startEdge, tmpDir, type Daemon, type Flavour } from "./helpers/daemons.ts";

const running: Daemon[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
});
const haveKubectl = requireTool("/usr/bin/kubectl", "devices are applied with kubectl");
const haveBinaries = existsSync(join(ROOT, "dist", "edgecore"));
if (!haveBinaries && process.env.CI === "true") throw new Error("dist/ binaries are required in CI");
const plugin = join(ROOT, "examples/mappers/jsonfile.ts");

async function loop(flavour: Flavour) {
  const cloud = await startCloud({ flavour });
  running.push(cloud.daemon);
  const node = `plug-${flavour}`;
  const edge = await startEdge({ node, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir, flavour), flavour, args: ["--mapper", plugin] });
  running.push(edge.daemon);
  expect(edge.daemon.output.join("\n")).toContain("mapper plugin loaded");
  const file = join(tmpDir("jsonfile"), "device.json");
  writeFileSync(file, JSON.stringify({ level: 42.5, valve: false }));
  const yaml = join(tmpDir("yaml"), "d.yaml");
  writeFileSync(yaml, `
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: tank-model, namespace: default }
spec:
  protocol: jsonfile
  properties:
  - { name: level, type: FLOAT, accessMode: ReadOnly }
  - { name: valve, type: BOOLEAN, accessMode: ReadWrite }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: tank, namespace: default }
spec:
  deviceModelRef: { name: tank-model }
  nodeName: ${node}
  protocol: { protocolName: jsonfile, configData: { path: ${file} } }
  properties:
  - name: level
    collectCycle: 300
    reportCycle: 300
    visitors: { protocolName: jsonfile, configData: { key: level } }
  - name: valve
    collectCycle: 300
    reportCycle: 300
    desired: { value: "true" }
    visitors: { protocolName: jsonfile, configData: { key: valve } }
`);
  const kc = ["--kubeconfig", join(cloud.dataDir, "kubeconfig")];
  const env = { HOME: tmpDir("kubectl-home") };
  expect((await run("kubectl", [...kc, "apply", "-f", yaml], { env })).code).toBe(0);
  const twins = async () => {
    const r = await run("kubectl", [...kc, "get", "devicestatus", "tank", "-o", "json"], { env });
    return r.code === 0 ? (JSON.parse(r.stdout).status?.twins ?? []) as { propertyName: string; reported?: { value: string } }[] : [];
  };
  await eventually(async () => (await twins()).find((t) => t.propertyName === "level")?.reported?.value === "42.5", 15_000, "level reported");
  await eventually(() => JSON.parse(readFileSync(file, "utf8")).valve === true, 10_000, "desired valve written to the device");
  await eventually(async () => (await twins()).find((t) => t.propertyName === "valve")?.reported?.value === "true", 10_000, "valve read back");
  await edge.daemon.stop();
  await cloud.daemon.stop();
}

describe.skipIf(!haveKubectl)("--mapper plugins", () => {
  test("a .ts plugin drives a device from source", () => loop("source"));
  test.skipIf(!haveBinaries)("the same plugin loads in the compiled edgecore", () => loop("binary"));
  test("a module that is not a plugin is refused at start with a clear error", async () => {
    const bad = join(tmpDir("badplugin"), "bad.ts");
    writeFileSync(bad, "export default { protocol: 'x' };\n");
    const d = spawnDaemon("edgecore", ["--data-dir", tmpDir("e"), "--cloudcore", "127.0.0.1:1", "--token", "x", "--mapper", bad]);
    running.push(d);
    expect(await d.exited).toBe(1);
    expect(d.output.join("\n")).toMatch(/not a mapper plugin: protocolSchema/);
    const missing = spawnDaemon("edgecore", ["--data-dir", tmpDir("e"), "--cloudcore", "127.0.0.1:1", "--token", "x", "--mapper", "/nope/x.ts"]);
    running.push(missing);
    expect(await missing.exited).toBe(1);
    expect(missing.output.join("\n")).toMatch(/--mapper \/nope\/x.ts: cannot load/);
  });
});
