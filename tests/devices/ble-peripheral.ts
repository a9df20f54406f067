/**
 * Scripted BLE peripherals behind a noble *bindings* object: what noble's `with-bindings` entry point
 * takes in place of its HCI-socket binding. Method names, event names and argument shapes follow
 * noble's lib/hci-socket/bindings.js (peripheral uuid = address without colons, 16-bit UUIDs short,
 * 128-bit ones as 32 hex digits, notifications as `read` events with isNotification = true).
 *
 * It also mirrors the HCI binding's silences, which a driver must survive: requests for a peripheral
 * that is not connected, a write to a characteristic that does not take writes, and a connection
 * attempt to a device that does not advertise get no answer at all.
 */
import { EventEmitter } from "node:events";

export type CharProperty = "broadcast" | "read" | "writeWithoutResponse" | "write" | "notify" | "indicate";

export interface ScriptedCharacteristic {
  uuid: string;
  properties: CharProperty[];
  value?: Uint8Array;
}

export interface ScriptedService {
  uuid: string;
  characteristics: ScriptedCharacteristic[];
}

export interface PeripheralScript {
  address: string;
  addressType?: "public" | "random";
  localName?: string;
  rssi?: number;
  services: ScriptedService[];
}

export interface RecordedWrite {
  service: string;
  characteristic: string;
  data: Buffer;
  withoutResponse: boolean;
}

const bare = (u: string) => u.replace(/-/g, "").toLowerCase();

export class ScriptedPeripheral {
  readonly address: string;
  readonly id: string;
  readonly addressType: "public" | "random";
  localName?: string;
  rssi: number;
  readonly services: ScriptedService[];
  /** Advertising and reachable. */
  powered = true;
  connected = false;
  /** false: GATT requests are swallowed (a hung device); the link itself stays up. */
  answering = true;
  /** false: a disconnect request is never confirmed (a wedged controller). */
  confirmsDisconnect = true;
  readonly subscribed = new Set<string>();
  readonly writes: RecordedWrite[] = [];
  readonly notifyRequests: { characteristic: string; enable: boolean }[] = [];
  reads = 0;
  connects = 0;
  bindings?: ScriptedBindings;

  constructor(script: PeripheralScript) {
    this.address = script.address.toLowerCase();
    this.id = this.address.split(":").join("");
    this.addressType = script.addressType ?? "public";
    this.localName = script.localName;
    this.rssi = script.rssi ?? -60;
    this.services = script.services.map((s) => ({ uuid: bare(s.uuid), characteristics: s.characteristics.map((c) => ({ ...c, uuid: bare(c.uuid), value: c.value ?? new Uint8Array() })) }));
  }

  find(serviceUuid: string, charUuid: string): ScriptedCharacteristic | undefined {
    return this.services.find((s) => s.uuid === serviceUuid)?.characteristics.find((c) => c.uuid === charUuid);
  }

  private locate(charUuid: string): { service: ScriptedService; char: ScriptedCharacteristic } {
    for (const service of this.services) {
      const char = service.characteristics.find((c) => c.uuid === bare(charUuid));
      if (char) return { service, char };
    }
    throw new Error(`scripted peripheral ${this.address} has no characteristic ${charUuid}`);
  }

  setValue(charUuid: string, value: ArrayLike<number>): void {
    this.locate(charUuid).char.value = Uint8Array.from(value);
  }

  value(charUuid: string): Uint8Array {
    return this.locate(charUuid).char.value!;
  }

  /** Sends a notification if the central subscribed; returns whether it was sent. */
  notify(charUuid: string, value: ArrayLike<number>): boolean {
    const { service, char } = this.locate(charUuid);
    char.value = Uint8Array.from(value);
    if (!this.connected || !this.subscribed.has(char.uuid) || !this.bindings) return false;
    this.bindings.emit("read", this.id, service.uuid, char.uuid, Buffer.from(char.value), true);
    return true;
  }

  /** The device ends the link (reason 0x13: remote user terminated connection). */
  dropLink(reason = 0x13): void {
    if (!this.connected) return;
    this.connected = false;
    this.subscribed.clear();
    this.bindings?.emit("disconnect", this.id, reason);
  }

