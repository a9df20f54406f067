/**
 * The certificate service (KubeEdge's CloudHub HTTPS server, default port 10002): serves the CA
 * certificate and signs edge nodes' CSRs, authorised by a join token or, for rotation, by the node's
 * current client certificate. It listens with node:tls because Bun's node:https hides the peer
 * certificate; lib/net/http1.ts reads the one request each connection carries.
 */
import type { Socket } from "node:net";
import tls from "node:tls";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../log.ts";
import { HttpParseError, readRequest, writeResponse } from "../net/http1.ts";
import type { RawRequest } from "../net/http1.ts";
import { CsrRejectedError, nodeCommonName, nodesOrganization } from "./ca.ts";
import type { Ca, ServerCert } from "./ca.ts";
import { verifyToken } from "./token.ts";
import { x509 } from "./x509.ts";

export interface CertServiceOptions {
  ca: Ca;
  listen: { host: string; port: number };
  serverCert: ServerCert;
  log: Logger;
  /** Lifetime of issued node certificates (KubeEdge's edgeCertSigningDuration). Default 365. */
  certValidityDays?: number;
  /** Also accept requests authenticated by the node's current client certificate instead of a token. Default true. */
  rotation?: boolean;
  /**
   * Revoked nodes (cloudcore's NodeRevocation): a renewal with a certificate issued before the
   * revocation is refused (403); a join with a token is allowed and gets a certificate newer than it.
   */
  revocation?: { refusal(node: string, cert: { notBefore: Date; notAfter: Date }): string | null; beforeIssue(node: string): Promise<void> };
}

export interface CertService {
  port: number;
  close(): Promise<void>;
}

const maxBodyBytes = 64 * 1024;
const requestTimeoutMs = 10_000;
// Kubernetes node names are RFC 1123 subdomains.
const nodeNamePattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A request answered with an error status; the message goes to the log and the response body. */
class Refusal extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

type AuthenticatedBy = "token" | "client certificate";

