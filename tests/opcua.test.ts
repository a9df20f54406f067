/** The opcua mapper's driver against a real node-opcua server process (tests/devices/opcua-device.ts). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import opcua, { type OpcuaVisitor } from "../mappers/opcua/index.ts";
import { fromVariant, int64ToRaw, rawToInt64, toVariantValue, BuiltinType } from "../mappers/opcua/convert.ts";
import type { DeviceDriver, PropertySpec, RawValue } from "../mappers/plugin.ts";
import { quietLog } from "./helpers/hubs.ts";
import { Daemon, ROOT, eventually, freePort, tmpDir } from "./helpers/daemons.ts";

const STARTUP_MS = 60_000;
const procs: Daemon[] = [];
const drivers: DeviceDriver<OpcuaVisitor>[] = [];
const dirs: string[] = [];
const scratch = (prefix: string) => {
  const d = tmpDir(prefix);
  dirs.push(d);
  return d;
};
afterAll(async () => {
  await Promise.all(drivers.map((d) => d.close().catch(() => {})));
  await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** One PKI store for every device process: a restarted server keeps its certificate. */
const devicePki = scratch("opcua-device-pki");

function device(port: number, extra: string[] = []): Daemon {
  const d = new Daemon(
    spawn(process.execPath, [join(ROOT, "tests/devices/opcua-device.ts"), "--port", String(port), "--pki", devicePki, ...extra], { stdio: ["ignore", "pipe", "pipe"] }),
    "opcua-device",
  );
  procs.push(d);
  return d;
}

type Prop = PropertySpec<OpcuaVisitor>;
const prop = (name: string, visitor: Record<string, unknown>, type: Prop["type"] = "double", accessMode: Prop["accessMode"] = "ReadOnly"): Prop => ({
  name,
  visitor: v.parse(opcua.visitorSchema, visitor),
  type,
  accessMode,
});

const P = {
  temperature: prop("temperature", { nodeID: "ns=1;s=Temperature", browseName: "Temperature" }),
  setpoint: prop("setpoint", { nodeID: "ns=1;s=Setpoint" }, "double", "ReadWrite"),
  running: prop("running", { nodeID: "ns=1;s=Running" }, "boolean", "ReadWrite"),
  label: prop("label", { nodeID: "ns=1;s=Label" }, "string"),
  counter: prop("counter", { nodeID: "ns=1;s=Counter" }, "int"),
  blob: prop("blob", { nodeID: "ns=1;s=Blob" }, "bytes"),
  big: prop("big", { nodeID: "ns=1;s=Big" }, "int"),
  serverState: prop("serverState", { nodeID: "i=2259" }, "int"), // Server_ServerStatus_State, ns=0
  missing: prop("missing", { nodeID: "ns=1;s=NoSuchNode" }, "double", "ReadWrite"),
  pushedTemperature: prop("pushedTemperature", { nodeID: "ns=1;s=Temperature", subscribe: true, samplingInterval: 100 }),
  pushedMissing: prop("pushedMissing", { nodeID: "ns=1;s=NoSuchNode", subscribe: "true" }),
};
const allProps = Object.values(P);

async function open(protocol: Record<string, unknown>, properties: Prop[] = allProps): Promise<DeviceDriver<OpcuaVisitor>> {
  const drv = await opcua.open(
    { id: "default/oven", protocol: v.parse(opcua.protocolSchema, { pkiDir: clientPki, timeout: 3000, ...protocol }), properties },
    { log: quietLog, signal: new AbortController().signal },
  );
  drivers.push(drv);
  return drv;
}

const clientPki = scratch("opcua-client-pki");

