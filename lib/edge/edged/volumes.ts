/**
 * Pod volumes materialised under `<dataDir>/pods/<uid>/volumes/<name>`:
 * - configMap / secret / downwardAPI / projected: a directory of files (keys or items, modes from
 *   items[].mode / defaultMode, default 0644), each file replaced atomically (write + rename) and
 *   files of removed keys deleted, so re-materialising after an update is safe while the process runs;
 * - emptyDir: an empty directory, kept across container restarts, removed with the pod;
 * - hostPath: a symlink to the host path (created first for DirectoryOrCreate / FileOrCreate,
 *   checked for Directory / File / Socket / CharDevice / BlockDevice).
 *
 * A process has no mount namespace, so mounts are made findable two ways (see docs/pods.md):
 * env `OUTPOST_MOUNT_<VOLUME>` = host path of the mount (subPath applied), and a per-container
 * symlink farm `<dataDir>/pods/<uid>/rootfs/<container><mountPath>` → that host path, with
 * `OUTPOST_ROOTFS` pointing at the farm (also the default working directory).
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, symlinkSync, writeFileSync, closeSync, openSync, readlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { ConfigError, expandVars, fieldValue, objectData, type PodEnvContext } from "./env.ts";
import type { Container, Volume } from "./pod.ts";

/** A volume that cannot be set up now (missing source, bad host path): the pod waits in ContainerCreating. */
export class VolumeError extends Error {}

const DEFAULT_MODE = 0o644;

export function mountEnvName(volumeName: string): string {
  return `OUTPOST_MOUNT_${volumeName.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

type FileSet = Map<string, { data: Buffer; mode: number }>;

function keysToFiles(data: Map<string, Buffer>, items: { key: string; path: string; mode?: number | null | undefined }[] | null | undefined, defMode: number, what: string, optional: boolean, out: FileSet): void {
  if (!items) {
    for (const [k, d] of data) if (!k.includes("/") && k !== ".." && k !== ".") out.set(k, { data: d, mode: defMode });
    return;
  }
  for (const it of items) {
    const d = data.get(it.key);
    if (d === undefined) {
      if (optional) continue;
      throw new VolumeError(`${what}: key "${it.key}" not found`);
    }
    out.set(it.path, { data: d, mode: it.mode ?? defMode });
  }
}

async function fileSetFor(vol: Volume, ctx: PodEnvContext): Promise<FileSet> {
  const ns = ctx.pod.metadata.namespace;
  const files: FileSet = new Map();
  const fromObject = async (kind: "configmap" | "secret", name: string, items: Parameters<typeof keysToFiles>[1], mode: number, optional: boolean) => {
    const obj = await ctx.get(kind, ns, name);
    if (obj == null) {
      if (optional) return;
      throw new VolumeError(`${kind} "${name}" not found`);
    }
    keysToFiles(objectData(obj, kind), items, mode, `${kind} "${name}"`, optional, files);
  };
  const downward = (items: { path: string; fieldRef?: { fieldPath: string } | null; mode?: number | null }[] | null | undefined, mode: number) => {
    for (const it of items ?? []) {
      if (!it.fieldRef) throw new VolumeError(`downwardAPI item "${it.path}": only fieldRef is supported`);
      try {
        files.set(it.path, { data: Buffer.from(fieldValue(it.fieldRef, ctx)), mode: it.mode ?? mode });
      } catch (e) {
        throw new VolumeError(`downwardAPI item "${it.path}": ${(e as Error).message}`);
      }
    }
  };
  if (vol.configMap) {
    await fromObject("configmap", vol.configMap.name, vol.configMap.items, vol.configMap.defaultMode ?? DEFAULT_MODE, vol.configMap.optional === true);
  } else if (vol.secret) {
    await fromObject("secret", vol.secret.secretName, vol.secret.items, vol.secret.defaultMode ?? DEFAULT_MODE, vol.secret.optional === true);
  } else if (vol.downwardAPI) {
    downward(vol.downwardAPI.items, vol.downwardAPI.defaultMode ?? DEFAULT_MODE);
  } else if (vol.projected) {
    const mode = vol.projected.defaultMode ?? DEFAULT_MODE;
    for (const src of vol.projected.sources ?? []) {
      if (src.configMap) await fromObject("configmap", src.configMap.name, src.configMap.items, mode, src.configMap.optional === true);
      else if (src.secret) await fromObject("secret", src.secret.name, src.secret.items, mode, src.secret.optional === true);
      else if (src.downwardAPI) downward(src.downwardAPI.items, mode);
      // serviceAccountToken: the edge has no token to project; the source is skipped.
    }
  }
  return files;
}

function listFiles(dir: string, rel = ""): string[] {
  let out: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(join(dir, rel));
  } catch {
    return out;
  }
  for (const n of names) {
    const r = rel ? `${rel}/${n}` : n;
    const st = lstatSync(join(dir, r));
    if (st.isDirectory()) out = out.concat(listFiles(dir, r));
    else out.push(r);
  }
  return out;
}

function removeEmptyDirs(dir: string, top = true): void {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const p = join(dir, n);
    if (lstatSync(p).isDirectory()) removeEmptyDirs(p, false);
  }
  if (!top && readdirSync(dir).length === 0) rmdirSync(dir);
}

function writeFileSet(dir: string, files: FileSet): void {
  mkdirSync(dir, { recursive: true });
  for (const [rel, f] of files) {
    const p = join(dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    const tmp = join(dirname(p), `..${Math.random().toString(36).slice(2)}.tmp`);
    writeFileSync(tmp, f.data, { mode: f.mode });
    chmodSync(tmp, f.mode);
    renameSync(tmp, p);
  }
  for (const rel of listFiles(dir)) if (!files.has(rel)) rmSync(join(dir, rel), { force: true });
  removeEmptyDirs(dir);
}

function setupHostPath(vol: NonNullable<Volume["hostPath"]>, name: string): void {
  const p = vol.path;
  const type = vol.type ?? "";
  const st = (() => {
    try {
      return statSync(p);
    } catch {
      return null;
    }
  })();
  const fail = (what: string) => {
    throw new VolumeError(`hostPath volume "${name}": ${p} ${what}`);
  };
  switch (type) {
    case "DirectoryOrCreate":
      if (!st) mkdirSync(p, { recursive: true, mode: 0o755 });
      else if (!st.isDirectory()) fail("is not a directory");
      return;
    case "FileOrCreate":
      if (!st) {
        mkdirSync(dirname(p), { recursive: true });
        closeSync(openSync(p, "a", 0o644));
      } else if (!st.isFile()) fail("is not a file");
      return;
    case "Directory":
      if (!st?.isDirectory()) fail("is not an existing directory");
      return;
    case "File":
      if (!st?.isFile()) fail("is not an existing file");
      return;
    case "Socket":
      if (!st?.isSocket()) fail("is not an existing socket");
      return;
    case "CharDevice":
      if (!st?.isCharacterDevice()) fail("is not an existing character device");
      return;
    case "BlockDevice":
      if (!st?.isBlockDevice()) fail("is not an existing block device");
      return;
    default:
      return;
  }
}

/** Points `link` at `target`, replacing whatever was there (atomically for an existing symlink). */
function forceSymlink(target: string, link: string): void {
  try {
    if (readlinkSync(link) === target) return;
  } catch {
    /* not a symlink */
  }
  mkdirSync(dirname(link), { recursive: true });
  const tmp = `${link}..${Math.random().toString(36).slice(2)}`;
  symlinkSync(target, tmp);
  try {
    renameSync(tmp, link);
  } catch {
    rmSync(link, { recursive: true, force: true });
    renameSync(tmp, link);
  }
}

/**
 * Sets up every volume of the pod (idempotent; call again after a configmap/secret changes).
 * Returns volume name → host path of the volume.
 */
export async function materializeVolumes(podDir: string, ctx: PodEnvContext): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const root = join(podDir, "volumes");
  mkdirSync(root, { recursive: true });
  for (const vol of ctx.pod.spec.volumes ?? []) {
    const dir = join(root, vol.name);
    if (vol.emptyDir) {
      mkdirSync(dir, { recursive: true });
      out.set(vol.name, dir);
    } else if (vol.hostPath) {
      setupHostPath(vol.hostPath, vol.name);
      forceSymlink(vol.hostPath.path, dir);
      out.set(vol.name, vol.hostPath.path);
    } else {
      let files: FileSet;
      try {
        files = await fileSetFor(vol, ctx);
      } catch (e) {
        if (e instanceof VolumeError || e instanceof ConfigError) throw new VolumeError(`volume "${vol.name}": ${e.message.replace(/^hostPath volume "[^"]*": /, "")}`);
        throw e;
      }
      writeFileSet(dir, files);
      out.set(vol.name, dir);
    }
  }
  return out;
}

