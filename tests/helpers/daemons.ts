/** Starts real cloudcore/edgecore child processes for tests and benches, and reads what they expose. */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";

export const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

export function tmpDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `outpost-${prefix}-`));
}

/** How to run a daemon: from source with this Bun, or a compiled binary from dist/. */
export type Flavour = "source" | "binary";

function command(name: "cloudcore" | "edgecore", flavour: Flavour): [string, string[]] {
  return flavour === "binary" ? [join(ROOT, "dist", name), []] : [process.execPath, [join(ROOT, `${name}.ts`)]];
}

export class Daemon {
  readonly output: string[] = [];
  private waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  exited: Promise<number | null>;

  constructor(readonly proc: ChildProcess, readonly name: string) {
    let partial = "";
    const onChunk = (chunk: Buffer) => {
      partial += chunk.toString();
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        this.output.push(line);
        if (process.env.OUTPOST_TEST_LOGS) process.stderr.write(`[${name}] ${line}\n`);
        this.waiters = this.waiters.filter((w) => (w.re.test(line) ? (w.resolve(line), false) : true));
      }
    };
    proc.stdout?.on("data", onChunk);
    proc.stderr?.on("data", onChunk);
    this.exited = new Promise((r) => proc.on("exit", (code) => r(code)));
  }

  /** Resolves with the first line (already seen or future) matching `re`. */
  waitFor(re: RegExp, timeoutMs = 15_000): Promise<string> {
    const seen = this.output.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.name}: no line matching ${re} within ${timeoutMs} ms. Output:\n${this.output.slice(-30).join("\n")}`)), timeoutMs);
      this.waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  }

  /** Waits for a line matching `re` that appears after this call. */
  waitForNew(re: RegExp, timeoutMs = 15_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.name}: no new line matching ${re} within ${timeoutMs} ms. Output:\n${this.output.slice(-30).join("\n")}`)), timeoutMs);
      this.waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exited;
  }
}

export function spawnDaemon(name: "cloudcore" | "edgecore", args: string[], flavour: Flavour = "source", env: Record<string, string> = {}): Daemon {
  const [cmd, pre] = command(name, flavour);
  const proc = spawn(cmd, [...pre, ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  return new Daemon(proc, name);
}

export interface CloudEndpoints {
  api?: string;
  hub: string;
  https: string;
  metrics: string;
}

export interface Cloud {
  daemon: Daemon;
  dataDir: string;
  endpoints: CloudEndpoints;
}

/** Starts cloudcore on free loopback ports (or the given ones) and waits until it is ready. */
export async function startCloud(opts: { dataDir?: string; ports?: Partial<Record<keyof CloudEndpoints, string>>; flavour?: Flavour; args?: string[] } = {}): Promise<Cloud> {
  const dataDir = opts.dataDir ?? tmpDir("cloud");
  const p = opts.ports ?? {};
  const listen = (key: keyof CloudEndpoints) => p[key] ?? "127.0.0.1:0";
  const daemon = spawnDaemon(
    "cloudcore",
    ["--data-dir", dataDir, "--hub-listen", listen("hub"), "--https-listen", listen("https"), "--metrics-listen", listen("metrics"), "--api-listen", listen("api"), ...(opts.args ?? [])],
    opts.flavour,
  );
  await daemon.waitFor(/cloudcore ready/, 20_000);
  return { daemon, dataDir, endpoints: JSON.parse(readFileSync(join(dataDir, "endpoints.json"), "utf8")) };
}

export async function joinToken(cloudDataDir: string, flavour: Flavour = "source"): Promise<string> {
  const d = spawnDaemon("cloudcore", ["token", "--data-dir", cloudDataDir], flavour);
  const code = await d.exited;
  if (code !== 0) throw new Error(`cloudcore token exited ${code}: ${d.output.join("\n")}`);
  return d.output.join("").trim();
}

export interface Edge {
  daemon: Daemon;
  dataDir: string;
  endpoints: Record<string, string>;
}

/** `cloud` is cloudcore's endpoints (hub + certificate service) for a first join. */
export async function startEdge(opts: { node: string; cloud?: Pick<CloudEndpoints, "hub" | "https">; token?: string; dataDir?: string; flavour?: Flavour; args?: string[]; waitReady?: boolean }): Promise<Edge> {
  const dataDir = opts.dataDir ?? tmpDir(`edge-${opts.node}`);
  const args = ["--data-dir", dataDir, "--node-name", opts.node, "--metrics-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--metaserver-listen", "127.0.0.1:0"];
  if (opts.cloud) args.push("--cloudcore", opts.cloud.hub, "--cert-service", opts.cloud.https);
  if (opts.token) args.push("--token", opts.token);
  const daemon = spawnDaemon("edgecore", [...args, ...(opts.args ?? [])], opts.flavour);
  if (opts.waitReady === false) return { daemon, dataDir, endpoints: {} };
  await daemon.waitFor(/edgecore ready/, 20_000);
  return { daemon, dataDir, endpoints: JSON.parse(readFileSync(join(dataDir, "endpoints.json"), "utf8")) };
}

/** Reads one series from a Prometheus /metrics endpoint; undefined when absent. */
export async function metric(addr: string, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = await (await fetch(`http://${addr}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(",");
  const series = want ? `${name}{${want}}` : name;
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Polls `fn` until it returns a truthy value or the time is up. */
export async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`${what} not met within ${timeoutMs} ms (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Tests that need a system tool: skip loudly on a developer machine, fail in CI. */
export function requireTool(path: string, why: string): boolean {
  if (existsSync(path)) return true;
  if (process.env.CI === "true") throw new Error(`${path} is required in CI (${why})`);
  console.warn(`\n!!! SKIPPING: ${path} not found (${why}). Run .ci/run to install it. !!!\n`);
  return false;
}

/** Runs a command without blocking this process's event loop (in-process servers keep answering). */
export function run(cmd: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number; input?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
    p.stdin.end(opts.input ?? "");
  });
}

/** A TCP port that was free a moment ago on 127.0.0.1 (for servers that must be told their port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
