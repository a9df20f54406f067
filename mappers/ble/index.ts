/**
 * BLE mapper over @abandonware/noble: scan by MAC address and/or advertised local name, connect,
 * discover the GATT services and characteristics, read/write by characteristic UUID, and subscribe
 * to notifications. Visitor fields are KubeEdge's (`characteristicUUID`, `dataWrite`,
 * `dataConverter{startIndex, endIndex, shiftLeft, shiftRight, orderOfOperations}`) plus `serviceUUID`
 * and `notify`; the converter rule is documented in ./converter.ts.
 *
 * ## Bindings
 * noble talks to the radio through a "bindings" object (an EventEmitter: `init`, `startScanning`,
 * `connect`, `discoverServices`, `read`, … answered by `stateChange`, `discover`, `connect`,
 * `servicesDiscover`, `read`, … events). The default export uses noble's own choice, which on Linux
 * is its HCI-socket binding. `withBindings(bindings)` gives the same plugin over any other bindings
 * object (tests use a scripted peripheral, tests/devices/ble-peripheral.ts; noble's websocket or
 * distributed bindings also fit).
 *
 * ## Running on real hardware
 * The HCI binding needs @abandonware/bluetooth-hci-socket's native addon, a raw HCI socket
 * (root or CAP_NET_RAW + CAP_NET_ADMIN), and the adapter not claimed by bluetoothd (`hciconfig hci0
 * down` / `systemctl stop bluetooth`). Under **Bun** the addon does not work: it drives the socket
 * with libuv's `uv_poll`, which Bun does not provide (and the addon is built for Node's ABI).
 * Options: run edgecore's BLE devices from a Node.js process, or use noble's websocket/distributed
 * bindings (a small Node-run noble server next to the radio) through `withBindings`, or load an
 * external plugin (`--mapper`) that does so. Opening a device with the default bindings when the
 * addon cannot load fails with a message saying this; other protocols are unaffected because noble
 * is imported only when a BLE device is opened.
 *
 * ## Behaviour
 * - Every GATT request has a timeout (`timeout`, default 5 s) and fails at once when the link
 *   drops; noble itself never answers a request on a dead link.
 * - health(): "ok" while connected, "disconnected" once the peripheral or the adapter dropped the
 *   link. Reconnecting is the host's job: it closes this driver and opens a new one, which scans again.
 * - close() disconnects and waits at most 2 s for the adapter to confirm.
 * - One noble instance (and one scan) per bindings object is shared by all BLE devices of the process.
 */
import * as v from "valibot";
import type { EventEmitter } from "node:events";
import { defineMapper, type DeviceDriver, type DriverContext, type MapperPlugin, type PropertySpec, type RawValue } from "../plugin.ts";
import type { Logger } from "../../lib/log.ts";
import { convertReadData, type OperationType } from "./converter.ts";

// ---------------------------------------------------------------------------------------------
// Schemas

const num = v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+(\.\d+)?$/), v.transform(Number))]), v.number());
const int = v.pipe(num, v.integer());
const ms = v.pipe(int, v.minValue(1));

/** Lowercase, colon-separated, as noble's HCI binding reports `peripheral.address`. */
export function normalizeMac(mac: string): string {
  const hex = mac.replace(/[:-]/g, "").toLowerCase();
  return hex.match(/../g)!.join(":");
}

const BASE_UUID_TAIL = "00001000800000805f9b34fb";

/**
 * One spelling per UUID: lowercase hex without dashes; 16/32-bit UUIDs (short, or spelled out on
 * the Bluetooth base UUID) without leading zeros, as noble reports them (`2a19`, not `00002a19`).
 */
export function normalizeUuid(uuid: string): string {
  const hex = uuid.replace(/-/g, "").toLowerCase();
  if (hex.length === 32 && hex.endsWith(BASE_UUID_TAIL)) return parseInt(hex.slice(0, 8), 16).toString(16);
  if (hex.length <= 8) return parseInt(hex, 16).toString(16);
  return hex;
}

