/**
 * npm start: the demo on embedded defaults. Starts cloudcore (embedded API), joins one edgecore,
 * starts a simulated Modbus thermostat, applies it as a KubeEdge Device, and runs until Ctrl-C.
 * State lives in ./.demo so a rerun resumes it.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import { KubeClient, Resources, isNotFound, type KubeObject } from "./lib/kube/client/index.ts";
import { Daemon, ROOT, freePort, joinToken, startCloud, startEdge } from "./tests/helpers/daemons.ts";

const base = resolve(".demo");
const cloudDir = join(base, "cloudcore-data");
const edgeDir = join(base, "edgecore-data");

console.log("starting cloudcore ...");
const cloud = await startCloud({ dataDir: cloudDir });
const firstJoin = !existsSync(join(edgeDir, "join.json"));
console.log("starting edgecore (node demo-edge) ...");
const edge = await startEdge({ node: "demo-edge", dataDir: edgeDir, ...(firstJoin ? { cloud: cloud.endpoints, token: await joinToken(cloudDir) } : {}) });
const port = await freePort();
console.log(`starting a simulated Modbus thermostat on 127.0.0.1:${port} ...`);
const device = new Daemon(spawn(process.execPath, [join(ROOT, "tests/devices/modbus-device.ts"), "--tcp", `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] }), "modbus-device");
await device.waitFor(/modbus device listening/);

// apply the thermostat's DeviceModel and Device through the API (kubectl is not needed for the demo)
const kubeconfig = join(cloudDir, "kubeconfig");
const client = KubeClient.fromKubeconfig(kubeconfig);
const text = readFileSync(join(ROOT, "examples/thermostat.yaml"), "utf8").replace("nodeName: NODE", "nodeName: demo-edge").replace("port: PORT", `port: ${port}`);
for (const doc of parseAllDocuments(text)) {
  const obj = doc.toJS() as KubeObject & { metadata: { name: string; namespace: string } };
  const res = obj.kind === "Device" ? Resources.devices : Resources.devicemodels;
  try {
    const cur = await client.get(res, obj.metadata.name, obj.metadata.namespace);
    await client.update(res, { ...obj, metadata: { ...obj.metadata, resourceVersion: cur.metadata?.resourceVersion } });
  } catch (e) {
    if (!isNotFound(e)) throw e;
    await client.create(res, obj);
  }
}
client.close();

console.log(`
Outpost demo is running: cloudcore, edge node demo-edge, and a Modbus thermostat driven by the modbus mapper.
  kubectl --kubeconfig ${kubeconfig} get nodes,devices,devicestatus
  kubectl --kubeconfig ${kubeconfig} get devicestatus thermostat -o yaml     # live readings
  kubectl --kubeconfig ${kubeconfig} patch device thermostat --type json -p '[{"op":"replace","path":"/spec/properties/1/desired/value","value":"23"}]'
  MQTT (edge): ${edge.endpoints.mqtt}   topics $hw/events/device/default/thermostat/twin/#
Press Ctrl-C to stop.`);
let stopping = false;
const stop = async () => {
  stopping = true;
  await device.stop();
  await edge.daemon.stop();
  await cloud.daemon.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
await Promise.race([cloud.daemon.exited, edge.daemon.exited, device.exited]);
if (!stopping) {
  console.error("a process of the demo exited on its own; stopping the others");
  await stop();
}
