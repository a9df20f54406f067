/**
 * A tiny OCI image built locally (no registry is reachable in tests): one gzipped layer holding
 * Debian's static busybox as /bin/busybox plus applet symlinks, written as an OCI image layout
 * (oci-layout, index.json, blobs/sha256/…) packed in a tar file that `ctr images import` reads.
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

/** Applets linked to /bin/busybox in the image. */
export const APPLETS = ["sh", "sleep", "cat", "env", "echo", "ls", "true", "false", "test", "mkdir", "date", "printf", "id", "pwd", "kill", "wc", "grep", "touch", "rm"];

interface TarEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  data?: Buffer;
  target?: string;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

/** One ustar header block. */
function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512, 0);
  const name = e.type === "dir" && !e.path.endsWith("/") ? `${e.path}/` : e.path;
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: path too long: ${name}`);
  h.write(name, 0, 100, "utf8");
  h.write(octal(e.mode, 8), 100, 8, "ascii");
  h.write(octal(0, 8), 108, 8, "ascii"); // uid
  h.write(octal(0, 8), 116, 8, "ascii"); // gid
  h.write(octal(size, 12), 124, 12, "ascii");
  h.write(octal(1_700_000_000, 12), 136, 12, "ascii"); // mtime: fixed, so digests are reproducible
  h.write("        ", 148, 8, "ascii"); // checksum placeholder
  h.write(e.type === "file" ? "0" : e.type === "dir" ? "5" : "2", 156, 1, "ascii");
  if (e.target) h.write(e.target, 157, 100, "utf8");
  h.write("ustar\0", 257, 6, "ascii");
  h.write("00", 263, 2, "ascii");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + " ", 148, 8, "ascii");
  return h;
}

/** A tar archive of the entries (regular files, directories, symlinks). */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === "file" ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0);
    parts.push(header(e, data.length), data);
    const pad = (512 - (data.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad, 0));
  }
  parts.push(Buffer.alloc(1024, 0));
  return Buffer.concat(parts);
}

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

export interface ImageSpec {
  /** Full name as containerd shows it, e.g. `docker.io/outpost/busybox:test`. */
  name: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
}

/**
 * Writes an OCI image layout tar holding every image of `images` (all share the busybox layer)
 * and returns its path. `busybox` is the static busybox binary to put in the layer.
 */
export function buildBusyboxImageTar(outFile: string, images: ImageSpec[], busybox = "/bin/busybox"): string {
  const entries: TarEntry[] = [
    { path: "bin", type: "dir", mode: 0o755 },
    { path: "bin/busybox", type: "file", mode: 0o755, data: readFileSync(busybox) },
    ...APPLETS.map((a): TarEntry => ({ path: `bin/${a}`, type: "symlink", mode: 0o777, target: "busybox" })),
    ...["etc", "tmp", "proc", "sys", "dev", "root", "var"].map((d): TarEntry => ({ path: d, type: "dir", mode: d === "tmp" ? 0o1777 : 0o755 })),
    { path: "etc/passwd", type: "file", mode: 0o644, data: Buffer.from("root:x:0:0:root:/root:/bin/sh\n") },
    { path: "etc/group", type: "file", mode: 0o644, data: Buffer.from("root:x:0:\n") },
  ];
  const layer = tar(entries);
  const layerGz = gzipSync(layer);
  const blobs = new Map<string, Buffer>();
  const blob = (b: Buffer) => {
    const d = sha256(b);
    blobs.set(d, b);
    return { digest: `sha256:${d}`, size: b.length };
  };
  const layerDesc = { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...blob(layerGz) };
  const manifests = images.map((img) => {
    const config = Buffer.from(
      JSON.stringify({
        architecture: process.arch === "arm64" ? "arm64" : "amd64",
        os: "linux",
        config: {
          Env: img.env ?? ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
          ...(img.entrypoint ? { Entrypoint: img.entrypoint } : {}),
          Cmd: img.cmd ?? ["sh"],
          WorkingDir: "/",
        },
        rootfs: { type: "layers", diff_ids: [`sha256:${sha256(layer)}`] },
        history: [{ created_by: "outpost test helper: busybox-static" }],
      }),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...blob(config) },
        layers: [layerDesc],
      }),
    );
    const tag = img.name.slice(img.name.lastIndexOf(":") + 1);
    return {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      ...blob(manifest),
      platform: { architecture: process.arch === "arm64" ? "arm64" : "amd64", os: "linux" },
      annotations: { "io.containerd.image.name": img.name, "org.opencontainers.image.ref.name": tag },
    };
  });
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }));
  const layout: TarEntry[] = [
    { path: "oci-layout", type: "file", mode: 0o644, data: Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })) },
    { path: "index.json", type: "file", mode: 0o644, data: index },
    { path: "blobs", type: "dir", mode: 0o755 },
    { path: "blobs/sha256", type: "dir", mode: 0o755 },
    ...[...blobs].map(([d, b]): TarEntry => ({ path: `blobs/sha256/${d}`, type: "file", mode: 0o644, data: b })),
  ];
  writeFileSync(outFile, tar(layout));
  return outFile;
}
