/** Wires cloudcore's parts together; the entry script stays thin. */
import { hostname, networkInterfaces } from "node:os";
import type { Server } from "node:http";
import { ConfigError, parseListen, type OptionSpec } from "../config.ts";
import { dataFile, dialAddress } from "../daemon.ts";
import type { Logger } from "../log.ts";
import { Metrics, serveMetrics } from "../metrics.ts";
import { DEFAULT_INBOX_LIMIT, Router } from "../router.ts";
import { openStore } from "../store/db.ts";
import { CloudHub } from "../hub/cloudhub.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../hub/constants.ts";
import { loadOrCreateCa } from "../pki/ca.ts";
import { startCertService } from "../pki/certservice.ts";
import { apiserverMigrations, startApiServer, type ApiServer } from "../kube/apiserver/index.ts";
import { MAX_BODY_BYTES } from "../kube/apiserver/validate.ts";
import { InformerFactory, KubeClient, inClusterAvailable } from "../kube/client/index.ts";
import { EdgeController } from "./edgecontroller.ts";
import { DeviceController } from "./devicecontroller.ts";
import { Outbox, outboxMigrations } from "./outbox.ts";
import { NodeRevocation, revocationMigrations } from "./revocation.ts";
import { QueryServer } from "./queryserver.ts";

export const cloudOptions: OptionSpec[] = [
  { flag: "config", type: "string", help: "YAML config file; its keys are the camelCase flag names" },
  { flag: "data-dir", type: "string", default: "./cloudcore-data", help: "CA, database, kubeconfig and endpoints.json live here" },
  { flag: "kubeconfig", type: "string", help: "use the cluster of this kubeconfig instead of the embedded API" },
  { flag: "api-listen", type: "listen", default: "127.0.0.1:6443", help: "embedded Kubernetes API address" },
  { flag: "hub-listen", type: "listen", default: "0.0.0.0:10000", help: "CloudHub WebSocket (TLS) address" },
  { flag: "https-listen", type: "listen", default: "0.0.0.0:10002", help: "certificate service (HTTPS) address" },
  { flag: "metrics-listen", type: "listen", default: "127.0.0.1:9091", help: "Prometheus /metrics address" },
  { flag: "advertise-address", type: "list", default: [], help: "extra IP or DNS name edges use to reach cloudcore (added to the server certificate)" },
  { flag: "max-frame-bytes", type: "int", default: DEFAULT_MAX_FRAME_BYTES, help: "largest hub message accepted from an edge" },
  { flag: "hub-rate-limit", type: "int", default: 1000, help: "messages a second each edge session may send; past it the hub stops reading that socket until its bucket refills (0 = no limit)" },
  { flag: "hub-rate-burst", type: "int", default: 2000, help: "messages an edge session may send at once before --hub-rate-limit applies" },
  { flag: "hub-max-buffered-bytes", type: "int", default: 0, help: "unsent bytes an edge session may hold before its node is disconnected as a slow consumer (0 = 4 x --max-frame-bytes)" },
  { flag: "keepalive-timeout", type: "int", default: 30, help: "seconds without a message before an edge session is closed" },
  { flag: "node-grace-period", type: "int", default: 40, help: "seconds without contact before an edge node goes Ready=Unknown" },
  { flag: "token-ttl", type: "int", default: 12 * 3600, help: "lifetime of join tokens, seconds" },
  { flag: "cert-validity-days", type: "int", default: 365, help: "lifetime of edge node certificates" },
  { flag: "cert-validity-seconds", type: "int", default: 0, help: "lifetime of edge node certificates in seconds, overriding --cert-validity-days (for tests and rotation drills; 0 = use days)" },
  { flag: "outbox-limit", type: "int", default: 10_000, help: "messages kept per node until its edge acks them (oldest non-delete dropped past it)" },
  { flag: "outbox-retry-ms", type: "int", default: 5000, help: "resend period of a message the edge has not acked" },
  { flag: "api-max-body-bytes", type: "int", default: MAX_BODY_BYTES, help: "largest request body the embedded API accepts (413 past it)" },
  { flag: "router-inbox-limit", type: "int", default: DEFAULT_INBOX_LIMIT, help: "messages each controller's inbox holds; past it upstream messages are refused (counted; the edge resends unacked ones)" },
];

const GC_HINT_MS = 10_000;

export interface CloudConfig {
  dataDir: string;
  kubeconfig?: string;
  apiListen: string;
  hubListen: string;
  httpsListen: string;
  metricsListen: string;
  advertiseAddress: string[];
  maxFrameBytes: number;
  hubRateLimit: number;
  hubRateBurst: number;
  hubMaxBufferedBytes: number;
  keepaliveTimeout: number;
  nodeGracePeriod: number;
  tokenTtl: number;
  certValidityDays: number;
  certValiditySeconds: number;
  outboxLimit: number;
  outboxRetryMs: number;
  routerInboxLimit: number;
  apiMaxBodyBytes: number;
  logFormat: string;
  logLevel: string;
}

export interface RunningCloud {
  hub: CloudHub;
  metrics: Metrics;
  router: Router;
  outbox: Outbox;
  /** What endpoints.json says: addresses a local client dials. */
  endpoints: { api?: string; hub: string; https: string; metrics: string };
  stop(): Promise<void>;
}

/** Every address of this host, for the server certificate's SANs. */
function localAddresses(extra: string[]): { ips: string[]; dns: string[] } {
  const ips = new Set(["127.0.0.1", "::1"]);
  const dns = new Set(["localhost", hostname()]);
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) ips.add(a.address.split("%")[0]!);
  for (const e of extra) (/^[\d.]+$|:/.test(e) ? ips : dns).add(e);
  return { ips: [...ips], dns: [...dns] };
}

