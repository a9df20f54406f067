/**
 * The serving certificate. kubectl sends a bearer token only over TLS, so the embedded API
 * serves HTTPS with its own CA (ECDSA P-256), kept in the store so restarts keep the same CA and
 * the kubeconfig stays valid. The serving certificate is re-issued when the address set changes.
 */
import { networkInterfaces, hostname } from "node:os";
import { isIP } from "node:net";
import "reflect-metadata"; // @peculiar/x509 (tsyringe) needs the Reflect metadata polyfill loaded first
import * as x509 from "@peculiar/x509";
import type { ObjectStore } from "./storage.ts";

export interface ServingCert {
  caPem: string;
  certPem: string;
  keyPem: string;
}

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const YEAR = 365 * 24 * 3600 * 1000;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function derOf(pemText: string): Buffer {
  return Buffer.from(pemText.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
}

/** Names the certificate covers: loopback, the listen host, the host name and, for a wildcard listen, every local IP. */
export function subjectNames(listenHost: string): string[] {
  const names = new Set<string>(["localhost", "127.0.0.1", "::1"]);
  try {
    names.add(hostname());
  } catch {
    /* no host name */
  }
  const wildcard = listenHost === "" || listenHost === "0.0.0.0" || listenHost === "::";
  if (!wildcard) names.add(listenHost);
  else
    for (const list of Object.values(networkInterfaces()))
      for (const a of list ?? []) if (!a.address.includes("%")) names.add(a.address);
  return [...names].sort();
}

export async function loadOrCreateServingCert(store: ObjectStore, listenHost: string): Promise<ServingCert> {
  const crypto = globalThis.crypto;
  x509.cryptoProvider.set(crypto);
  const names = subjectNames(listenHost);
  let caPem = store.getMeta("tls_ca_cert");
  let caKeyPem = store.getMeta("tls_ca_key");
  if (!caPem || !caKeyPem) {
    const keys = (await crypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      name: "CN=outpost-apiserver-ca",
      notBefore: new Date(Date.now() - 3600_000),
      notAfter: new Date(Date.now() + 20 * YEAR),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    caPem = ca.toString("pem") + "\n";
    caKeyPem = pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey));
    store.setMeta("tls_ca_cert", caPem);
    store.setMeta("tls_ca_key", caKeyPem);
    store.setMeta("tls_serving_names", "");
  }
  const certPem = store.getMeta("tls_serving_cert");
  const keyPem = store.getMeta("tls_serving_key");
  const notAfter = Number(store.getMeta("tls_serving_not_after") ?? "0");
  if (certPem && keyPem && store.getMeta("tls_serving_names") === names.join(",") && notAfter > Date.now() + 30 * 24 * 3600 * 1000) {
    return { caPem, certPem, keyPem };
  }
  const ca = new x509.X509Certificate(caPem);
  const caKey = await crypto.subtle.importKey("pkcs8", derOf(caKeyPem), ALG, false, ["sign"]);
  const keys = (await crypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const until = Date.now() + 5 * YEAR;
  const cert = await x509.X509CertificateGenerator.create({
    subject: "CN=outpost-apiserver",
    issuer: ca.subject,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(until),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: isIP(n) ? ("ip" as const) : ("dns" as const), value: n }))),
      await x509.AuthorityKeyIdentifierExtension.create(ca, false),
    ],
  });
  const out = { caPem, certPem: cert.toString("pem") + "\n", keyPem: pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)) };
  store.setMeta("tls_serving_cert", out.certPem);
  store.setMeta("tls_serving_key", out.keyPem);
  store.setMeta("tls_serving_names", names.join(","));
  store.setMeta("tls_serving_not_after", String(until));
  return out;
}
