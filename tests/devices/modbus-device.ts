/**
 * A simulated Modbus device (a thermostat) on modbus-serial's own server, used by tests and the demo:
 *   bun tests/devices/modbus-device.ts --tcp 127.0.0.1:5020 [--unit 1]
 *   bun tests/devices/modbus-device.ts --serial /dev/pts/7
 * Registers: holding 0 = temperature ×10 (int16, drifts), holding 1 = setpoint ×10 (read/write),
 * holding 2–3 = humidity (float32, big-endian words), coil 0 = fan (read/write),
 * input 0 = pressure hPa. Prints one JSON line per request and per write on stdout, and
 * "modbus device listening" once ready.
 */
import fs from "node:fs";
import { ServerTCP } from "modbus-serial";
import { configureTty, crc16, withCrc } from "../../mappers/modbus/rtu.ts";

const args = process.argv.slice(2);
const arg = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const unit = Number(arg("--unit") ?? 1);

const holding = new Array<number>(32).fill(0);
const input = new Array<number>(32).fill(0);
const coils = new Array<boolean>(32).fill(false);
holding[0] = 215;
holding[1] = 200;
const hum = Buffer.alloc(4);
hum.writeFloatBE(45.5, 0);
holding[2] = hum.readUInt16BE(0);
holding[3] = hum.readUInt16BE(2);
input[0] = 1013;

const drift = setInterval(() => {
  // the room moves towards the setpoint, faster with the fan on
  const t = (holding[0]! << 16) >> 16;
  const target = holding[1]!;
  const step = coils[0] ? 3 : 1;
  holding[0] = (t + Math.sign(target - t) * Math.min(step, Math.abs(target - t))) & 0xffff;
}, 1000);
drift.unref();

const log = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");

const vector = {
  getMultipleHoldingRegisters: (addr: number, length: number) => {
    log({ event: "read", register: "holding", addr, length });
    return holding.slice(addr, addr + length);
  },
  getMultipleInputRegisters: (addr: number, length: number) => {
    log({ event: "read", register: "input", addr, length });
    return input.slice(addr, addr + length);
  },
  getHoldingRegister: (addr: number) => {
    log({ event: "read", register: "holding", addr, length: 1 });
    return holding[addr] ?? 0;
  },
  getInputRegister: (addr: number) => {
    log({ event: "read", register: "input", addr, length: 1 });
    return input[addr] ?? 0;
  },
  getCoil: (addr: number) => {
    log({ event: "read", register: "coil", addr, length: 1 });
    return coils[addr] ?? false;
  },
  getDiscreteInput: (addr: number) => addr === 0,
  setRegister: (addr: number, value: number) => {
    holding[addr] = value;
    log({ event: "write", register: "holding", addr, value });
  },
  setCoil: (addr: number, value: boolean) => {
    coils[addr] = value;
    log({ event: "write", register: "coil", addr, value });
  },
};

const tcp = arg("--tcp");
const serial = arg("--serial");
if (tcp) {
  const [host, port] = [tcp.slice(0, tcp.lastIndexOf(":")), Number(tcp.slice(tcp.lastIndexOf(":") + 1))];
  const server = new ServerTCP(vector, { host, port, unitID: unit });
  server.on("socketError", () => {});
  server.on("initialized", () => log({ event: "ready", msg: "modbus device listening", tcp }));
} else if (serial) {
  serveRtu(serial);
} else {
  process.stderr.write("usage: modbus-device.ts --tcp HOST:PORT | --serial PATH [--unit N]\n");
  process.exit(2);
}
process.on("SIGTERM", () => process.exit(0));

/**
 * The RTU side, on the tty as a file (serialport's binding does not run under Bun): reads request
 * frames, checks their CRC, answers from the same registers as the TCP server.
 */
function serveRtu(path: string): void {
  configureTty(path, { baudRate: Number(arg("--baud") ?? 9600), dataBits: 8, parity: "none", stopBits: 1 });
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
  let buf = Buffer.alloc(0);
  const reply = (body: number[]) => fs.writeSync(fd, withCrc(Uint8Array.from(body)));
  const handle = (f: Buffer) => {
    const [id, fc] = [f[0]!, f[1]!];
    const addr = f.readUInt16BE(2);
    const qty = f.readUInt16BE(4);
    if (id !== unit) return;
    if (fc === 3 || fc === 4) {
      const regs = fc === 3 ? vector.getMultipleHoldingRegisters(addr, qty) : vector.getMultipleInputRegisters(addr, qty);
      reply([id, fc, qty * 2, ...regs.flatMap((r) => [(r >> 8) & 0xff, r & 0xff])]);
    } else if (fc === 1) {
      const bits = Array.from({ length: qty }, (_, i) => vector.getCoil(addr + i));
      const bytes = Array.from({ length: Math.ceil(qty / 8) }, (_, i) => bits.slice(i * 8, i * 8 + 8).reduce((acc, b, k) => acc | ((b ? 1 : 0) << k), 0));
      reply([id, fc, bytes.length, ...bytes]);
    } else if (fc === 5) {
      vector.setCoil(addr, qty === 0xff00);
      reply([...f.subarray(0, 6)]);
    } else if (fc === 6) {
      vector.setRegister(addr, qty);
      reply([...f.subarray(0, 6)]);
    } else if (fc === 16) {
      for (let i = 0; i < qty; i++) vector.setRegister(addr + i, f.readUInt16BE(7 + i * 2));
      reply([...f.subarray(0, 6)]);
    } else reply([id, fc | 0x80, 1]); // illegal function
  };
  fs.createReadStream("", { fd, highWaterMark: 256 }).on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk as Buffer]);
    while (buf.length >= 8) {
      const fc = buf[1]!;
      const len = fc === 15 || fc === 16 ? 9 + buf[6]! : 8;
      if (buf.length < len) return;
      const frame = buf.subarray(0, len);
      buf = buf.subarray(len);
      if (crc16(frame.subarray(0, len - 2)) !== frame.readUInt16LE(len - 2)) {
        log({ event: "error", err: "bad CRC" });
        buf = Buffer.alloc(0);
        return;
      }
      handle(Buffer.from(frame));
    }
  });
  log({ event: "ready", msg: "modbus device listening", serial: path });
}
