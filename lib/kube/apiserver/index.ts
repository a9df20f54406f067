/**
 * The embedded Kubernetes-compatible API that cloudcore serves when it has no cluster.
 *
 *   const store = await openStore(path, { ...otherMigrations, ...apiserverMigrations });
 *   const api = await startApiServer({ store, host: "127.0.0.1", port: 6443, dataDir, log });
 *   // kubectl --kubeconfig <dataDir>/kubeconfig get nodes
 */
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Store } from "../../store/db.ts";
import type { Logger } from "../../log.ts";
import { Api } from "./api.ts";
import { loadOrCreateTokens, writeKubeconfigs } from "./auth.ts";
import { loadCrdManifests } from "./crds.ts";
import { createHandler } from "./http.ts";
import { Registry } from "./resources.ts";
import { loadOrCreateServingCert } from "./tls.ts";
import { ObjectStore } from "./storage.ts";
import type { StoreEvent } from "./types.ts";
import { WatchHub } from "./watch.ts";

export { apiserverMigrations } from "./migrations.ts";
export type { StoreEvent, KObject } from "./types.ts";

export interface ApiServerOptions {
  store: Store<any>;
  host: string;
  port: number;
  dataDir: string;
  log: Logger;
  /** Changes kept in memory for watch resumption (default 10,000). */
  eventWindow?: number;
  /** BOOKMARK interval for watches that allow them (default 30 s). */
  bookmarkIntervalMs?: number;
  /** Directory of CRD manifests installed at first start (default: the repo's schemas/crds). */
  crdDir?: string;
  /** Request body limit in bytes (default 3 MiB). */
  maxBodyBytes?: number;
  /**
   * Serve HTTPS with the API's own CA (default true). kubectl only sends a bearer token over
   * TLS, so plain HTTP is for in-process or test clients only.
   */
  tls?: boolean;
}

export interface ApiServer {
  url: string;
  port: number;
  adminToken: string;
  readonlyToken: string;
  /** PEM of the CA that signed the serving certificate (undefined with tls: false). */
  caCert?: string;
  /**
   * In-process change feed for cloudcore's controllers: every committed change, in RV order.
   * Listeners run synchronously inside the write (after the commit): keep them cheap, defer work.
   * Event objects are shared: treat them as read-only.
   */
  events: { subscribe(fn: (ev: StoreEvent) => void): () => void; currentResourceVersion(): number };
  /** Number of open watch streams. */
  watchCount(): number;
  close(): Promise<void>;
}

const SEED_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"];

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const log = opts.log.child("apiserver");
  const hasTables = opts.store.raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'apiserver_objects'").all([]).length > 0;
  if (!hasTables) throw new Error("startApiServer: the store was opened without apiserverMigrations");

  const store = new ObjectStore(opts.store.raw, { windowSize: opts.eventWindow });
  const registry = new Registry();
  const api = new Api(store, registry, log);

  const nsType = registry.byGroupResource("", "namespaces")!;
  for (const ns of SEED_NAMESPACES) api.ensure(nsType, "", { metadata: { name: ns } });
  if (!store.getMeta("crds_installed")) {
    const crdType = registry.byGroupResource("apiextensions.k8s.io", "customresourcedefinitions")!;
    for (const crd of loadCrdManifests(opts.crdDir)) api.ensure(crdType, "", crd);
    store.setMeta("crds_installed", new Date().toISOString());
  }
  const tokens = loadOrCreateTokens(store);
  const hub = new WatchHub(store, opts.bookmarkIntervalMs);

  let address = `${opts.host}:${opts.port}`;
  const handler = createHandler({ api, registry, store, hub, tokens, log, address: () => address, maxBodyBytes: opts.maxBodyBytes });
  const useTls = opts.tls ?? true;
  const cert = useTls ? await loadOrCreateServingCert(store, opts.host) : undefined;
  const server: Server = cert ? (createHttpsServer({ key: cert.keyPem, cert: cert.certPem }, handler) as unknown as Server) : createHttpServer(handler);
  server.on("clientError", (_err, socket) => {
    try {
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    } catch {
      /* gone */
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, 4096, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host === "0.0.0.0" || opts.host === "::" || opts.host === "" ? "127.0.0.1" : opts.host;
  address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const url = `${useTls ? "https" : "http"}://${address}`;
  writeKubeconfigs(opts.dataDir, url, tokens, cert?.caPem);
  api.startSweeper();
  log.info("embedded API listening", { url, rv: store.currentRV });

  let closed = false;
  return {
    url,
    port,
    adminToken: tokens.admin,
    readonlyToken: tokens.readonly,
    ...(cert ? { caCert: cert.caPem } : {}),
    events: { subscribe: (fn) => store.subscribe(fn), currentResourceVersion: () => store.currentRV },
    watchCount: () => hub.size,
    async close() {
      if (closed) return;
      closed = true;
      api.stop();
      hub.closeAll();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
    },
  };
}
