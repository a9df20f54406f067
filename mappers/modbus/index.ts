/**
 * Modbus mapper: TCP and RTU (serial) through modbus-serial, with KubeEdge's visitor fields
 * (register, offset, limit, scale, isSwap, isRegisterSwap). Adjacent registers of one device
 * are read in one request where possible. modbus-serial and serialport load only when a
 * Modbus device is opened.
 */
import * as v from "valibot";
import { defineMapper, type DeviceDriver, type PropertySpec, type RawValue } from "../plugin.ts";
import { decodeWords, encodeWords, type NumberKind } from "./codec.ts";
import { TtyRtuPort } from "./rtu.ts";

const num = v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+(\.\d+)?$/), v.transform(Number))]), v.number());
const int = v.pipe(num, v.integer());

export const ModbusProtocolSchema = v.object({
  communicateMode: v.optional(v.picklist(["TCP", "RTU", "tcp", "rtu"]), "TCP"),
  ip: v.optional(v.string()),
  port: v.optional(int),
  slaveID: v.optional(v.pipe(int, v.minValue(0), v.maxValue(255)), 1),
  serialPort: v.optional(v.string()),
  baudRate: v.optional(int, 9600),
  dataBits: v.optional(v.picklist([5, 6, 7, 8]), 8),
  parity: v.optional(v.picklist(["none", "even", "odd"]), "none"),
  stopBits: v.optional(v.picklist([1, 2]), 1),
  /** Request timeout, milliseconds. */
  timeout: v.optional(int, 1000),
});

export const ModbusVisitorSchema = v.object({
  register: v.picklist(["CoilRegister", "DiscreteInputRegister", "HoldingRegister", "InputRegister"]),
  offset: v.pipe(int, v.minValue(0), v.maxValue(65535)),
  limit: v.optional(v.pipe(int, v.minValue(1), v.maxValue(125)), 1),
  scale: v.optional(num),
  isSwap: v.optional(v.boolean(), false),
  isRegisterSwap: v.optional(v.boolean(), false),
  /** How the registers encode the number: int (signed), uint, float (IEEE, limit 2 or 4). */
  dataType: v.optional(v.string()),
});

export type ModbusProtocol = v.InferOutput<typeof ModbusProtocolSchema>;
export type ModbusVisitor = v.InferOutput<typeof ModbusVisitorSchema>;
type Prop = PropertySpec<ModbusVisitor>;

/** Registers: signed unless told otherwise; float when the visitor or the model says so and there are ≥ 2 words. */
function numberKind(p: Prop): NumberKind {
  const dt = (p.visitor.dataType ?? "").toLowerCase();
  if ((dt === "float" || dt === "double") && p.visitor.limit >= 2) return "float";
  if (dt.startsWith("uint")) return "uint";
  if (dt === "int" || dt.startsWith("int")) return "int";
  return p.visitor.limit >= 2 && (p.type === "float" || p.type === "double") ? "float" : "uint";
}

const isBits = (p: Prop) => p.visitor.register === "CoilRegister" || p.visitor.register === "DiscreteInputRegister";

export interface Batch {
  register: ModbusVisitor["register"];
  offset: number;
  length: number;
  props: Prop[];
}

/** Groups properties into the fewest reads: same register kind, adjacent or overlapping, bounded span. */
export function planBatches(props: Prop[]): Batch[] {
  const byKind = new Map<string, Prop[]>();
  for (const p of props) byKind.set(p.visitor.register, [...(byKind.get(p.visitor.register) ?? []), p]);
  const batches: Batch[] = [];
  for (const [register, list] of byKind) {
    const maxSpan = isBits(list[0]!) ? 2000 : 125;
    list.sort((a, b) => a.visitor.offset - b.visitor.offset);
    let cur: Batch | undefined;
    for (const p of list) {
      const end = p.visitor.offset + p.visitor.limit;
      if (cur && p.visitor.offset <= cur.offset + cur.length && end - cur.offset <= maxSpan) {
        cur.length = Math.max(cur.length, end - cur.offset);
        cur.props.push(p);
      } else {
        cur = { register: register as Batch["register"], offset: p.visitor.offset, length: p.visitor.limit, props: [p] };
        batches.push(cur);
      }
    }
  }
  return batches;
}

/** The minimal client surface we use, so the heavy module is only typed, not imported eagerly. */
interface Client {
  connectTCP(ip: string, o: { port: number }): Promise<void>;
  open(cb: (err?: unknown) => void): void;
  setID(id: number): void;
  setTimeout(ms: number): void;
  readCoils(a: number, n: number): Promise<{ data: boolean[] }>;
  readDiscreteInputs(a: number, n: number): Promise<{ data: boolean[] }>;
  readHoldingRegisters(a: number, n: number): Promise<{ data: number[] }>;
  readInputRegisters(a: number, n: number): Promise<{ data: number[] }>;
  writeCoil(a: number, v: boolean): Promise<unknown>;
  writeRegisters(a: number, v: number[]): Promise<unknown>;
  close(cb: () => void): void;
  on(ev: "close" | "error", fn: (...a: unknown[]) => void): unknown;
  isOpen: boolean;
}

