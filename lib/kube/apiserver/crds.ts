/**
 * The KubeEdge CRD manifests of schemas/crds/, installed at first start. They are imported as text so
 * the bundler inlines them: a compiled cloudcore has no schemas/ directory beside it.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { isRecord, type KObject } from "./types.ts";
import devices from "../../../schemas/crds/devices.kubeedge.io_devices.yaml" with { type: "text" };
import deviceModels from "../../../schemas/crds/devices.kubeedge.io_devicemodels.yaml" with { type: "text" };
import deviceStatuses from "../../../schemas/crds/devices.kubeedge.io_devicestatuses.yaml" with { type: "text" };

const builtIn: [string, string][] = [
  ["devices.kubeedge.io_devicemodels.yaml", deviceModels],
  ["devices.kubeedge.io_devices.yaml", devices],
  ["devices.kubeedge.io_devicestatuses.yaml", deviceStatuses],
];

/** Every CustomResourceDefinition document: the built-in manifests, or the *.yaml files of `dir`. */
export function loadCrdManifests(dir?: string): KObject[] {
  const files: [string, string][] = dir
    ? readdirSync(dir).filter((n) => n.endsWith(".yaml") || n.endsWith(".yml")).sort().map((f) => [f, readFileSync(join(dir, f), "utf8")])
    : builtIn;
  const out: KObject[] = [];
  for (const [name, text] of files) {
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length) throw new Error(`${name}: ${doc.errors[0]!.message}`);
      const obj: unknown = doc.toJS();
      if (isRecord(obj) && obj.kind === "CustomResourceDefinition") out.push(obj as KObject);
    }
  }
  return out;
}