describe("opcua config schemas", () => {
  const path = (schema: typeof opcua.protocolSchema | typeof opcua.visitorSchema, input: unknown) => {
    const r = v.safeParse(schema, input);
    expect(r.success).toBe(false);
    return { path: v.getDotPath(r.issues![0]!), message: r.issues![0]!.message };
  };

  test("protocol errors name the field", () => {
    expect(path(opcua.protocolSchema, { url: "http://x:4840" })).toEqual({ path: "url", message: expect.stringContaining("opc.tcp://") });
    expect(path(opcua.protocolSchema, {}).path).toBe("url");
    expect(path(opcua.protocolSchema, { url: "opc.tcp://h:4840", securityMode: "Encrypt" }).path).toBe("securityMode");
    expect(path(opcua.protocolSchema, { url: "opc.tcp://h:4840", securityMode: "Sign", securityPolicy: "Basic999" }).path).toBe("securityPolicy");
    expect(path(opcua.protocolSchema, { url: "opc.tcp://h:4840", securityMode: "Sign" })).toEqual({ path: "securityPolicy", message: expect.stringContaining("None exactly when") });
    expect(path(opcua.protocolSchema, { url: "opc.tcp://h:4840", password: "p" }).path).toBe("userName");
    expect(path(opcua.protocolSchema, { url: "opc.tcp://h:4840", certificate: "/c.pem" }).path).toBe("privateKey");
    expect(path(opcua.protocolSchema, { url: "opc.tcp://h:4840", timeout: "soon" }).path).toBe("timeout");
  });

  test("protocol defaults and KubeEdge's string values", () => {
    const p = v.parse(opcua.protocolSchema, { url: "opc.tcp://[::1]:4840/ua", timeout: "2500", acceptUnknownServerCertificate: "true" });
    expect(p).toMatchObject({ securityMode: "None", securityPolicy: "None", timeout: 2500, acceptUnknownServerCertificate: true });
    expect(p.userName).toBeUndefined();
    expect(v.parse(opcua.protocolSchema, { url: "opc.tcp://plc.local:4840", securityMode: "SignAndEncrypt", securityPolicy: "Aes128_Sha256_RsaOaep" }).securityPolicy).toBe(
      "Aes128_Sha256_RsaOaep",
    );
  });

  test("visitor errors name the field", () => {
    expect(path(opcua.visitorSchema, { nodeID: "Temperature" })).toEqual({ path: "nodeID", message: expect.stringContaining("ns=2;s=Temperature") });
    expect(path(opcua.visitorSchema, { browseName: "x" }).path).toBe("nodeID");
    expect(path(opcua.visitorSchema, { nodeID: "ns=2;i=2", subscribe: "yes" }).path).toBe("subscribe");
    expect(path(opcua.visitorSchema, { nodeID: "ns=2;i=2", samplingInterval: -5 }).path).toBe("samplingInterval");
    expect(v.parse(opcua.visitorSchema, { nodeID: "ns=2;i=2" })).toEqual({ nodeID: "ns=2;i=2", subscribe: false, samplingInterval: 1000 });
  });
});

describe("opcua plugin module", () => {
  test("importing the plugin does not load node-opcua; opening a device does", async () => {
    const script = `
      const loaded = () => Object.keys(require.cache).some((k) => k.includes("/node_modules/node-opcua"));
      const { default: plugin } = await import(${JSON.stringify(join(ROOT, "mappers/opcua/index.ts"))});
      const before = loaded();
      const err = await plugin.open({ id: "d/x", protocol: { url: "opc.tcp://127.0.0.1:1/x", securityMode: "None", securityPolicy: "None", timeout: 200, acceptUnknownServerCertificate: false, pkiDir: ${JSON.stringify(scratch("opcua-lazy-pki"))} }, properties: [] },
        { log: { debug() {}, info() {}, warn() {}, error() {}, child() { return this; } }, signal: new AbortController().signal }).then(() => "opened", (e) => e.message);
      console.log(JSON.stringify({ before, after: loaded(), err }));
      process.exit(0);`;
    const child = new Daemon(spawn(process.execPath, ["-e", script], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] }), "lazy-load");
    procs.push(child);
    const line = await child.waitFor(/^\{"before"/, 30_000);
    expect(JSON.parse(line)).toEqual({ before: false, after: true, err: expect.stringMatching(/cannot connect/) });
  });
});