/** modbus-serial rejects with plain objects ({name, message, errno}); make them Errors. */
function toError(e: unknown): Error {
  if (e instanceof Error) return e;
  const o = e as { name?: string; message?: string } | null;
  const err = new Error(o?.message ?? String(e));
  if (o?.name) err.name = o.name;
  return err;
}

class ModbusDriver implements DeviceDriver<ModbusVisitor> {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly client: Client) {}

  /** modbus-serial runs one transaction at a time per connection: requests are queued. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const call = () => fn().catch((e: unknown) => Promise.reject(toError(e)));
    const next = this.queue.then(call, call);
    this.queue = next.catch(() => {});
    return next;
  }

  private async readBatch(b: Batch): Promise<(number | boolean)[]> {
    const c = this.client;
    switch (b.register) {
      case "CoilRegister":
        return (await this.serial(() => c.readCoils(b.offset, b.length))).data;
      case "DiscreteInputRegister":
        return (await this.serial(() => c.readDiscreteInputs(b.offset, b.length))).data;
      case "HoldingRegister":
        return (await this.serial(() => c.readHoldingRegisters(b.offset, b.length))).data;
      case "InputRegister":
        return (await this.serial(() => c.readInputRegisters(b.offset, b.length))).data;
    }
  }

  private decode(p: Prop, batch: Batch, data: (number | boolean)[]): RawValue {
    const from = p.visitor.offset - batch.offset;
    if (isBits(p)) return Boolean(data[from]);
    const words = (data as number[]).slice(from, from + p.visitor.limit);
    const n = decodeWords(words, numberKind(p), p.visitor);
    return p.visitor.scale !== undefined ? n * p.visitor.scale : n;
  }

  async read(p: Prop): Promise<RawValue> {
    const batch: Batch = { register: p.visitor.register, offset: p.visitor.offset, length: p.visitor.limit, props: [p] };
    return this.decode(p, batch, await this.readBatch(batch));
  }

  async readMany(props: Prop[]): Promise<Map<string, RawValue | Error>> {
    const out = new Map<string, RawValue | Error>();
    for (const b of planBatches(props)) {
      try {
        const data = await this.readBatch(b);
        for (const p of b.props) out.set(p.name, this.decode(p, b, data));
      } catch (e) {
        for (const p of b.props) out.set(p.name, toError(e));
      }
    }
    return out;
  }

  async write(p: Prop, value: RawValue): Promise<void> {
    const c = this.client;
    switch (p.visitor.register) {
      case "CoilRegister":
        await this.serial(() => c.writeCoil(p.visitor.offset, value === true || value === "true" || value === 1));
        return;
      case "HoldingRegister": {
        const n = typeof value === "number" ? value : Number(value);
        if (!Number.isFinite(n)) throw new Error(`property ${p.name}: "${String(value)}" is not a number`);
        const raw = p.visitor.scale ? n / p.visitor.scale : n;
        await this.serial(() => c.writeRegisters(p.visitor.offset, encodeWords(raw, p.visitor.limit, numberKind(p), p.visitor)));
        return;
      }
      default:
        throw new Error(`property ${p.name}: ${p.visitor.register} is read-only in Modbus`);
    }
  }

  async health() {
    return this.client.isOpen ? ("ok" as const) : ("disconnected" as const);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((r) => {
      try {
        this.client.close(() => r());
      } catch {
        r();
      }
      setTimeout(r, 500);
    });
  }
}

export default defineMapper({
  protocol: "modbus",
  protocolSchema: ModbusProtocolSchema,
  visitorSchema: ModbusVisitorSchema,
  async open(device) {
    const { default: ModbusRTU } = (await import("modbus-serial")) as unknown as { default: new (port?: unknown) => Client };
    const p = device.protocol;
    const rtu = p.communicateMode.toUpperCase() === "RTU";
    let client: Client;
    if (rtu) {
      if (!p.serialPort) throw new Error(`device ${device.id}: RTU needs protocol configData.serialPort`);
      client = new ModbusRTU(new TtyRtuPort(p.serialPort, { baudRate: p.baudRate, dataBits: p.dataBits, parity: p.parity, stopBits: p.stopBits }));
      client.on("error", () => {}); // surfaced through failed reads and health()
      await new Promise<void>((resolve, reject) => client.open((err) => (err ? reject(toError(err)) : resolve())));
    } else {
      client = new ModbusRTU();
      client.on("error", () => {});
      if (!p.ip) throw new Error(`device ${device.id}: TCP needs protocol configData.ip`);
      await client.connectTCP(p.ip, { port: p.port ?? 502 });
    }
    client.setID(p.slaveID);
    client.setTimeout(p.timeout);
    return new ModbusDriver(client);
  },
});
