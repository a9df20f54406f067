/**
 * The BLE mapper's driver through noble itself, over a scripted peripheral behind noble's bindings
 * interface (no Bluetooth hardware here): scanning, the data converter, dataWrite, notifications,
 * link loss, timeouts, and config errors.
 */
import { afterEach, describe, expect, test } from "bun:test";
import * as v from "valibot";
import ble, { encodeWrite, normalizeUuid, withBindings, type BleVisitor } from "../mappers/ble/index.ts";
import { convertReadData, converterIndexes } from "../mappers/ble/converter.ts";
import type { DeviceDriver, PropertySpec } from "../mappers/plugin.ts";
import { ScriptedBindings, ScriptedPeripheral, TEMPERATURE_BYTES, THERMO, thermometer, type BindingsOptions } from "./devices/ble-peripheral.ts";
import { quietLog } from "./helpers/hubs.ts";
import { eventually } from "./helpers/daemons.ts";

const prop = (name: string, visitor: Record<string, unknown>, type: PropertySpec<BleVisitor>["type"] = "float", accessMode: "ReadWrite" | "ReadOnly" = "ReadOnly"): PropertySpec<BleVisitor> => ({
  name,
  visitor: v.parse(ble.visitorSchema, visitor),
  type,
  accessMode,
});

const ambient = { startIndex: 3, endIndex: 2, shiftRight: 2, orderOfOperations: [{ operationType: "Multiply", operationValue: 0.03125 }] };

const props = {
  temperature: prop("temperature", { characteristicUUID: THERMO.temperature, dataConverter: ambient }),
  objectRaw: prop("objectRaw", { characteristicUUID: THERMO.temperature, dataConverter: { startIndex: 1, endIndex: 0 } }, "int"),
  fahrenheit: prop("fahrenheit", {
    characteristicUUID: "F000AA01-0451-4000-B000-000000000000",
    serviceUUID: "f000aa00-0451-4000-b000-000000000000",
    dataConverter: { ...ambient, orderOfOperations: [...ambient.orderOfOperations, { operationType: "multiply", operationValue: 1.8 }, { operationType: "ADD", operationValue: 32 }] },
  }),
  switch: prop("switch", { characteristicUUID: THERMO.switch, dataWrite: { ON: [1], OFF: [0], BLINK: [2, 250] }, dataConverter: { startIndex: 0, endIndex: 0 } }, "int", "ReadWrite"),
  label: prop("label", { characteristicUUID: THERMO.switch }, "string", "ReadWrite"),
  heartRate: prop("heartRate", { characteristicUUID: THERMO.heartRate, notify: true, dataConverter: { startIndex: 1, endIndex: 1 } }, "int"),
  battery: prop("battery", { characteristicUUID: "00002a19-0000-1000-8000-00805f9b34fb" }, "bytes"),
  missing: prop("missing", { characteristicUUID: "ffe1" }, "int"),
};

const rigs: { bindings: ScriptedBindings; drivers: DeviceDriver<BleVisitor>[] }[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) {
    await Promise.all(r.drivers.map((d) => d.close()));
    r.bindings.dispose();
  }
});

function rig(peripherals: ScriptedPeripheral[] = [thermometer()], opts: BindingsOptions = {}) {
  const bindings = new ScriptedBindings(peripherals, opts);
  const plugin = withBindings(bindings);
  const r = { bindings, drivers: [] as DeviceDriver<BleVisitor>[] };
  rigs.push(r);
  const open = async (protocol: Record<string, unknown>, properties: PropertySpec<BleVisitor>[] = Object.values(props), signal = new AbortController().signal) => {
    const d = await plugin.open({ id: "default/thermo", protocol: v.parse(plugin.protocolSchema, protocol), properties }, { log: quietLog, signal });
    r.drivers.push(d);
    return d;
  };
  return { bindings, plugin, open, peripheral: peripherals[0]! };
}

