/**
 * Where the cluster is and how to authenticate to it: a kubeconfig file (current context →
 * cluster + user) or the in-cluster service account. Both end up as one `ClusterConfig`.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";

export type ClusterConfig = {
  /** `https://host:port` (or http:// for test servers). */
  server: string;
  /** PEM of the CA(s) that sign the server's certificate; absent = the system roots. */
  caPem?: string;
  /** Bearer token. */
  token?: string;
  /** File the bearer token was read from; re-read periodically (rotating service-account tokens). */
  tokenFile?: string;
  /** Client certificate and key (PEM), for certificate authentication. */
  certPem?: string;
  keyPem?: string;
  /** insecure-skip-tls-verify: do not verify the server's certificate. */
  insecure?: boolean;
  /** tls-server-name: the name to verify the server's certificate against. */
  tlsServerName?: string;
  /** The context's (or service account's) namespace; used when a call names none. */
  namespace?: string;
};

/** A kubeconfig that cannot be used; `field` names the offending entry (e.g. `users[0].user.client-key`). */
export class KubeConfigError extends Error {
  override readonly name = "KubeConfigError";
  constructor(
    readonly field: string,
    message: string,
    readonly source?: string,
  ) {
    super(`${source ? source + ": " : ""}${field}: ${message}`);
  }
}

const str = (what: string) => v.string(`must be a string (${what})`);
const optStr = (what: string) => v.nullish(str(what));

const ClusterSchema = v.looseObject({
  server: v.pipe(str("URL"), v.nonEmpty("must not be empty"), v.url("must be a URL")),
  "certificate-authority": optStr("file path"),
  "certificate-authority-data": optStr("base64 PEM"),
  "insecure-skip-tls-verify": v.nullish(v.boolean("must be true or false")),
  "tls-server-name": optStr("host name"),
});

const UserSchema = v.looseObject({
  token: optStr("bearer token"),
  tokenFile: optStr("file path"),
  "client-certificate": optStr("file path"),
  "client-certificate-data": optStr("base64 PEM"),
  "client-key": optStr("file path"),
  "client-key-data": optStr("base64 PEM"),
});

const ContextSchema = v.looseObject({
  cluster: v.pipe(str("cluster name"), v.nonEmpty("must not be empty")),
  user: optStr("user name"),
  namespace: optStr("namespace"),
});

const named = <T extends v.GenericSchema>(key: string, inner: T) =>
  v.nullish(v.array(v.looseObject({ name: v.pipe(str("name"), v.nonEmpty("must not be empty")), [key]: v.nullish(inner) }), "must be a list"));

const KubeConfigSchema = v.looseObject({
  "current-context": optStr("context name"),
  clusters: named("cluster", ClusterSchema),
  users: named("user", UserSchema),
  contexts: named("context", ContextSchema),
});

type KubeConfigDoc = v.InferOutput<typeof KubeConfigSchema>;

function issuePath(issue: v.BaseIssue<unknown>): string {
  let out = "";
  for (const p of issue.path ?? []) {
    const key = (p as { key: unknown }).key;
    out += typeof key === "number" ? `[${key}]` : `${out ? "." : ""}${String(key)}`;
  }
  return out || "(root)";
}

function decodePem(field: string, data: string, source?: string): string {
  const text = Buffer.from(data.replace(/\s+/g, ""), "base64").toString("utf8");
  if (!text.includes("-----BEGIN ")) throw new KubeConfigError(field, "is not base64-encoded PEM", source);
  return text;
}

