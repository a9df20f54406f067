/**
 * One device under a mapper plugin: opens its driver (reconnecting with back-off), reads every
 * property on its collectCycle (or takes pushed values), reports to the twin on its reportCycle,
 * writes desired values of ReadWrite properties with a read-back, and keeps the device state.
 * Everything is contained: a failing device never touches another.
 */
import * as v from "valibot";
import type { DeviceDriver, DeviceHealth, MapperPlugin, PropertySpec, RawValue } from "../../../mappers/plugin.ts";
import type { TwinDevice, TwinDeviceProperty } from "../devicetwin/index.ts";
import type { Logger } from "../../log.ts";
import { fromTwinValue, propertyType, toTwinValue } from "./convert.ts";
import type { Pusher } from "./push.ts";

export interface TwinPort {
  reportValue(deviceId: string, property: string, value: string, opts?: { timestamp?: number; observedDesired?: string }): { ok: boolean };
  reportState(deviceId: string, state: string): { ok: boolean };
}

interface Prop {
  spec: PropertySpec<unknown>;
  twin: TwinDeviceProperty;
  collectMs: number;
  reportMs: number;
  latest?: { value: string; at: number };
  reportedAt: number;
  pushed: boolean;
}

const DEFAULT_CYCLE_MS = 1000;
const cycle = (n: number | undefined) => (n && n > 0 ? Math.max(50, n) : DEFAULT_CYCLE_MS);

/** What decides whether a running device must be restarted: protocol and property definitions. */
export function runnerKey(d: TwinDevice): string {
  return JSON.stringify([d.protocol, d.modelProtocolConfigData, d.properties.map((p) => [p.name, p.type, p.accessMode, p.visitors, p.collectCycle, p.reportCycle, p.reportToCloud, p.pushMethod, p.minimum, p.maximum])]);
}