describe("opcua value conversion", () => {
  test("Int64 words round trip, large values stay exact as bigint", () => {
    expect(int64ToRaw([1, 5], true)).toBe(2 ** 32 + 5);
    expect(int64ToRaw([0xffffffff, 0xffffffff], true)).toBe(-1);
    expect(int64ToRaw([0xffffffff, 0xffffffff], false)).toBe(2n ** 64n - 1n);
    for (const n of [0n, -1n, 2n ** 40n + 7n, -(2n ** 63n), 2n ** 63n - 1n]) {
      const back = int64ToRaw(rawToInt64(n, true), true);
      expect(BigInt(back)).toBe(n);
    }
    expect(() => rawToInt64(-1n, false)).toThrow(/out of range for UInt64/);
  });

  test("writes are checked against the node's type", () => {
    expect(toVariantValue(BuiltinType.Boolean, "on")).toBe(true);
    expect(toVariantValue(BuiltinType.Double, "21.5")).toBe(21.5);
    expect(() => toVariantValue(BuiltinType.Byte, 300)).toThrow(/out of range for Byte/);
    expect(() => toVariantValue(BuiltinType.Int32, 1.5)).toThrow(/not an integer/);
    expect(() => toVariantValue(BuiltinType.Double, "warm")).toThrow(/not a number/);
    expect(() => toVariantValue(BuiltinType.Boolean, "maybe")).toThrow(/not a boolean/);
    expect(toVariantValue(BuiltinType.ByteString, new Uint8Array([1, 2]))).toEqual(Buffer.from([1, 2]));
    expect(fromVariant(BuiltinType.Float, [1, 2])).toBe("[1,2]");
    expect(() => fromVariant(BuiltinType.Double, null)).toThrow(/no value/);
  });
});