const mac = v.pipe(
  v.string(),
  v.trim(),
  v.regex(/^[0-9a-fA-F]{2}([:-]?[0-9a-fA-F]{2}){5}$/, "must be a MAC address such as AA:BB:CC:DD:EE:FF"),
  v.transform(normalizeMac),
);

const uuid = v.pipe(
  v.string(),
  v.trim(),
  v.regex(/^([0-9a-fA-F]{4}|[0-9a-fA-F]{8}|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$/, "must be a 16-bit, 32-bit or 128-bit UUID"),
  v.transform(normalizeUuid),
);

const byte = v.pipe(int, v.minValue(0, "must be a byte (0–255)"), v.maxValue(255, "must be a byte (0–255)"));

const OPERATIONS: Record<string, OperationType> = { add: "Add", subtract: "Subtract", multiply: "Multiply", divide: "Divide" };
const operationType = v.pipe(
  v.string(),
  v.transform((s) => OPERATIONS[s.toLowerCase()] ?? s),
  v.picklist(["Add", "Subtract", "Multiply", "Divide"], "must be Add, Subtract, Multiply or Divide"),
);

export const BleProtocolSchema = v.pipe(
  v.object({
    /** Scan for this address (any spelling: AA:BB:…, aa-bb-…, aabb…). */
    macAddress: v.optional(mac),
    /** …and/or this advertised local name. */
    name: v.optional(v.pipe(v.string(), v.minLength(1, "must not be empty"))),
    /** How long to scan before giving up, milliseconds. */
    scanTimeout: v.optional(ms, 10_000),
    /** How long a connection attempt may take, milliseconds. */
    connectTimeout: v.optional(ms, 10_000),
    /** Per GATT request (discovery, read, write, notify on/off), milliseconds. */
    timeout: v.optional(ms, 5_000),
  }),
  v.forward(
    v.partialCheck([["macAddress"], ["name"]], (p) => p.macAddress !== undefined || p.name !== undefined, "macAddress or name is required to find the device"),
    ["macAddress"],
  ),
);

export const BleDataConverterSchema = v.object({
  startIndex: v.pipe(int, v.minValue(0)),
  endIndex: v.pipe(int, v.minValue(0)),
  shiftLeft: v.optional(v.pipe(int, v.minValue(0), v.maxValue(63)), 0),
  shiftRight: v.optional(v.pipe(int, v.minValue(0), v.maxValue(63)), 0),
  orderOfOperations: v.optional(v.array(v.object({ operationType, operationValue: num })), []),
  /** KubeEdge-exact integer building (see converter.ts). */
  decimalConcat: v.optional(v.boolean(), false),
});

export const BleVisitorSchema = v.object({
  characteristicUUID: uuid,
  /** Only needed when the same characteristic UUID exists in several services. */
  serviceUUID: v.optional(uuid),
  /** Desired value → bytes to write, e.g. `{ON: [1], OFF: [0]}`. */
  dataWrite: v.optional(v.record(v.string(), v.union([v.array(byte), v.pipe(byte, v.transform((b) => [b]))]))),
  dataConverter: v.optional(BleDataConverterSchema),
  /** Subscribe to notifications/indications instead of polling. */
  notify: v.optional(v.boolean(), false),
});

export type BleProtocol = v.InferOutput<typeof BleProtocolSchema>;
export type BleVisitor = v.InferOutput<typeof BleVisitorSchema>;
type Prop = PropertySpec<BleVisitor>;

// ---------------------------------------------------------------------------------------------
// The part of noble we use (typed here so noble itself is only imported when a device opens)

/** noble's bindings interface (what `with-bindings` / `with-custom-binding` accept). */
export interface NobleBindings extends EventEmitter {
  init(): void;
  startScanning(serviceUuids?: string[], allowDuplicates?: boolean): void;
  stopScanning(): void;
  connect(peripheralUuid: string, parameters?: unknown): void;
  disconnect(peripheralUuid: string): void;
  discoverServices(peripheralUuid: string, uuids?: string[]): void;
  discoverCharacteristics(peripheralUuid: string, serviceUuid: string, characteristicUuids?: string[]): void;
  read(peripheralUuid: string, serviceUuid: string, characteristicUuid: string): void;
  write(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, data: Buffer, withoutResponse: boolean): void;
  notify(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, notify: boolean): void;
}

interface Noble extends EventEmitter {
  readonly state: string;
  startScanning(serviceUuids: string[], allowDuplicates: boolean, cb: (err: Error | null) => void): void;
  stopScanning(): void;
}

interface Peripheral extends EventEmitter {
  id: string;
  address: string;
  advertisement?: { localName?: string };
  state: "disconnected" | "connecting" | "connected" | "disconnecting" | "error";
  connect(): void;
  cancelConnect(): void;
  disconnect(): void;
  discoverServices(uuids: string[]): void;
}

interface Service extends EventEmitter {
  uuid: string;
  discoverCharacteristics(uuids: string[]): void;
}

interface Characteristic extends EventEmitter {
  uuid: string;
  properties: string[];
  read(): void;
  write(data: Buffer, withoutResponse: boolean): void;
  notify(on: boolean): void;
}

// ---------------------------------------------------------------------------------------------
// Central: one noble per bindings object, with a shared, reference-counted scan

const BUN_NOTE =
  "Under Bun, noble's HCI addon cannot run (it needs libuv's uv_poll, which Bun lacks): run BLE devices from Node.js, or give the BLE plugin other noble bindings (withBindings), e.g. noble's websocket bindings.";

class Central {
  private scanners = 0;
  log: Logger;

  constructor(
    readonly noble: Noble,
    log: Logger,
  ) {
    this.log = log;
    noble.on("warning", (m: string) => this.log.debug("noble warning", { msg: m }));
  }

  /** Resolves once the adapter is poweredOn (noble initialises its bindings on the first listener). */
  poweredOn(timeoutMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.noble.removeListener("stateChange", onState);
        signal.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve();
      };
      const onState = (s: string) => {
        if (s === "poweredOn") done();
      };
      const onAbort = () => done(new Error("closed while waiting for the Bluetooth adapter"));
      const timer = setTimeout(() => done(new Error(`Bluetooth adapter is ${this.noble.state}, not poweredOn, after ${timeoutMs} ms`)), timeoutMs);
      this.noble.on("stateChange", onState);
      signal.addEventListener("abort", onAbort);
      if (this.noble.state === "poweredOn") done();
    });
  }

  /** Scans until `match` accepts a peripheral, for at most `timeoutMs`. */
  async scan(match: (p: Peripheral) => boolean, what: string, timeoutMs: number, signal: AbortSignal): Promise<Peripheral> {
    await this.poweredOn(timeoutMs, signal);
    return new Promise((resolve, reject) => {
      let finished = false;
      const finish = (err: Error | null, p?: Peripheral) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.noble.removeListener("discover", onDiscover);
        signal.removeEventListener("abort", onAbort);
        if (--this.scanners === 0) this.noble.stopScanning();
        if (err) reject(err);
        else resolve(p!);
      };
      const onDiscover = (p: Peripheral) => {
        if (match(p)) finish(null, p);
      };
      const onAbort = () => finish(new Error(`closed while scanning for ${what}`));
      const timer = setTimeout(() => finish(new Error(`BLE device ${what} not found: no advertisement within ${timeoutMs} ms of scanning`)), timeoutMs);
      this.noble.on("discover", onDiscover);
      signal.addEventListener("abort", onAbort);
      // duplicates on: a device found by an earlier scan of this session must be seen again
      if (++this.scanners === 1) this.noble.startScanning([], true, (err) => err && finish(err));
    });
  }
}

