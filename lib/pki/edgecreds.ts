/**
 * The edge side of the certificate service: the first join (join token, CA pinned to the token's
 * hash) and renewal with the current certificate. Credentials live in <dataDir>/certs as ca.crt,
 * node.crt and node.key (SEC 1 PEM, mode 0600), the layout KubeEdge's edgecore keeps too.
 *
 * Reading the stored credentials (every start) uses node:crypto's X509Certificate; @peculiar/x509
 * (≈ 10 MiB of RSS with its ASN.1 and DI stack) is imported only to join or renew.
 */
import { X509Certificate, createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log.ts";
import { writeFileAtomic } from "../files.ts";
import { ecdsaP256, generateEcKey, pemDecode, pemEncode, sec1PublicSpki } from "./keys.ts";
import { splitToken } from "./token.ts";
import type { x509 } from "./x509.ts";

export interface EdgeCredentials {
  caPem: string;
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface JoinOptions {
  /** The certificate service, "host:port" ("[v6]:port" for IPv6). */
  httpsAddr: string;
  token: string;
  nodeName: string;
  dataDir: string;
  log: Logger;
}

export interface RenewOptions {
  httpsAddr: string;
  nodeName: string;
  dataDir: string;
  log: Logger;
  /** Defaults to the current time. */
  now?: Date;
  /** Fraction of the certificate's lifetime after which it is renewed. Default 0.8. */
  renewAtFraction?: number;
}

const maxResponseBytes = 64 * 1024;
const requestTimeoutMs = 30_000;

export async function joinCloud(opts: JoinOptions): Promise<EdgeCredentials> {
  const { caHash, jwt } = splitToken(opts.token);
  // The CA is not known yet, so this one request is made without verifying the server; what it
  // returns is trusted only if its hash is the one the token carries.
  const caRes = await httpsGet(opts.httpsAddr, "/ca.crt", { rejectUnauthorized: false });
  const served = createHash("sha256").update(caRes).digest("hex");
  if (served !== caHash) {
    throw new Error(
      `the CA certificate served by ${opts.httpsAddr} has sha256 ${served}, but the join token names ${caHash}: ` +
        "refusing to trust it (wrong cloud address, or a token from another cloud)",
    );
  }
  const { x509 } = await import("./x509.ts");
  let caCert: x509.X509Certificate;
  try {
    caCert = new x509.X509Certificate(caRes);
  } catch {
    throw new Error(`${opts.httpsAddr}/ca.crt is not a DER certificate`);
  }
  const caPem = pemEncode("CERTIFICATE", caRes);
  const issued = await requestNodeCert(opts.httpsAddr, opts.nodeName, caPem, caCert, { token: jwt });
  storeCredentials(opts.dataDir, { caPem, ...issued });
  opts.log.info("joined the cloud, node certificate stored", { node: opts.nodeName, dir: certsDir(opts.dataDir) });
  return loadEdgeCredentials(opts.dataDir)!;
}

/** The node's stored credentials, or null when the node has not joined (any of the three files missing). */
export function loadEdgeCredentials(dataDir: string): EdgeCredentials | null {
  const paths = credentialPaths(dataDir);
  if (!existsSync(paths.ca) || !existsSync(paths.cert) || !existsSync(paths.key)) return null;
  const caPem = readFileSync(paths.ca, "utf8");
  const certPem = readFileSync(paths.cert, "utf8");
  const keyPem = readFileSync(paths.key, "utf8");
  let cert: X509Certificate;
  let keySpki: Buffer;
  try {
    cert = new X509Certificate(Buffer.from(pemDecode(certPem, "CERTIFICATE")));
  } catch (e) {
    throw new Error(`cannot read the node certificate ${paths.cert}: ${(e as Error).message}`);
  }
  try {
    keySpki = sec1PublicSpki(pemDecode(keyPem, "EC PRIVATE KEY"));
  } catch (e) {
    throw new Error(`cannot read the node key ${paths.key}: ${(e as Error).message}`);
  }
  if (!keySpki.equals(cert.publicKey.export({ type: "spki", format: "der" }))) {
    throw new Error(`${paths.key} is not the key of ${paths.cert}: remove ${certsDir(dataDir)} and join again with a token`);
  }
  // validFromDate/validToDate: Bun and Node ≥ 22.10; the strings ("Nov 25 22:25:27 2026 GMT") elsewhere
  const dates = cert as X509Certificate & { validFromDate?: Date; validToDate?: Date };
  return { caPem, certPem, keyPem, notBefore: dates.validFromDate ?? new Date(cert.validFrom), notAfter: dates.validToDate ?? new Date(cert.validTo) };
}

/**
 * Renews the node certificate once `renewAtFraction` of its lifetime has passed, authenticating
 * with the current certificate (no token). Returns true when it renewed.
 */
export async function renewIfDue(opts: RenewOptions): Promise<boolean> {
  const current = loadEdgeCredentials(opts.dataDir);
  if (!current) throw new Error(`no node credentials in ${certsDir(opts.dataDir)}: join the cloud with a token first`);
  const now = (opts.now ?? new Date()).getTime();
  const start = current.notBefore.getTime();
  const end = current.notAfter.getTime();
  if (now < start + (end - start) * (opts.renewAtFraction ?? 0.8)) return false;
  if (now >= end) {
    throw new Error(`the node certificate expired at ${current.notAfter.toISOString()} and cannot authenticate a renewal: join again with a token`);
  }
  opts.log.info("node certificate is due for renewal", { node: opts.nodeName, notAfter: current.notAfter.toISOString() });
  const { x509 } = await import("./x509.ts");
  const caCert = new x509.X509Certificate(pemDecode(current.caPem, "CERTIFICATE"));
  const issued = await requestNodeCert(opts.httpsAddr, opts.nodeName, current.caPem, caCert, {
    certPem: current.certPem,
    keyPem: current.keyPem,
  });
  storeCredentials(opts.dataDir, issued);
  return true;
}

type CertAuth = { token: string } | { certPem: string; keyPem: string };

/** Generates a key and CSR, has the cloud sign it (server verified against `caPem`), and checks the answer. */
async function requestNodeCert(
  httpsAddr: string,
  nodeName: string,
  caPem: string,
  caCert: x509.X509Certificate,
  auth: CertAuth,
): Promise<{ certPem: string; keyPem: string }> {
  const [{ x509 }, { nodeCommonName, nodesOrganization }] = await Promise.all([import("./x509.ts"), import("./ca.ts")]);
  const key = await generateEcKey();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `O=${nodesOrganization}, CN=${nodeCommonName(nodeName)}`,
    keys: { privateKey: key.privateKey, publicKey: key.publicKey },
    signingAlgorithm: ecdsaP256,
  });
  const der = await httpsGet(
    httpsAddr,
    "/edge.crt",
    "token" in auth ? { ca: caPem } : { ca: caPem, cert: auth.certPem, key: auth.keyPem },
    { Nodename: nodeName, ...("token" in auth ? { Authorization: `Bearer ${auth.token}` } : {}) },
    new Uint8Array(csr.rawData),
  );
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch {
    throw new Error(`${httpsAddr}/edge.crt answered with something that is not a DER certificate`);
  }
  // Store only what will work: a certificate for our key and name, signed by the pinned CA.
  const ourSpki = Buffer.from(await crypto.subtle.exportKey("spki", key.publicKey));
  if (!ourSpki.equals(Buffer.from(cert.publicKey.rawData))) throw new Error(`${httpsAddr} returned a certificate for another key`);
  if (!(await cert.verify({ publicKey: caCert, signatureOnly: true }).catch(() => false))) {
    throw new Error(`${httpsAddr} returned a certificate not signed by the cloud's CA`);
  }
  if (cert.subjectName.getField("CN")[0] !== nodeCommonName(nodeName)) {
    throw new Error(`${httpsAddr} returned a certificate for "${cert.subject}", not for node ${nodeName}`);
  }
  return { certPem: pemEncode("CERTIFICATE", der), keyPem: pemEncode("EC PRIVATE KEY", key.sec1Der) };
}

