/** PEM framing and ECDSA P-256 keys in the SEC 1 form KubeEdge stores ("EC PRIVATE KEY"). */
import { createPrivateKey, createPublicKey } from "node:crypto";

/** The only key type Outpost issues and accepts: KubeEdge's edge and hub use ECDSA P-256 / SHA-256. */
export const ecdsaP256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export function pemEncode(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`;
}

/** Returns the DER bytes of the first PEM block labelled `label`; throws when there is none. */
export function pemDecode(pem: string, label: string): Uint8Array {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*?)-----END ${label}-----`).exec(pem);
  if (!m) throw new Error(`no "${label}" PEM block found`);
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
}

export interface EcKeyPair {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** SEC 1 ECPrivateKey DER (with curve parameters and public key), as Go's x509.MarshalECPrivateKey writes it. */
  sec1Der: Uint8Array;
}

export async function generateEcKey(): Promise<EcKeyPair> {
  const { privateKey, publicKey } = await crypto.subtle.generateKey(ecdsaP256, true, ["sign", "verify"]);
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey("pkcs8", privateKey));
  const sec1Der = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }).export({ type: "sec1", format: "der" });
  return { privateKey, publicKey, sec1Der: new Uint8Array(sec1Der) };
}

/** Imports a SEC 1 DER key; throws unless it is a P-256 key. */
export async function importSec1Key(sec1Der: Uint8Array): Promise<EcKeyPair> {
  const keyObject = createPrivateKey({ key: Buffer.from(sec1Der), format: "der", type: "sec1" });
  if (keyObject.asymmetricKeyType !== "ec" || keyObject.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new Error("the private key is not an ECDSA P-256 key");
  }
  const pkcs8 = keyObject.export({ type: "pkcs8", format: "der" });
  const spki = createPublicKey(keyObject).export({ type: "spki", format: "der" });
  return {
    privateKey: await crypto.subtle.importKey("pkcs8", pkcs8, ecdsaP256, true, ["sign"]),
    publicKey: await crypto.subtle.importKey("spki", spki, ecdsaP256, true, ["verify"]),
    sec1Der,
  };
}

/** SubjectPublicKeyInfo DER of the public half of a SEC 1 key, for "does this key belong to that certificate". */
export function sec1PublicSpki(sec1Der: Uint8Array): Buffer {
  const keyObject = createPrivateKey({ key: Buffer.from(sec1Der), format: "der", type: "sec1" });
  return createPublicKey(keyObject).export({ type: "spki", format: "der" });
}
