/**
 * Join tokens, as KubeEdge's `keadm gettoken` prints them: `<caHash>.<JWT>`, where caHash is the hex
 * sha256 of the CA certificate DER (the edge pins the CA it downloads to it) and the JWT is HS256,
 * keyed with the CA key's DER bytes, carrying only `exp`. Any node may join with the same token.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Ca } from "./ca.ts";

export type TokenVerdict = { ok: true } | { ok: false; reason: "expired" | "bad signature" | "malformed" };

export function createToken(ca: Pick<Ca, "caHash" | "hmacKey">, ttlSeconds = 12 * 3600): string {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  return `${ca.caHash}.${header}.${payload}.${hs256(ca.hmacKey, `${header}.${payload}`).toString("base64url")}`;
}

/** Splits a join token into the CA hash and the JWT the certificate service checks. */
export function splitToken(token: string): { caHash: string; jwt: string } {
  const parts = token.trim().split(".");
  if (parts.length !== 4 || !/^[0-9a-fA-F]{64}$/.test(parts[0]!)) {
    throw new Error("malformed join token: expected <sha256 of the CA, 64 hex digits>.<JWT>, as printed by `cloudcore token` or `keadm gettoken`");
  }
  return { caHash: parts[0]!.toLowerCase(), jwt: parts.slice(1).join(".") };
}

export async function verifyToken(ca: Pick<Ca, "hmacKey">, jwt: string): Promise<TokenVerdict> {
  const parts = jwt.split(".");
  if (parts.length !== 3 || !parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p))) return { ok: false, reason: "malformed" };
  const [header, payload, signature] = parts as [string, string, string];
  const h = parseJson(header);
  if (h?.["alg"] !== "HS256") return { ok: false, reason: "malformed" };
  const expected = hs256(ca.hmacKey, `${header}.${payload}`);
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: "bad signature" };
  const exp = parseJson(payload)?.["exp"];
  if (typeof exp !== "number" || !Number.isFinite(exp)) return { ok: false, reason: "malformed" };
  if (Date.now() / 1000 >= exp) return { ok: false, reason: "expired" };
  return { ok: true };
}

function hs256(key: Uint8Array, data: string): Buffer {
  return createHmac("sha256", key).update(data).digest();
}

function base64url(text: string): string {
  return Buffer.from(text).toString("base64url");
}

function parseJson(part: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
