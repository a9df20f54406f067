/** Wires edgecore's parts together; the entry script stays thin. */
import { existsSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { ConfigError, parseListen, type OptionSpec } from "../config.ts";
import { dataFile, dialAddress, writeJsonAtomic } from "../daemon.ts";
import type { Logger } from "../log.ts";
import { Metrics, serveMetrics } from "../metrics.ts";
import { DEFAULT_INBOX_LIMIT, Router } from "../router.ts";
import { openStore } from "../store/db.ts";
import { releaseStartupCodePages } from "../runtime/trim.ts";
import { EdgeHub } from "../hub/edgehub.ts";
import { DEFAULT_MAX_FRAME_BYTES, NODE_NAME_RE } from "../hub/constants.ts";
import { joinCloud, loadEdgeCredentials, renewIfDue } from "../pki/edgecreds.ts";
import { edgeMigrations, type EdgeDb } from "./store.ts";
import { MetaManager } from "./metamanager.ts";
import { UpstreamQueue, upstreamMigrations } from "./upstream.ts";
import { MetaServer } from "./metaserver.ts";
// edged's parts one by one, not its index: the cri runtime (gRPC, protobufjs) loads only with --runtime cri
import { Edged } from "./edged/edged.ts";
import { ProcessRuntime } from "./edged/process-runtime.ts";
import { DEFAULT_CRI_ENDPOINT, type Runtime } from "./edged/runtime.ts";
import { DeviceTwin, deviceTwinMigrations } from "./devicetwin/index.ts";
import { EventBus, INBOUND_LIMIT } from "./eventbus/index.ts";
import { MapperHost, PluginRegistry } from "./mapperhost/index.ts";

export const edgeOptions: OptionSpec[] = [
  { flag: "config", type: "string", help: "YAML config file; its keys are the camelCase flag names" },
  { flag: "data-dir", type: "string", default: "./edgecore-data", help: "credentials, edgecore.db and endpoints.json live here" },
  { flag: "cloudcore", type: "string", help: "CloudHub address HOST:PORT (needed at the first join; remembered after)" },
  { flag: "cert-service", type: "string", help: "certificate service HOST:PORT (default: cloudcore's host, hub port + 2)" },
  { flag: "token", type: "string", help: "join token from `cloudcore token` (needed only for the first join)" },
  { flag: "node-name", type: "string", help: "this node's name in Kubernetes (default: the host name)" },
  { flag: "mqtt", type: "string", default: "internal", help: "internal (embedded broker) or mqtt://HOST:PORT" },
  { flag: "mqtt-listen", type: "listen", default: "127.0.0.1:1883", help: "embedded MQTT broker address" },
  { flag: "metaserver-listen", type: "listen", default: "127.0.0.1:10550", help: "MetaServer (local list/watch API) address" },
  { flag: "metrics-listen", type: "listen", default: "127.0.0.1:9092", help: "Prometheus /metrics address" },
  { flag: "runtime", type: "string", default: "process", help: "pod runtime: process or cri" },
  { flag: "cri-endpoint", type: "string", default: DEFAULT_CRI_ENDPOINT, help: "CRI socket of the container runtime (--runtime cri)" },
  { flag: "node-status-interval", type: "int", default: 10, help: "seconds between node status reports" },
  { flag: "restart-backoff-ms", type: "int", default: 10_000, help: "first container restart back-off; doubles up to 5 min, as the kubelet's" },
  { flag: "mapper", type: "list", default: [], help: "extra mapper plugin module to load" },
  { flag: "heartbeat", type: "int", default: 15, help: "seconds between keepalives to the cloud" },
  { flag: "ping-interval-ms", type: "int", default: 2000, help: "WebSocket ping period on the hub link" },
  { flag: "pong-timeout-ms", type: "int", default: 4000, help: "how long a missing pong may last before the link counts as dead" },
  { flag: "reconnect-base-ms", type: "int", default: 250, help: "first reconnect delay; grows 1.5x per failure, with jitter" },
  { flag: "reconnect-max-ms", type: "int", default: 30_000, help: "longest reconnect delay" },
  { flag: "queue-limit", type: "int", default: 10_000, help: "upstream messages kept in memory while the link is down (keepalives are not kept)" },
  { flag: "upstream-limit", type: "int", default: 10_000, help: "pod/node status and twin reports kept in edgecore.db until the cloud acks them" },
  { flag: "upstream-retry-ms", type: "int", default: 5000, help: "resend period of a status or twin report the cloud has not acked" },
  { flag: "max-frame-bytes", type: "int", default: DEFAULT_MAX_FRAME_BYTES, help: "largest hub message accepted from the cloud" },
  { flag: "router-inbox-limit", type: "int", default: DEFAULT_INBOX_LIMIT, help: "messages each module's inbox holds; past it the router refuses more (counted)" },
  { flag: "eventbus-queue-limit", type: "int", default: INBOUND_LIMIT, help: "MQTT messages waiting for the device twin; past it new ones are dropped (counted)" },
  { flag: "release-startup-pages", type: "bool", default: true, help: "once connected, hand the executable's code pages touched only while starting back to the kernel (Linux)" },
  { flag: "mqtt-max-payload-bytes", type: "int", default: 1 << 20, help: "largest device-twin request payload accepted over MQTT" },
];

export interface EdgeConfig {
  dataDir: string;
  cloudcore?: string;
  certService?: string;
  token?: string;
  nodeName?: string;
  mqtt: string;
  mqttListen: string;
  metaserverListen: string;
  metricsListen: string;
  runtime: string;
  criEndpoint: string;
  mapper: string[];
  nodeStatusInterval: number;
  restartBackoffMs: number;
  heartbeat: number;
  pingIntervalMs: number;
  pongTimeoutMs: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  queueLimit: number;
  upstreamLimit: number;
  upstreamRetryMs: number;
  maxFrameBytes: number;
  routerInboxLimit: number;
  eventbusQueueLimit: number;
  mqttMaxPayloadBytes: number;
  releaseStartupPages: boolean;
  logFormat: string;
  logLevel: string;
}

/** Where this node joined: kept so a restart needs neither token nor flags. */
const JoinRecordSchema = v.object({ node: v.pipe(v.string(), v.regex(NODE_NAME_RE)), hub: v.string(), certService: v.string() });
type JoinRecord = v.InferOutput<typeof JoinRecordSchema>;

function readJoinRecord(dataDir: string): JoinRecord | null {
  const path = dataFile(dataDir, "join.json");
  if (!existsSync(path)) return null;
  const r = v.safeParse(JoinRecordSchema, JSON.parse(readFileSync(path, "utf8")));
  if (!r.success) throw new ConfigError(`${path}: ${r.issues[0]?.message}`);
  return r.output;
}

function defaultNodeName(): string {
  return hostname().toLowerCase().replace(/[^a-z0-9.-]/g, "-").replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "") || "edge-node";
}