function readPemFile(field: string, file: string, baseDir: string, source?: string): string {
  const path = isAbsolute(file) ? file : resolve(baseDir, file);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new KubeConfigError(field, `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, source);
  }
  if (!text.includes("-----BEGIN ")) throw new KubeConfigError(field, `${path} does not contain PEM`, source);
  return text;
}

function readTokenFile(field: string, file: string, source?: string): string {
  try {
    const t = readFileSync(file, "utf8").trim();
    if (!t) throw new KubeConfigError(field, `${file} is empty`, source);
    return t;
  } catch (e) {
    if (e instanceof KubeConfigError) throw e;
    throw new KubeConfigError(field, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, source);
  }
}

export interface ParseKubeConfigOptions {
  /** Relative file references are resolved against this directory (default: the cwd). */
  baseDir?: string;
  /** Use this context instead of `current-context`. */
  context?: string;
  /** Name of the file, for error messages. */
  source?: string;
}

/** Resolves a kubeconfig document (YAML or JSON text, or an already parsed object). */
export function parseKubeConfig(input: string | unknown, opts: ParseKubeConfigOptions = {}): ClusterConfig {
  const source = opts.source;
  let raw: unknown = input;
  if (typeof input === "string") {
    try {
      raw = parseYaml(input, { maxAliasCount: 100 });
    } catch (e) {
      throw new KubeConfigError("(root)", `not valid YAML: ${(e as Error).message.split("\n")[0]}`, source);
    }
  }
  const r = v.safeParse(KubeConfigSchema, raw ?? {});
  if (!r.success) {
    const issue = r.issues[0]!;
    throw new KubeConfigError(issuePath(issue), issue.message, source);
  }
  return resolveDoc(r.output, opts);
}

function resolveDoc(doc: KubeConfigDoc, opts: ParseKubeConfigOptions): ClusterConfig {
  const { source } = opts;
  const baseDir = opts.baseDir ?? process.cwd();
  const ctxName = opts.context ?? doc["current-context"];
  if (!ctxName) throw new KubeConfigError("current-context", "not set (and no context was asked for)", source);
  const contexts = doc.contexts ?? [];
  const ci = contexts.findIndex((c) => c.name === ctxName);
  if (ci < 0) throw new KubeConfigError(opts.context ? "contexts" : "current-context", `no context named "${ctxName}"`, source);
  const ctx = contexts[ci]!.context as v.InferOutput<typeof ContextSchema> | null | undefined;
  if (!ctx) throw new KubeConfigError(`contexts[${ci}].context`, "missing", source);

  const clusters = doc.clusters ?? [];
  const ki = clusters.findIndex((c) => c.name === ctx.cluster);
  if (ki < 0) throw new KubeConfigError(`contexts[${ci}].context.cluster`, `no cluster named "${ctx.cluster}"`, source);
  const cluster = clusters[ki]!.cluster as v.InferOutput<typeof ClusterSchema> | null | undefined;
  const cf = `clusters[${ki}].cluster`;
  if (!cluster) throw new KubeConfigError(cf, "missing", source);

  const out: ClusterConfig = { server: cluster.server.replace(/\/+$/, "") };
  if (!/^https?:$/.test(new URL(out.server).protocol)) throw new KubeConfigError(`${cf}.server`, "must be an http(s) URL", source);
  if (cluster["certificate-authority-data"]) out.caPem = decodePem(`${cf}.certificate-authority-data`, cluster["certificate-authority-data"], source);
  else if (cluster["certificate-authority"]) out.caPem = readPemFile(`${cf}.certificate-authority`, cluster["certificate-authority"], baseDir, source);
  if (cluster["insecure-skip-tls-verify"]) {
    if (out.caPem) throw new KubeConfigError(`${cf}.insecure-skip-tls-verify`, "cannot be combined with a certificate authority", source);
    out.insecure = true;
  }
  if (cluster["tls-server-name"]) out.tlsServerName = cluster["tls-server-name"];
  if (ctx.namespace) out.namespace = ctx.namespace;

  if (ctx.user) {
    const users = doc.users ?? [];
    const ui = users.findIndex((u) => u.name === ctx.user);
    if (ui < 0) throw new KubeConfigError(`contexts[${ci}].context.user`, `no user named "${ctx.user}"`, source);
    const user = (users[ui]!.user ?? {}) as v.InferOutput<typeof UserSchema> & Record<string, unknown>;
    const uf = `users[${ui}].user`;
    for (const unsupported of ["exec", "auth-provider", "username", "password"]) {
      if (user[unsupported] !== undefined && user[unsupported] !== null) throw new KubeConfigError(`${uf}.${unsupported}`, "is not supported (use a token or a client certificate)", source);
    }
    if (user.token) out.token = user.token;
    else if (user.tokenFile) {
      const file = isAbsolute(user.tokenFile) ? user.tokenFile : resolve(baseDir, user.tokenFile);
      out.token = readTokenFile(`${uf}.tokenFile`, file, source);
      out.tokenFile = file;
    }
    if (user["client-certificate-data"]) out.certPem = decodePem(`${uf}.client-certificate-data`, user["client-certificate-data"], source);
    else if (user["client-certificate"]) out.certPem = readPemFile(`${uf}.client-certificate`, user["client-certificate"], baseDir, source);
    if (user["client-key-data"]) out.keyPem = decodePem(`${uf}.client-key-data`, user["client-key-data"], source);
    else if (user["client-key"]) out.keyPem = readPemFile(`${uf}.client-key`, user["client-key"], baseDir, source);
    if (out.certPem && !out.keyPem) throw new KubeConfigError(`${uf}.client-key`, "missing: a client certificate needs its key", source);
    if (out.keyPem && !out.certPem) throw new KubeConfigError(`${uf}.client-certificate`, "missing: a client key needs its certificate", source);
  }
  return out;
}

/** The kubeconfig files to read: `path`, else `$KUBECONFIG` (colon-separated), else `~/.kube/config`. */
function kubeconfigPaths(path?: string): string[] {
  if (path) return [path];
  const env = process.env.KUBECONFIG;
  if (env) {
    const list = env.split(process.platform === "win32" ? ";" : ":").filter(Boolean);
    const existing = list.filter((p) => existsSync(p));
    if (existing.length > 0) return existing;
    return list.slice(0, 1);
  }
  return [join(homedir(), ".kube", "config")];
}

/**
 * Loads a kubeconfig file (default `$KUBECONFIG` or `~/.kube/config`) and resolves its current
 * context (or `opts.context`). With several files in `$KUBECONFIG`, entries merge as kubectl does:
 * the first file to define a name (or `current-context`) wins. Relative paths inside a file are
 * relative to that file.
 */
export function loadKubeConfig(path?: string, opts: { context?: string } = {}): ClusterConfig {
  const files = kubeconfigPaths(path);
  const merged: Record<string, unknown> & { clusters: unknown[]; users: unknown[]; contexts: unknown[] } = { clusters: [], users: [], contexts: [] };
  const seen = { clusters: new Set<string>(), users: new Set<string>(), contexts: new Set<string>() };
  let baseDir: string | undefined;
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw new KubeConfigError("(file)", `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, file);
    }
    let raw: unknown;
    try {
      raw = parseYaml(text, { maxAliasCount: 100 });
    } catch (e) {
      throw new KubeConfigError("(root)", `not valid YAML: ${(e as Error).message.split("\n")[0]}`, file);
    }
    const r = v.safeParse(KubeConfigSchema, raw ?? {});
    if (!r.success) throw new KubeConfigError(issuePath(r.issues[0]!), r.issues[0]!.message, file);
    const doc = r.output;
    if (files.length === 1) return resolveDoc(doc, { baseDir: dirname(resolve(file)), context: opts.context, source: file });
    baseDir ??= dirname(resolve(file));
    if (doc["current-context"] && merged["current-context"] === undefined) merged["current-context"] = doc["current-context"];
    for (const key of ["clusters", "users", "contexts"] as const) {
      for (const entry of doc[key] ?? []) {
        const name = String((entry as { name: unknown }).name);
        if (seen[key].has(name)) continue;
        seen[key].add(name);
        const abs = absolutize(entry as Record<string, unknown>, dirname(resolve(file)));
        merged[key].push(abs);
      }
    }
  }
  const r = v.safeParse(KubeConfigSchema, merged);
  if (!r.success) throw new KubeConfigError(issuePath(r.issues[0]!), r.issues[0]!.message, files.join(":"));
  return resolveDoc(r.output, { baseDir, context: opts.context, source: files.join(":") });
}

