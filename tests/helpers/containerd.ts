/**
 * A private containerd for tests and benches: root, state, socket and config under one temp dir,
 * the CRI plugin on (restrict_oom_score_adj, as needed where the OOM score cannot be lowered),
 * overlayfs snapshotter (native when overlay cannot mount here), the sandbox image and a busybox
 * image built locally (tests/helpers/oci.ts) and imported with `ctr`.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Daemon, eventually, run, tmpDir } from "./daemons.ts";
import { buildBusyboxImageTar } from "./oci.ts";

export const BUSYBOX_IMAGE = "docker.io/outpost/busybox:test";
export const PAUSE_IMAGE = "docker.io/outpost/pause:test";

export interface Containerd {
  daemon: Daemon;
  dir: string;
  socket: string;
  /** `unix://<socket>` for --cri-endpoint. */
  endpoint: string;
  snapshotter: string;
  ctr(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Stops every pod sandbox through ctr, stops containerd, unmounts and removes the temp dir. */
  stop(): Promise<void>;
}

/** Whether an overlay mount works in `dir` (it does not on some nested/overlay roots). */
async function overlayWorks(dir: string): Promise<boolean> {
  const base = join(dir, "overlay-probe");
  for (const d of ["lower", "upper", "work", "merged"]) mkdirSync(join(base, d), { recursive: true });
  const r = await run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work`, `${base}/merged`]);
  if (r.code === 0) await run("umount", [`${base}/merged`]);
  rmSync(base, { recursive: true, force: true });
  return r.code === 0;
}

function config(dir: string, socket: string, snapshotter: string): string {
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "${socket}"

[ttrpc]
  address = "${socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "${snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${dir}/cni/bin"
    conf_dir = "${dir}/cni/net.d"
`;
}

/** SIGKILLs the shims of this containerd and everything under them (a safety net after a failed test). */
function killShims(socket: string): void {
  const procs: { pid: number; ppid: number; cmd: string }[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const stat = readFileSync(`/proc/${n}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      procs.push({ pid: Number(n), ppid, cmd: readFileSync(`/proc/${n}/cmdline`, "utf8").replaceAll("\0", " ") });
    } catch {
      /* gone */
    }
  }
  const doomed = new Set(procs.filter((p) => p.cmd.startsWith("/usr/bin/containerd-shim") && p.cmd.includes(`-address ${socket} `)).map((p) => p.pid));
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) if (doomed.has(p.ppid) && !doomed.has(p.pid)) (doomed.add(p.pid), (grew = true));
  }
  for (const pid of doomed) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
}

/** Whether an ELF64 executable names a program interpreter (is dynamically linked). */
function hasInterpreter(path: string): boolean {
  const b = readFileSync(path);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const size = b.readUInt16LE(0x36);
  const count = b.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (b.readUInt32LE(phoff + i * size) === 3 /* PT_INTERP */) return true;
  return false;
}

/** Whether this machine can run the CRI tests: root, containerd, runc, ctr and busybox-static. */
export function containerdMissing(): string | null {
  if (process.getuid?.() !== 0) return "not root";
  for (const p of ["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/ctr", "/bin/busybox"]) if (!existsSync(p)) return `${p} missing`;
  // The image has no libraries: busybox must be the static one (package busybox-static).
  if (hasInterpreter("/bin/busybox")) return "/bin/busybox is not static (install busybox-static)";
  return null;
}

export async function startContainerd(): Promise<Containerd> {
  const dir = tmpDir("containerd");
  const socket = join(dir, "containerd.sock");
  const snapshotter = (await overlayWorks(dir)) ? "overlayfs" : "native";
  mkdirSync(join(dir, "cni", "net.d"), { recursive: true });
  mkdirSync(join(dir, "cni", "bin"), { recursive: true });
  const cfgPath = join(dir, "config.toml");
  writeFileSync(cfgPath, config(dir, socket, snapshotter));
  const proc = spawn("/usr/bin/containerd", ["--config", cfgPath, "--log-level", "warn"], { stdio: ["ignore", "pipe", "pipe"] });
  const daemon = new Daemon(proc, "containerd");
  const ctr = (...args: string[]) => run("/usr/bin/ctr", ["--address", socket, "--namespace", "k8s.io", ...args], { timeoutMs: 120_000 });
  await eventually(async () => existsSync(socket) && (await ctr("version")).code === 0, 20_000, "containerd answers");
  const image = buildBusyboxImageTar(join(dir, "images.tar"), [
    { name: BUSYBOX_IMAGE, cmd: ["sh"] },
    { name: PAUSE_IMAGE, entrypoint: ["/bin/sleep"], cmd: ["2147483647"] },
  ]);
  const imp = await ctr("images", "import", "--snapshotter", snapshotter, image);
  if (imp.code !== 0) throw new Error(`ctr images import failed: ${imp.stderr}${imp.stdout}`);
  return {
    daemon,
    dir,
    socket,
    endpoint: `unix://${socket}`,
    snapshotter,
    ctr,
    async stop() {
      // Every task first (the shims outlive containerd), then containerd, then leftover mounts.
      const tasks = await ctr("tasks", "ls", "-q");
      for (const id of tasks.stdout.split("\n").filter(Boolean)) await ctr("tasks", "kill", "-s", "SIGKILL", id);
      await Bun.sleep(300);
      for (const id of tasks.stdout.split("\n").filter(Boolean)) await ctr("tasks", "delete", "-f", id);
      await daemon.stop("SIGTERM");
      killShims(socket);
      const mounts = readFileSync("/proc/self/mounts", "utf8")
        .split("\n")
        .map((l) => l.split(" ")[1] ?? "")
        .filter((m) => m.startsWith(dir))
        .sort((a, b) => b.length - a.length);
      for (const m of mounts) await run("umount", ["-l", m]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
