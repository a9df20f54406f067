/**
 * The `process` runtime: each container is a child process (command + args) in its own process
 * group (spawned detached), so that stopping it reaches everything it forked, as a container's
 * cgroup would. When the main process exits, the rest of its group is killed too (the way a pid
 * namespace ends with its init). No filesystem isolation: the image is recorded, never pulled.
 *
 * Every running group is recorded in `<stateDir>/<id>.json` (pid + kernel start time), and every
 * container carries `OUTPOST_RUNTIME_DIR=<stateDir>` in its environment. If edgecore dies without
 * stopping its pods, the next start calls recover(), which SIGKILLs the recorded groups (after
 * checking that the pid was not reused) and any process group whose environment names this state
 * dir (which also catches a process forked just before a crash, before its record was written), so
 * that Edged can start the pods fresh without duplicates. Adopting them instead is not possible:
 * their stdout pipes died with the old edgecore.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants as fsc, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, renameSync } from "node:fs";
import { constants as osc } from "node:os";
import { join, isAbsolute, resolve } from "node:path";
import { randomUUID } from "node:crypto";
import type { Logger } from "../../log.ts";
import { RotatingLog, DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES } from "./logs.ts";
import { StartError, type ContainerConfig, type ContainerStatus, type Runtime } from "./runtime.ts";

export interface ProcessRuntimeOptions {
  /** Where running process groups are recorded (e.g. `<dataDir>/runtime/process`). */
  stateDir: string;
  log?: Logger;
  logMaxBytes?: number;
  logMaxFiles?: number;
}

interface Entry {
  cfg: ContainerConfig;
  status: ContainerStatus;
  child?: ChildProcess;
  done: Promise<ContainerStatus>;
  resolveDone: (s: ContainerStatus) => void;
}

interface Record_ {
  id: string;
  pid: number;
  startTicks: string | null;
  podUid: string;
  container: string;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), null when unreadable. */
function startTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** Set in every container's environment: lets recover() find processes of this runtime's state dir. */
const ENV_TAG = "OUTPOST_RUNTIME_DIR";

function signalNumber(sig: string | null): number {
  if (!sig) return 0;
  return (osc.signals as Record<string, number>)[sig] ?? 0;
}