export async function startCloud(cfg: CloudConfig, log: Logger): Promise<RunningCloud> {
  const listens = {
    hubListen: parseListen(cfg.hubListen),
    httpsListen: parseListen(cfg.httpsListen),
    metricsListen: parseListen(cfg.metricsListen),
    apiListen: parseListen(cfg.apiListen),
  };
  if (cfg.routerInboxLimit < 1) throw new ConfigError("--router-inbox-limit: must be at least 1");
  const metrics = new Metrics();
  const router = new Router(log.child("router"), cfg.routerInboxLimit, metrics);
  const store = await openStore<unknown>(dataFile(cfg.dataDir, "cloudcore.db"), { ...apiserverMigrations, ...outboxMigrations, ...revocationMigrations });
  // A real cluster when told (kubeconfig) or when running in one; else the embedded API.
  let api: ApiServer | undefined;
  let client: KubeClient;
  if (cfg.kubeconfig) {
    client = KubeClient.fromKubeconfig(cfg.kubeconfig);
    log.info("using the cluster of the kubeconfig", { kubeconfig: cfg.kubeconfig, server: client.config.server });
  } else if (inClusterAvailable()) {
    client = KubeClient.inCluster();
    log.info("using the in-cluster service account", { server: client.config.server });
  } else {
    api = await startApiServer({ store, host: listens.apiListen.host, port: listens.apiListen.port, dataDir: cfg.dataDir, log, maxBodyBytes: cfg.apiMaxBodyBytes });
    client = new KubeClient({ server: api.url, caPem: api.caCert, token: api.adminToken });
  }
  const informers = new InformerFactory(client, { onError: (err, info) => log.warn("watch failed, retrying", { resource: info.resource, attempt: info.attempt, err: err.message }) });
  const ca = await loadOrCreateCa(cfg.dataDir);
  const serverCert = await ca.issueServerCert(localAddresses(cfg.advertiseAddress));

  // set once the hub and outbox exist; revocations stored by an earlier run apply from the start
  let revocation: NodeRevocation | undefined;
  const certService = await startCertService({
    ca,
    listen: listens.httpsListen,
    serverCert,
    log: log.child("certservice"),
    certValidityDays: cfg.certValiditySeconds > 0 ? cfg.certValiditySeconds / 86_400 : cfg.certValidityDays,
    revocation: { refusal: (node, cert) => revocation?.refusal(node, cert) ?? null, beforeIssue: async (node) => revocation?.beforeIssue(node) },
  });
  const hub = new CloudHub({
    listen: listens.hubListen,
    tls: { certPem: serverCert.certPem, keyPem: serverCert.keyPem, caPem: ca.certPem },
    log: log.child("cloudhub"),
    metrics,
    maxFrameBytes: cfg.maxFrameBytes,
    keepaliveTimeoutMs: cfg.keepaliveTimeout * 1000,
    rateLimit: { rate: cfg.hubRateLimit, burst: cfg.hubRateBurst },
    ...(cfg.hubMaxBufferedBytes > 0 ? { maxBufferedBytes: cfg.hubMaxBufferedBytes } : {}),
    admit: (node, cert) => revocation?.refusal(node, cert) ?? null,
  });
  router.register(hub);
  // the outbox listens to the hub before the controllers do: on a connect it flushes what is pending
  // first, and the controllers' resync then finds those messages pending and does not send them twice
  const outbox = new Outbox({ hub, raw: store.raw, log: log.child("outbox"), metrics, limitPerNode: cfg.outboxLimit, retryMs: cfg.outboxRetryMs });
  outbox.start();
  revocation = new NodeRevocation({ raw: store.raw, informers, client, hub, outbox, log: log.child("revocation") });
  await revocation.start();
  router.register(new EdgeController({ client, informers, hub, outbox, log: log.child("edgecontroller"), nodeGracePeriodMs: cfg.nodeGracePeriod * 1000 }));
  router.register(new DeviceController({ client, informers, hub, outbox, log: log.child("devicecontroller") }));
  router.register(new QueryServer({ informers, hub, log: log.child("queryserver"), metrics }));
  await router.startAll();
  const metricsServer: Server = (await serveMetrics(metrics, listens.metricsListen)).server;
  const metricsPort = (metricsServer.address() as { port: number }).port;
  // Under Bun, ask for a (concurrent, non-blocking) collection every 10 s: with thousands of nodes
  // the churn of short-lived request/message objects otherwise lets RSS run to about twice what
  // the live heap needs (bench/scale.ts: ~1.1 GiB and climbing vs ~0.55 GiB flat at 10,000 nodes).
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  const gcTimer = bun ? setInterval(() => bun.gc(false), GC_HINT_MS) : undefined;
  gcTimer?.unref?.();

  return {
    hub,
    metrics,
    router,
    outbox,
    endpoints: {
      ...(api ? { api: api.url } : {}),
      hub: dialAddress(listens.hubListen, hub.port),
      https: dialAddress(listens.httpsListen, certService.port),
      metrics: dialAddress(listens.metricsListen, metricsPort),
    },
    async stop() {
      clearInterval(gcTimer);
      outbox.stop();
      await router.stopAll();
      await informers.stop();
      client.close();
      await certService.close();
      await api?.close();
      await new Promise<void>((r) => metricsServer.close(() => r()));
      await store.close();
    },
  };
}
