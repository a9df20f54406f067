/**
 * bench/scale.ts: one cloudcore (embedded API) against N simulated edge nodes.
 *
 * Each simulated node speaks the real protocol over its own mutual-TLS WebSocket: it joins (join
 * token → CSR at the certificate service → certificate with CN system:node:<name>; one EC key is
 * shared, each node has its own CSR and certificate), sends keepalives (15 s), WebSocket pings (2 s)
 * and node status (10 s) as edgecore does by default, acks every downstream object message as
 * MetaManager does, answers a new pod with a Running pod status, confirms a pod's graceful deletion,
 * and the nodes bound to a Device report its twin every second. The nodes live in two worker
 * processes (this file with --worker) so that they do not share one event loop with the measuring.
 *
 * Measured per N: time to join and to connect all nodes, cloudcore's RSS and CPU (from /proc), and
 * under a steady 100 pod creates/s (each pod deleted again 30 s later, so the live set is bounded):
 * pod create (POST in the API) → pod message on its node p50/p99, twin report → DeviceStatus in
 * the API p50/p99, and RSS sampled every 10 s (first vs last third: growth).
 *
 *   bun bench/scale.ts [--quick] [--nodes 1000,5000,10000] [--steady 60,60,600]
 *   (--quick: 1,000 nodes, 20 s of steady load)
 */
import "reflect-metadata";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import tls from "node:tls";
import { parseAllDocuments } from "yaml";
import { encodeFrame, newMessage, parseFrame, responseTo, Op, type Message } from "../lib/message.ts";
import { DEFAULT_PROJECT_ID } from "../lib/hub/constants.ts";
import { InformerFactory, KubeClient, Resources, type KubeObject } from "../lib/kube/client/index.ts";
import { Daemon, joinToken, metric, ROOT, tmpDir } from "../tests/helpers/daemons.ts";
import { percentile, printTable, quick, recordResults, type Row } from "./lib.ts";
import { pool, rssOf, wall } from "./lib-pods.ts";

const WORKERS = 2;
const KEEPALIVE_MS = 15_000;
const PING_MS = 2_000;
const NODE_STATUS_MS = 10_000;
const TWIN_MS = 1_000;
const POD_RATE = 100; // creates per second
const POD_LIFETIME_MS = 30_000; // each pod is deleted this long after its create
const SAMPLE_MS = quick ? 5_000 : 10_000;

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};


// =============================================================================================
// the simulated edge nodes (worker process)
// =============================================================================================

interface WorkerConfig {
  hub: string;
  https: string;
  token: string;
  nodes: string[];
  /** node → its devices (`<ns>/<name>`) */
  devices: Record<string, string[]>;
}

function out(line: string): void {
  process.stdout.write(line + "\n");
}

function hostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

/** One request on its own TLS connection (the certificate service answers one per connection). */
function certRequest(addr: string, path: string, opts: { ca?: string; headers?: Record<string, string>; body?: Uint8Array }): Promise<Buffer> {
  const { host, port } = hostPort(addr);
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host, port, ...(opts.ca ? { ca: opts.ca } : { rejectUnauthorized: false }) }, () => {
      const hdrs = Object.entries({ Host: addr, Connection: "close", "Content-Length": String(opts.body?.length ?? 0), ...opts.headers }).map(([k, v]) => `${k}: ${v}\r\n`);
      sock.write(`GET ${path} HTTP/1.1\r\n${hdrs.join("")}\r\n`);
      if (opts.body) sock.write(opts.body);
    });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(new Error(`${path}: no answer in 60 s`)), 60_000);
    sock.on("data", (c: Buffer) => chunks.push(c));
    sock.on("error", (e: Error) => (clearTimeout(timer), reject(e)));
    sock.on("close", () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const end = all.indexOf("\r\n\r\n");
      const head = all.subarray(0, Math.max(0, end)).toString();
      if (!/^HTTP\/1\.[01] 200/.test(head)) return reject(new Error(`${path}: ${head.split("\r\n")[0] || "no response"} ${all.subarray(end + 4, end + 200).toString()}`));
      resolve(all.subarray(end + 4));
    });
  });
}