function killGroup(pgid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Resolves argv[0] like execvp does and throws StartError naming what is missing. */
export function resolveExecutable(file: string, env: Record<string, string>, cwd: string): string {
  const check = (p: string): boolean => {
    try {
      if (!statSync(p).isFile()) return false;
      accessSync(p, fsc.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (file === "") throw new StartError(`exec: "": empty command`);
  if (file.includes("/")) {
    const p = isAbsolute(file) ? file : resolve(cwd, file);
    if (!check(p)) throw new StartError(`exec: "${file}": no such file or directory (or not executable)`);
    return p;
  }
  for (const dir of (env.PATH ?? "").split(":")) {
    if (!dir) continue;
    const p = join(dir, file);
    if (check(p)) return p;
  }
  throw new StartError(`exec: "${file}": executable file not found in $PATH`);
}

export class ProcessRuntime implements Runtime {
  readonly name = "process";
  readonly version = "outpost";
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly opts: ProcessRuntimeOptions) {
    mkdirSync(opts.stateDir, { recursive: true });
  }

  async recover(): Promise<number> {
    let killed = 0;
    let names: string[] = [];
    try {
      names = readdirSync(this.opts.stateDir).filter((n) => n.endsWith(".json"));
    } catch {
      return 0;
    }
    for (const n of names) {
      const file = join(this.opts.stateDir, n);
      try {
        const rec = JSON.parse(readFileSync(file, "utf8")) as Record_;
        if (Number.isInteger(rec.pid) && rec.pid > 1) {
          const now = startTicks(rec.pid);
          // The leader still exists with another start time: the pid was reused, not ours.
          const reused = now !== null && rec.startTicks !== null && now !== rec.startTicks;
          if (!reused && killGroup(rec.pid, "SIGKILL")) {
            killed++;
            this.opts.log?.info("killed a process group left by a previous edgecore", { pid: rec.pid, pod: rec.podUid, container: rec.container });
          }
        }
      } catch (e) {
        this.opts.log?.warn("unreadable process record", { file, err: String(e) });
      }
      rmSync(file, { force: true });
    }
    killed += this.killByEnvironment();
    return killed;
  }

  /** SIGKILLs every process group led by a process whose environment names our state dir (Linux). */
  private killByEnvironment(): number {
    const tag = Buffer.from(`\0${ENV_TAG}=${this.opts.stateDir}\0`);
    let killed = 0;
    let names: string[] = [];
    try {
      names = readdirSync("/proc").filter((n) => /^\d+$/.test(n));
    } catch {
      return 0;
    }
    for (const n of names) {
      const pid = Number(n);
      if (pid === process.pid) continue;
      try {
        const environ = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${pid}/environ`)]);
        if (environ.indexOf(tag) < 0) continue;
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const pgid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
        if (pgid > 1 && killGroup(pgid, "SIGKILL")) {
          killed++;
          this.opts.log?.info("killed an unrecorded process left by a previous edgecore", { pid, pgid });
        }
      } catch {
        /* gone or not ours */
      }
    }
    return killed;
  }

  async createContainer(cfg: ContainerConfig): Promise<string> {
    const id = randomUUID();
    let resolveDone!: (s: ContainerStatus) => void;
    const done = new Promise<ContainerStatus>((r) => (resolveDone = r));
    this.entries.set(id, { cfg, status: { id, containerID: "", state: "created" }, done, resolveDone });
    return id;
  }

  async startContainer(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e) throw new Error(`no container ${id}`);
    if (e.status.state !== "created") throw new Error(`container ${id} already started`);
    const { cfg } = e;
    try {
      let isDir = false;
      try {
        isDir = statSync(cfg.workingDir).isDirectory();
      } catch {
        /* missing */
      }
      if (!isDir) throw new StartError(`workingDir "${cfg.workingDir}": no such directory`);
      const [file = "", ...args] = cfg.argv;
      const exe = resolveExecutable(file, cfg.env, cfg.workingDir);
      await this.spawn(e, exe, file, args);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const now = Date.now();
      e.status = { ...e.status, state: "exited", exitCode: 128, reason: "StartError", message, startedAt: now, finishedAt: now };
      e.resolveDone(e.status);
      throw err instanceof StartError ? err : new StartError(message);
    }
  }

  private spawn(e: Entry, exe: string, argv0: string, args: string[]): Promise<void> {
    const { cfg } = e;
    const log = new RotatingLog(cfg.logPath, this.opts.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES, this.opts.logMaxFiles ?? DEFAULT_LOG_MAX_FILES);
    return new Promise<void>((resolveStart, rejectStart) => {
      let child: ChildProcess;
      try {
        child = spawn(exe, args, { argv0, cwd: cfg.workingDir, env: { ...cfg.env, [ENV_TAG]: this.opts.stateDir }, detached: true, stdio: ["ignore", "pipe", "pipe"] });
      } catch (err) {
        log.close();
        rejectStart(new StartError(`exec: "${argv0}": ${(err as Error).message}`));
        return;
      }
      e.child = child;
      // Record at once (not on "spawn"): a crash right after the fork must not leave an unknown group.
      if (child.pid) this.record({ id: e.status.id, pid: child.pid, startTicks: startTicks(child.pid), podUid: cfg.podUid, container: cfg.name });
      let started = false;
      let open = 2;
      const streamDone = () => {
        if (--open === 0) log.close();
      };
      for (const s of [child.stdout, child.stderr]) {
        if (!s) {
          streamDone();
          continue;
        }
        s.on("data", (d: Buffer) => {
          try {
            log.write(d);
          } catch (err) {
            this.opts.log?.warn("container log write failed", { path: cfg.logPath, err: String(err) });
          }
        });
        s.on("close", streamDone);
        s.on("error", () => {});
      }
      child.once("error", (err) => {
        if (started) return;
        this.unrecord(e.status.id);
        log.close();
        rejectStart(new StartError(`exec: "${argv0}": ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      });
      child.once("spawn", () => {
        started = true;
        const pid = child.pid!;
        e.status = { ...e.status, state: "running", pid, containerID: `process://${pid}`, startedAt: Date.now() };
        resolveStart();
      });
      child.once("exit", (code, signal) => {
        if (!started) return;
        const pid = child.pid!;
        // The container ends with its main process: take the rest of its group with it.
        killGroup(pid, "SIGKILL");
        this.unrecord(e.status.id);
        e.status = {
          ...e.status,
          state: "exited",
          finishedAt: Date.now(),
          exitCode: code ?? 128 + signalNumber(signal),
          ...(signal ? { signal } : {}),
        };
        e.resolveDone(e.status);
      });
    });
  }

  async stopContainer(id: string, graceMs: number): Promise<void> {
    const e = this.entries.get(id);
    if (!e || e.status.state !== "running" || e.status.pid === undefined) return;
    const pid = e.status.pid;
    killGroup(pid, "SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = await Promise.race([
      e.done.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), Math.max(0, graceMs)))),
    ]);
    clearTimeout(timer);
    if (killed) {
      this.opts.log?.info("grace period over, killing", { pod: e.cfg.podName, container: e.cfg.name, pid });
      killGroup(pid, "SIGKILL");
      await e.done;
    }
  }

  async removeContainer(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e) return;
    if (e.status.state === "running") throw new Error(`container ${id} is running`);
    this.entries.delete(id);
  }

  status(id: string): ContainerStatus | null {
    const e = this.entries.get(id);
    return e ? { ...e.status } : null;
  }

  wait(id: string): Promise<ContainerStatus> {
    const e = this.entries.get(id);
    return e ? e.done : Promise.reject(new Error(`no container ${id}`));
  }

  logPath(id: string): string | null {
    return this.entries.get(id)?.cfg.logPath ?? null;
  }

  async close(): Promise<void> {
    await Promise.all([...this.entries.keys()].map((id) => this.stopContainer(id, 0)));
  }

  private record(rec: Record_): void {
    const file = join(this.opts.stateDir, `${rec.id}.json`);
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify(rec));
      renameSync(`${file}.tmp`, file);
    } catch (err) {
      this.opts.log?.warn("cannot record process", { file, err: String(err) });
    }
  }

  private unrecord(id: string): void {
    rmSync(join(this.opts.stateDir, `${id}.json`), { force: true });
  }
}
