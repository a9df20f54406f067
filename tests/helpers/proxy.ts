/** A TCP proxy a test controls: forwards to a target, can freeze (black-hole) or cut its links. */
import net from "node:net";

export interface Proxy {
  port: number;
  /** Stop forwarding in both directions without closing anything: a dead link as the edge sees it. */
  freeze(): void;
  thaw(): void;
  /** Keep what is sent in both directions until release(): a slow link, nothing lost. */
  hold(): void;
  release(): void;
  /** Reset every open link. */
  cut(): void;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<Proxy> {
  let frozen = false;
  let held: (() => void)[] | null = null;
  const links = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, targetHost);
    links.add(client);
    links.add(upstream);
    const pipe = (from: net.Socket, to: net.Socket) =>
      from.on("data", (d) => {
        if (frozen) return;
        if (held) held.push(() => to.write(d));
        else to.write(d);
      });
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
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze: () => void (frozen = true),
    thaw: () => void (frozen = false),
    hold: () => void (held ??= []),
    release: () => {
      const queued = held ?? [];
      held = null;
      for (const w of queued) w();
    },
    cut: () => {
      for (const s of links) s.destroy();
    },
    close: () => {
      for (const s of links) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
