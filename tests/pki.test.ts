import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, createPrivateKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { loadOrCreateCa } from "../lib/pki/ca.ts";
import type { Ca } from "../lib/pki/ca.ts";
import { startCertService } from "../lib/pki/certservice.ts";
import type { CertService } from "../lib/pki/certservice.ts";
import { joinCloud, loadEdgeCredentials, renewIfDue } from "../lib/pki/edgecreds.ts";
import { generateEcKey, pemDecode } from "../lib/pki/keys.ts";
import { createToken, splitToken, verifyToken } from "../lib/pki/token.ts";
import { ecdsaP256, x509 } from "../lib/pki/x509.ts";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "outpost-pki-"));
  dirs.push(d);
  return d;
}

const logLines: string[] = [];
const log = createLogger({ level: "debug", write: (line) => void logLines.push(line) });
/** Log lines written while `fn` ran. */
async function linesDuring(fn: () => Promise<unknown>): Promise<string[]> {
  const from = logLines.length;
  await fn();
  return logLines.slice(from);
}

let ca: Ca;
let otherCa: Ca;
let service: CertService;
let addr: string;

beforeAll(async () => {
  ca = await loadOrCreateCa(tempDir());
  otherCa = await loadOrCreateCa(tempDir());
  const serverCert = await ca.issueServerCert({ ips: [], dns: [] });
  service = await startCertService({ ca, listen: { host: "127.0.0.1", port: 0 }, serverCert, log, rotation: true });
  addr = `127.0.0.1:${service.port}`;
});

afterAll(async () => {
  if (process.env["PKI_TEST_LOG"]) console.log(logLines.join("\n"));
  await service?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function csrFor(subject: string): Promise<Uint8Array> {
  const key = await generateEcKey();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subject,
    keys: { privateKey: key.privateKey, publicKey: key.publicKey },
    signingAlgorithm: ecdsaP256,
  });
  return new Uint8Array(csr.rawData);
}

/** A raw request to the certificate service, server verified against the CA. */
function request(
  path: string,
  o: { headers?: Record<string, string>; body?: Uint8Array; cert?: string; key?: string } = {},
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: service.port,
        path,
        method: "GET",
        agent: false,
        ca: ca.certPem,
        ...(o.cert ? { cert: o.cert, key: o.key } : {}),
        headers: { ...o.headers, "Content-Length": String(o.body?.length ?? 0) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      },
    );
    req.on("error", reject);
    req.end(o.body ? Buffer.from(o.body) : undefined);
  });
}

function jwtOf(token: string): string {
  return splitToken(token).jwt;
}

describe("CA", () => {
  test("is created once and reloaded unchanged from the data dir", async () => {
    const dir = tempDir();
    const first = await loadOrCreateCa(dir);
    const again = await loadOrCreateCa(dir);
    expect(again.caHash).toBe(first.caHash);
    expect(Buffer.from(again.hmacKey).equals(Buffer.from(first.hmacKey))).toBe(true);
    expect(first.caHash).toBe(createHash("sha256").update(first.certDer).digest("hex"));
    expect(first.cert.subject).toBe("CN=KubeEdge");
    expect(first.cert.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(true);
    expect(statSync(join(dir, "ca", "ca.key")).mode & 0o777).toBe(0o600);
    // The HMAC key is the SEC 1 DER inside ca.key's "EC PRIVATE KEY" block, as KubeEdge uses it.
    const keyBlock = pemDecode(readFileSync(join(dir, "ca", "ca.key"), "utf8"), "EC PRIVATE KEY");
    expect(Buffer.from(first.hmacKey).equals(Buffer.from(keyBlock))).toBe(true);
    expect(createPrivateKey({ key: Buffer.from(first.hmacKey), format: "der", type: "sec1" }).asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    // A token made before the restart still verifies after it.
    expect(await verifyToken(again, jwtOf(createToken(first)))).toEqual({ ok: true });
    expect(first.caHash).not.toBe(otherCa.caHash);
  });

  test("server certificate covers loopback and is for server authentication", async () => {
    const { certPem } = await ca.issueServerCert({ ips: ["192.0.2.7"], dns: ["cloud.example"] });
    const cert = new x509.X509Certificate(pemDecode(certPem, "CERTIFICATE"));
    const sans = cert.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON().map((n) => n.value);
    for (const name of ["127.0.0.1", "::1", "localhost", "192.0.2.7", "cloud.example"]) expect(sans).toContain(name);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([x509.ExtendedKeyUsage.serverAuth]);
    expect(await cert.verify({ publicKey: ca.cert })).toBe(true);
  });
});

describe("join token", () => {
  test("round trip: <caHash>.<HS256 JWT> with a 12 h expiry", async () => {
    const token = createToken(ca);
    const { caHash, jwt } = splitToken(token);
    expect(caHash).toBe(ca.caHash);
    expect(await verifyToken(ca, jwt)).toEqual({ ok: true });
    const [header, payload] = jwt.split(".");
    expect(JSON.parse(Buffer.from(header!, "base64url").toString())).toEqual({ alg: "HS256", typ: "JWT" });
    const exp = JSON.parse(Buffer.from(payload!, "base64url").toString()).exp as number;
    expect(Math.abs(exp - (Date.now() / 1000 + 12 * 3600))).toBeLessThan(5);
  });

  test("an expired token is refused", async () => {
    expect(await verifyToken(ca, jwtOf(createToken(ca, -1)))).toEqual({ ok: false, reason: "expired" });
  });

  test("a tampered token or one from another CA is refused", async () => {
    const [header, , signature] = jwtOf(createToken(ca, 60)).split(".");
    const longer = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 10 * 365 * 86400 })).toString("base64url");
    expect(await verifyToken(ca, `${header}.${longer}.${signature}`)).toEqual({ ok: false, reason: "bad signature" });
    expect(await verifyToken(ca, jwtOf(createToken(otherCa)))).toEqual({ ok: false, reason: "bad signature" });
    expect(await verifyToken(ca, "not-a-jwt")).toEqual({ ok: false, reason: "malformed" });
    expect(() => splitToken("abc.def")).toThrow(/malformed join token/);
  });
});

