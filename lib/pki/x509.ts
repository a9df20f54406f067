/**
 * @peculiar/x509 wired to WebCrypto exactly once. Every PKI module imports `x509` from here so the
 * reflect-metadata polyfill and the crypto provider are in place before the library is used.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };

/** The only key type Outpost issues and accepts: KubeEdge's edge and hub use ECDSA P-256 / SHA-256. */
export const ecdsaP256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
