/**
 * The cluster CA: a self-signed ECDSA P-256 certificate that signs the edge nodes' client
 * certificates and cloudcore's own server certificates. Kept as <dataDir>/ca/ca.crt and ca.key (PEM).
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../files.ts";
import { generateEcKey, importSec1Key, pemDecode, pemEncode } from "./keys.ts";
import { ecdsaP256, x509 } from "./x509.ts";

/** Subject of an edge node's certificate, as Kubernetes' node authorizer and KubeEdge expect it. */
export const nodesOrganization = "system:nodes";
export function nodeCommonName(nodeName: string): string {
  return `system:node:${nodeName}`;
}

export type CertUsage = "client" | "server";

export interface SignCsrOptions {
  /** When set, the request's subject must be exactly O=system:nodes, CN=system:node:<nodeName> (C/ST/L may be present). */
  nodeName?: string;
  usage: CertUsage;
  /** IP addresses and DNS names for the subjectAltName extension. */
  sans?: string[];
  validityDays: number;
}

export interface ServerCert {
  certPem: string;
  /** SEC 1 "EC PRIVATE KEY" PEM. */
  keyPem: string;
}

/** A certificate request the CA will not sign: `malformed` (bad input) or `forbidden` (wrong subject). */
export class CsrRejectedError extends Error {
  constructor(message: string, readonly kind: "malformed" | "forbidden") {
    super(message);
  }
}

export interface Ca {
  readonly cert: x509.X509Certificate;
  readonly certDer: Uint8Array;
  readonly certPem: string;
  readonly privateKey: CryptoKey;
  /** The CA key's SEC 1 DER bytes: KubeEdge signs and verifies join tokens (HS256) with exactly these. */
  readonly hmacKey: Uint8Array;
  /** Lowercase hex sha256 of certDer: part 0 of a join token. */
  readonly caHash: string;
  /** Checks and signs a PKCS#10 request (DER); returns the certificate DER. Throws CsrRejectedError. */
  signCsr(csrDer: Uint8Array, opts: SignCsrOptions): Promise<Uint8Array>;
  /** A fresh ECDSA server certificate for cloudcore's TLS listeners, valid for loopback, this host and `names`. */
  issueServerCert(names: { ips: string[]; dns: string[] }): Promise<ServerCert>;
}

const dayMs = 86_400_000;
const caValidityDays = 3650;
// Certificates start a few minutes in the past so that an edge whose clock lags the cloud's can use them at once
// (a tenth of the validity for very short-lived ones, so that their renewal point stays after their issue).
export const backdateMs = 5 * 60_000;
const backdateFor = (validityMs: number) => Math.min(backdateMs, validityMs / 10);

/** When a certificate this CA issued was made, from its validity period (undoes the backdating). */
export function issuedAt(notBefore: Date, notAfter: Date): number {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return notBefore.getTime() + Math.min(backdateMs, lifetime / 11);
}

export async function loadOrCreateCa(dataDir: string): Promise<Ca> {
  const dir = join(dataDir, "ca");
  const certPath = join(dir, "ca.crt");
  const keyPath = join(dir, "ca.key");
  const haveCert = existsSync(certPath);
  if (haveCert !== existsSync(keyPath)) {
    throw new Error(`${dir} holds only one of ca.crt and ca.key: restore the other, or remove both to create a new CA (every edge node must then join again)`);
  }
  if (!haveCert) {
    const key = await generateEcKey();
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: "CN=KubeEdge",
      notBefore: new Date(now - backdateMs),
      notAfter: new Date(now + caValidityDays * dayMs),
      keys: { privateKey: key.privateKey, publicKey: key.publicKey },
      signingAlgorithm: ecdsaP256,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(key.publicKey),
      ],
    });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileAtomic(keyPath, pemEncode("EC PRIVATE KEY", key.sec1Der), 0o600);
    writeFileAtomic(certPath, pemEncode("CERTIFICATE", new Uint8Array(cert.rawData)), 0o644);
  }
  return loadCa(certPath, keyPath);
}