/** Client side of a WebSocket on a TLS socket: masked frames out, unmasked frames in. */
class SimLink {
  private buf: Buffer = Buffer.alloc(0);
  open = false;
  onText: (text: string) => void = () => {};
  onClose: (why: string) => void = () => {};

  constructor(readonly sock: tls.TLSSocket) {}

  static connect(addr: string, node: string, creds: { ca: string; cert: string; key: string }): Promise<SimLink> {
    const { host, port } = hostPort(addr);
    return new Promise((resolve, reject) => {
      const sock = tls.connect({ host, port, ca: creds.ca, cert: creds.cert, key: creds.key });
      const link = new SimLink(sock);
      let head = Buffer.alloc(0);
      const timer = setTimeout(() => sock.destroy(new Error("handshake timeout (30 s)")), 30_000);
      const fail = (e: Error) => {
        clearTimeout(timer);
        if (!link.open) reject(e);
      };
      sock.once("secureConnect", () => {
        const key = randomBytes(16).toString("base64");
        sock.write(
          `GET /${DEFAULT_PROJECT_ID}/${node}/events HTTP/1.1\r\nHost: ${addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nnode_id: ${node}\r\nproject_id: ${DEFAULT_PROJECT_ID}\r\n\r\n`,
        );
      });
      sock.on("data", (chunk: Buffer) => {
        if (link.open) return link.onData(chunk);
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        const status = head.subarray(0, head.indexOf("\r\n")).toString();
        if (!status.includes(" 101 ")) return sock.destroy(new Error(`upgrade refused: ${head.toString().slice(0, 300)}`));
        clearTimeout(timer);
        link.open = true;
        resolve(link);
        if (head.length > end + 4) link.onData(head.subarray(end + 4));
      });
      sock.on("error", fail);
      sock.on("close", () => {
        fail(new Error("closed before the upgrade"));
        if (link.open) {
          link.open = false;
          link.onClose("closed");
        }
      });
    });
  }

  send(text: string, opcode = 0x1): void {
    if (!this.open) return;
    const payload = Buffer.from(text);
    const len = payload.length;
    const hdr = len < 126 ? 2 : len < 65536 ? 4 : 10;
    const f = Buffer.allocUnsafe(hdr + 4 + len);
    f[0] = 0x80 | opcode;
    if (hdr === 2) f[1] = 0x80 | len;
    else if (hdr === 4) (f[1] = 0x80 | 126), f.writeUInt16BE(len, 2);
    else (f[1] = 0x80 | 127), f.writeUInt32BE(0, 2), f.writeUInt32BE(len, 6);
    const mask = (Math.random() * 0xffffffff) >>> 0;
    f.writeUInt32BE(mask, hdr);
    const m = [f[hdr]!, f[hdr + 1]!, f[hdr + 2]!, f[hdr + 3]!];
    for (let i = 0; i < len; i++) f[hdr + 4 + i] = payload[i]! ^ m[i & 3]!;
    this.sock.write(f);
  }

  ping(): void {
    this.send("", 0x9);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let off = 0;
    for (;;) {
      if (this.buf.length - off < 2) break;
      const op = this.buf[off]! & 0x0f;
      let len = this.buf[off + 1]! & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (this.buf.length - off < 4) break;
        len = this.buf.readUInt16BE(off + 2);
        hdr = 4;
      } else if (len === 127) {
        if (this.buf.length - off < 10) break;
        len = this.buf.readUInt32BE(off + 6);
        hdr = 10;
      }
      if (this.buf.length - off < hdr + len) break;
      const payload = this.buf.subarray(off + hdr, off + hdr + len);
      off += hdr + len;
      if (op === 0x1) this.onText(payload.toString("utf8")); // the hub never fragments
      else if (op === 0x8) this.sock.end();
    }
    this.buf = off >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }
}

