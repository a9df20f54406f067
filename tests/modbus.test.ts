/** The modbus mapper's driver against a real Modbus device process: TCP, and RTU over a socat pty pair. */
import { afterAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import modbus, { planBatches, type ModbusVisitor } from "../mappers/modbus/index.ts";
import type { PropertySpec, DeviceDriver } from "../mappers/plugin.ts";
import { decodeWords, encodeWords } from "../mappers/modbus/codec.ts";
import { quietLog } from "./helpers/hubs.ts";
import { Daemon, ROOT, eventually, freePort, requireTool, tmpDir } from "./helpers/daemons.ts";

const procs: Daemon[] = [];
afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop("SIGKILL")));
});

function device(args: string[]): Daemon {
  const d = new Daemon(spawn(process.execPath, [join(ROOT, "tests/devices/modbus-device.ts"), ...args], { stdio: ["ignore", "pipe", "pipe"] }), "modbus-device");
  procs.push(d);
  return d;
}

const prop = (name: string, visitor: Record<string, unknown>, type: PropertySpec<ModbusVisitor>["type"] = "int", accessMode: "ReadWrite" | "ReadOnly" = "ReadOnly"): PropertySpec<ModbusVisitor> => ({
  name,
  visitor: v.parse(modbus.visitorSchema, visitor),
  type,
  accessMode,
});

const props = [
  prop("temperature", { register: "HoldingRegister", offset: 0, limit: 1, scale: 0.1, dataType: "int" }, "float"),
  prop("setpoint", { register: "HoldingRegister", offset: 1, limit: 1, scale: 0.1 }, "float", "ReadWrite"),
  prop("humidity", { register: "HoldingRegister", offset: 2, limit: 2, dataType: "float" }, "float"),
  prop("fan", { register: "CoilRegister", offset: 0, limit: 1 }, "boolean", "ReadWrite"),
  prop("pressure", { register: "InputRegister", offset: 0, limit: 1 }, "int"),
];

async function open(protocol: Record<string, unknown>): Promise<DeviceDriver<ModbusVisitor>> {
  return modbus.open({ id: "default/thermostat", protocol: v.parse(modbus.protocolSchema, protocol), properties: props }, { log: quietLog, signal: new AbortController().signal });
}

describe("modbus codec", () => {
  test("swaps and round trips", () => {
    expect(decodeWords([0x4236, 0x0000], "float", {})).toBeCloseTo(45.5);
    expect(decodeWords([0x0000, 0x4236], "float", { isRegisterSwap: true })).toBeCloseTo(45.5);
    expect(decodeWords([0x3642, 0x0000], "float", { isSwap: true })).toBeCloseTo(45.5);
    expect(decodeWords([0xffff], "int", {})).toBe(-1);
    expect(decodeWords([0xffff], "uint", {})).toBe(65535);
    for (const layout of [{}, { isSwap: true }, { isRegisterSwap: true }, { isSwap: true, isRegisterSwap: true }])
      expect(decodeWords(encodeWords(-123456, 2, "int", layout), "int", layout)).toBe(-123456);
    expect(() => decodeWords([1, 2, 3], "int", {})).toThrow(/limit 1, 2 or 4/);
    expect(() => encodeWords(99999, 1, "int", {})).toThrow(/does not fit 1 register as a signed integer \(-32768..32767\)/);
    expect(() => encodeWords(-1, 2, "uint", {})).toThrow(/unsigned/);
    expect(encodeWords(65535, 1, "uint", {})).toEqual([0xffff]);
  });

  test("adjacent registers are planned into one read", () => {
    const b = planBatches(props);
    const holding = b.filter((x) => x.register === "HoldingRegister");
    expect(holding).toEqual([expect.objectContaining({ offset: 0, length: 4 })]);
    expect(b).toHaveLength(3);
  });

  test("visitor config errors name the field", () => {
    const r = v.safeParse(modbus.visitorSchema, { register: "Holding", offset: 0 });
    expect(r.success).toBe(false);
    expect(v.getDotPath(r.issues![0]!)).toBe("register");
  });
});

