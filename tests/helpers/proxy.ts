/** A TCP proxy a test controls: forwards to a target, can freeze (black-hole), delay, hold or cut its links. */
import net from "node:net";

export interface Proxy {
  port: number;
  /** Stop forwarding in both directions without closing anything: a dead link as the edge sees it. */
  freeze(): void;
  thaw(): void;
  /** Hold every chunk this long before passing it on, each direction in order (0 = none). */
  setDelay(ms: number): void;
  /** Keep what is sent in both directions until release(): a slow link, nothing lost. */
  hold(): void;
  release(): void;
  /** Reset every open link. */
  cut(): void;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number, targetHost = "127.0.0.1", listenHost = "127.0.0.1"): Promise<Proxy> {
  let frozen = false;
  let delayMs = 0;
  let holding = false;
  const links = new Set<net.Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  /** Each direction's drain, run again on release(). */
  const drains = new Set<() => void>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, targetHost);
    links.add(client);
    links.add(upstream);
    const pipe = (from: net.Socket, to: net.Socket) => {
      // one queue per direction, drained by one timer: a delayed or held link still delivers bytes in order
      const queue: { due: number; data: Buffer }[] = [];
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drain = () => {
        if (timer) timers.delete(timer);
        timer = undefined;
        if (holding) return;
        while (queue.length > 0 && queue[0]!.due <= Date.now()) {
          const { data } = queue.shift()!;
          if (!to.destroyed) to.write(data);
        }
        if (queue.length > 0) timers.add((timer = setTimeout(drain, queue[0]!.due - Date.now())));
      };
      drains.add(drain);
      from.on("close", () => drains.delete(drain));
      from.on("data", (d: Buffer) => {
        if (frozen) return;
        if (delayMs <= 0 && queue.length === 0 && !holding) return void to.write(d);
        queue.push({ due: Date.now() + delayMs, data: d });
        if (!timer) drain();
      });
    };
    pipe(client, upstream);
    pipe(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      links.delete(client);
      links.delete(upstream);
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((r) => server.listen(0, listenHost, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze: () => void (frozen = true),
    thaw: () => void (frozen = false),
    setDelay: (ms: number) => void (delayMs = Math.max(0, ms)),
    hold: () => void (holding = true),
    release: () => {
      holding = false;
      for (const d of drains) d();
    },
    cut: () => {
      for (const s of links) s.destroy();
    },
    close: () => {
      for (const t of timers) clearTimeout(t);
      for (const s of links) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