interface SimNode {
  name: string;
  link?: SimLink;
  nextKeepalive: number;
  nextPing: number;
  nextStatus: number;
  pods: Set<string>;
}

async function worker(cfg: WorkerConfig): Promise<void> {
  const { x509 } = await import("../lib/pki/x509.ts");
  const { generateEcKey, pemEncode, ecdsaP256 } = await import("../lib/pki/keys.ts");
  const { splitToken } = await import("../lib/pki/token.ts");
  const { jwt } = splitToken(cfg.token);
  const caPem = pemEncode("CERTIFICATE", await certRequest(cfg.https, "/ca.crt", {}));
  const key = await generateEcKey();
  const keyPem = pemEncode("EC PRIVATE KEY", key.sec1Der);

  // ---- join: one CSR and certificate per node -----------------------------------------------
  const certs = new Map<string, string>();
  let joinFailures = 0;
  await pool(cfg.nodes.length, 16, async (i) => {
    const name = cfg.nodes[i]!;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `O=system:nodes, CN=system:node:${name}`, keys: { privateKey: key.privateKey, publicKey: key.publicKey }, signingAlgorithm: ecdsaP256 });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const der = await certRequest(cfg.https, "/edge.crt", { ca: caPem, headers: { Nodename: name, Authorization: `Bearer ${jwt}` }, body: new Uint8Array(csr.rawData) });
        certs.set(name, pemEncode("CERTIFICATE", der));
        break;
      } catch (e) {
        if (attempt === 2) (joinFailures++, out(`E join ${name}: ${(e as Error).message}`));
      }
    }
    if (certs.size % 500 === 0) out(`J ${certs.size}`);
  });
  out(`J ${certs.size} ${joinFailures}`);

  // ---- connect and behave ---------------------------------------------------------------------
  const nodes: SimNode[] = cfg.nodes.filter((n) => certs.has(n)).map((name) => ({ name, nextKeepalive: 0, nextPing: 0, nextStatus: 0, pods: new Set() }));
  const stats = { connected: 0, disconnects: 0, downstream: 0, acksIn: 0, connectFailures: 0 };
  const nodeStatus = (name: string) => ({
    metadata: { name, labels: { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" } },
    status: {
      capacity: { cpu: "4", memory: "8039616Ki", pods: "110" },
      allocatable: { cpu: "4", memory: "7937216Ki", pods: "110" },
      addresses: [{ type: "InternalIP", address: "10.0.0.1" }, { type: "Hostname", address: name }],
      nodeInfo: { kubeletVersion: "v1.31.0-outpost", operatingSystem: "linux", architecture: "amd64", containerRuntimeVersion: "containerd://1.7" },
    },
  });
  const up = (n: SimNode, msg: Message) => n.link?.send(encodeFrame(msg));
  const onDown = (n: SimNode, text: string) => {
    let msg: Message;
    try {
      msg = parseFrame(text);
    } catch {
      return;
    }
    stats.downstream++;
    if (msg.route.operation === Op.response) return void stats.acksIn++;
    up(n, responseTo(msg, "OK")); // as MetaManager: stored, acked
    const [ns, type, podName] = msg.route.resource.split("/");
    if (type !== "pod" || !podName) return;
    const pod = msg.content as { metadata?: { uid?: string; deletionTimestamp?: string } } | null;
    const key = `${ns}/${podName}`;
    if (msg.route.operation === Op.delete) return void n.pods.delete(key);
    if (pod?.metadata?.deletionTimestamp) {
      // as edged: the containers are gone, the pod may go
      up(n, newMessage({ source: "edged", group: "resource", operation: Op.delete, resource: `${ns}/pod/${podName}` }, { metadata: { uid: pod.metadata.uid } }));
      return;
    }
    if (n.pods.has(key)) return;
    n.pods.add(key);
    out(`R ${podName} ${wall().toFixed(1)}`);
    const now = new Date().toISOString();
    up(
      n,
      newMessage(
        { source: "edged", group: "resource", operation: Op.update, resource: `${ns}/podstatus/${podName}` },
        { metadata: { uid: pod?.metadata?.uid }, status: { phase: "Running", hostIP: "10.0.0.1", podIP: "10.0.0.2", startTime: now, conditions: [{ type: "Ready", status: "True", lastTransitionTime: now }], containerStatuses: [{ name: "c", ready: true, restartCount: 0, image: "nginx", imageID: "", started: true, state: { running: { startedAt: now } } }] } },
      ),
    );
  };

  const connect = async (n: SimNode): Promise<boolean> => {
    try {
      const link = await SimLink.connect(cfg.hub, n.name, { ca: caPem, cert: certs.get(n.name)!, key: keyPem });
      n.link = link;
      link.onText = (t) => onDown(n, t);
      link.onClose = () => {
        stats.connected--;
        stats.disconnects++;
        out(`X ${n.name}`);
        n.link = undefined;
      };
      stats.connected++;
      const now = Date.now();
      // spread the periodic traffic as independently started edges would
      n.nextKeepalive = now + Math.random() * KEEPALIVE_MS;
      n.nextPing = now + Math.random() * PING_MS;
      n.nextStatus = now;
      up(n, newMessage({ source: "websocket", group: "resource", operation: Op.keepalive, resource: "node" }, "ping"));
      return true;
    } catch (e) {
      stats.connectFailures++;
      if (stats.connectFailures <= 5) out(`E connect ${n.name}: ${(e as Error).message}`);
      return false;
    }
  };
  const t0 = performance.now();
  await pool(nodes.length, 64, async (i) => {
    await connect(nodes[i]!);
    if ((i + 1) % 500 === 0) out(`P ${stats.connected}`);
  });
  out(`C ${stats.connected} ${((performance.now() - t0) / 1000).toFixed(2)}`);

  const devices = Object.entries(cfg.devices);
  const tick = setInterval(() => {
    const now = Date.now();
    for (const n of nodes) {
      if (!n.link) continue;
      if (now >= n.nextPing) (n.link.ping(), (n.nextPing = now + PING_MS));
      if (now >= n.nextKeepalive) (up(n, newMessage({ source: "websocket", group: "resource", operation: Op.keepalive, resource: "node" }, "ping")), (n.nextKeepalive = now + KEEPALIVE_MS));
      if (now >= n.nextStatus) (up(n, newMessage({ source: "edged", group: "resource", operation: Op.update, resource: `null/nodestatus/${n.name}` }, nodeStatus(n.name))), (n.nextStatus = now + NODE_STATUS_MS));
    }
  }, 100);
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const twins = setInterval(() => {
    for (const [node, ids] of devices) {
      const n = byName.get(node);
      if (!n?.link) continue;
      for (const id of ids) {
        const value = wall().toFixed(1); // the parent reads the latency off the value itself
        up(n, newMessage({ source: "twin", group: "resource", operation: Op.update, resource: `device/${id}/twin/edge_updated` }, { event_id: "", timestamp: Date.now(), twin: { temperature: { actual: { value, metadata: { timestamp: Date.now() } }, metadata: { type: "float" } } } }));
      }
    }
  }, TWIN_MS);

  // the parent asks for stats ("s") and ends the worker ("q", or closing stdin)
  const rl = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => {
    rl.on("line", (l) => (l === "s" ? out(`S ${JSON.stringify(stats)}`) : l === "q" ? resolve() : undefined));
    rl.on("close", () => resolve());
  });
  clearInterval(tick);
  clearInterval(twins);
  for (const n of nodes) n.link?.sock.destroy();
  process.exit(0);
}