const centrals = new WeakMap<object, Promise<Central>>();
let defaultCentral: Promise<Central> | undefined;

function centralFor(bindings: NobleBindings | undefined, log: Logger): Promise<Central> {
  if (!bindings) {
    defaultCentral ??= (async () => {
      try {
        const mod = (await import("@abandonware/noble")) as unknown as { default: Noble };
        return new Central(mod.default, log);
      } catch (e) {
        defaultCentral = undefined;
        throw new Error(`cannot load noble's Bluetooth HCI binding: ${(e as Error).message}. ${BUN_NOTE}`);
      }
    })();
    return defaultCentral;
  }
  let c = centrals.get(bindings);
  if (!c) {
    c = (async () => {
      const mod = (await import("@abandonware/noble/with-bindings")) as unknown as { default: (b: NobleBindings) => Noble };
      return new Central(mod.default(bindings), log);
    })();
    centrals.set(bindings, c);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Link: a connected peripheral whose requests fail on timeout or when the link drops

class Link {
  connected = true;
  private readonly pending = new Set<(e: Error) => void>();
  private readonly onDisconnect = (reason?: unknown) => {
    if (!this.connected) return;
    this.connected = false;
    this.log.warn("BLE link lost", { device: this.deviceId, reason: typeof reason === "number" ? `0x${reason.toString(16)}` : reason });
    for (const fail of [...this.pending]) fail(new Error(`BLE device ${this.deviceId} disconnected`));
  };

  constructor(
    readonly peripheral: Peripheral,
    private readonly deviceId: string,
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {
    peripheral.on("disconnect", this.onDisconnect);
  }

  /**
   * Runs one GATT exchange: `start` sends it and calls `done` when the answer event arrives.
   * Fails after the timeout, or at once when the link is or goes down.
   */
  request<T>(what: string, start: (done: (value: T) => void) => () => void): Promise<T> {
    if (!this.connected) return Promise.reject(new Error(`BLE device ${this.deviceId} is disconnected (${what})`));
    return new Promise<T>((resolve, reject) => {
      let cleanup = () => {};
      const fail = (e: Error) => finish(e);
      const finish = (err: Error | null, value?: T) => {
        if (!this.pending.delete(fail)) return;
        clearTimeout(timer);
        cleanup();
        if (err) reject(err);
        else resolve(value as T);
      };
      const timer = setTimeout(() => finish(new Error(`BLE device ${this.deviceId}: ${what} timed out after ${this.timeoutMs} ms`)), this.timeoutMs);
      this.pending.add(fail);
      try {
        cleanup = start((value) => finish(null, value));
      } catch (e) {
        finish(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /** Disconnects (if still up) and waits at most `ms` for the confirmation. */
  async close(ms: number): Promise<void> {
    const p = this.peripheral;
    const wasUp = this.connected;
    this.connected = false;
    for (const fail of [...this.pending]) fail(new Error(`BLE device ${this.deviceId}: driver closed`));
    if (wasUp && p.state !== "disconnected") {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, ms);
        function done() {
          clearTimeout(t);
          p.removeListener("disconnect", done);
          resolve();
        }
        p.once("disconnect", done);
        try {
          p.disconnect();
        } catch {
          done();
        }
      });
    }
    p.removeListener("disconnect", this.onDisconnect);
  }
}

async function connect(p: Peripheral, what: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
  if (p.state === "connected") {
    // left over from a driver that was not closed: start from a clean link
    await new Promise<void>((r) => {
      const t = setTimeout(r, 2000);
      p.once("disconnect", () => (clearTimeout(t), r()));
      p.disconnect();
    });
  }
  await new Promise<void>((resolve, reject) => {
    const finish = (err?: Error | null) => {
      clearTimeout(timer);
      p.removeListener("connect", onConnect);
      signal.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onConnect = (err?: Error | null) => finish(err ? new Error(`connecting to ${what}: ${err.message}`) : null);
    const giveUp = (msg: string) => {
      p.removeListener("connect", onConnect);
      try {
        p.cancelConnect();
      } catch {
        // bindings without cancel: the attempt just lapses
      }
      finish(new Error(msg));
    };
    const onAbort = () => giveUp(`closed while connecting to ${what}`);
    const timer = setTimeout(() => giveUp(`connecting to ${what} timed out after ${timeoutMs} ms`), timeoutMs);
    p.on("connect", onConnect);
    signal.addEventListener("abort", onAbort);
    p.connect();
  });
}

// ---------------------------------------------------------------------------------------------
// Driver

const BOOL_KEYS = { true: ["true", "on", "1"], false: ["false", "off", "0"] };

/** The bytes a desired value is written as: its dataWrite entry, else raw bytes or its text (as KubeEdge). */
export function encodeWrite(p: Prop, value: RawValue): Uint8Array {
  const table = p.visitor.dataWrite;
  if (table) {
    const key = value instanceof Uint8Array ? Buffer.from(value).toString("utf8") : String(value);
    const candidates = typeof value === "boolean" ? BOOL_KEYS[String(value) as "true" | "false"] : [key];
    for (const c of candidates) {
      const hit = table[c] ?? Object.entries(table).find(([k]) => k.toLowerCase() === c.toLowerCase())?.[1];
      if (hit) return Uint8Array.from(hit);
    }
    throw new Error(`property ${p.name}: no dataWrite entry for "${key}" (has ${Object.keys(table).join(", ") || "none"})`);
  }
  if (value instanceof Uint8Array) return value;
  return new TextEncoder().encode(String(value));
}

class BleDriver implements DeviceDriver<BleVisitor> {
  private closed = false;
  private readonly unsubscribers = new Set<() => Promise<void>>();

  constructor(
    private readonly link: Link,
    private readonly chars: Characteristic[],
    private readonly byService: Map<Characteristic, string>,
    private readonly log: Logger,
    private readonly deviceId: string,
  ) {}

  /** The characteristic a property visits; throws when the device has none such. */
  characteristic(p: Prop): Characteristic {
    const c = this.chars.find((ch) => normalizeUuid(ch.uuid) === p.visitor.characteristicUUID && (!p.visitor.serviceUUID || normalizeUuid(this.byService.get(ch)!) === p.visitor.serviceUUID));
    if (!c) {
      const where = p.visitor.serviceUUID ? ` in service ${p.visitor.serviceUUID}` : "";
      throw new Error(`property ${p.name}: characteristic ${p.visitor.characteristicUUID}${where} not found on ${this.deviceId} (has ${this.chars.map((x) => x.uuid).join(", ")})`);
    }
    return c;
  }

  private decode(p: Prop, data: Buffer): RawValue {
    const dc = p.visitor.dataConverter;
    return dc ? convertReadData(data, dc) : new Uint8Array(data);
  }

  async read(p: Prop): Promise<RawValue> {
    const ch = this.characteristic(p);
    const data = await this.link.request<Buffer>(`read ${ch.uuid}`, (done) => {
      const listener = (d: Buffer, isNotification: boolean) => !isNotification && done(d);
      ch.on("data", listener);
      ch.read();
      return () => ch.removeListener("data", listener);
    });
    return this.decode(p, data);
  }

  async write(p: Prop, value: RawValue): Promise<void> {
    const ch = this.characteristic(p);
    const withResponse = ch.properties.includes("write");
    if (!withResponse && !ch.properties.includes("writeWithoutResponse")) throw new Error(`property ${p.name}: characteristic ${ch.uuid} is not writable (${ch.properties.join(", ")})`);
    const data = Buffer.from(encodeWrite(p, value));
    await this.link.request<void>(`write ${ch.uuid}`, (done) => {
      const listener = () => done();
      ch.once("write", listener);
      ch.write(data, !withResponse);
      return () => ch.removeListener("write", listener);
    });
  }

  async subscribe(p: Prop, onValue: (value: RawValue) => void): Promise<(() => Promise<void>) | null> {
    if (!p.visitor.notify) return null; // not asked for: the host polls this property
    const ch = this.characteristic(p);
    if (!ch.properties.includes("notify") && !ch.properties.includes("indicate")) throw new Error(`property ${p.name}: characteristic ${ch.uuid} does not notify (${ch.properties.join(", ")})`);
    const onData = (data: Buffer, isNotification: boolean) => {
      if (!isNotification) return;
      try {
        onValue(this.decode(p, data));
      } catch (e) {
        this.log.warn("BLE notification not converted", { device: this.deviceId, property: p.name, err: (e as Error).message });
      }
    };
    ch.on("data", onData);
    const setNotify = (enable: boolean) =>
      this.link.request<void>(`notify ${enable ? "on" : "off"} ${ch.uuid}`, (done) => {
        const listener = (state: boolean) => state === enable && done();
        ch.on("notify", listener);
        ch.notify(enable);
        return () => ch.removeListener("notify", listener);
      });
    try {
      await setNotify(true);
    } catch (e) {
      ch.removeListener("data", onData);
      throw e;
    }
    const unsubscribe = async () => {
      if (!this.unsubscribers.delete(unsubscribe)) return;
      ch.removeListener("data", onData);
      if (this.link.connected) await setNotify(false).catch(() => {});
    };
    this.unsubscribers.add(unsubscribe);
    return unsubscribe;
  }

  async health() {
    return this.link.connected && this.link.peripheral.state === "connected" ? ("ok" as const) : ("disconnected" as const);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const ch of this.chars) ch.removeAllListeners("data");
    this.unsubscribers.clear();
    await this.link.close(2000);
  }
}

// ---------------------------------------------------------------------------------------------
// Opening a device

async function openDevice(bindings: NobleBindings | undefined, device: { id: string; protocol: BleProtocol; properties: Prop[] }, ctx: DriverContext): Promise<BleDriver> {
  const p = device.protocol;
  const central = await centralFor(bindings, ctx.log);
  const want = [p.macAddress && `address ${p.macAddress}`, p.name && `name "${p.name}"`].filter(Boolean).join(" and ");
  const what = `${device.id} (${want})`;
  const peripheral = await central.scan(
    (x) => (!p.macAddress || (x.address ?? "").toLowerCase() === p.macAddress || x.id.toLowerCase() === p.macAddress.replace(/:/g, "")) && (!p.name || x.advertisement?.localName === p.name),
    what,
    p.scanTimeout,
    ctx.signal,
  );
  await connect(peripheral, what, p.connectTimeout, ctx.signal);
  const link = new Link(peripheral, device.id, p.timeout, ctx.log);
  try {
    const wantedServices = device.properties.every((x) => x.visitor.serviceUUID) ? [...new Set(device.properties.map((x) => x.visitor.serviceUUID!))] : [];
    const services = await link.request<Service[]>("service discovery", (done) => {
      const listener = (s: Service[]) => done(s);
      peripheral.once("servicesDiscover", listener);
      peripheral.discoverServices(wantedServices);
      return () => peripheral.removeListener("servicesDiscover", listener);
    });
    const chars: Characteristic[] = [];
    const byService = new Map<Characteristic, string>();
    for (const s of services) {
      const found = await link.request<Characteristic[]>(`characteristic discovery in ${s.uuid}`, (done) => {
        const listener = (c: Characteristic[]) => done(c);
        s.once("characteristicsDiscover", listener);
        s.discoverCharacteristics([]);
        return () => s.removeListener("characteristicsDiscover", listener);
      });
      for (const c of found) {
        chars.push(c);
        byService.set(c, s.uuid);
      }
    }
    if (ctx.signal.aborted) throw new Error("closed while discovering");
    const driver = new BleDriver(link, chars, byService, ctx.log, device.id);
    for (const prop of device.properties) {
      try {
        driver.characteristic(prop);
      } catch (e) {
        ctx.log.warn("BLE property has no characteristic", { device: device.id, property: prop.name, err: (e as Error).message });
      }
    }
    ctx.log.info("BLE device connected", { device: device.id, address: peripheral.address, services: services.length, characteristics: chars.length });
    return driver;
  } catch (e) {
    await link.close(2000);
    throw e;
  }
}

function blePlugin(bindings?: NobleBindings): MapperPlugin<BleProtocol, BleVisitor> {
  return defineMapper({
    protocol: "ble",
    protocolSchema: BleProtocolSchema,
    visitorSchema: BleVisitorSchema,
    open: (device, ctx) => openDevice(bindings, device, ctx),
  });
}

/** The BLE plugin over the given noble bindings instead of noble's default (HCI on Linux). */
export function withBindings(bindings: NobleBindings): MapperPlugin<BleProtocol, BleVisitor> {
  return blePlugin(bindings);
}

export default blePlugin();