describe("BLE data converter", () => {
  const bytes = Uint8Array.from([0x01, 0x2c, 0xff, 0x80]);
  test("byte ranges: forward is big-endian, backward is little-endian, inclusive", () => {
    expect(converterIndexes({ startIndex: 0, endIndex: 1 })).toEqual([0, 1]);
    expect(converterIndexes({ startIndex: 3, endIndex: 1 })).toEqual([3, 2, 1]);
    expect(convertReadData(bytes, { startIndex: 0, endIndex: 0 })).toBe(1);
    expect(convertReadData(bytes, { startIndex: 0, endIndex: 1 })).toBe(0x012c);
    expect(convertReadData(bytes, { startIndex: 1, endIndex: 0 })).toBe(0x2c01);
    expect(convertReadData(bytes, { startIndex: 3, endIndex: 0 })).toBe(0x80ff2c01);
  });

  test("shifts: left then right, 64-bit unsigned", () => {
    expect(convertReadData(bytes, { startIndex: 1, endIndex: 1, shiftLeft: 4 })).toBe(0x2c0);
    expect(convertReadData(bytes, { startIndex: 0, endIndex: 1, shiftRight: 2 })).toBe(0x012c >> 2);
    expect(convertReadData(bytes, { startIndex: 2, endIndex: 2, shiftLeft: 4, shiftRight: 8 })).toBe(0xf);
    // bits shifted past 64 are gone, as with Go's uint64
    expect(convertReadData(Uint8Array.from([0xff]), { startIndex: 0, endIndex: 0, shiftLeft: 60, shiftRight: 60 })).toBe(0xf);
  });

  test("orderOfOperations apply in order", () => {
    const c = { startIndex: 0, endIndex: 0 };
    expect(convertReadData(Uint8Array.from([10]), { ...c, orderOfOperations: [{ operationType: "Add", operationValue: 2 }, { operationType: "Multiply", operationValue: 3 }] })).toBe(36);
    expect(convertReadData(Uint8Array.from([10]), { ...c, orderOfOperations: [{ operationType: "Multiply", operationValue: 3 }, { operationType: "Add", operationValue: 2 }] })).toBe(32);
    expect(convertReadData(Uint8Array.from([10]), { ...c, orderOfOperations: [{ operationType: "Subtract", operationValue: 4 }, { operationType: "Divide", operationValue: 4 }] })).toBe(1.5);
    // the SensorTag ambient temperature
    expect(convertReadData(Uint8Array.from(TEMPERATURE_BYTES), { startIndex: 3, endIndex: 2, shiftRight: 2, orderOfOperations: [{ operationType: "Multiply", operationValue: 0.03125 }] })).toBe(21.5);
  });

  test("decimalConcat reproduces KubeEdge's integer building", () => {
    expect(convertReadData(bytes, { startIndex: 0, endIndex: 1, decimalConcat: true })).toBe(144); // "1" + "44"
    expect(convertReadData(bytes, { startIndex: 1, endIndex: 0, decimalConcat: true })).toBe(441); // "44" + "1"
    expect(convertReadData(bytes, { startIndex: 2, endIndex: 2, decimalConcat: true })).toBe(255); // one byte: same either way
  });

  test("a value too short for the range is an error naming the byte", () => {
    expect(() => convertReadData(Uint8Array.from([1, 2]), { startIndex: 0, endIndex: 3 })).toThrow(/needs byte 3 but the value has 2 byte/);
  });

  test("UUID spellings normalise to noble's", () => {
    expect(normalizeUuid("2A19")).toBe("2a19");
    expect(normalizeUuid("00002a19-0000-1000-8000-00805f9b34fb")).toBe("2a19");
    expect(normalizeUuid("F000AA01-0451-4000-B000-000000000000")).toBe("f000aa0104514000b000000000000000");
  });

  test("dataWrite: table entries (case-insensitive, booleans as on/off), else the value's bytes or text", () => {
    expect([...encodeWrite(props.switch, "ON")]).toEqual([1]);
    expect([...encodeWrite(props.switch, "off")]).toEqual([0]);
    expect([...encodeWrite(props.switch, true)]).toEqual([1]);
    expect([...encodeWrite(props.switch, false)]).toEqual([0]);
    expect(() => encodeWrite(props.switch, "DIM")).toThrow(/no dataWrite entry for "DIM" \(has ON, OFF, BLINK\)/);
    expect([...encodeWrite(props.label, "hi")]).toEqual([0x68, 0x69]);
    expect([...encodeWrite(props.label, Uint8Array.from([9, 8]))]).toEqual([9, 8]);
  });
});

