/**
 * The mapper plugin host: runs a DeviceRunner for every device of this node whose protocol has a
 * plugin, and restarts or stops it when the Device or its model changes or goes away.
 */
import type { Logger } from "../../log.ts";
import type { DeviceTwin } from "../devicetwin/index.ts";
import type { MetaManager } from "../metamanager.ts";
import { PluginRegistry } from "./plugins.ts";
import { DeviceRunner, runnerKey } from "./runner.ts";
import { Pusher } from "./push.ts";

export { PluginRegistry } from "./plugins.ts";

export class MapperHost {
  private readonly runners = new Map<string, DeviceRunner>();
  private readonly pusher: Pusher;
  private pending?: ReturnType<typeof setTimeout>;
  private periodic?: ReturnType<typeof setInterval>;
  private offDesired?: () => void;
  private readonly skipped = new Set<string>();
  private stopped = false;

  constructor(private readonly opts: { twin: DeviceTwin; meta: MetaManager; registry: PluginRegistry; log: Logger }) {
    this.pusher = new Pusher(opts.log);
  }

  start(): void {
    this.offDesired = this.opts.twin.onDesired((id, prop, value) => this.runners.get(id)?.writeDesired(prop, value));
    this.opts.meta.on("change", (c) => {
      if (c.kind === "device" || c.kind === "devicemodel") this.schedule();
    });
    void this.reconcile();
    this.periodic = setInterval(() => void this.reconcile(), 10_000);
    this.periodic.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.pending);
    clearInterval(this.periodic);
    this.offDesired?.();
    await Promise.all([...this.runners.values()].map((r) => r.stop()));
    this.runners.clear();
    await this.pusher.close();
  }

  /** Device changes reach the twin through the router a moment after MetaManager reports them. */
  private schedule(): void {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => void this.reconcile(), 100);
  }

  private async reconcile(): Promise<void> {
    if (this.stopped) return;
    const { twin, registry, log } = this.opts;
    const want = new Map(twin.listDevices().filter((d) => d.protocol?.protocolName).map((d) => [d.id, d]));
    for (const [id, runner] of this.runners) {
      const d = want.get(id);
      if (!d || runnerKey(d) !== runner.key) {
        this.runners.delete(id);
        await runner.stop();
        log.info(d ? "device changed, restarting its driver" : "device removed, driver stopped", { device: id });
      }
    }
    for (const [id, d] of want) {
      if (this.runners.has(id)) continue;
      const protocol = d.protocol!.protocolName!;
      const plugin = registry.get(protocol);
      if (!plugin) {
        if (!this.skipped.has(`${id}:${protocol}`)) log.warn("no mapper for the device's protocol", { device: id, protocol, available: registry.protocols().join(",") });
        this.skipped.add(`${id}:${protocol}`);
        continue;
      }
      let loaded;
      try {
        loaded = await plugin;
      } catch (e) {
        log.error("mapper plugin failed to load", { protocol, err: (e as Error).message });
        continue;
      }
      if (this.stopped || this.runners.has(id)) continue;
      const runner = new DeviceRunner(d, loaded, twin, this.pusher, log.child(protocol));
      this.runners.set(id, runner);
      runner.start();
    }
  }
}
