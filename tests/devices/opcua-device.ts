/**
 * A simulated OPC UA device (a small oven controller) on node-opcua's own server, used by tests:
 *   bun tests/devices/opcua-device.ts --port 4841 [--user u --password p] [--pki DIR] [--no-anonymous]
 * Variables in the server's own namespace (ns=1), string node ids:
 *   Temperature (Double, changes every 200 ms), Setpoint (Double, writable), Running (Boolean, writable),
 *   Label (String), Counter (Int32, +1 per second), Blob (ByteString), Big (Int64).
 * Endpoints at opc.tcp://127.0.0.1:PORT/outpost: None, Sign and SignAndEncrypt with Basic256Sha256.
 * Trusts any client certificate (a test device). Prints one JSON line per write and per Read request, and
 * "opcua device listening" once ready.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DataType, MessageSecurityMode, OPCUACertificateManager, OPCUAServer, SecurityPolicy, StatusCodes, Variant, VariantArrayType } from "node-opcua";

const args = process.argv.slice(2);
const arg = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(arg("--port") ?? 4841);
const user = arg("--user");
const password = arg("--password");
const pki = arg("--pki") ?? join(tmpdir(), "outpost-opcua-device-pki");

const log = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");

const serverCertificateManager = new OPCUACertificateManager({ rootFolder: pki, automaticallyAcceptUnknownCertificate: true, disableFileWatchers: true });

const server = new OPCUAServer({
  port,
  hostname: "127.0.0.1",
  resourcePath: "/outpost",
  buildInfo: { productName: "outpost-opcua-device", buildNumber: "1", buildDate: new Date(0) },
  serverCertificateManager,
  securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
  securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
  allowAnonymous: !args.includes("--no-anonymous"),
  userManager: { isValidUser: (u: string, p: string) => user !== undefined && u === user && p === password },
  disableDiscovery: true,
  maxConnectionsPerEndpoint: 200,
  serverCapabilities: { maxSessions: 200 },
});

await server.initialize();
const ns = server.engine.addressSpace!.getOwnNamespace();
const device = ns.addObject({ organizedBy: server.engine.addressSpace!.rootFolder.objects, browseName: "Oven" });

let temperature = 21.5;
let setpoint = 180;
let running = false;
let counter = 0;

const state = {
  Temperature: () => new Variant({ dataType: DataType.Double, value: temperature }),
  Setpoint: () => new Variant({ dataType: DataType.Double, value: setpoint }),
  Running: () => new Variant({ dataType: DataType.Boolean, value: running }),
  Label: () => new Variant({ dataType: DataType.String, value: "oven-1" }),
  Counter: () => new Variant({ dataType: DataType.Int32, value: counter }),
  Blob: () => new Variant({ dataType: DataType.ByteString, value: Buffer.from([1, 2, 3, 250]) }),
  Big: () => new Variant({ dataType: DataType.Int64, arrayType: VariantArrayType.Scalar, value: [1, 5] }), // 2^32 + 5
};
const dataTypes: Record<keyof typeof state, string> = {
  Temperature: "Double",
  Setpoint: "Double",
  Running: "Boolean",
  Label: "String",
  Counter: "Int32",
  Blob: "ByteString",
  Big: "Int64",
};

for (const name of Object.keys(state) as (keyof typeof state)[]) {
  const writable = name === "Setpoint" || name === "Running";
  ns.addVariable({
    componentOf: device,
    nodeId: `s=${name}`,
    browseName: name,
    dataType: dataTypes[name],
    minimumSamplingInterval: name === "Temperature" ? 50 : 100,
    accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
    userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
    value: {
      get: state[name],
      ...(writable
        ? {
            set: (v: Variant) => {
              if (name === "Setpoint") setpoint = v.value as number;
              else running = v.value as boolean;
              log({ event: "write", node: name, value: v.value });
              return StatusCodes.Good;
            },
          }
        : {}),
    },
  });
}

// temperature moves towards the setpoint when running, otherwise drifts; always changes
let tick = 0;
setInterval(() => {
  tick++;
  temperature = running ? temperature + Math.sign(setpoint - temperature) * 0.5 : 21.5 + Math.sin(tick / 3);
  temperature = Math.round(temperature * 1000) / 1000 + tick * 1e-6;
}, 200);
setInterval(() => counter++, 1000);

// one line per Read service call, so tests can tell polling from pushed values
server.on("request", (request: { schema: { name: string }; nodesToRead?: { nodeId: { toString(): string } }[] }) => {
  if (request.schema.name === "ReadRequest") log({ event: "read", nodes: (request.nodesToRead ?? []).map((n) => n.nodeId.toString()) });
});

await server.start();
log({ event: "ready", msg: "opcua device listening", url: `opc.tcp://127.0.0.1:${port}/outpost`, user: user ?? null });

const stop = async () => {
  await server.shutdown(0).catch(() => {});
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
