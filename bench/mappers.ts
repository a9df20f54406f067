/**
 * bench/mappers.ts (issue 6): Modbus TCP through the whole mapper host (DeviceRunner + the modbus
 * plugin + type conversion + a TwinPort counting reportValue) against a bare modbus-serial client,
 * both talking to the same simulated device process (tests/devices/modbus-device.ts, stdout
 * discarded) in the same run.
 *  1. Per-read cost on one connection: the host runs one device with 10 properties on non-adjacent
 *     registers (10 requests a cycle) at the smallest collectCycle (50 ms); the bare loop awaits
 *     readHoldingRegisters on the same 10 registers sequentially on the same 50 ms schedule (and
 *     once back to back, for the connection's ceiling). Per request: latency (host: a cycle's
 *     readMany / its requests) and CPU time of this process per read. Goal: ≤ 10 % overhead.
 *  2. Capacity: M devices (each its own connection to the same server, 2 requests a cycle) at 1 s
 *     cycles, M = 50, 100, 200, 400, 800, 1600 until < 95 % of cycles complete (quick: 50, 100):
 *     share of cycles completed, event-loop lag p99, CPU of this process.
 *   bun bench/mappers.ts [--quick]
 */
import { spawn } from "node:child_process";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import ModbusRTU from "modbus-serial";
import modbusPlugin, { planBatches, type ModbusVisitor } from "../mappers/modbus/index.ts";
import type { DeviceDriver, MapperPlugin, PropertySpec } from "../mappers/plugin.ts";
import type { TwinDevice, TwinDeviceProperty } from "../lib/edge/devicetwin/index.ts";
import { Pusher } from "../lib/edge/mapperhost/push.ts";
import { DeviceRunner, type TwinPort } from "../lib/edge/mapperhost/runner.ts";
import { createLogger } from "../lib/log.ts";
import { ROOT } from "../tests/helpers/daemons.ts";
import { percentile, printTable, quick, recordResults, rssMiB, type Row } from "./lib.ts";

const RUN_MS = quick ? 3000 : 10_000;
const PROPS = 10;
const CAP_STEPS = quick ? [50, 100] : [50, 100, 200, 400, 800, 1600];
const CAP_MS = quick ? 3000 : 6000;
const log = createLogger({ level: "error" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

// ---- the device process ----------------------------------------------------------------------
const port = await new Promise<number>((r) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const p = (s.address() as { port: number }).port;
    s.close(() => r(p));
  });
});
const device = spawn(process.execPath, [join(ROOT, "tests/devices/modbus-device.ts"), "--tcp", `127.0.0.1:${port}`], { stdio: ["ignore", "ignore", "inherit"] });
const reachable = () => new Promise<boolean>((r) => {
  const c = connect(port, "127.0.0.1", () => (c.destroy(), r(true)));
  c.on("error", () => r(false));
});
for (let i = 0; i < 100 && !(await reachable()); i++) await sleep(50);

