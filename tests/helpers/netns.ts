/**
 * A real link for fault tests: a network namespace joined to the root namespace by a veth pair.
 * Setting the root end down cuts the link (the peer loses carrier, packets go nowhere); iptables
 * inside the namespace drops a random share of packets. Names carry this process's pid, the /30 is
 * picked among 10.213.0.0/16 blocks no interface on the host uses, and everything is removed by
 * destroy() — and, should the test process die first, by an exit hook.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { run } from "./daemons.ts";

export interface NetnsLink {
  /** The namespace's name: run a command in it with `ip netns exec <ns> …` (see `exec`). */
  ns: string;
  hostIf: string;
  nsIf: string;
  hostIp: string;
  nsIp: string;
  /** argv prefix that runs a command inside the namespace. */
  exec: string[];
  down(): Promise<void>;
  up(): Promise<void>;
  /** Drop this share (0..1) of packets both ways on the namespace's end; 0 removes the rules. */
  setLoss(p: number): Promise<void>;
  /** Packets the root end of the veth sent and received so far. */
  packets(): number;
  /** Packets the loss rules dropped so far (both ways). */
  dropped(): Promise<number>;
  destroy(): Promise<void>;
}

const IP = "/usr/sbin/ip";
let serial = 0;

async function sh(args: string[]): Promise<string> {
  const r = await run(args[0]!, args.slice(1), { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Why network namespaces cannot be used here, or null when they can (root, `ip`, a probe namespace). */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return "not running as root";
  if (!existsSync(IP)) return `${IP} not found (iproute2)`;
  const probe = `outpost-probe-${process.pid}`;
  const add = spawnSync(IP, ["netns", "add", probe], { encoding: "utf8" });
  if (add.status !== 0) return `ip netns add failed: ${add.stderr.trim()}`;
  spawnSync(IP, ["netns", "del", probe]);
  return null;
}

/** Path of iptables, or null. */
export function iptablesPath(): string | null {
  for (const p of ["/usr/sbin/iptables", "/sbin/iptables"]) if (existsSync(p)) return p;
  return null;
}

/** The first 10.213.x.y/30 whose addresses no interface in the root namespace holds. */
async function freeSlash30(): Promise<[string, string]> {
  const used = await sh([IP, "-4", "-o", "addr", "show"]);
  const start = process.pid % 256;
  for (let i = 0; i < 256 * 64; i++) {
    const third = (start + Math.floor(i / 64)) % 256;
    const block = ((process.pid >> 8) + i) % 64;
    const host = `10.213.${third}.${block * 4 + 1}`;
    const peer = `10.213.${third}.${block * 4 + 2}`;
    if (!used.includes(` ${host}/`) && !used.includes(` ${peer}/`)) return [host, peer];
  }
  throw new Error("no free /30 in 10.213.0.0/16");
}

export async function createNetnsLink(): Promise<NetnsLink> {
  const id = `${process.pid}${serial++ || ""}`;
  const ns = `outpost-${id}`;
  const hostIf = `op${id}h`;
  const nsIf = `op${id}n`;
  if (hostIf.length > 15) throw new Error(`interface name ${hostIf} too long`);
  const cleanupSync = () => {
    spawnSync(IP, ["netns", "del", ns]);
    spawnSync(IP, ["link", "del", hostIf]);
  };
  process.once("exit", cleanupSync);
  const [hostIp, nsIp] = await freeSlash30();
  const inNs = [IP, "netns", "exec", ns];
  try {
    await sh([IP, "netns", "add", ns]);
    await sh([IP, "link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    await sh([IP, "link", "set", nsIf, "netns", ns]);
    await sh([IP, "addr", "add", `${hostIp}/30`, "dev", hostIf]);
    await sh([IP, "link", "set", hostIf, "up"]);
    await sh([IP, "-n", ns, "addr", "add", `${nsIp}/30`, "dev", nsIf]);
    await sh([IP, "-n", ns, "link", "set", nsIf, "up"]);
    await sh([IP, "-n", ns, "link", "set", "lo", "up"]);
  } catch (e) {
    cleanupSync();
    throw e;
  }
  let lossRules = false;
  return {
    ns, hostIf, nsIf, hostIp, nsIp,
    exec: inNs,
    down: async () => void (await sh([IP, "link", "set", hostIf, "down"])),
    up: async () => void (await sh([IP, "link", "set", hostIf, "up"])),
    async setLoss(p: number) {
      const ipt = iptablesPath();
      if (!ipt) throw new Error("iptables not found");
      if (lossRules) {
        await sh([...inNs, ipt, "-F", "INPUT"]);
        await sh([...inNs, ipt, "-F", "OUTPUT"]);
        lossRules = false;
      }
      if (p <= 0) return;
      await sh([...inNs, ipt, "-A", "INPUT", "-i", nsIf, "-m", "statistic", "--mode", "random", "--probability", String(p), "-j", "DROP"]);
      await sh([...inNs, ipt, "-A", "OUTPUT", "-o", nsIf, "-m", "statistic", "--mode", "random", "--probability", String(p), "-j", "DROP"]);
      lossRules = true;
    },
    packets() {
      const stat = (f: string) => Number(readFileSync(`/sys/class/net/${hostIf}/statistics/${f}`, "utf8"));
      return stat("rx_packets") + stat("tx_packets");
    },
    async dropped() {
      const ipt = iptablesPath();
      if (!ipt || !lossRules) return 0;
      let n = 0;
      for (const chain of ["INPUT", "OUTPUT"])
        for (const line of (await sh([...inNs, ipt, "-L", chain, "-v", "-x", "-n"])).split("\n"))
          if (/\bDROP\b/.test(line) && /^\s*\d+/.test(line)) n += Number(line.trim().split(/\s+/)[0]);
      return n;
    },
    async destroy() {
      await run(IP, ["netns", "del", ns]);
      await run(IP, ["link", "del", hostIf]); // normally gone with its peer already
      process.removeListener("exit", cleanupSync);
    },
  };
}
