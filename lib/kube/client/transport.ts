/**
 * HTTP(S) to the API server on node:http/node:https, which both Bun and Node provide with the
 * same TLS options (ca, cert, key, rejectUnauthorized, servername). Keep-alive agent for requests,
 * a separate one for long-lived watch streams, an overall deadline per request and a bound on
 * response size.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import { readFileSync } from "node:fs";
import type { ClusterConfig } from "./kubeconfig.ts";
import { KubeApiError, KubeTransportError } from "./errors.ts";

export interface TransportOptions {
  /** Deadline for a whole request, response body included (default 30 s). */
  timeoutMs?: number;
  /** Largest response body accepted (default 128 MiB). */
  maxResponseBytes?: number;
  /** Concurrent keep-alive connections for ordinary requests (default 16). */
  maxSockets?: number;
  userAgent?: string;
  /** How often a `tokenFile` is re-read (default 60 s). */
  tokenRefreshMs?: number;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  /** A JSON-serialisable body (or a ready string). */
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export function queryString(q: RequestOptions["query"]): string {
  if (!q) return "";
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

export class Transport {
  readonly base: URL;
  private readonly https: boolean;
  private readonly agent: HttpAgent;
  private readonly streamAgent: HttpAgent;
  private readonly tls: Record<string, unknown>;
  private readonly timeoutMs: number;
  private readonly maxBytes: number;
  private readonly userAgent: string;
  private token: string | undefined;
  private tokenReadAt = 0;
  private readonly tokenRefreshMs: number;

  constructor(
    private readonly cfg: ClusterConfig,
    opts: TransportOptions = {},
  ) {
    this.base = new URL(cfg.server);
    this.https = this.base.protocol === "https:";
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxBytes = opts.maxResponseBytes ?? 128 * 1024 * 1024;
    this.userAgent = opts.userAgent ?? "outpost-kubeclient/0.1";
    this.tokenRefreshMs = opts.tokenRefreshMs ?? 60_000;
    this.token = cfg.token;
    this.tokenReadAt = Date.now();
    const host = this.hostname();
    this.tls = this.https
      ? {
          ...(cfg.caPem ? { ca: cfg.caPem } : {}),
          ...(cfg.certPem ? { cert: cfg.certPem } : {}),
          ...(cfg.keyPem ? { key: cfg.keyPem } : {}),
          rejectUnauthorized: !cfg.insecure,
          ...(cfg.tlsServerName ? { servername: cfg.tlsServerName } : isIP(host) ? {} : { servername: host }),
        }
      : {};
    const agentOpts = { keepAlive: true, keepAliveMsecs: 30_000, maxSockets: opts.maxSockets ?? 16, maxFreeSockets: opts.maxSockets ?? 16, ...this.tls };
    this.agent = this.https ? new HttpsAgent(agentOpts) : new HttpAgent(agentOpts);
    const streamOpts = { keepAlive: false, maxSockets: Infinity, ...this.tls };
    this.streamAgent = this.https ? new HttpsAgent(streamOpts) : new HttpAgent(streamOpts);
  }

  private hostname(): string {
    return this.base.hostname.replace(/^\[|\]$/g, "");
  }

  private bearer(): string | undefined {
    if (this.cfg.tokenFile && Date.now() - this.tokenReadAt > this.tokenRefreshMs) {
      this.tokenReadAt = Date.now();
      try {
        const t = readFileSync(this.cfg.tokenFile, "utf8").trim();
        if (t) this.token = t;
      } catch {
        /* keep the last good token */
      }
    }
    return this.token;
  }

  private open(method: string, path: string, headers: Record<string, string>, stream: boolean): ClientRequest {
    const basePath = this.base.pathname.replace(/\/+$/, "");
    const opts = {
      method,
      protocol: this.base.protocol,
      hostname: this.hostname(),
      port: this.base.port ? Number(this.base.port) : this.https ? 443 : 80,
      path: basePath + path,
      headers,
      agent: stream ? this.streamAgent : this.agent,
      ...this.tls,
    };
    return this.https ? httpsRequest(opts) : httpRequest(opts);
  }

  private headers(accept: string, contentType?: string, length?: number): Record<string, string> {
    const h: Record<string, string> = { Accept: accept, "User-Agent": this.userAgent };
    const token = this.bearer();
    if (token) h.Authorization = `Bearer ${token}`;
    if (contentType) h["Content-Type"] = contentType;
    if (length !== undefined) h["Content-Length"] = String(length);
    return h;
  }

  /** One request; the whole (bounded) body comes back as text. HTTP errors are not thrown here. */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const payload = opts.body === undefined ? undefined : typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
    const full = path + queryString(opts.query);
    try {
      return await this.once(method, full, payload, opts);
    } catch (e) {
      // A keep-alive socket the server closed just as we reused it: one retry on a fresh one.
      if ((e as { reusedSocket?: boolean }).reusedSocket && ((e as KubeTransportError).errno === "ECONNRESET" || (e as KubeTransportError).errno === "EPIPE")) {
        return this.once(method, full, payload, opts);
      }
      throw e;
    }
  }

  private once(method: string, path: string, payload: string | undefined, opts: RequestOptions): Promise<Response> {
    return new Promise<Response>((resolve, reject) => {
      const bytes = payload === undefined ? undefined : Buffer.from(payload, "utf8");
      let req: ClientRequest;
      try {
        req = this.open(method, path, this.headers("application/json", bytes ? (opts.contentType ?? "application/json") : undefined, bytes?.length ?? (method === "GET" ? undefined : 0)), false);
      } catch (e) {
        reject(new KubeTransportError(`${method} ${path}: ${(e as Error).message}`, (e as NodeJS.ErrnoException).code, { cause: e }));
        return;
      }
      let done = false;
      const fail = (err: Error) => {
        if (done) return;
        done = true;
        cleanup();
        req.destroy();
        reject(err);
      };
      const deadline = opts.timeoutMs ?? this.timeoutMs;
      const timer = setTimeout(() => fail(new KubeTransportError(`${method} ${path}: timed out after ${deadline} ms`, "ETIMEDOUT")), deadline);
      const onAbort = () => fail(new KubeTransportError(`${method} ${path}: aborted`, "ABORT_ERR"));
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const cleanup = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
      };
      if (opts.signal?.aborted) return onAbort();
      req.on("error", (e: NodeJS.ErrnoException) => {
        const err = new KubeTransportError(`${method} ${path}: ${e.message}`, e.code, { cause: e });
        (err as { reusedSocket?: boolean }).reusedSocket = (req as { reusedSocket?: boolean }).reusedSocket === true;
        fail(err);
      });
      req.on("response", (res: IncomingMessage) => {
        const declared = Number(res.headers["content-length"] ?? "0");
        if (declared > this.maxBytes) return fail(new KubeTransportError(`${method} ${path}: response of ${declared} bytes exceeds the limit of ${this.maxBytes}`, "ERESPONSETOOLARGE"));
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > this.maxBytes) return fail(new KubeTransportError(`${method} ${path}: response exceeds the limit of ${this.maxBytes} bytes`, "ERESPONSETOOLARGE"));
          chunks.push(c);
        });
        res.on("error", (e: NodeJS.ErrnoException) => fail(new KubeTransportError(`${method} ${path}: ${e.message}`, e.code, { cause: e })));
        res.on("end", () => {
          if (done) return;
          done = true;
          cleanup();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
        });
      });
      req.end(bytes);
    });
  }

  /**
   * Opens a streaming GET (watch). Resolves with the response once a 200 arrives; any other status
   * is read (bounded) and rejected as a KubeApiError. `headerTimeoutMs` bounds the wait for headers;
   * the caller owns the stream after that and closes it with `destroy()`.
   */
  openStream(path: string, opts: { query?: RequestOptions["query"]; signal?: AbortSignal; headerTimeoutMs?: number } = {}): Promise<{ res: IncomingMessage; destroy: () => void }> {
    const full = path + queryString(opts.query);
    return new Promise((resolve, reject) => {
      let req: ClientRequest;
      try {
        req = this.open("GET", full, this.headers("application/json"), true);
      } catch (e) {
        reject(new KubeTransportError(`GET ${full}: ${(e as Error).message}`, (e as NodeJS.ErrnoException).code, { cause: e }));
        return;
      }
      let settled = false;
      const settle = (err: Error | null, value?: { res: IncomingMessage; destroy: () => void }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        if (err) {
          req.destroy();
          reject(err);
        } else resolve(value!);
      };
      const wait = opts.headerTimeoutMs ?? this.timeoutMs;
      const timer = setTimeout(() => settle(new KubeTransportError(`GET ${full}: no response within ${wait} ms`, "ETIMEDOUT")), wait);
      const onAbort = () => settle(new KubeTransportError(`GET ${full}: aborted`, "ABORT_ERR"));
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (e: NodeJS.ErrnoException) => settle(new KubeTransportError(`GET ${full}: ${e.message}`, e.code, { cause: e })));
      req.on("response", (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        if (status === 200) return settle(null, { res, destroy: () => req.destroy() });
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size <= 1024 * 1024) chunks.push(c);
        });
        res.on("error", () => settle(KubeApiError.fromResponse(status, Buffer.concat(chunks).toString("utf8"), `GET ${full}`)));
        res.on("end", () => settle(KubeApiError.fromResponse(status, Buffer.concat(chunks).toString("utf8"), `GET ${full}`)));
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
    this.streamAgent.destroy();
  }
}
