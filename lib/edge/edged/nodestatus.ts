/** The node's status as kubelet would report it, read from the real machine. */
import { readFileSync, statfsSync } from "node:fs";
import { arch, availableParallelism, hostname, networkInterfaces, platform, release, totalmem } from "node:os";

export const KUBELET_VERSION = "v1.32.0-outpost";

/** First non-internal IPv4 address of the machine, 127.0.0.1 when there is none. */
export function nodeIPv4(): string {
  for (const addrs of Object.values(networkInterfaces()))
    for (const a of addrs ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  return "127.0.0.1";
}

function readTrim(path: string): string {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return "";
  }
}

function osImage(): string {
  const text = readTrim("/etc/os-release");
  const m = /^PRETTY_NAME=(.*)$/m.exec(text);
  if (!m) return platform();
  const raw = m[1]!.trim();
  return raw.replace(/^"(.*)"$/, "$1").replace(/^'(.*)'$/, "$1");
}

const GOARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64", loong64: "loong64" };

export interface NodeStatusInput {
  nodeName: string;
  dataDir: string;
  nodeIP: string;
  runtimeName: string;
  runtimeVersion: string;
  /** When the Ready condition last changed (edged start). */
  readySince: number;
  /** Overrides `<runtimeName>://<runtimeVersion>` (cri: what the runtime says, e.g. `containerd://1.6.20`). */
  containerRuntimeVersion?: string;
  /** Images on the node (cri), reported as status.images. */
  images?: { names: string[]; sizeBytes: number }[];
}

const ts = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

export function nodeStatus(input: NodeStatusInput): Record<string, unknown> {
  let storageKi = 0;
  try {
    const fs = statfsSync(input.dataDir);
    storageKi = Math.floor((fs.blocks * fs.bsize) / 1024);
  } catch {
    /* leave 0 */
  }
  const resources = {
    cpu: String(availableParallelism()),
    memory: `${Math.floor(totalmem() / 1024)}Ki`,
    pods: "110",
    "ephemeral-storage": `${storageKi}Ki`,
  };
  const now = Date.now();
  return {
    capacity: { ...resources },
    allocatable: { ...resources },
    nodeInfo: {
      machineID: readTrim("/etc/machine-id") || readTrim("/var/lib/dbus/machine-id"),
      systemUUID: readTrim("/sys/class/dmi/id/product_uuid"),
      bootID: readTrim("/proc/sys/kernel/random/boot_id"),
      kernelVersion: release(),
      osImage: osImage(),
      containerRuntimeVersion: input.containerRuntimeVersion ?? `${input.runtimeName}://${input.runtimeVersion}`,
      kubeletVersion: KUBELET_VERSION,
      kubeProxyVersion: "",
      operatingSystem: platform(),
      architecture: GOARCH[arch()] ?? arch(),
    },
    addresses: [
      { type: "InternalIP", address: input.nodeIP },
      { type: "Hostname", address: hostname() },
    ],
    conditions: [
      {
        type: "Ready",
        status: "True",
        reason: "EdgeReady",
        message: "edge is posting ready status",
        lastHeartbeatTime: ts(now),
        lastTransitionTime: ts(input.readySince),
      },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
    ...(input.images ? { images: input.images } : {}),
  };
}

export function nodeLabels(): Record<string, string> {
  return {
    "node-role.kubernetes.io/edge": "",
    "node-role.kubernetes.io/agent": "",
  };
}