let exitCode = 0;
try {
  // ---- 1a. bare modbus-serial loop ------------------------------------------------------------
  const bare = new ModbusRTU();
  await bare.connectTCP("127.0.0.1", { port });
  bare.setID(1);
  bare.setTimeout(1000);
  /** `paced`: the host's schedule (PROPS sequential reads every 50 ms); else back to back. */
  const bareLoop = async (ms: number, paced: boolean) => {
    const lat: number[] = [];
    const c0 = cpuMs();
    const t0 = performance.now();
    for (let cycle = 0; performance.now() - t0 < ms && cycle < 1_000_000; cycle++) {
      for (let i = 0; i < PROPS; i++) {
        const t = performance.now();
        await bare.readHoldingRegisters(i * 2, 1);
        lat.push(performance.now() - t);
      }
      if (paced) await sleep(Math.max(0, t0 + (cycle + 1) * 50 - performance.now()));
    }
    return { lat: lat.sort((a, b) => a - b), perS: lat.length / ((performance.now() - t0) / 1000), cpuPerRead: ((cpuMs() - c0) * 1000) / lat.length };
  };
  await bareLoop(500, false); // warm-up
  const b = await bareLoop(RUN_MS, true);
  const bFast = await bareLoop(quick ? 1500 : 3000, false);
  await new Promise<void>((r) => bare.close(() => r()));

  // ---- the host side: DeviceRunner + the modbus plugin, driver wrapped to count and time ----
  type Stats = { cycles: number; reads: number; cycleMs: number[]; reports: number };
  const stats = new Map<string, Stats>();
  const statsOf = (id: string) => {
    let s = stats.get(id);
    if (!s) stats.set(id, (s = { cycles: 0, reads: 0, cycleMs: [], reports: 0 }));
    return s;
  };
  let recording = false;
  const plugin: MapperPlugin<unknown, ModbusVisitor> = {
    ...(modbusPlugin as unknown as MapperPlugin<unknown, ModbusVisitor>),
    async open(spec, ctx) {
      const driver = (await (modbusPlugin as unknown as MapperPlugin<unknown, ModbusVisitor>).open(spec, ctx)) as DeviceDriver<ModbusVisitor>;
      const readMany = driver.readMany!.bind(driver);
      const s = statsOf(spec.id);
      driver.readMany = async (props: PropertySpec<ModbusVisitor>[]) => {
        const t = performance.now();
        const out = await readMany(props);
        if (recording) {
          const requests = planBatches(props).length;
          s.cycles++;
          s.reads += requests;
          s.cycleMs.push((performance.now() - t) / requests);
        }
        return out;
      };
      return driver;
    },
  };
  const twin: TwinPort = {
    reportValue: (id) => (statsOf(id).reports++, { ok: true }),
    reportState: () => ({ ok: true }),
  };
  const pusher = new Pusher(log);
  const prop = (name: string, register: string, offset: number, cycleMs: number): TwinDeviceProperty => ({
    name,
    type: "INT",
    twinType: "integer",
    accessMode: "ReadOnly",
    visitors: { protocolName: "modbus", configData: { register, offset, limit: 1 } },
    collectCycle: cycleMs,
    reportCycle: cycleMs,
  });
  const twinDevice = (name: string, properties: TwinDeviceProperty[]): TwinDevice => ({
    id: `default/${name}`,
    namespace: "default",
    name,
    description: "",
    state: "",
    lastOnline: "",
    protocol: { protocolName: "modbus", configData: { ip: "127.0.0.1", port, slaveID: 1 } },
    properties,
    twins: {},
    attributes: {},
  });
  const startRunners = async (devices: TwinDevice[]) => {
    const runners = devices.map((d) => new DeviceRunner(d, plugin as MapperPlugin, twin, pusher, log));
    for (const r of runners) r.start();
    const end = Date.now() + 15_000;
    while ([...devices].some((d) => !stats.has(d.id)) && Date.now() < end) await sleep(20);
    return runners;
  };

  // ---- 1b. one device, 10 requests a cycle, 50 ms cycles ------------------------------------
  const one = twinDevice("bench-one", Array.from({ length: PROPS }, (_, i) => prop(`p${i}`, "HoldingRegister", i * 2, 50)));
  const [runner] = await startRunners([one]);
  await sleep(500); // warm-up
  recording = true;
  statsOf(one.id).reports = 0;
  const c0 = cpuMs();
  const t0 = performance.now();
  await sleep(RUN_MS);
  recording = false;
  const hostSeconds = (performance.now() - t0) / 1000;
  const hostCpu = cpuMs() - c0;
  await runner!.stop();
  const h = statsOf(one.id);
  h.cycleMs.sort((a, b) => a - b);
  const hostCpuPerRead = (hostCpu * 1000) / h.reads;
  const rows: Row[] = [
    { metric: "read_latency_p50", baseline: percentile(b.lat, 50), outpost: percentile(h.cycleMs, 50), unit: "ms" },
    { metric: "read_latency_p99", baseline: percentile(b.lat, 99), outpost: percentile(h.cycleMs, 99), unit: "ms" },
    { metric: "cpu_per_read", baseline: b.cpuPerRead, outpost: hostCpuPerRead, unit: "µs" },
    { metric: "bare_reads_per_s_back_to_back", outpost: bFast.perS, unit: "reads/s", higherIsBetter: true },
    { metric: "reads_per_s_one_device_50ms", baseline: b.perS, outpost: h.reads / hostSeconds, unit: "reads/s", higherIsBetter: true },
    { metric: "host_reports_per_s_one_device", outpost: h.reports / hostSeconds, unit: "values/s", higherIsBetter: true },
  ];

  // ---- 2. capacity: M devices at 1 s cycles ---------------------------------------------------
  let largestOk = 0;
  for (const m of CAP_STEPS) {
    const devices = Array.from({ length: m }, (_, i) =>
      twinDevice(`cap-${m}-${i}`, [prop("temperature", "HoldingRegister", 0, 1000), prop("setpoint", "HoldingRegister", 1, 1000), prop("pressure", "InputRegister", 0, 1000)]),
    );
    const runners = await startRunners(devices);
    await sleep(1500); // connections made, first cycles done
    for (const d of devices) statsOf(d.id).cycles = 0;
    const lags: number[] = [];
    let expectAt = performance.now() + 20;
    const lagTimer = setInterval(() => {
      const now = performance.now();
      lags.push(Math.max(0, now - expectAt));
      expectAt = now + 20;
    }, 20);
    recording = true;
    const w0 = performance.now();
    const cpu0 = cpuMs();
    await sleep(CAP_MS);
    recording = false;
    const secs = (performance.now() - w0) / 1000;
    const cpuShare = (cpuMs() - cpu0) / (secs * 1000);
    clearInterval(lagTimer);
    const cycles = devices.reduce((n, d) => n + statsOf(d.id).cycles, 0);
    const kept = cycles / (m * secs);
    lags.sort((a, b) => a - b);
    if (kept >= 0.95) largestOk = Math.max(largestOk, m);
    rows.push(
      { metric: `cycles_kept_${m}_devices`, baseline: 100, outpost: Math.min(100, kept * 100), unit: "%", higherIsBetter: true },
      { metric: `event_loop_lag_p99_${m}_devices`, outpost: percentile(lags, 99), unit: "ms" },
      { metric: `host_cpu_${m}_devices`, outpost: cpuShare * 100, unit: "% core" },
    );
    await Promise.all(runners.map((r) => r.stop()));
    for (const d of devices) stats.delete(d.id);
    if (kept < 0.95) break; // found the limit
  }
  rows.push({ metric: "largest_M_with_95pct_cycles", outpost: largestOk, unit: "devices", higherIsBetter: true }, { metric: "bench_rss", outpost: rssMiB(), unit: "MiB" });
  await pusher.close();
  printTable(`mappers: Modbus TCP through the mapper host vs a bare modbus-serial loop, same device process; capacity at 1 s cycles, 2 requests/device/cycle`, rows);
  recordResults("mappers", rows);
} catch (e) {
  console.error(e);
  exitCode = 1;
} finally {
  device.kill("SIGTERM");
}
process.exit(exitCode);