async function loadCa(certPath: string, keyPath: string): Promise<Ca> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(pemDecode(readFileSync(certPath, "utf8"), "CERTIFICATE"));
  } catch (e) {
    throw new Error(`cannot read the CA certificate ${certPath}: ${(e as Error).message}`);
  }
  // KubeEdge reads the key file's PEM block and uses its bytes both as the signing key (SEC 1,
  // x509.ParseECPrivateKey) and as the join tokens' HMAC key, so we keep that exact form.
  let hmacKey: Uint8Array;
  let key: Awaited<ReturnType<typeof importSec1Key>>;
  try {
    hmacKey = pemDecode(readFileSync(keyPath, "utf8"), "EC PRIVATE KEY");
    key = await importSec1Key(hmacKey);
  } catch (e) {
    throw new Error(`cannot read the CA key ${keyPath}: ${(e as Error).message}`);
  }
  const keySpki = Buffer.from(await crypto.subtle.exportKey("spki", key.publicKey));
  if (!keySpki.equals(Buffer.from(cert.publicKey.rawData))) throw new Error(`${keyPath} is not the key of ${certPath}`);

  const certDer = new Uint8Array(cert.rawData);
  const certPem = pemEncode("CERTIFICATE", certDer);
  const caKeyId = cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;

  const issue = async (p: {
    subject: string | x509.Name;
    publicKey: CryptoKey | x509.PublicKey;
    usage: CertUsage;
    sans: string[];
    validityDays: number;
  }): Promise<x509.X509Certificate> => {
    const now = Date.now();
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([p.usage === "client" ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth]),
    ];
    if (caKeyId) extensions.push(new x509.AuthorityKeyIdentifierExtension(caKeyId));
    if (p.sans.length > 0) {
      extensions.push(new x509.SubjectAlternativeNameExtension(p.sans.map((value) => ({ type: isIP(value) ? "ip" : "dns", value }))));
    }
    return x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: p.subject,
      issuer: cert.subjectName,
      notBefore: new Date(now - backdateFor(p.validityDays * dayMs)),
      notAfter: new Date(Math.min(now + p.validityDays * dayMs, cert.notAfter.getTime())),
      publicKey: p.publicKey,
      signingKey: key.privateKey,
      signingAlgorithm: ecdsaP256,
      extensions,
    });
  };

  return {
    cert,
    certDer,
    certPem,
    privateKey: key.privateKey,
    hmacKey,
    caHash: createHash("sha256").update(certDer).digest("hex"),

    async signCsr(csrDer, opts) {
      const csr = await parseAndCheckCsr(csrDer);
      if (opts.nodeName !== undefined) {
        const cn = csr.subjectName.getField("CN");
        const o = csr.subjectName.getField("O");
        const wantCn = nodeCommonName(opts.nodeName);
        if (cn.length !== 1 || cn[0] !== wantCn || o.length !== 1 || o[0] !== nodesOrganization) {
          throw new CsrRejectedError(`request subject "${csr.subject}" is not O=${nodesOrganization}, CN=${wantCn}`, "forbidden");
        }
      }
      const issued = await issue({
        subject: csr.subjectName,
        publicKey: csr.publicKey,
        usage: opts.usage,
        sans: opts.sans ?? [],
        validityDays: opts.validityDays,
      });
      return new Uint8Array(issued.rawData);
    },

    async issueServerCert(names) {
      const serverKey = await generateEcKey();
      const issued = await issue({
        subject: "O=KubeEdge, CN=KubeEdge",
        publicKey: serverKey.publicKey,
        usage: "server",
        sans: [...new Set([...localAddresses(), ...names.ips, ...names.dns])],
        validityDays: caValidityDays,
      });
      return { certPem: pemEncode("CERTIFICATE", new Uint8Array(issued.rawData)), keyPem: pemEncode("EC PRIVATE KEY", serverKey.sec1Der) };
    },
  };
}

async function parseAndCheckCsr(csrDer: Uint8Array): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  let alg: { name?: string; namedCurve?: string };
  try {
    csr = new x509.Pkcs10CertificateRequest(csrDer);
    alg = csr.publicKey.algorithm;
  } catch {
    throw new CsrRejectedError("the body is not a DER-encoded PKCS#10 certificate request", "malformed");
  }
  if (alg.name !== "ECDSA" || alg.namedCurve !== "P-256") {
    throw new CsrRejectedError(`only ECDSA P-256 keys are accepted, the request has ${alg.name ?? "an unknown key"}${alg.namedCurve ? ` ${alg.namedCurve}` : ""}`, "malformed");
  }
  if (!(await csr.verify().catch(() => false))) throw new CsrRejectedError("the request's signature does not verify", "malformed");
  return csr;
}

/** Names a client may dial cloudcore by without configuration: loopback, the host name, every interface address. */
function localAddresses(): string[] {
  const out = ["127.0.0.1", "::1", "localhost", hostname()];
  for (const list of Object.values(networkInterfaces())) for (const ni of list ?? []) out.push(ni.address.split("%")[0]!);
  return out.filter((a) => a !== "");
}

/** 16 random bytes, first byte in 0x40–0x7f: positive and minimally encoded, as strict parsers (Go) require. */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b.toString("hex");
}