describe("certificate service", () => {
  test("full join: the edge stores a CA-signed client certificate for its node", async () => {
    const dataDir = tempDir();
    const lines = await linesDuring(() => joinCloud({ httpsAddr: addr, token: createToken(ca), nodeName: "edge-1", dataDir, log }));
    const creds = loadEdgeCredentials(dataDir);
    expect(creds).not.toBeNull();
    expect(creds!.caPem).toBe(ca.certPem);
    const cert = new x509.X509Certificate(pemDecode(creds!.certPem, "CERTIFICATE"));
    expect(cert.subjectName.getField("CN")).toEqual(["system:node:edge-1"]);
    expect(cert.subjectName.getField("O")).toEqual(["system:nodes"]);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([x509.ExtendedKeyUsage.clientAuth]);
    expect(await cert.verify({ publicKey: ca.cert })).toBe(true);
    expect(creds!.notAfter.getTime() - Date.now()).toBeGreaterThan(364 * 86400_000);
    expect(statSync(join(dataDir, "certs", "node.key")).mode & 0o777).toBe(0o600);
    expect(lines.some((l) => l.includes("issued node certificate") && l.includes("node=edge-1") && l.includes("via=token"))).toBe(true);
  });

  test("the edge refuses a CA whose hash is not the token's", async () => {
    const dataDir = tempDir();
    const { jwt } = splitToken(createToken(ca));
    const wrongHash = createHash("sha256").update("another cloud").digest("hex");
    await expect(joinCloud({ httpsAddr: addr, token: `${wrongHash}.${jwt}`, nodeName: "edge-2", dataDir, log })).rejects.toThrow(
      /has sha256 [0-9a-f]{64}, but the join token names/,
    );
    expect(existsSync(join(dataDir, "certs"))).toBe(false);
  });

  test("a wrong or expired token gets 401", async () => {
    const csr = await csrFor("O=system:nodes, CN=system:node:edge-3");
    const lines = await linesDuring(async () => {
      const foreign = await request("/edge.crt", { headers: { Authorization: `Bearer ${jwtOf(createToken(otherCa))}`, Nodename: "edge-3" }, body: csr });
      expect(foreign.status).toBe(401);
      const expired = await request("/edge.crt", { headers: { Authorization: `Bearer ${jwtOf(createToken(ca, -1))}`, Nodename: "edge-3" }, body: csr });
      expect(expired.status).toBe(401);
      const none = await request("/edge.crt", { headers: { Nodename: "edge-3" }, body: csr });
      expect(none.status).toBe(401);
    });
    expect(lines.filter((l) => l.includes("WARN") && l.includes("status=401"))).toHaveLength(3);
    expect(lines.some((l) => l.includes("join token refused: bad signature"))).toBe(true);
    expect(lines.some((l) => l.includes("join token refused: expired"))).toBe(true);
    // The edge reports the refusal with its status.
    await expect(joinCloud({ httpsAddr: addr, token: createToken(otherCa).replace(/^[0-9a-f]{64}/, ca.caHash), nodeName: "edge-3", dataDir: tempDir(), log })).rejects.toThrow(
      /HTTP 401 join token refused: bad signature/,
    );
  });

  test("a CSR for another node gets 403", async () => {
    const lines = await linesDuring(async () => {
      const res = await request("/edge.crt", {
        headers: { Authorization: `Bearer ${jwtOf(createToken(ca))}`, Nodename: "edge-4" },
        body: await csrFor("O=system:nodes, CN=system:node:someone-else"),
      });
      expect(res.status).toBe(403);
      expect(res.body.toString()).toContain("CN=system:node:edge-4");
    });
    expect(lines.some((l) => l.includes("WARN") && l.includes("status=403") && l.includes("node=edge-4"))).toBe(true);
  });

  test("a garbage body gets 400, an unknown path 404", async () => {
    const token = jwtOf(createToken(ca));
    const garbage = await request("/edge.crt", { headers: { Authorization: `Bearer ${token}`, Nodename: "edge-5" }, body: new TextEncoder().encode("not a CSR") });
    expect(garbage.status).toBe(400);
    expect(garbage.body.toString()).toContain("PKCS#10");
    expect((await request("/nope")).status).toBe(404);
  });

  test("plaintext HTTP on the TLS port is dropped and the service keeps serving", async () => {
    const lines = await linesDuring(async () => {
      const answer = await new Promise<string>((resolve, reject) => {
        const sock = net.connect(service.port, "127.0.0.1", () => sock.write("GET /ca.crt HTTP/1.1\r\nHost: x\r\n\r\n"));
        let got = "";
        const timer = setTimeout(() => reject(new Error("plaintext connection was not dropped")), 5000);
        const done = () => {
          clearTimeout(timer);
          resolve(got);
        };
        sock.on("data", (d: Buffer) => (got += d.toString("latin1")));
        sock.on("close", done);
        sock.on("error", done);
      });
      expect(answer.startsWith("HTTP/")).toBe(false);
    });
    expect(lines.some((l) => l.includes("WARN") && l.includes("TLS handshake failed"))).toBe(true);
    const next = await request("/ca.crt");
    expect(next.status).toBe(200);
    expect(next.body.equals(Buffer.from(ca.certDer))).toBe(true);
  });

  test("rotation: the current client certificate renews without a token", async () => {
    const dataDir = tempDir();
    await joinCloud({ httpsAddr: addr, token: createToken(ca), nodeName: "edge-rot", dataDir, log });
    const before = loadEdgeCredentials(dataDir)!;
    expect(await renewIfDue({ httpsAddr: addr, nodeName: "edge-rot", dataDir, log })).toBe(false);
    expect(loadEdgeCredentials(dataDir)!.certPem).toBe(before.certPem);

    const lifetime = before.notAfter.getTime() - before.notBefore.getTime();
    const later = new Date(before.notBefore.getTime() + lifetime * 0.85);
    const lines = await linesDuring(async () => expect(await renewIfDue({ httpsAddr: addr, nodeName: "edge-rot", dataDir, log, now: later })).toBe(true));
    const after = loadEdgeCredentials(dataDir)!;
    expect(after.certPem).not.toBe(before.certPem);
    expect(after.keyPem).not.toBe(before.keyPem);
    const cert = new x509.X509Certificate(pemDecode(after.certPem, "CERTIFICATE"));
    expect(cert.subjectName.getField("CN")).toEqual(["system:node:edge-rot"]);
    expect(await cert.verify({ publicKey: ca.cert })).toBe(true);
    expect(lines.some((l) => l.includes("issued node certificate") && l.includes('via="client certificate"'))).toBe(true);
    expect(statSync(join(dataDir, "certs", "node.key")).mode & 0o777).toBe(0o600);
  });

  test("rotation: node A's client certificate cannot obtain node B's certificate", async () => {
    const dataDir = tempDir();
    await joinCloud({ httpsAddr: addr, token: createToken(ca), nodeName: "node-a", dataDir, log });
    const a = loadEdgeCredentials(dataDir)!;
    const lines = await linesDuring(async () => {
      const res = await request("/edge.crt", {
        headers: { Nodename: "node-b" },
        body: await csrFor("O=system:nodes, CN=system:node:node-b"),
        cert: a.certPem,
        key: a.keyPem,
      });
      expect(res.status).toBe(403);
      // Asking under its own name with B's subject is refused too.
      const own = await request("/edge.crt", {
        headers: { Nodename: "node-a" },
        body: await csrFor("O=system:nodes, CN=system:node:node-b"),
        cert: a.certPem,
        key: a.keyPem,
      });
      expect(own.status).toBe(403);
    });
    expect(lines.some((l) => l.includes("does not belong to node node-b"))).toBe(true);
  });

  test("rotation: a client certificate from another CA is refused", async () => {
    const foreignDir = tempDir();
    const foreignServer = await otherCa.issueServerCert({ ips: [], dns: [] });
    const foreign = await startCertService({ ca: otherCa, listen: { host: "127.0.0.1", port: 0 }, serverCert: foreignServer, log });
    try {
      await joinCloud({ httpsAddr: `127.0.0.1:${foreign.port}`, token: createToken(otherCa), nodeName: "edge-x", dataDir: foreignDir, log });
    } finally {
      await foreign.close();
    }
    const x = loadEdgeCredentials(foreignDir)!;
    const res = await request("/edge.crt", { headers: { Nodename: "edge-x" }, body: await csrFor("O=system:nodes, CN=system:node:edge-x"), cert: x.certPem, key: x.keyPem });
    expect(res.status).toBe(401);
  });
});
