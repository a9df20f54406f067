/** Data push methods of a device property (KubeEdge's pushMethod): http and mqtt. */
import type { PushMethod } from "../../../schemas/devices.ts";
import type { Logger } from "../../log.ts";

type MqttClient = { publish(topic: string, payload: string, opts: { qos: 0 | 1 | 2; retain: boolean }, cb?: (err?: Error) => void): void; end(force?: boolean): void };

/** `YYYY-MM-DD HH:MM:SS` as KubeEdge's mappers stamp pushed values. */
const stamp = (ms: number) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);

export class Pusher {
  private readonly mqttClients = new Map<string, Promise<MqttClient>>();

  constructor(private readonly log: Logger) {}

  async push(method: PushMethod, property: string, value: string, at: number): Promise<void> {
    const tasks: Promise<void>[] = [];
    if (method.http?.hostName) tasks.push(this.http(method.http, property, value, at));
    if (method.mqtt?.address && method.mqtt.topic) tasks.push(this.mqtt(method.mqtt as { address: string; topic: string; qos?: number; retained?: boolean }, property, value, at));
    await Promise.all(tasks);
  }

  private async http(h: NonNullable<PushMethod["http"]>, property: string, value: string, at: number): Promise<void> {
    const host = /^https?:\/\//.test(h.hostName!) ? h.hostName! : `http://${h.hostName}`;
    const url = `${host}${h.port ? `:${h.port}` : ""}${h.requestPath ?? "/"}`;
    const body = new URLSearchParams({ [property]: value, time: stamp(at) }).toString();
    const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body, signal: AbortSignal.timeout(h.timeout ?? 5000) });
    if (!res.ok) throw new Error(`http push to ${url}: HTTP ${res.status}`);
    await res.arrayBuffer();
  }

  private async mqtt(m: { address: string; topic: string; qos?: number; retained?: boolean }, property: string, value: string, at: number): Promise<void> {
    const url = m.address.replace(/^tcp:\/\//, "mqtt://");
    let client = this.mqttClients.get(url);
    if (!client) {
      client = import("mqtt").then(({ connect }) => {
        const c = connect(url, { reconnectPeriod: 1000, connectTimeout: 5000 });
        c.on("error", (e) => this.log.debug("push broker error", { url, err: e.message }));
        return c as unknown as MqttClient;
      });
      this.mqttClients.set(url, client);
    }
    const c = await client;
    const payload = `time is ${stamp(at)}  ${property}: ${value}`;
    await new Promise<void>((resolve, reject) => c.publish(m.topic, payload, { qos: (m.qos ?? 0) as 0 | 1 | 2, retain: m.retained ?? false }, (err) => (err ? reject(err) : resolve())));
  }

  async close(): Promise<void> {
    for (const c of this.mqttClients.values()) (await c).end(true);
    this.mqttClients.clear();
  }
}