function storeCredentials(dataDir: string, c: { caPem?: string; certPem: string; keyPem: string }): void {
  const paths = credentialPaths(dataDir);
  mkdirSync(certsDir(dataDir), { recursive: true, mode: 0o700 });
  if (c.caPem !== undefined) writeFileAtomic(paths.ca, c.caPem, 0o644);
  // Each file is replaced atomically; the pair is not. A crash between the two renames leaves a key
  // that does not match the certificate, which loadEdgeCredentials reports instead of using it.
  writeFileAtomic(paths.key, c.keyPem, 0o600);
  writeFileAtomic(paths.cert, c.certPem, 0o644);
}

function certsDir(dataDir: string): string {
  return join(dataDir, "certs");
}

function credentialPaths(dataDir: string): { ca: string; cert: string; key: string } {
  const dir = certsDir(dataDir);
  return { ca: join(dir, "ca.crt"), cert: join(dir, "node.crt"), key: join(dir, "node.key") };
}

/** One GET to the certificate service; resolves with the body of a 200, rejects naming the status and body otherwise. */
async function httpsGet(
  addr: string,
  path: string,
  tlsOptions: { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean },
  headers: Record<string, string> = {},
  body?: Uint8Array,
): Promise<Uint8Array> {
  const { host, port } = parseHostPort(addr);
  const https = await import("node:https"); // joins and renewals only: a start on stored credentials does without
  return new Promise((resolve, reject) => {
    const fail = (e: Error) => reject(new Error(`certificate service at ${addr}: GET ${path} failed: ${e.message}`));
    const req = https.request(
      {
        host,
        port,
        path,
        method: "GET",
        agent: false,
        timeout: requestTimeoutMs,
        ...tlsOptions,
        // The service reads Content-Length bodies only, so never let the client fall back to chunked encoding.
        headers: { ...headers, ...(body ? { "Content-Length": String(body.length) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxResponseBytes) req.destroy(new Error(`response larger than ${maxResponseBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on("error", fail);
        res.on("end", () => {
          const data = Buffer.concat(chunks);
          if (res.statusCode === 200) return resolve(new Uint8Array(data));
          const text = data.toString("utf8").trim().slice(0, 300);
          reject(new Error(`certificate service at ${addr} refused GET ${path}: HTTP ${res.statusCode}${text ? ` ${text}` : ""}`));
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${requestTimeoutMs / 1000} s`)));
    req.on("error", fail);
    req.end(body ? Buffer.from(body) : undefined);
  });
}

function parseHostPort(addr: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(addr) ?? /^([^:\s]+):(\d{1,5})$/.exec(addr);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) throw new Error(`certificate service address "${addr}" is not host:port`);
  return { host: m[1]!, port };
}