  /** Out of range / battery out: stops advertising; a live link ends by supervision timeout (0x08). */
  powerOff(): void {
    this.powered = false;
    this.dropLink(0x08);
  }

  powerOn(): void {
    this.powered = true;
  }
}

export interface BindingsOptions {
  /** The adapter state reported by init(). */
  state?: "poweredOn" | "poweredOff" | "unauthorized" | "unsupported";
  /** How often each powered, unconnected peripheral advertises while scanning. */
  advertiseEveryMs?: number;
  /** Radio round trip for every answered request. */
  latencyMs?: number;
}

/** The noble bindings object (an EventEmitter with noble's binding methods). */
export class ScriptedBindings extends EventEmitter {
  readonly peripherals: ScriptedPeripheral[];
  readonly calls: string[] = [];
  scanning = false;
  private scanFilter: string[] = [];
  private advertiser?: ReturnType<typeof setInterval>;
  private readonly state: NonNullable<BindingsOptions["state"]>;
  private readonly advertiseEveryMs: number;
  private readonly latencyMs: number;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private pendingConnect = new Set<string>();

  constructor(peripherals: ScriptedPeripheral[], opts: BindingsOptions = {}) {
    super();
    this.peripherals = peripherals;
    for (const p of peripherals) p.bindings = this;
    this.state = opts.state ?? "poweredOn";
    this.advertiseEveryMs = opts.advertiseEveryMs ?? 20;
    this.latencyMs = opts.latencyMs ?? 2;
  }