export class DeviceRunner {
  private driver?: DeviceDriver<unknown>;
  private props: Prop[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private unsubscribes: (() => Promise<void>)[] = [];
  private retry?: ReturnType<typeof setTimeout>;
  private attempt = 0;
  private stopped = false;
  private state = "";
  private abort = new AbortController();
  private failures = 0;
  private readonly desired = new Map<string, string>();
  readonly key: string;

  constructor(
    readonly device: TwinDevice,
    private readonly plugin: MapperPlugin,
    private readonly twin: TwinPort,
    private readonly pusher: Pusher,
    private readonly log: Logger,
  ) {
    this.key = runnerKey(device);
    for (const p of device.properties) if (p.desired !== undefined && p.accessMode !== "ReadOnly") this.desired.set(p.name, p.desired);
  }

  start(): void {
    const protocolConfig = { ...(this.device.modelProtocolConfigData ?? {}), ...(this.device.protocol?.configData ?? {}) };
    const proto = v.safeParse(this.plugin.protocolSchema, protocolConfig);
    if (!proto.success) {
      const i = proto.issues[0]!;
      this.log.warn("device protocol config invalid; not started", { device: this.device.id, field: `protocol.configData.${v.getDotPath(i) ?? ""}`, err: i.message });
      return this.setState("unhealthy");
    }
    for (const p of this.device.properties) {
      const visitor = v.safeParse(this.plugin.visitorSchema, p.visitors?.configData ?? {});
      if (!visitor.success) {
        const i = visitor.issues[0]!;
        this.log.warn("property visitor config invalid; property skipped", { device: this.device.id, property: p.name, field: `visitors.configData.${v.getDotPath(i) ?? ""}`, err: i.message });
        continue;
      }
      this.props.push({
        spec: { name: p.name, visitor: visitor.output, type: propertyType(p.type), accessMode: p.accessMode === "ReadWrite" ? "ReadWrite" : "ReadOnly" },
        twin: p,
        collectMs: cycle(p.collectCycle),
        reportMs: cycle(p.reportCycle),
        reportedAt: 0,
        pushed: false,
      });
    }
    void this.open(proto.output);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    // values read but not yet reported (reportCycle) go to the twin, which flushes them upstream
    for (const p of this.props) if (p.latest && p.latest.at > p.reportedAt) this.reportOne(p, true);
    await this.teardown();
  }

  /** A desired value from the twin: written now when connected, else on the next connect. */
  writeDesired(property: string, value: string): void {
    const p = this.props.find((x) => x.spec.name === property);
    if (!p || p.spec.accessMode !== "ReadWrite") return;
    this.desired.set(property, value);
    if (this.driver) void this.write(p, value);
  }

  private setState(state: string): void {
    if (state === this.state) return;
    this.state = state;
    this.twin.reportState(this.device.id, state);
    this.log.info("device state", { device: this.device.id, state });
  }

  private async open(protocol: unknown): Promise<void> {
    if (this.stopped) return;
    this.abort = new AbortController();
    try {
      this.driver = await this.plugin.open({ id: this.device.id, protocol, properties: this.props.map((p) => p.spec) }, { log: this.log, signal: this.abort.signal });
    } catch (e) {
      this.setState("disconnected");
      const delay = Math.min(30_000, 500 * 2 ** this.attempt++) * (0.75 + Math.random() * 0.5);
      this.log.warn("device not reachable, retrying", { device: this.device.id, inMs: Math.round(delay), err: (e as Error).message });
      this.retry = setTimeout(() => void this.open(protocol), delay);
      return;
    }
    if (this.stopped) return void (await this.driver.close().catch(() => {}));
    this.attempt = 0;
    this.failures = 0;
    this.setState("ok");
    for (const [name, value] of this.desired) {
      const p = this.props.find((x) => x.spec.name === name);
      if (p) await this.write(p, value);
    }
    await this.schedule();
    this.reconnectOnFailure = () => {
      void this.teardown().then(() => {
        this.setState("disconnected");
        this.retry = setTimeout(() => void this.open(protocol), 500);
      });
    };
  }

  private reconnectOnFailure: () => void = () => {};

  private async schedule(): Promise<void> {
    const driver = this.driver!;
    for (const p of this.props) {
      if (!driver.subscribe) continue;
      try {
        const unsub = await driver.subscribe(p.spec, (raw) => this.take(p, raw));
        if (unsub) {
          p.pushed = true;
          this.unsubscribes.push(unsub);
        }
      } catch (e) {
        this.log.warn("subscription failed, polling instead", { device: this.device.id, property: p.spec.name, err: (e as Error).message });
      }
    }
    const byCycle = new Map<number, Prop[]>();
    for (const p of this.props) if (!p.pushed) byCycle.set(p.collectMs, [...(byCycle.get(p.collectMs) ?? []), p]);
    for (const [ms, group] of byCycle) {
      void this.collect(group);
      this.timers.push(setInterval(() => void this.collect(group), ms));
    }
    // pushed properties are never polled, so a dead link would go unnoticed: ask the driver instead
    if (this.props.some((p) => p.pushed) && driver.health) {
      let bad = 0;
      this.timers.push(
        setInterval(() => {
          void driver.health!().then(
            (h) => {
              bad = h === "ok" ? 0 : bad + 1;
              if (h === "ok" && this.props.every((p) => p.pushed)) this.setState("ok");
              else if (h !== "ok") this.setState(h);
              if (bad >= 3) this.reconnectOnFailure();
            },
            () => this.setState("disconnected"),
          );
        }, 1000),
      );
    }
    const reportEvery = Math.min(...this.props.map((p) => p.reportMs), DEFAULT_CYCLE_MS);
    this.timers.push(setInterval(() => this.report(), Math.max(50, Math.min(reportEvery, 1000) / 2)));
  }

  private busy = new Set<Prop[]>();

  private async collect(group: Prop[]): Promise<void> {
    const driver = this.driver;
    if (!driver || this.busy.has(group)) return; // a slow device: skip a cycle rather than pile up
    this.busy.add(group);
    try {
      let failed = 0;
      if (driver.readMany) {
        const values = await driver.readMany(group.map((p) => p.spec));
        for (const p of group) {
          const r = values.get(p.spec.name);
          if (r === undefined || r instanceof Error) failed++;
          else this.take(p, r);
        }
      } else {
        for (const p of group) {
          try {
            this.take(p, await driver.read(p.spec));
          } catch {
            failed++;
          }
        }
      }
      await this.judge(failed === group.length && group.length > 0);
    } catch (e) {
      this.log.debug("collect failed", { device: this.device.id, err: (e as Error).message });
      await this.judge(true);
    } finally {
      this.busy.delete(group);
    }
  }

  /** After a cycle: all reads failed → ask the driver; a dead link (or 3 bad cycles) → reconnect. */
  private async judge(allFailed: boolean): Promise<void> {
    if (!allFailed) {
      this.failures = 0;
      return this.setState("ok");
    }
    this.failures++;
    let health: DeviceHealth = "unhealthy";
    try {
      health = (await this.driver?.health?.()) ?? "unhealthy";
    } catch {
      health = "disconnected";
    }
    if (health === "disconnected" || this.failures >= 3) {
      this.log.warn("device lost, reconnecting", { device: this.device.id, health, failures: this.failures });
      this.reconnectOnFailure();
    } else this.setState("unhealthy");
  }

  private take(p: Prop, raw: RawValue): void {
    try {
      p.latest = { value: toTwinValue(raw, p.spec.type, p.twin), at: Date.now() };
      if (p.pushed) this.reportOne(p, true);
    } catch (e) {
      this.log.warn("value does not fit the property type", { device: this.device.id, property: p.spec.name, err: (e as Error).message });
    }
  }

  private report(): void {
    for (const p of this.props) this.reportOne(p, false);
  }

  private reportOne(p: Prop, force: boolean): void {
    if (!p.latest || (!force && (p.latest.at <= p.reportedAt || Date.now() - p.reportedAt < p.reportMs))) return;
    p.reportedAt = Date.now();
    const { value, at } = p.latest;
    if (p.twin.reportToCloud !== false) this.twin.reportValue(this.device.id, p.spec.name, value, { timestamp: at });
    if (p.twin.pushMethod) void this.pusher.push(p.twin.pushMethod, p.spec.name, value, at).catch((e) => this.log.warn("push failed", { device: this.device.id, property: p.spec.name, err: (e as Error).message }));
  }

  private async write(p: Prop, value: string): Promise<void> {
    const driver = this.driver;
    if (!driver?.write) return void this.log.warn("driver cannot write", { device: this.device.id, property: p.spec.name });
    try {
      await driver.write(p.spec, fromTwinValue(value, p.spec.type));
      const back = toTwinValue(await driver.read(p.spec), p.spec.type, p.twin);
      p.latest = { value: back, at: Date.now() };
      p.reportedAt = p.latest.at;
      this.twin.reportValue(this.device.id, p.spec.name, back, { timestamp: p.latest.at, observedDesired: value });
      this.log.info("desired value written", { device: this.device.id, property: p.spec.name, value, readBack: back });
    } catch (e) {
      this.log.warn("desired value not written", { device: this.device.id, property: p.spec.name, value, err: (e as Error).message });
    }
  }

  private async teardown(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.abort.abort();
    const driver = this.driver;
    this.driver = undefined;
    for (const u of this.unsubscribes.splice(0)) await u().catch(() => {});
    for (const p of this.props) p.pushed = false;
    if (driver) await Promise.race([driver.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  }
}