export async function startCertService(opts: CertServiceOptions): Promise<CertService> {
  const { ca, log } = opts;
  const validityDays = opts.certValidityDays ?? 365;
  const rotation = opts.rotation ?? true;
  const connections = new Set<Socket>();

  const authenticate = async (sock: TLSSocket, authorization: string | undefined, nodeName: string): Promise<AuthenticatedBy> => {
    if (authorization !== undefined) {
      const bearer = /^Bearer (\S+)$/i.exec(authorization.trim());
      if (!bearer) throw new Refusal(401, "the Authorization header is not \"Bearer <token>\"");
      const verdict = await verifyToken(ca, bearer[1]!);
      if (!verdict.ok) throw new Refusal(401, `join token refused: ${verdict.reason}`);
      return "token";
    }
    const peer = sock.getPeerCertificate();
    if (!peer?.raw) throw new Refusal(401, "neither a join token nor a client certificate was presented");
    if (!rotation) throw new Refusal(401, "certificate rotation is disabled: a join token is required");
    if (!sock.authorized) throw new Refusal(401, `the client certificate was not issued by this cloud's CA (${String(sock.authorizationError)})`);
    let cert: x509.X509Certificate;
    try {
      cert = new x509.X509Certificate(peer.raw);
    } catch {
      throw new Refusal(401, "the client certificate cannot be parsed");
    }
    // TLS has checked the chain already; checking against our one CA here as well keeps that decision in our hands.
    if (!(await cert.verify({ publicKey: ca.cert, date: new Date() }).catch(() => false))) {
      throw new Refusal(401, "the client certificate is not valid under this cloud's CA");
    }
    if (!cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages.includes(x509.ExtendedKeyUsage.clientAuth)) {
      throw new Refusal(401, "the client certificate is not for client authentication");
    }
    const cn = cert.subjectName.getField("CN");
    const o = cert.subjectName.getField("O");
    if (cn.length !== 1 || cn[0] !== nodeCommonName(nodeName) || o.length !== 1 || o[0] !== nodesOrganization) {
      throw new Refusal(403, `the client certificate "${cert.subject}" does not belong to node ${nodeName}`);
    }
    const revoked = opts.revocation?.refusal(nodeName, cert);
    if (revoked) throw new Refusal(403, revoked);
    return "client certificate";
  };

  const issueNodeCert = async (sock: TLSSocket, req: RawRequest): Promise<{ der: Uint8Array; via: AuthenticatedBy }> => {
    const nodeName = req.headers["nodename"];
    if (!nodeName) throw new Refusal(400, "the Nodename header is missing");
    if (nodeName.length > 253 || !nodeNamePattern.test(nodeName)) throw new Refusal(400, `Nodename "${printable(nodeName)}" is not a valid node name`);
    const via = await authenticate(sock, req.headers["authorization"], nodeName);
    await opts.revocation?.beforeIssue(nodeName);
    try {
      const der = await ca.signCsr(new Uint8Array(req.body), { nodeName, usage: "client", validityDays });
      return { der, via };
    } catch (e) {
      if (e instanceof CsrRejectedError) throw new Refusal(e.kind === "forbidden" ? 403 : 400, e.message);
      throw e;
    }
  };

  const serve = async (sock: TLSSocket, remote: string): Promise<void> => {
    let req: RawRequest;
    try {
      req = await readRequest(sock, { maxBodyBytes, timeoutMs: requestTimeoutMs });
    } catch (e) {
      const status = e instanceof HttpParseError ? e.status : 400;
      log.warn("certificate service: unreadable request", { remote, status, reason: (e as Error).message });
      respond(sock, status, (e as Error).message);
      return;
    }
    const path = req.url.split("?")[0]!;
    const node = req.headers["nodename"];
    const who = { remote, path: printable(path), ...(node !== undefined ? { node: printable(node) } : {}) };
    try {
      if (path !== "/ca.crt" && path !== "/edge.crt") throw new Refusal(404, `no such path: ${printable(path)}`);
      if (req.method !== "GET") throw new Refusal(405, `${req.method} is not allowed on ${path}`);
      if (path === "/ca.crt") {
        respond(sock, 200, Buffer.from(ca.certDer));
        return;
      }
      const { der, via } = await issueNodeCert(sock, req);
      const issued = new x509.X509Certificate(der);
      log.info("issued node certificate", { ...who, via, serial: issued.serialNumber, notAfter: issued.notAfter.toISOString() });
      respond(sock, 200, Buffer.from(der));
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      log.warn("certificate request refused", { ...who, status: e.status, reason: e.message });
      respond(sock, e.status, `${e.message}\n`);
    }
  };

  const server = tls.createServer(
    {
      cert: opts.serverCert.certPem,
      key: opts.serverCert.keyPem,
      ca: ca.certPem,
      // Ask for a client certificate (rotation) but let token-only clients through; `authenticate` decides.
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: requestTimeoutMs,
    },
    (sock) => {
      const remote = `${sock.remoteAddress}:${sock.remotePort}`;
      sock.on("error", (e) => log.debug("certificate service connection error", { remote, err: e.message }));
      serve(sock, remote).catch((e) => {
        log.error("certificate service failed a request", { remote, err: String(e) });
        respond(sock, 500, "internal error\n");
      });
    },
  );
  server.on("connection", (raw: Socket) => {
    connections.add(raw);
    raw.on("close", () => connections.delete(raw));
  });
  server.on("tlsClientError", (err, sock) => {
    const reason = /HTTP_REQUEST|wrong version number/i.test(err.message) ? "plaintext HTTP sent to the TLS port" : err.message;
    log.warn("certificate service: TLS handshake failed, connection dropped", { remote: `${sock?.remoteAddress}:${sock?.remotePort}`, reason });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (e) => log.error("certificate service listener error", { err: e.message }));
  const port = (server.address() as { port: number }).port;
  log.info("certificate service listening", { host: opts.listen.host, port });

  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of connections) c.destroy();
      }),
  };
}

function respond(sock: TLSSocket, status: number, body: Buffer | string): void {
  if (!sock.writable) {
    sock.destroy();
    return;
  }
  writeResponse(sock, status, body);
}

/** Client-supplied text made safe for a log line: bounded, control and non-ASCII bytes escaped. */
function printable(text: string): string {
  return text.slice(0, 200).replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