// =============================================================================================
// the measuring side
// =============================================================================================

interface Worker {
  proc: ChildProcess;
  joined: number;
  joinFailures: number;
  connected: number;
  connectS: number;
  done: { joined: Promise<void>; connected: Promise<void> };
  stats?: (s: Record<string, number>) => void;
}

function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in USER_HZ (100)
  } catch {
    return NaN;
  }
}

function hwmMiB(pid: number): number {
  try {
    return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
  } catch {
    return NaN;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `sh -c 'ulimit -n 65536; exec …'`: 10,000 sockets need more descriptors than the usual 1024. */
function spawnLimited(args: string[], env: Record<string, string> = {}): ChildProcess {
  const cmd = ["ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn);", "exec", ...[process.execPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`)].join(" ");
  return spawn("sh", ["-c", cmd], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
}

async function runScale(n: number, steadyS: number): Promise<Row[]> {
  const dataDir = tmpDir(`scale-${n}`);
  const marker = `outpost-scale-${process.pid}-${n}`;
  // SCALE_CLOUD_PROF=<dir>: cloudcore writes a CPU profile (markdown) there when it stops
  const prof = process.env.SCALE_CLOUD_PROF ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${process.env.SCALE_CLOUD_PROF}`] : [];
  const cloudProc = spawnLimited([...prof, join(ROOT, "cloudcore.ts"), "--data-dir", dataDir, "--hub-listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"], { OUTPOST_BENCH_MARKER: marker });
  const cloud = new Daemon(cloudProc, "cloudcore");
  const workers: Worker[] = [];
  try {
    await cloud.waitFor(/cloudcore ready/, 30_000);
    const pid = cloudProc.pid!;
    const endpoints = JSON.parse(readFileSync(join(dataDir, "endpoints.json"), "utf8")) as { hub: string; https: string; metrics: string };
    const token = await joinToken(dataDir);
    const client = KubeClient.fromKubeconfig(join(dataDir, "kubeconfig"));
    const rssStart = rssOf(pid);

    // devices: a model and a few Devices bound to nodes spread over the range
    const names = Array.from({ length: n }, (_, i) => `sim-${String(i).padStart(5, "0")}`);
    const deviceCount = quick ? 5 : 10;
    const devices: Record<string, string[]> = {};
    const docs = parseAllDocuments(readFileSync(join(ROOT, "examples/thermostat.yaml"), "utf8")).map((d) => d.toJS() as KubeObject & { spec: Record<string, unknown> });
    const model = docs.find((d) => d.kind === "DeviceModel")!;
    const deviceTpl = docs.find((d) => d.kind === "Device")!;
    await client.create(Resources.devicemodels, model);
    for (let d = 0; d < deviceCount; d++) {
      const node = names[Math.floor((d * n) / deviceCount)]!;
      const dev = JSON.parse(JSON.stringify(deviceTpl).replace('"PORT"', "1502")) as KubeObject & { spec: Record<string, unknown> };
      dev.metadata = { name: `thermo-${d}`, namespace: "default" };
      dev.spec.nodeName = node;
      (dev.spec.protocol as { configData: { port: number } }).configData.port = 1502;
      await client.create(Resources.devices, dev);
      (devices[node] ??= []).push(`default/thermo-${d}`);
    }

    // Node objects as a watcher (kubectl get nodes -w) sees them: when is every node Ready
    const factory = new InformerFactory(client);
    const nodeInf = factory.informer(Resources.nodes);
    await nodeInf.waitForSync(30_000);
    const ready = new Set<string>();
    const onNode = (o: KubeObject) => {
      const ok = (o as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
      if (ok) ready.add(o.metadata?.name ?? "");
      else ready.delete(o.metadata?.name ?? "");
    };
    nodeInf.on("add", onNode);
    nodeInf.on("update", (_a, b) => onNode(b));

    // ---- join + connect ------------------------------------------------------------------------
    const cpu0 = cpuSeconds(pid);
    const t0 = performance.now();
    const received = new Map<string, number>();
    for (let w = 0; w < WORKERS; w++) {
      const mine = names.filter((_, i) => i % WORKERS === w);
      const cfg: WorkerConfig = { hub: endpoints.hub, https: endpoints.https, token, nodes: mine, devices: Object.fromEntries(Object.entries(devices).filter(([k]) => mine.includes(k))) };
      const proc = spawnLimited([join(ROOT, "bench/scale.ts"), "--worker", marker], { SCALE_WORKER: JSON.stringify(cfg) });
      let joinedR!: () => void, connectedR!: () => void;
      const wk: Worker = { proc, joined: 0, joinFailures: 0, connected: 0, connectS: 0, done: { joined: new Promise((r) => (joinedR = r)), connected: new Promise((r) => (connectedR = r)) } };
      createInterface({ input: proc.stdout! }).on("line", (l) => {
        const [k, a, b] = l.split(" ");
        if (k === "R") received.set(a!, Number(b));
        else if (k === "J") ((wk.joined = Number(a)), b !== undefined && ((wk.joinFailures = Number(b)), joinedR()));
        else if (k === "P") wk.connected = Number(a);
        else if (k === "C") ((wk.connected = Number(a)), (wk.connectS = Number(b)), connectedR());
        else if (k === "S") wk.stats?.(JSON.parse(l.slice(2)));
        else if (k === "E") console.error(`  [worker ${w}] ${l.slice(2)}`);
      });
      createInterface({ input: proc.stderr! }).on("line", (l) => console.error(`  [worker ${w}] ${l}`));
      workers.push(wk);
    }
    const joinDeadline = sleep(20 * 60_000).then(() => {
      throw new Error("joins did not finish in 20 min");
    });
    await Promise.race([Promise.all(workers.map((w) => w.done.joined)), joinDeadline]);
    const joinS = (performance.now() - t0) / 1000;
    const joinCpu = cpuSeconds(pid) - cpu0;
    const cpu1 = cpuSeconds(pid);
    const t1 = performance.now();
    await Promise.race([Promise.all(workers.map((w) => w.done.connected)), joinDeadline]);
    const connectS = (performance.now() - t1) / 1000;
    const connectCpu = cpuSeconds(pid) - cpu1;
    const joined = workers.reduce((s, w) => s + w.joined, 0);
    // all connected as the cloud sees it (and registered: a Node object each)
    let cloudConnected = 0;
    for (let i = 0; i < 600; i++) {
      cloudConnected = (await metric(endpoints.metrics, "outpost_cloudhub_connected_nodes")) ?? 0;
      if (cloudConnected >= joined) break;
      await sleep(100);
    }
    const allConnectedS = (performance.now() - t0) / 1000;
    console.error(`  N=${n}: joined ${joined} in ${joinS.toFixed(1)} s, connected ${cloudConnected} ${connectS.toFixed(1)} s later`);
    // the registration wave (Node objects, status, leases) ends before the steady phase starts
    for (let i = 0; i < 3000 && ready.size < joined; i++) await sleep(100);
    const allReadyS = (performance.now() - t0) / 1000;
    console.error(`  N=${n}: ${ready.size} nodes Ready in the API after ${allReadyS.toFixed(1)} s`);
    await sleep(quick ? 2000 : 5000);
    const rssConnected = rssOf(pid);

    // ---- steady load -----------------------------------------------------------------------------
    const statuses = factory.informer(Resources.devicestatuses, { namespace: "default" });
    await statuses.waitForSync(30_000);
    const twinLat: number[] = [];
    const lastValue = new Map<string, string>();
    const onStatus = (o: KubeObject) => {
      const now = wall();
      const v = (o as { status?: { twins?: { propertyName: string; reported?: { value: string } }[] } }).status?.twins?.find((t) => t.propertyName === "temperature")?.reported?.value;
      const name = o.metadata?.name ?? "";
      if (v && lastValue.get(name) !== v) {
        lastValue.set(name, v);
        if (steadyOn) twinLat.push(now - Number(v));
      }
    };
    let steadyOn = false;
    statuses.on("add", onStatus);
    statuses.on("update", (_a, b) => onStatus(b));

    const created = new Map<string, number>();
    const createErrors: string[] = [];
    const deletes: { name: string; at: number }[] = [];
    const samples: { t: number; rss: number; cpuPct: number; connected: number }[] = [];
    let inFlight = 0;
    let podSeq = 0;
    const steadyMs = steadyS * 1000;
    const cpuS0 = cpuSeconds(pid);
    const tS = performance.now();
    steadyOn = true;
    let lastCpu = cpuS0;
    let lastT = tS;
    const sampler = setInterval(async () => {
      const now = performance.now();
      const c = cpuSeconds(pid);
      const connected = (await metric(endpoints.metrics, "outpost_cloudhub_connected_nodes").catch(() => NaN)) ?? NaN;
      samples.push({ t: (now - tS) / 1000, rss: rssOf(pid), cpuPct: ((c - lastCpu) / ((now - lastT) / 1000)) * 100, connected });
      const s = samples.at(-1)!;
      console.error(`  N=${n} t=${s.t.toFixed(0)}s rss=${s.rss.toFixed(0)} MiB cpu=${s.cpuPct.toFixed(0)} % connected=${s.connected} created=${created.size} received=${received.size} inflight=${inFlight}`);
      lastCpu = c;
      lastT = now;
    }, SAMPLE_MS);
    const podsPerTick = POD_RATE / 100;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const elapsed = performance.now() - tS;
        if (elapsed >= steadyMs) return (clearInterval(timer), resolve());
        // bounded: a create/delete in flight each; when the API falls behind, the rate drops (reported)
        const due = Math.floor((elapsed / 1000) * POD_RATE) - podSeq;
        for (let k = 0; k < Math.min(due, podsPerTick * 5) && inFlight < 200; k++) {
          const i = podSeq++;
          const name = `p-${i}`;
          const node = names[(i * 7919) % n]!;
          inFlight++;
          const at = wall();
          created.set(name, at);
          client
            .create(Resources.pods, { apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "default" }, spec: { nodeName: node, containers: [{ name: "c", image: "nginx" }] } })
            .then(() => deletes.push({ name, at: Date.now() + POD_LIFETIME_MS }))
            .catch((e) => (created.delete(name), createErrors.push(String(e))))
            .finally(() => inFlight--);
        }
        while (deletes.length && deletes[0]!.at <= Date.now() && inFlight < 200) {
          const d = deletes.shift()!;
          inFlight++;
          client
            .delete(Resources.pods, d.name, { namespace: "default" })
            .catch(() => {})
            .finally(() => inFlight--);
        }
      }, 10);
    });
    const steadyWall = (performance.now() - tS) / 1000;
    const steadyCpu = cpuSeconds(pid) - cpuS0;
    // stragglers: up to 15 s for the last pods to arrive
    for (let i = 0; i < 150 && [...created.keys()].some((k) => !received.has(k)); i++) await sleep(100);
    clearInterval(sampler);
    steadyOn = false;
    const lat = [...created].filter(([k]) => received.has(k)).map(([k, t]) => received.get(k)! - t).sort((a, b) => a - b);
    const lost = [...created.keys()].filter((k) => !received.has(k)).length;
    twinLat.sort((a, b) => a - b);
    const workerStats = await Promise.all(
      workers.map(
        (w) =>
          new Promise<Record<string, number>>((r) => {
            w.stats = r;
            w.proc.stdin!.write("s\n");
            setTimeout(() => r({}), 3000);
          }),
      ),
    );
    const disconnects = workerStats.reduce((s, x) => s + (x.disconnects ?? 0), 0);
    const acksIn = workerStats.reduce((s, x) => s + (x.acksIn ?? 0), 0);
    const warnings = cloud.output.filter((l) => /"level":"(warn|error)"|\b(WARN|ERROR)\b/.test(l));
    if (warnings.length) console.error(`  cloudcore logged ${warnings.length} warnings/errors, e.g.:\n    ${warnings.slice(0, 5).join("\n    ")}`);
    const third = Math.max(1, Math.floor(samples.length / 3));
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const rssFirst = avg(samples.slice(0, third).map((s) => s.rss));
    const rssLast = avg(samples.slice(-third).map((s) => s.rss));
    if (createErrors.length) console.error(`  ${createErrors.length} pod creates failed, e.g. ${createErrors[0]}`);
    await factory.stop();
    client.close();

    const p = `n${n}_`;
    return [
      { metric: `${p}nodes_connected`, outpost: cloudConnected, unit: "nodes", higherIsBetter: true },
      { metric: `${p}join_all`, outpost: joinS, unit: "s" },
      { metric: `${p}connect_all`, outpost: connectS, unit: "s" },
      { metric: `${p}join_and_connect_all`, outpost: allConnectedS, unit: "s" },
      { metric: `${p}all_nodes_ready_in_api`, outpost: allReadyS, unit: "s" },
      { metric: `${p}cloud_cpu_join`, outpost: (joinCpu / joinS) * 100, unit: "% core" },
      { metric: `${p}cloud_cpu_connect`, outpost: (connectCpu / connectS) * 100, unit: "% core" },
      { metric: `${p}cloud_rss_idle`, outpost: rssStart, unit: "MiB" },
      { metric: `${p}cloud_rss_connected`, outpost: rssConnected, unit: "MiB" },
      { metric: `${p}steady_seconds`, outpost: steadyWall, unit: "s" },
      { metric: `${p}pod_creates_per_s`, outpost: created.size / steadyWall, unit: "pod/s", higherIsBetter: true },
      { metric: `${p}pod_delivery_p50`, outpost: percentile(lat, 50), unit: "ms" },
      { metric: `${p}pod_delivery_p99`, outpost: percentile(lat, 99), unit: "ms" },
      { metric: `${p}pod_delivery_max`, outpost: lat.at(-1) ?? NaN, unit: "ms" },
      { metric: `${p}pods_not_delivered`, outpost: lost, unit: "pods" },
      { metric: `${p}twin_to_status_p50`, outpost: percentile(twinLat, 50), unit: "ms" },
      { metric: `${p}twin_to_status_p99`, outpost: percentile(twinLat, 99), unit: "ms" },
      { metric: `${p}cloud_cpu_steady`, outpost: (steadyCpu / steadyWall) * 100, unit: "% core" },
      { metric: `${p}cloud_rss_steady_first_third`, outpost: rssFirst, unit: "MiB" },
      { metric: `${p}cloud_rss_steady_last_third`, outpost: rssLast, unit: "MiB" },
      { metric: `${p}cloud_rss_peak`, outpost: hwmMiB(pid), unit: "MiB" },
      { metric: `${p}node_disconnects`, outpost: disconnects, unit: "links" },
      { metric: `${p}upstream_acks_to_nodes`, outpost: acksIn, unit: "acks", higherIsBetter: true },
    ];
  } finally {
    for (const w of workers) {
      w.proc.stdin?.end("q\n");
      setTimeout(() => w.proc.kill("SIGKILL"), 5000).unref();
    }
    await Promise.all(workers.map((w) => new Promise((r) => (w.proc.exitCode !== null ? r(null) : w.proc.on("exit", r)))));
    await cloud.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const ns = (arg("nodes") ?? (quick ? "1000" : "1000,5000,10000")).split(",").map(Number);
  const steady = (arg("steady") ?? (quick ? "20" : "60,60,600")).split(",").map(Number);
  const rows: Row[] = [];
  for (const [i, n] of ns.entries()) {
    const r = await runScale(n, steady[i] ?? steady.at(-1)!);
    printTable(`scale: ${n} simulated edge nodes (2 worker processes), ${POD_RATE} pod creates/s for ${(r.find((x) => x.metric.endsWith("steady_seconds"))?.outpost ?? 0).toFixed(0)} s, one cloudcore with the embedded API`, r);
    recordResults("scale", r);
    rows.push(...r);
  }
  process.exit(0);
}

if (process.argv.includes("--worker")) await worker(JSON.parse(process.env.SCALE_WORKER ?? "{}") as WorkerConfig);
else await main();