  private later(fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, this.latencyMs);
    this.timers.add(t);
  }

  private byId(id: string): ScriptedPeripheral | undefined {
    return this.peripherals.find((p) => p.id === id.toLowerCase());
  }

  /** A connected, answering peripheral, or undefined (the HCI binding then stays silent). */
  private live(id: string): ScriptedPeripheral | undefined {
    const p = this.byId(id);
    return p && p.connected && p.answering ? p : undefined;
  }

  // --- noble's bindings interface ---------------------------------------------------------

  init(): void {
    this.calls.push("init");
    process.nextTick(() => {
      this.emit("addressChange", "00:1a:7d:da:71:13");
      this.emit("stateChange", this.state);
    });
  }

  setScanParameters(_interval: number, _window: number): void {
    this.later(() => this.emit("scanParametersSet"));
  }

  startScanning(serviceUuids?: string[], allowDuplicates?: boolean): void {
    this.calls.push(`startScanning ${allowDuplicates ? "dups" : "nodups"}`);
    this.scanFilter = (serviceUuids ?? []).map(bare);
    this.scanning = true;
    this.later(() => this.emit("scanStart", !allowDuplicates));
    clearInterval(this.advertiser);
    this.advertiser = setInterval(() => this.advertise(), this.advertiseEveryMs);
  }

  stopScanning(): void {
    this.calls.push("stopScanning");
    this.scanning = false;
    clearInterval(this.advertiser);
    this.advertiser = undefined;
    this.later(() => this.emit("scanStop"));
  }

  private advertise(): void {
    for (const p of this.peripherals) {
      if (!p.powered || p.connected) continue;
      const serviceUuids = p.services.map((s) => s.uuid);
      if (this.scanFilter.length > 0 && !serviceUuids.some((u) => this.scanFilter.includes(u))) continue;
      const advertisement = { localName: p.localName, txPowerLevel: 0, manufacturerData: undefined, serviceData: [], serviceUuids, solicitationServiceUuids: [] };
      this.emit("discover", p.id, p.address, p.addressType, true, advertisement, p.rssi, true);
    }
  }

  connect(peripheralUuid: string, _parameters?: unknown): void {
    this.calls.push(`connect ${peripheralUuid}`);
    const p = this.byId(peripheralUuid);
    if (!p || !p.powered) {
      this.pendingConnect.add(peripheralUuid); // the controller keeps trying until cancelled
      return;
    }
    this.later(() => {
      p.connected = true;
      p.connects++;
      this.emit("connect", p.id, null);
      this.emit("onMtu", p.id, 23);
    });
  }

  cancelConnect(peripheralUuid: string): void {
    this.calls.push(`cancelConnect ${peripheralUuid}`);
    this.pendingConnect.delete(peripheralUuid);
  }

  disconnect(peripheralUuid: string): void {
    this.calls.push(`disconnect ${peripheralUuid}`);
    const p = this.byId(peripheralUuid);
    if (!p || !p.connected || !p.confirmsDisconnect) return;
    this.later(() => {
      if (!p.connected) return;
      p.connected = false;
      p.subscribed.clear();
      this.emit("disconnect", p.id, 0x16); // connection terminated by local host
    });
  }

  reset(): void {
    this.calls.push("reset");
  }

  updateRssi(peripheralUuid: string): void {
    const p = this.live(peripheralUuid);
    if (p) this.later(() => this.emit("rssiUpdate", p.id, p.rssi));
  }

  discoverServices(peripheralUuid: string, uuids?: string[]): void {
    this.calls.push(`discoverServices ${peripheralUuid}`);
    const p = this.live(peripheralUuid);
    if (!p) return;
    const want = (uuids ?? []).map(bare);
    this.later(() => {
      let handle = 1;
      const all = p.services.map((s) => {
        const startHandle = handle;
        handle += 1 + s.characteristics.length * 3;
        return { startHandle, endHandle: handle - 1, uuid: s.uuid };
      });
      this.emit("servicesDiscovered", p.id, all);
      this.emit("servicesDiscover", p.id, all.map((s) => s.uuid).filter((u) => want.length === 0 || want.includes(u)));
    });
  }

  discoverIncludedServices(peripheralUuid: string, serviceUuid: string, _uuids?: string[]): void {
    const p = this.live(peripheralUuid);
    if (p) this.later(() => this.emit("includedServicesDiscover", p.id, serviceUuid, []));
  }

  discoverCharacteristics(peripheralUuid: string, serviceUuid: string, characteristicUuids?: string[]): void {
    this.calls.push(`discoverCharacteristics ${serviceUuid}`);
    const p = this.live(peripheralUuid);
    const service = p?.services.find((s) => s.uuid === serviceUuid);
    if (!p || !service) return;
    const want = (characteristicUuids ?? []).map(bare);
    this.later(() => {
      const chars = service.characteristics.filter((c) => want.length === 0 || want.includes(c.uuid)).map((c) => ({ uuid: c.uuid, properties: [...c.properties] }));
      this.emit("characteristicsDiscover", p.id, serviceUuid, chars);
    });
  }

  read(peripheralUuid: string, serviceUuid: string, characteristicUuid: string): void {
    this.calls.push(`read ${characteristicUuid}`);
    const p = this.live(peripheralUuid);
    const c = p?.find(serviceUuid, characteristicUuid);
    if (!p || !c) return;
    p.reads++;
    // an ATT error (not readable) reaches noble as an empty value, as in the HCI binding
    const data = c.properties.includes("read") ? Buffer.from(c.value!) : Buffer.alloc(0);
    this.later(() => this.emit("read", p.id, serviceUuid, characteristicUuid, data, false));
  }

  write(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, data: Buffer, withoutResponse: boolean): void {
    this.calls.push(`write ${characteristicUuid}`);
    const p = this.live(peripheralUuid);
    const c = p?.find(serviceUuid, characteristicUuid);
    if (!p || !c) return;
    const allowed = withoutResponse ? c.properties.includes("writeWithoutResponse") : c.properties.includes("write");
    if (!allowed) return; // ATT error: the HCI binding never answers
    p.writes.push({ service: serviceUuid, characteristic: characteristicUuid, data: Buffer.from(data), withoutResponse });
    c.value = Uint8Array.from(data);
    this.later(() => this.emit("write", p.id, serviceUuid, characteristicUuid));
  }

  broadcast(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, broadcast: boolean): void {
    const p = this.live(peripheralUuid);
    if (p) this.later(() => this.emit("broadcast", p.id, serviceUuid, characteristicUuid, broadcast));
  }

  notify(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, notify: boolean): void {
    this.calls.push(`notify ${characteristicUuid} ${notify}`);
    const p = this.live(peripheralUuid);
    const c = p?.find(serviceUuid, characteristicUuid);
    if (!p || !c || !(c.properties.includes("notify") || c.properties.includes("indicate"))) return;
    p.notifyRequests.push({ characteristic: characteristicUuid, enable: notify });
    if (notify) p.subscribed.add(characteristicUuid);
    else p.subscribed.delete(characteristicUuid);
    this.later(() => this.emit("notify", p.id, serviceUuid, characteristicUuid, notify));
  }

  discoverDescriptors(peripheralUuid: string, serviceUuid: string, characteristicUuid: string): void {
    const p = this.live(peripheralUuid);
    const c = p?.find(serviceUuid, characteristicUuid);
    if (!p || !c) return;
    const descriptors = c.properties.includes("notify") || c.properties.includes("indicate") ? ["2902"] : [];
    this.later(() => this.emit("descriptorsDiscover", p.id, serviceUuid, characteristicUuid, descriptors));
  }

  readValue(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, descriptorUuid: string): void {
    const p = this.live(peripheralUuid);
    if (!p) return;
    const on = p.subscribed.has(characteristicUuid) ? 1 : 0;
    this.later(() => this.emit("valueRead", p.id, serviceUuid, characteristicUuid, descriptorUuid, Buffer.from([on, 0])));
  }

  writeValue(peripheralUuid: string, serviceUuid: string, characteristicUuid: string, descriptorUuid: string, _data: Buffer): void {
    const p = this.live(peripheralUuid);
    if (p) this.later(() => this.emit("valueWrite", p.id, serviceUuid, characteristicUuid, descriptorUuid));
  }

  readHandle(peripheralUuid: string, handle: number): void {
    const p = this.live(peripheralUuid);
    if (p) this.later(() => this.emit("handleRead", p.id, handle, Buffer.alloc(0)));
  }

  writeHandle(peripheralUuid: string, handle: number, _data: Buffer, _withoutResponse: boolean): void {
    const p = this.live(peripheralUuid);
    if (p) this.later(() => this.emit("handleWrite", p.id, handle));
  }

  /** Test cleanup: stops advertising and pending answers. */
  dispose(): void {
    clearInterval(this.advertiser);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

// --- the test fixture: a thermometer with a switch and a notifying counter ---------------------

/** TI SensorTag-style 128-bit UUIDs, as noble spells them (32 hex digits, no dashes). */
export const THERMO = {
  address: "c0:ff:ee:00:00:01",
  name: "outpost-thermo",
  service: "f000aa0004514000b000000000000000",
  temperature: "f000aa0104514000b000000000000000",
  switch: "f000aa0204514000b000000000000000",
  /** Heart Rate service / measurement: 16-bit UUIDs. */
  hrService: "180d",
  heartRate: "2a37",
  batteryService: "180f",
  battery: "2a19",
};

/**
 * Temperature value layout (SensorTag IR temperature): bytes 0–1 object, 2–3 ambient, both
 * little-endian, °C = (raw >> 2) × 0.03125. Ambient 21.5 °C → raw 0x0AC0.
 */
export const TEMPERATURE_BYTES = [0x34, 0x12, 0xc0, 0x0a];

export function thermometer(address = THERMO.address, localName = THERMO.name): ScriptedPeripheral {
  return new ScriptedPeripheral({
    address,
    localName,
    services: [
      {
        uuid: THERMO.service,
        characteristics: [
          { uuid: THERMO.temperature, properties: ["read", "notify"], value: Uint8Array.from(TEMPERATURE_BYTES) },
          { uuid: THERMO.switch, properties: ["read", "write"], value: Uint8Array.from([0]) },
        ],
      },
      { uuid: THERMO.hrService, characteristics: [{ uuid: THERMO.heartRate, properties: ["notify"], value: Uint8Array.from([0, 60]) }] },
      { uuid: THERMO.batteryService, characteristics: [{ uuid: THERMO.battery, properties: ["read"], value: Uint8Array.from([87]) }] },
    ],
  });
}
