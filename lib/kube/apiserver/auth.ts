/** Bearer tokens (admin and read-only), kept stable in the store, and the kubeconfig file. */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ObjectStore } from "./storage.ts";

export interface Tokens {
  admin: string;
  readonly: string;
}

export type Role = "admin" | "readonly";

export function loadOrCreateTokens(store: ObjectStore): Tokens {
  const get = (key: string): string => {
    let v = store.getMeta(key);
    if (!v) {
      v = randomBytes(32).toString("base64url");
      store.setMeta(key, v);
    }
    return v;
  };
  return { admin: get("token_admin"), readonly: get("token_readonly") };
}

function same(a: string, b: string): boolean {
  const ba = Buffer.from(a);
  const bb = Buffer.from(b);
  return ba.length === bb.length && timingSafeEqual(ba, bb);
}

/** Who the Authorization header belongs to, or null. */
export function authenticate(header: string | undefined, tokens: Tokens): Role | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return null;
  if (same(m[1]!, tokens.admin)) return "admin";
  if (same(m[1]!, tokens.readonly)) return "readonly";
  return null;
}

function kubeconfigText(server: string, user: string, token: string, caPem?: string): string {
  const q = (s: string) => JSON.stringify(s);
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: outpost",
    "  cluster:",
    `    server: ${q(server)}`,
    ...(caPem ? [`    certificate-authority-data: ${Buffer.from(caPem).toString("base64")}`] : []),
    "contexts:",
    "- name: outpost",
    "  context:",
    "    cluster: outpost",
    `    user: ${user}`,
    "    namespace: default",
    "current-context: outpost",
    "users:",
    `- name: ${user}`,
    "  user:",
    `    token: ${q(token)}`,
    "",
  ].join("\n");
}

/** Writes `<dataDir>/kubeconfig` (admin) and `<dataDir>/kubeconfig-readonly`, mode 0600, atomically. */
export function writeKubeconfigs(dataDir: string, server: string, tokens: Tokens, caPem?: string): string {
  mkdirSync(dataDir, { recursive: true });
  const write = (file: string, text: string) => {
    const path = join(dataDir, file);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, path);
    return path;
  };
  write("kubeconfig-readonly", kubeconfigText(server, "outpost-readonly", tokens.readonly, caPem));
  return write("kubeconfig", kubeconfigText(server, "outpost-admin", tokens.admin, caPem));
}