/** hub `host:port` → certificate service `host:(port+2)`, as KubeEdge lays them out. */
function certServiceFor(hub: string): string {
  const i = hub.lastIndexOf(":");
  return `${hub.slice(0, i)}:${Number(hub.slice(i + 1)) + 2}`;
}

export interface RunningEdge {
  nodeName: string;
  hub: EdgeHub;
  router: Router;
  metrics: Metrics;
  endpoints: Record<string, string>;
  stop(): Promise<void>;
}

export async function startEdge(cfg: EdgeConfig, log: Logger): Promise<RunningEdge> {
  if (cfg.routerInboxLimit < 1) throw new ConfigError("--router-inbox-limit: must be at least 1");
  if (cfg.eventbusQueueLimit < 1) throw new ConfigError("--eventbus-queue-limit: must be at least 1");
  // plugins first: a bad --mapper stops the start before anything joins or listens
  const registry = new PluginRegistry();
  for (const path of cfg.mapper) {
    const plugin = await registry.loadExternal(path);
    log.info("mapper plugin loaded", { protocol: plugin.protocol, path });
  }
  const stored = readJoinRecord(cfg.dataDir);
  const nodeName = cfg.nodeName ?? stored?.node ?? defaultNodeName();
  if (!NODE_NAME_RE.test(nodeName)) throw new ConfigError(`--node-name: "${nodeName}" is not a valid Kubernetes node name`);
  if (stored && stored.node !== nodeName) throw new ConfigError(`--node-name: this data dir belongs to node "${stored.node}", not "${nodeName}"`);
  const hubAddr = cfg.cloudcore ?? stored?.hub;
  if (!hubAddr) throw new ConfigError("--cloudcore: required for the first join");
  parseListen(hubAddr);
  const certService = cfg.certService ?? (cfg.cloudcore ? certServiceFor(cfg.cloudcore) : stored!.certService);

  if (!loadEdgeCredentials(cfg.dataDir)) {
    if (!cfg.token) throw new ConfigError("--token: required for the first join (run `cloudcore token` on the cloud)");
    log.info("joining cloud", { certService, node: nodeName });
    await joinCloud({ httpsAddr: certService, token: cfg.token, nodeName, dataDir: cfg.dataDir, log });
    log.info("node certificate stored", { node: nodeName });
  }
  writeJsonAtomic(dataFile(cfg.dataDir, "join.json"), { node: nodeName, hub: hubAddr, certService } satisfies JoinRecord);

  const store = await openStore<EdgeDb>(dataFile(cfg.dataDir, "edgecore.db"), { ...edgeMigrations, ...deviceTwinMigrations, ...upstreamMigrations });
  const metrics = new Metrics();
  const router = new Router(log.child("router"), cfg.routerInboxLimit, metrics);
  const hub = new EdgeHub({
    server: hubAddr,
    nodeName,
    credentials: () => {
      const c = loadEdgeCredentials(cfg.dataDir);
      if (!c) throw new Error("node credentials missing from the data dir");
      return c;
    },
    log: log.child("edgehub"),
    metrics,
    heartbeatMs: cfg.heartbeat * 1000,
    pingIntervalMs: cfg.pingIntervalMs,
    pongTimeoutMs: cfg.pongTimeoutMs,
    reconnectBaseMs: cfg.reconnectBaseMs,
    reconnectMaxMs: cfg.reconnectMaxMs,
    queueLimit: cfg.queueLimit,
    reliable: new UpstreamQueue({ raw: store.raw, log: log.child("upstream"), metrics, limit: cfg.upstreamLimit, retryMs: cfg.upstreamRetryMs }),
    maxFrameBytes: cfg.maxFrameBytes,
  });
  router.register(hub);
  const meta = new MetaManager(store.db);
  router.register(meta);
  let runtime: Runtime;
  if (cfg.runtime === "process") runtime = new ProcessRuntime({ stateDir: join(cfg.dataDir, "runtime", "process"), log: log.child("runtime") });
  else if (cfg.runtime === "cri") runtime = new (await import("./edged/cri-runtime.ts")).CriRuntime({ endpoint: cfg.criEndpoint, nodeName, log: log.child("runtime") });
  else throw new ConfigError(`--runtime: "${cfg.runtime}" is not a runtime (process or cri)`);
  const edged = new Edged({ nodeName, dataDir: cfg.dataDir, runtime, meta, log: log.child("edged"), metrics, nodeStatusIntervalMs: cfg.nodeStatusInterval * 1000, restartBackoffBaseMs: cfg.restartBackoffMs });
  router.register(edged);
  // twin requests go from the bus straight to the twin, a drained burst per transaction
  const bus = new EventBus({
    mqtt: cfg.mqtt,
    listen: cfg.mqttListen,
    metrics,
    log: log.child("eventbus"),
    inboundLimit: cfg.eventbusQueueLimit,
    maxPayloadBytes: cfg.mqttMaxPayloadBytes,
    twin: { handleBatch: (msgs) => twin.handleBatch(msgs) },
  });
  // the twin publishes straight to the bus: a burst of mapper reports must not overflow a router inbox
  const twin = new DeviceTwin({ store, nodeName, publisher: bus, log: log.child("twin") });
  router.register(twin);
  router.register(bus);
  let trimTimer: ReturnType<typeof setTimeout> | undefined;
  hub.on("connected", () => {
    // what changed while the link was down converges: pod statuses and twins go up again
    edged.reportAll();
    twin.resync();
    // the first connection ends the start: what only starting needed can leave memory
    if (cfg.releaseStartupPages && !trimTimer) {
      trimTimer = setTimeout(() => {
        void releaseStartupCodePages().then((bytes) => {
          if (bytes !== null) log.debug("startup code pages released", { mib: Math.round(bytes / 1048576) });
        });
      }, 2000);
      trimTimer.unref?.();
    }
  });
  await router.startAll();
  const mappers = new MapperHost({ twin, meta, registry, log: log.child("mapper") });
  mappers.start();
  const metaServerListen = parseListen(cfg.metaserverListen);
  const metaServer = new MetaServer(meta, log.child("metaserver"));
  const metaServerPort = await metaServer.start(metaServerListen);

  // certificate rotation (kubeedge-wire.md): renewed at 80 % of its lifetime with the current
  // certificate, then the hub link is re-dialled with the new one (the old link closes once the new
  // one is up). Checked when due, at least hourly; a failure is retried after a tenth of what is left.
  let rotation: ReturnType<typeof setTimeout> | undefined;
  let rotationStopped = false;
  const scheduleRotation = (afterFailure = false) => {
    if (rotationStopped) return;
    const c = loadEdgeCredentials(cfg.dataDir);
    if (!c) return;
    const now = Date.now();
    const start = c.notBefore.getTime();
    const end = c.notAfter.getTime();
    const due = start + (end - start) * 0.8;
    const delay = afterFailure ? Math.min(60_000, Math.max(1000, (end - now) / 10)) : Math.min(3600_000, Math.max(250, due - now));
    rotation = setTimeout(() => void rotate(), delay);
    rotation.unref?.();
  };
  const rotate = async () => {
    let failed = false;
    try {
      if (await renewIfDue({ httpsAddr: certService, nodeName, dataDir: cfg.dataDir, log })) {
        log.info("node certificate renewed", { notAfter: loadEdgeCredentials(cfg.dataDir)?.notAfter.toISOString() });
        hub.reconnect("node certificate renewed");
      }
    } catch (e) {
      failed = true;
      log.warn("certificate renewal failed, will retry", { err: String(e) });
    }
    scheduleRotation(failed);
  };
  scheduleRotation();

  const metricsListen = parseListen(cfg.metricsListen);
  const metricsServer = (await serveMetrics(metrics, metricsListen)).server;
  const metricsPort = (metricsServer.address() as { port: number }).port;

  return {
    nodeName,
    hub,
    router,
    metrics,
    endpoints: { mqtt: bus.address, metaserver: dialAddress(metaServerListen, metaServerPort), metrics: dialAddress(metricsListen, metricsPort) },
    async stop() {
      // the daemon exits by force 4.5 s after SIGTERM: the hub's wait for acks ends well before
      hub.stopDeadline = Date.now() + 3800;
      rotationStopped = true;
      clearTimeout(rotation);
      clearTimeout(trimTimer);
      await mappers.stop();
      await metaServer.stop();
      await router.stopAll();
      await new Promise<void>((r) => metricsServer.close(() => r()));
      await store.close();
    },
  };
}