describe("opcua against a node-opcua server process", () => {
  let port = 0;
  let dev: Daemon;
  let url = "";
  beforeAll(async () => {
    port = await freePort();
    dev = device(port, ["--user", "operator", "--password", "s3cret"]);
    await dev.waitFor(/opcua device listening/, STARTUP_MS);
    url = `opc.tcp://127.0.0.1:${port}/outpost`;
  }, STARTUP_MS + 5000);

  test("reads each type, all properties in one Read request", async () => {
    const drv = await open({ url });
    expect(await drv.health!()).toBe("ok");
    expect(typeof (await drv.read(P.temperature))).toBe("number");
    // the device logs on its own stdout: count from after that read's line has arrived
    await eventually(() => dev.output.some((l) => l.includes('"event":"read"') && l.includes("ns=1;s=Temperature")), 2000, "first read logged");
    const reads = dev.output.filter((l) => l.includes('"event":"read"')).length;
    const values = await drv.readMany!([P.temperature, P.setpoint, P.running, P.label, P.counter, P.blob, P.big, P.serverState, P.missing]);
    expect(values.get("temperature")).toBeNumber();
    expect(values.get("setpoint")).toBe(180);
    expect(values.get("running")).toBe(false);
    expect(values.get("label")).toBe("oven-1");
    expect(Number.isInteger(values.get("counter"))).toBe(true);
    expect(values.get("blob")).toBeInstanceOf(Uint8Array);
    expect(Array.from(values.get("blob") as Uint8Array)).toEqual([1, 2, 3, 250]);
    expect(values.get("big")).toBe(2 ** 32 + 5);
    expect(values.get("serverState")).toBe(0); // ServerState.Running
    const missing = values.get("missing");
    expect(missing).toBeInstanceOf(Error);
    expect((missing as Error).message).toMatch(/ns=1;s=NoSuchNode.*BadNodeIdUnknown/);
    await eventually(() => dev.output.filter((l) => l.includes('"event":"read"')).length > reads, 2000, "read logged");
    // node-opcua's own session keep-alive may read the server status meanwhile: count only reads of our nodes
    const batch = dev.output
      .filter((l) => l.includes('"event":"read"'))
      .slice(reads)
      .map((l) => JSON.parse(l) as { nodes: string[] })
      .filter((r) => r.nodes.some((n) => n.startsWith("ns=1;")));
    expect(batch).toHaveLength(1);
    expect(batch[0]!.nodes).toHaveLength(9);
    await expect(drv.read(P.missing)).rejects.toThrow(/ns=1;s=NoSuchNode.*BadNodeIdUnknown/);
  });

  test("writes Setpoint and Running with the node's type; the device sees them; read back", async () => {
    const drv = await open({ url });
    await drv.write!(P.setpoint, 200.5);
    await dev.waitFor(/"event":"write","node":"Setpoint","value":200.5/);
    expect(await drv.read(P.setpoint)).toBe(200.5);
    await drv.write!(P.setpoint, "190"); // desired values arrive as strings: converted to Double
    await dev.waitFor(/"event":"write","node":"Setpoint","value":190\}/);
    expect(await drv.read(P.setpoint)).toBe(190);
    await drv.write!(P.running, true);
    await dev.waitFor(/"event":"write","node":"Running","value":true/);
    expect(await drv.read(P.running)).toBe(true);
    await drv.write!(P.running, "false");
    await dev.waitFor(/"event":"write","node":"Running","value":false/);
    expect(await drv.read(P.running)).toBe(false);
  });

  test("bad writes give errors naming the node and the status", async () => {
    const drv = await open({ url });
    await expect(drv.write!(P.missing, 1)).rejects.toThrow(/ns=1;s=NoSuchNode \(property missing\).*BadNodeIdUnknown/);
    await expect(drv.write!(P.label, "renamed")).rejects.toThrow(/ns=1;s=Label \(property label\) failed: BadNotWritable/);
    await expect(drv.write!(P.setpoint, "warm")).rejects.toThrow(/ns=1;s=Setpoint \(property setpoint, Double\): "warm" is not a number/);
    expect(dev.output.some((l) => l.includes('"node":"Label"') || l.includes('"value":"warm"'))).toBe(false);
    expect(await drv.read(P.label)).toBe("oven-1");
  });

  test("a subscribed property is pushed without polling; unsubscribe stops it", async () => {
    const drv = await open({ url });
    expect(await drv.subscribe!(P.temperature, () => {})).toBeNull(); // not asked for: the host polls it
    const readsBefore = dev.output.filter((l) => l.includes('"event":"read"')).length;
    const got: RawValue[] = [];
    const unsubscribe = await drv.subscribe!(P.pushedTemperature, (value) => got.push(value));
    expect(unsubscribe).toBeFunction();
    await Bun.sleep(2000);
    expect(got.length).toBeGreaterThanOrEqual(3);
    expect(got.every((x) => typeof x === "number")).toBe(true);
    expect(new Set(got).size).toBeGreaterThanOrEqual(3);
    const reads = dev.output.filter((l) => l.includes('"event":"read"')).slice(readsBefore);
    expect(reads.filter((l) => l.includes("Temperature"))).toEqual([]);
    await unsubscribe!();
    await Bun.sleep(300);
    const n = got.length;
    await Bun.sleep(800);
    expect(got.length).toBe(n);
    await expect(drv.subscribe!(P.pushedMissing, () => {})).rejects.toThrow(/ns=1;s=NoSuchNode.*BadNodeIdUnknown/);
  });

  test("user/password login; a wrong password fails clearly", async () => {
    const drv = await open({ url, userName: "operator", password: "s3cret" });
    expect(await drv.read(P.label)).toBe("oven-1");
    const err = await open({ url, userName: "operator", password: "wrong" }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(/session for user "operator" refused/);
    expect(err!.message).toMatch(/Bad(UserAccessDenied|IdentityTokenRejected|IdentityTokenInvalid)/);
  });

  test("Sign / Basic256Sha256: an unknown server certificate is refused, then trusted on first use", async () => {
    const pkiDir = scratch("opcua-client-pki-sign");
    const secure = { url, securityMode: "Sign", securityPolicy: "Basic256Sha256", pkiDir };
    const refused = await open(secure).then(
      () => null,
      (e: Error) => e,
    );
    expect(refused).toBeInstanceOf(Error);
    expect(refused!.message).toMatch(/cannot connect \(Sign\/Basic256Sha256\).*BadCertificateUntrusted.*rejected.*move it to .*trusted\/certs/);
    expect(readdirSync(join(pkiDir, "rejected")).length).toBe(1);
    expect(existsSync(join(pkiDir, "trusted/certs")) ? readdirSync(join(pkiDir, "trusted/certs")) : []).toEqual([]);

    const drv = await open({ ...secure, acceptUnknownServerCertificate: true });
    expect(await drv.read(P.label)).toBe("oven-1");
    await drv.write!(P.setpoint, 175);
    await dev.waitFor(/"event":"write","node":"Setpoint","value":175/);
    expect(readdirSync(join(pkiDir, "trusted/certs")).length).toBe(1);
    expect(readdirSync(join(pkiDir, "own/certs")).some((f) => f.endsWith(".pem"))).toBe(true);

    const again = await open(secure); // trusted now, without the option
    expect(await again.read(P.setpoint)).toBe(175);
    const encrypted = await open({ ...secure, securityMode: "SignAndEncrypt", userName: "operator", password: "s3cret" });
    expect(await encrypted.read(P.running)).toBeBoolean();
  });

  test("devices opened at the same time share a fresh PKI folder", async () => {
    const pkiDir = scratch("opcua-client-pki-shared");
    const opened = await Promise.all([0, 1, 2, 3].map(() => open({ url, pkiDir })));
    expect(await Promise.all(opened.map((d) => d.read(P.label)))).toEqual(["oven-1", "oven-1", "oven-1", "oven-1"]);
    expect(readdirSync(join(pkiDir, "own/certs")).filter((f) => f.endsWith(".pem"))).toHaveLength(1);
    await Promise.all(opened.map((d) => d.close()));
  });

  test("close is bounded and the driver refuses work afterwards", async () => {
    const drv = await open({ url }, [P.pushedTemperature]);
    await drv.subscribe!(P.pushedTemperature, () => {});
    const t0 = Date.now();
    await drv.close();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await drv.health!()).toBe("disconnected");
    await expect(drv.read(P.label)).rejects.toThrow(/driver closed/);
  });
});