describe("BLE config errors name the field", () => {
  const path = (schema: v.GenericSchema, input: unknown) => {
    const r = v.safeParse(schema, input);
    expect(r.success).toBe(false);
    return { path: v.getDotPath(r.issues![0]!), message: r.issues![0]!.message };
  };
  test("protocol", () => {
    expect(path(ble.protocolSchema, {})).toEqual({ path: "macAddress", message: "macAddress or name is required to find the device" });
    expect(path(ble.protocolSchema, { macAddress: "c0:ff:ee" }).path).toBe("macAddress");
    expect(path(ble.protocolSchema, { name: "x", scanTimeout: -1 }).path).toBe("scanTimeout");
    expect(v.parse(ble.protocolSchema, { macAddress: "C0-FF-EE-00-00-01" }).macAddress).toBe("c0:ff:ee:00:00:01");
    expect(v.parse(ble.protocolSchema, { name: "x", scanTimeout: "2500" })).toMatchObject({ name: "x", scanTimeout: 2500, connectTimeout: 10_000 });
  });
  test("visitor", () => {
    expect(path(ble.visitorSchema, {}).path).toBe("characteristicUUID");
    expect(path(ble.visitorSchema, { characteristicUUID: "not-a-uuid" })).toEqual({ path: "characteristicUUID", message: "must be a 16-bit, 32-bit or 128-bit UUID" });
    expect(path(ble.visitorSchema, { characteristicUUID: "2a19", dataWrite: { ON: [1, 256] } }).path).toBe("dataWrite.ON.1");
    expect(path(ble.visitorSchema, { characteristicUUID: "2a19", dataConverter: { startIndex: 0 } }).path).toBe("dataConverter.endIndex");
    expect(path(ble.visitorSchema, { characteristicUUID: "2a19", dataConverter: { startIndex: 0, endIndex: 0, orderOfOperations: [{ operationType: "Add", operationValue: 1 }, { operationType: "Power", operationValue: 2 }] } })).toEqual({
      path: "dataConverter.orderOfOperations.1.operationType",
      message: "must be Add, Subtract, Multiply or Divide",
    });
  });
});