describe("modbus over TCP against a device process", () => {
  test("reads with scale and float decoding, batched; writes reach the device", async () => {
    const port = await freePort();
    const dev = device(["--tcp", `127.0.0.1:${port}`]);
    await dev.waitFor(/modbus device listening/);
    const drv = await open({ communicateMode: "TCP", ip: "127.0.0.1", port, slaveID: 1 });
    try {
      const values = await drv.readMany!(props);
      expect(values.get("temperature")).toBeCloseTo(21.5);
      expect(values.get("setpoint")).toBeCloseTo(20);
      expect(values.get("humidity")).toBeCloseTo(45.5);
      expect(values.get("fan")).toBe(false);
      expect(values.get("pressure")).toBe(1013);
      const holdingReads = dev.output.filter((l) => l.includes('"register":"holding"') && l.includes('"read"'));
      expect(holdingReads).toHaveLength(1);
      expect(JSON.parse(holdingReads[0]!)).toMatchObject({ addr: 0, length: 4 });

      await drv.write!(props[1]!, 23.5);
      await dev.waitFor(/"event":"write","register":"holding","addr":1,"value":235/);
      expect(await drv.read(props[1]!)).toBeCloseTo(23.5);
      await drv.write!(props[3]!, true);
      await dev.waitFor(/"event":"write","register":"coil","addr":0,"value":true/);
      await expect(drv.write!(props[4]!, 1)).rejects.toThrow(/read-only/);
      expect(await drv.health!()).toBe("ok");
    } finally {
      await drv.close();
    }
  });

  test("power-off: reads fail and health says so; a new driver works after power-on", async () => {
    const port = await freePort();
    let dev = device(["--tcp", `127.0.0.1:${port}`]);
    await dev.waitFor(/modbus device listening/);
    const drv = await open({ ip: "127.0.0.1", port, timeout: 300 });
    expect(await drv.read(props[0]!)).toBeCloseTo(21.5);
    await dev.stop("SIGKILL");
    await expect(drv.read(props[0]!)).rejects.toThrow();
    await eventually(async () => (await drv.health!()) === "disconnected", 3000, "health disconnected");
    await drv.close();
    dev = device(["--tcp", `127.0.0.1:${port}`]);
    await dev.waitFor(/modbus device listening/);
    const again = await open({ ip: "127.0.0.1", port });
    expect(await again.read(props[4]!)).toBe(1013);
    await again.close();
  });
});

describe("modbus RTU over a real pseudo-terminal pair", () => {
  const haveSocat = existsSync("/usr/bin/socat") || requireTool("/usr/bin/socat", "socat makes the pty pair for RTU");
  test.skipIf(!haveSocat)("reads and writes through the serial line", async () => {
    const dir = tmpDir("pty");
    const a = join(dir, "ttyA");
    const b = join(dir, "ttyB");
    const socat = new Daemon(spawn("socat", ["-d", "-d", `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ["ignore", "pipe", "pipe"] }), "socat");
    procs.push(socat);
    await socat.waitFor(/starting data transfer loop/);
    const dev = device(["--serial", b]);
    await dev.waitFor(/modbus device listening/);
    const drv = await open({ communicateMode: "RTU", serialPort: a, baudRate: 9600, slaveID: 1, timeout: 2000 });
    try {
      expect(await drv.read(props[0]!)).toBeCloseTo(21.5);
      expect(await drv.read(props[2]!)).toBeCloseTo(45.5);
      await drv.write!(props[1]!, 19);
      await dev.waitFor(/"event":"write","register":"holding","addr":1,"value":190/);
      expect(await drv.read(props[1]!)).toBeCloseTo(19);
    } finally {
      await drv.close();
    }
  });
});
