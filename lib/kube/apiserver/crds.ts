/** The KubeEdge CRD manifests shipped in schemas/crds/, installed at first start. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { isRecord, type KObject } from "./types.ts";

export function defaultCrdDir(): string {
  return fileURLToPath(new URL("../../../schemas/crds/", import.meta.url));
}

/** Every CustomResourceDefinition document in the *.yaml files of `dir` (none if it is missing). */
export function loadCrdManifests(dir = defaultCrdDir()): KObject[] {
  if (!existsSync(dir)) return [];
  const out: KObject[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".yaml") || n.endsWith(".yml")).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), "utf8"))) {
      if (doc.errors.length) throw new Error(`${f}: ${doc.errors[0]!.message}`);
      const obj: unknown = doc.toJS();
      if (isRecord(obj) && obj.kind === "CustomResourceDefinition") out.push(obj as KObject);
    }
  }
  return out;
}