/** Makes the file references of a merged entry absolute, relative to the file it came from. */
function absolutize(entry: Record<string, unknown>, dir: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...entry };
  for (const k of ["cluster", "user"]) {
    const inner = entry[k];
    if (!inner || typeof inner !== "object") continue;
    const copy: Record<string, unknown> = { ...(inner as Record<string, unknown>) };
    for (const f of ["certificate-authority", "client-certificate", "client-key", "tokenFile"]) {
      const p = copy[f];
      if (typeof p === "string" && p && !isAbsolute(p)) copy[f] = resolve(dir, p);
    }
    out[k] = copy;
  }
  return out;
}

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** True when the process looks like it runs in a pod with a mounted service account. */
export function inClusterAvailable(root = SERVICE_ACCOUNT_DIR, env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.KUBERNETES_SERVICE_HOST && !!env.KUBERNETES_SERVICE_PORT && existsSync(join(root, "token"));
}

/**
 * The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and the
 * service account's `token`, `ca.crt` and `namespace` under `root`.
 */
export function inClusterConfig(root = SERVICE_ACCOUNT_DIR, env: NodeJS.ProcessEnv = process.env): ClusterConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host) throw new KubeConfigError("KUBERNETES_SERVICE_HOST", "not set: not running in a cluster", "in-cluster");
  if (!port) throw new KubeConfigError("KUBERNETES_SERVICE_PORT", "not set: not running in a cluster", "in-cluster");
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) throw new KubeConfigError("KUBERNETES_SERVICE_PORT", `not a port: ${port}`, "in-cluster");
  const tokenFile = join(root, "token");
  const out: ClusterConfig = {
    server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    token: readTokenFile("token", tokenFile, "in-cluster"),
    tokenFile,
  };
  const caFile = join(root, "ca.crt");
  if (existsSync(caFile)) out.caPem = readPemFile("ca.crt", caFile, root, "in-cluster");
  const nsFile = join(root, "namespace");
  if (existsSync(nsFile)) {
    const ns = readFileSync(nsFile, "utf8").trim();
    if (ns) out.namespace = ns;
  }
  return out;
}