describe("opcua device power-off", () => {
  test("reads fail and health says disconnected; after power-on a new driver works and the old one recovers in place", async () => {
    const port = await freePort();
    const url = `opc.tcp://127.0.0.1:${port}/outpost`;
    let dev = device(port);
    await dev.waitFor(/opcua device listening/, STARTUP_MS);
    const drv = await open({ url, timeout: 1000 });
    const other = await open({ url, timeout: 1000 });
    const pushed: RawValue[] = [];
    await drv.subscribe!(P.pushedTemperature, (x) => pushed.push(x));
    expect(await drv.read(P.label)).toBe("oven-1");
    await eventually(() => pushed.length > 0, 3000, "first notification");

    await dev.stop("SIGKILL");
    await expect(drv.read(P.label)).rejects.toThrow(/opc\.tcp:\/\/127\.0\.0\.1:\d+\/outpost: disconnected/);
    await eventually(async () => (await drv.health!()) === "disconnected" && (await other.health!()) === "disconnected", 5000, "health disconnected");

    const t0 = Date.now();
    await expect(open({ url, timeout: 1000 })).rejects.toThrow(/cannot connect \(None\/None\)/);
    expect(Date.now() - t0).toBeLessThan(3 * 1000 + 1000);
    const t1 = Date.now();
    await other.close(); // while the server is gone
    expect(Date.now() - t1).toBeLessThan(3000);

    dev = device(port);
    await dev.waitFor(/opcua device listening/, STARTUP_MS);
    const again = await open({ url, timeout: 3000 });
    expect(await again.read(P.label)).toBe("oven-1");
    expect(await again.health!()).toBe("ok");

    // node-opcua reconnects the old driver in place, with a new session and its monitored items
    await eventually(async () => (await drv.health!()) === "ok", 15_000, "old driver reconnected");
    expect(await drv.read(P.label)).toBe("oven-1");
    const n = pushed.length;
    await eventually(() => pushed.length >= n + 3, 5000, "notifications after reconnect");
  }, 2 * STARTUP_MS);
});