export interface ContainerMounts {
  /** `OUTPOST_MOUNT_*` variables and `OUTPOST_ROOTFS`. */
  env: Record<string, string>;
  rootfs: string;
  mounts: { hostPath: string; containerPath: string; readOnly: boolean }[];
}

/** The symlink farm and mount variables of one container. `env` is used for subPathExpr. */
export function containerMounts(podDir: string, container: Container, volumes: Map<string, string>, env: Record<string, string>): ContainerMounts {
  const rootfs = join(podDir, "rootfs", container.name);
  mkdirSync(rootfs, { recursive: true });
  const out: ContainerMounts = { env: { OUTPOST_ROOTFS: rootfs }, rootfs, mounts: [] };
  for (const m of container.volumeMounts ?? []) {
    const base = volumes.get(m.name);
    if (base === undefined) throw new VolumeError(`volumeMount "${m.name}": no such volume`);
    let sub = m.subPath ?? "";
    if (!sub && m.subPathExpr) {
      sub = expandVars(m.subPathExpr, (n) => env[n]);
      if (sub.startsWith("/") || sub.split("/").includes("..")) throw new VolumeError(`volumeMount "${m.name}": subPathExpr expands to an unsafe path ${JSON.stringify(sub)}`);
    }
    const host = sub ? join(base, sub) : base;
    if (sub && !existsSync(host)) mkdirSync(host, { recursive: true });
    forceSymlink(host, join(rootfs, m.mountPath));
    out.env[mountEnvName(m.name)] = host;
    out.mounts.push({ hostPath: host, containerPath: m.mountPath, readOnly: m.readOnly === true });
  }
  return out;
}
