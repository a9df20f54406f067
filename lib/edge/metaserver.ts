/**
 * MetaServer: a read-only, Kubernetes-style list/watch HTTP API for local apps, served from
 * MetaManager's store, so it keeps answering while the cloud is gone.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Listen } from "../config.ts";
import type { Logger } from "../log.ts";
import type { MetaChange, MetaManager } from "./metamanager.ts";

/** URL resource → KubeEdge resource type and Kubernetes kind. */
const resources: Record<string, { type: string; kind: string; namespaced: boolean }> = {
  pods: { type: "pod", kind: "Pod", namespaced: true },
  configmaps: { type: "configmap", kind: "ConfigMap", namespaced: true },
  secrets: { type: "secret", kind: "Secret", namespaced: true },
  services: { type: "service", kind: "Service", namespaced: true },
  endpoints: { type: "endpoints", kind: "Endpoints", namespaced: true },
  nodes: { type: "node", kind: "Node", namespaced: false },
};

type Obj = { metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; resourceVersion?: string }; spec?: { nodeName?: string }; [k: string]: unknown };

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  res.writeHead(code, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code }));
}

/** `a=b,c!=d,e` label selectors and `metadata.name=x,spec.nodeName=y` field selectors, equality forms. */
function selector(expr: string | null, pick: (o: Obj, key: string) => string | undefined): (o: Obj) => boolean {
  if (!expr) return () => true;
  const terms = expr.split(",").filter(Boolean).map((t) => {
    const m = /^([^!=]+?)\s*(==|=|!=)\s*(.*)$/.exec(t.trim());
    if (!m) return { key: t.trim().replace(/^!/, ""), op: t.trim().startsWith("!") ? "absent" : "exists", value: "" };
    return { key: m[1]!, op: m[2] === "!=" ? "ne" : "eq", value: m[3]! };
  });
  return (o) =>
    terms.every(({ key, op, value }) => {
      const v = pick(o, key);
      return op === "eq" ? v === value : op === "ne" ? v !== value : op === "exists" ? v !== undefined : v === undefined;
    });
}

const fieldOf = (o: Obj, key: string): string | undefined =>
  key === "metadata.name" ? o.metadata?.name : key === "metadata.namespace" ? o.metadata?.namespace : key === "spec.nodeName" ? o.spec?.nodeName : undefined;

export class MetaServer {
  private server?: Server;
  private readonly watchers = new Set<ServerResponse>();
  port = 0;

  constructor(private readonly meta: MetaManager, private readonly log: Logger) {}

  async start(listen: Listen): Promise<number> {
    const server = createServer((req, res) => void this.serve(req, res).catch((e) => {
      this.log.warn("metaserver request failed", { url: req.url, err: String(e) });
      if (!res.headersSent) status(res, 500, "InternalError", "internal error");
      else res.end();
    }));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(listen.port, listen.host, () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    return this.port;
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.end();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://metaserver");
    if (req.method !== "GET") return status(res, 405, "MethodNotAllowed", "the MetaServer is read-only");
    if (url.pathname === "/healthz" || url.pathname === "/readyz") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      return void res.end("ok");
    }
    if (url.pathname === "/api") return json(res, { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [] });
    if (url.pathname === "/apis") return json(res, { kind: "APIGroupList", apiVersion: "v1", groups: [] });
    if (url.pathname === "/version") return json(res, { major: "1", minor: "32", gitVersion: "v1.32.0-outpost-metaserver", platform: `${process.platform}/${process.arch}` });
    if (url.pathname === "/api/v1")
      return json(res, {
        kind: "APIResourceList",
        groupVersion: "v1",
        resources: Object.entries(resources).map(([name, r]) => ({ name, singularName: r.type, namespaced: r.namespaced, kind: r.kind, verbs: ["get", "list", "watch"] })),
      });
    const m = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?([a-z]+)(?:\/([^/]+))?$/.exec(url.pathname);
    const def = m ? resources[m[2]!] : undefined;
    if (!m || !def) return status(res, 404, "NotFound", `the server could not find the requested resource (${url.pathname})`);
    const [, namespace, , name] = m;
    if (name !== undefined) {
      const obj = await this.meta.get(def.type, def.namespaced ? (namespace ?? "") : "null", decodeURIComponent(name));
      if (!obj) return status(res, 404, "NotFound", `${m[2]} "${name}" not found`);
      return json(res, obj);
    }
    const labels = selector(url.searchParams.get("labelSelector"), (o, k) => o.metadata?.labels?.[k]);
    const fields = selector(url.searchParams.get("fieldSelector"), fieldOf);
    const match = (o: Obj) => (!namespace || o.metadata?.namespace === namespace) && labels(o) && fields(o);
    const items = ((await this.meta.list(def.type)) as Obj[]).filter(match);
    const listRv = String(Math.max(0, ...items.map((o) => Number(o.metadata?.resourceVersion) || 0)));
    const watch = url.searchParams.get("watch");
    if (watch !== "1" && watch !== "true") return json(res, { kind: `${def.kind}List`, apiVersion: "v1", metadata: { resourceVersion: listRv }, items });

    // watch: what exists now (newer than the asked version), then every change as it is stored
    const since = Number(url.searchParams.get("resourceVersion") ?? "0") || 0;
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
    for (const o of items) if ((Number(o.metadata?.resourceVersion) || 0) > since || since === 0) res.write(JSON.stringify({ type: "ADDED", object: o }) + "\n");
    const onChange = (c: MetaChange) => {
      if (c.kind !== def.type || !match(c.object as Obj)) return;
      res.write(JSON.stringify({ type: c.type, object: c.object }) + "\n");
    };
    this.meta.on("change", onChange);
    this.watchers.add(res);
    const timeout = Number(url.searchParams.get("timeoutSeconds") ?? "0");
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    const done = () => {
      clearTimeout(timer);
      this.meta.off("change", onChange);
      this.watchers.delete(res);
    };
    res.on("close", done);
    req.on("close", done);
  }
}

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}
