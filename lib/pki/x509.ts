/**
 * @peculiar/x509 wired to WebCrypto exactly once. Every PKI module imports `x509` from here so the
 * reflect-metadata polyfill and the crypto provider are in place before the library is used.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };
// defined beside the key helpers, which must not load @peculiar/x509 (edgecore reads its credentials without it)
export { ecdsaP256 } from "./keys.ts";