describe("BLE driver through noble and a scripted peripheral", () => {
  test("scan by MAC (any spelling), discover, read through the converter", async () => {
    const { open, bindings } = rig([thermometer("c0:ff:ee:00:00:09", "other"), thermometer()]);
    const drv = await open({ macAddress: "C0FFEE000001" });
    expect(await drv.health!()).toBe("ok");
    expect(await drv.read(props.temperature)).toBe(21.5);
    expect(await drv.read(props.objectRaw)).toBe(0x1234);
    expect(await drv.read(props.fahrenheit)).toBeCloseTo(70.7);
    expect(await drv.read(props.switch)).toBe(0);
    expect(await drv.read(props.battery)).toEqual(Uint8Array.from([87]));
    await expect(drv.read(props.missing)).rejects.toThrow(/characteristic ffe1 not found on default\/thermo/);
    expect(bindings.calls).toContain("connect c0ffee000001");
    expect(bindings.calls).not.toContain("connect c0ffee000009");
    expect(bindings.scanning).toBe(false); // scan stopped once found
  });

  test("scan by advertised name; MAC and name together must both match", async () => {
    const { open, bindings } = rig([thermometer("c0:ff:ee:00:00:09", "decoy"), thermometer("c0:ff:ee:00:00:02", "kitchen")]);
    const d1 = await open({ name: "kitchen" });
    expect(await d1.read(props.temperature)).toBe(21.5);
    expect(bindings.calls).toContain("connect c0ffee000002");
    await expect(open({ name: "kitchen", macAddress: "c0:ff:ee:00:00:09", scanTimeout: 300 })).rejects.toThrow(/not found/);
  });

  test("writes via dataWrite reach the peripheral; read-back sees them", async () => {
    const { open, peripheral } = rig();
    const drv = await open({ macAddress: THERMO.address });
    await drv.write!(props.switch, "ON");
    await drv.write!(props.switch, "BLINK");
    await drv.write!(props.switch, false);
    expect(peripheral.writes.map((w) => [w.characteristic, [...w.data], w.withoutResponse])).toEqual([
      [THERMO.switch, [1], false],
      [THERMO.switch, [2, 250], false],
      [THERMO.switch, [0], false],
    ]);
    await drv.write!(props.switch, "on");
    expect(await drv.read(props.switch)).toBe(1);
    await expect(drv.write!(props.switch, "DIM")).rejects.toThrow(/no dataWrite entry/);
    await drv.write!(props.label, "hello");
    expect(Buffer.from(peripheral.value(THERMO.switch)).toString()).toBe("hello");
    await expect(drv.write!(props.battery, Uint8Array.from([1]))).rejects.toThrow(/not writable \(read\)/);
  });

  test("notifications are delivered through subscribe; unsubscribe turns them off", async () => {
    const { open, peripheral } = rig();
    const drv = await open({ macAddress: THERMO.address });
    const got: unknown[] = [];
    const unsub = await drv.subscribe!(props.heartRate, (x) => got.push(x));
    expect(peripheral.subscribed.has(THERMO.heartRate)).toBe(true);
    for (const bpm of [61, 62, 75]) expect(peripheral.notify(THERMO.heartRate, [0, bpm])).toBe(true);
    await eventually(() => got.length === 3, 2000, "three notifications");
    expect(got).toEqual([61, 62, 75]);
    // an explicit read of a notifying characteristic is not a notification, and vice versa
    const temps: unknown[] = [];
    const unsubTemp = await drv.subscribe!({ ...props.temperature, visitor: { ...props.temperature.visitor, notify: true } }, (x) => temps.push(x));
    expect(await drv.read(props.temperature)).toBe(21.5);
    peripheral.notify(THERMO.temperature, [0, 0, 0x00, 0x0c]); // 24 °C
    await eventually(() => temps.length === 1, 2000, "temperature notification");
    expect(temps).toEqual([24]);
    await unsub!();
    await unsubTemp!();
    expect(peripheral.subscribed.size).toBe(0);
    expect(peripheral.notify(THERMO.heartRate, [0, 99])).toBe(false);
    expect(got).toHaveLength(3);
    // a property that does not ask for notifications is polled: no subscription
    expect(await drv.subscribe!(props.temperature, () => {})).toBeNull();
    await expect(drv.subscribe!({ ...props.battery, visitor: { ...props.battery.visitor, notify: true } }, () => {})).rejects.toThrow(/does not notify/);
  });

  test("peripheral drops the link: pending and later reads fail at once, health says disconnected", async () => {
    const { open, peripheral } = rig();
    const drv = await open({ macAddress: THERMO.address, timeout: 10_000 });
    expect(await drv.read(props.temperature)).toBe(21.5);
    peripheral.answering = false; // the next read hangs at the radio…
    const pending = drv.read(props.temperature);
    const t0 = Date.now();
    peripheral.powerOff(); // …until the link supervision timeout ends the link
    await expect(pending).rejects.toThrow(/default\/thermo disconnected/);
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(drv.read(props.temperature)).rejects.toThrow(/is disconnected/);
    await expect(drv.write!(props.switch, "ON")).rejects.toThrow(/is disconnected/);
    expect(await drv.health!()).toBe("disconnected");
    // the host's reconnect: close, then open a new driver, which scans again
    await drv.close();
    peripheral.answering = true;
    await expect(open({ macAddress: THERMO.address, scanTimeout: 300 })).rejects.toThrow(/not found/);
    peripheral.powerOn();
    const again = await open({ macAddress: THERMO.address });
    expect(await again.read(props.temperature)).toBe(21.5);
    expect(peripheral.connects).toBe(2);
  });

  test("a GATT request the device never answers times out", async () => {
    const { open, peripheral } = rig();
    const drv = await open({ macAddress: THERMO.address, timeout: 300 });
    peripheral.answering = false;
    await expect(drv.read(props.temperature)).rejects.toThrow(/read f000aa01.* timed out after 300 ms/);
    expect(await drv.health!()).toBe("ok"); // the link is up; the host decides after repeated failures
  });

  test("absent device: the scan gives up with a clear error", async () => {
    const { open, bindings } = rig();
    const t0 = Date.now();
    await expect(open({ macAddress: "de:ad:be:ef:00:00", scanTimeout: 400 })).rejects.toThrow(
      "BLE device default/thermo (address de:ad:be:ef:00:00) not found: no advertisement within 400 ms of scanning",
    );
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(bindings.scanning).toBe(false);
  });

  test("adapter not powered on: a clear error", async () => {
    const { open } = rig([thermometer()], { state: "poweredOff" });
    await expect(open({ name: THERMO.name, scanTimeout: 300 })).rejects.toThrow(/Bluetooth adapter is poweredOff, not poweredOn/);
  });

  test("close is clean and bounded; opening can be aborted", async () => {
    const { open, peripheral, bindings } = rig();
    const drv = await open({ macAddress: THERMO.address });
    await drv.subscribe!(props.heartRate, () => {});
    await drv.close();
    expect(peripheral.connected).toBe(false);
    expect(bindings.calls.filter((c) => c.startsWith("disconnect"))).toHaveLength(1);
    await drv.close(); // twice is fine
    // a controller that never confirms the disconnect does not hang close()
    const d2 = await open({ macAddress: THERMO.address });
    peripheral.confirmsDisconnect = false;
    const t0 = Date.now();
    await d2.close();
    expect(Date.now() - t0).toBeLessThan(3000);
    peripheral.confirmsDisconnect = true;
    peripheral.dropLink();
    // the host closing while a device is still being looked for
    const ac = new AbortController();
    const opening = open({ macAddress: "de:ad:be:ef:00:00" }, Object.values(props), ac.signal);
    setTimeout(() => ac.abort(), 100);
    await expect(opening).rejects.toThrow(/closed while scanning/);
    expect(bindings.scanning).toBe(false);
  });

  test("two devices share one adapter and one scan", async () => {
    const a = thermometer("c0:ff:ee:00:00:0a", "a");
    const b = thermometer("c0:ff:ee:00:00:0b", "b");
    b.powered = false;
    const { open, bindings } = rig([a, b]);
    const openB = open({ name: "b" });
    const da = await open({ name: "a" });
    expect(bindings.scanning).toBe(true); // still looking for b
    b.powerOn();
    const db = await openB;
    expect(bindings.scanning).toBe(false);
    b.setValue(THERMO.battery, [12]);
    expect(await da.read(props.battery)).toEqual(Uint8Array.from([87]));
    expect(await db.read(props.battery)).toEqual(Uint8Array.from([12]));
    expect(bindings.calls.filter((c) => c.startsWith("init"))).toHaveLength(1);
  });

  test("the default plugin (noble's HCI binding) fails with an explanation when it cannot run", async () => {
    const p = v.parse(ble.protocolSchema, { macAddress: THERMO.address, scanTimeout: 500 });
    await expect(ble.open({ id: "default/hci", protocol: p, properties: [] }, { log: quietLog, signal: new AbortController().signal })).rejects.toThrow(/noble|Bluetooth/);
  });
});
