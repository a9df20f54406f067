/**
 * The resource registry: the built-in types and every type defined by a stored
 * CustomResourceDefinition, with what discovery, routing and validation need to know.
 */
import { isRecord, type KObject } from "./types.ts";

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export interface ResourceType {
  group: string;
  /** Served versions, most preferred first. */
  versions: string[];
  resource: string;
  kind: string;
  listKind: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  hasStatus: boolean;
  /** DNS label (namespaces, services) or DNS subdomain (the rest) for metadata.name. */
  nameRule: "label" | "subdomain";
  crd?: {
    /** openAPIV3Schema per version. */
    schemas: Record<string, unknown>;
    printerColumns: Record<string, PrinterColumn[]>;
    /** Versions that declare the status subresource. */
    statusVersions: string[];
  };
}

export const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

function builtin(
  group: string,
  version: string,
  resource: string,
  kind: string,
  opts: { namespaced: boolean; shortNames?: string[]; categories?: string[]; status?: boolean; nameRule?: "label" | "subdomain" },
): ResourceType {
  return {
    group,
    versions: [version],
    resource,
    kind,
    listKind: kind + "List",
    singular: kind.toLowerCase(),
    namespaced: opts.namespaced,
    shortNames: opts.shortNames ?? [],
    categories: opts.categories ?? [],
    hasStatus: opts.status ?? false,
    nameRule: opts.nameRule ?? "subdomain",
  };
}

export const BUILTINS: ResourceType[] = [
  builtin("", "v1", "namespaces", "Namespace", { namespaced: false, shortNames: ["ns"], status: true, nameRule: "label" }),
  builtin("", "v1", "nodes", "Node", { namespaced: false, shortNames: ["no"], status: true }),
  builtin("", "v1", "pods", "Pod", { namespaced: true, shortNames: ["po"], categories: ["all"], status: true }),
  builtin("", "v1", "configmaps", "ConfigMap", { namespaced: true, shortNames: ["cm"] }),
  builtin("", "v1", "secrets", "Secret", { namespaced: true }),
  builtin("", "v1", "services", "Service", { namespaced: true, shortNames: ["svc"], categories: ["all"], status: true, nameRule: "label" }),
  builtin("", "v1", "endpoints", "Endpoints", { namespaced: true, shortNames: ["ep"] }),
  builtin("", "v1", "events", "Event", { namespaced: true, shortNames: ["ev"] }),
  builtin("coordination.k8s.io", "v1", "leases", "Lease", { namespaced: true }),
  builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", {
    namespaced: false,
    shortNames: ["crd", "crds"],
    categories: ["api-extensions"],
    status: true,
  }),
];

/** Kubernetes version ordering: GA > beta > alpha, then higher numbers first, then others by name. */
export function compareKubeVersions(a: string, b: string): number {
  const parse = (v: string): [number, number, number] | null => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return null;
    return [m[2] === undefined ? 3 : m[2] === "beta" ? 2 : 1, Number(m[1]), Number(m[3] ?? 0)];
  };
  const pa = parse(a);
  const pb = parse(b);
  if (pa && pb) return pb[0] - pa[0] || pb[1] - pa[1] || pb[2] - pa[2];
  if (pa) return -1;
  if (pb) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Reads a (structurally checked) CRD object into a ResourceType; null if it serves nothing. */
export function crdToResourceType(crd: KObject): ResourceType | null {
  const spec = isRecord(crd.spec) ? crd.spec : {};
  const names = isRecord(spec.names) ? spec.names : {};
  const group = String(spec.group ?? "");
  const plural = String(names.plural ?? "");
  const kind = String(names.kind ?? "");
  if (!group || !plural || !kind) return null;
  const versions = (Array.isArray(spec.versions) ? spec.versions : []).filter(isRecord).filter((v) => v.served !== false);
  if (versions.length === 0) return null;
  const schemas: Record<string, unknown> = {};
  const printerColumns: Record<string, PrinterColumn[]> = {};
  const statusVersions: string[] = [];
  for (const v of versions) {
    const name = String(v.name);
    if (isRecord(v.schema) && isRecord(v.schema.openAPIV3Schema)) schemas[name] = v.schema.openAPIV3Schema;
    if (isRecord(v.subresources) && isRecord(v.subresources.status)) statusVersions.push(name);
    printerColumns[name] = (Array.isArray(v.additionalPrinterColumns) ? v.additionalPrinterColumns : []).filter(isRecord).map((c) => ({
      name: String(c.name),
      type: String(c.type ?? "string"),
      jsonPath: String(c.jsonPath ?? ""),
      ...(c.description !== undefined ? { description: String(c.description) } : {}),
      ...(typeof c.priority === "number" ? { priority: c.priority } : {}),
      ...(c.format !== undefined ? { format: String(c.format) } : {}),
    }));
  }
  return {
    group,
    versions: versions.map((v) => String(v.name)).sort(compareKubeVersions),
    resource: plural,
    kind,
    listKind: String(names.listKind ?? kind + "List"),
    singular: String(names.singular ?? kind.toLowerCase()),
    namespaced: spec.scope !== "Cluster",
    shortNames: Array.isArray(names.shortNames) ? names.shortNames.map(String) : [],
    categories: Array.isArray(names.categories) ? names.categories.map(String) : [],
    hasStatus: statusVersions.length > 0,
    nameRule: "subdomain",
    crd: { schemas, printerColumns, statusVersions },
  };
}

export class Registry {
  private types = new Map<string, ResourceType>(); // key group/resource
  private crdOwners = new Map<string, string>(); // CRD name -> group/resource

  constructor() {
    for (const t of BUILTINS) this.types.set(`${t.group}/${t.resource}`, t);
  }

  lookup(group: string, version: string, resource: string): ResourceType | undefined {
    const t = this.types.get(`${group}/${resource}`);
    return t && t.versions.includes(version) ? t : undefined;
  }

  byGroupResource(group: string, resource: string): ResourceType | undefined {
    return this.types.get(`${group}/${resource}`);
  }

  all(): ResourceType[] {
    return [...this.types.values()];
  }

  /** API groups with their versions (most preferred first), core group excluded. */
  groups(): Array<{ name: string; versions: string[] }> {
    const by = new Map<string, Set<string>>();
    for (const t of this.types.values()) {
      if (!t.group) continue;
      const s = by.get(t.group) ?? new Set<string>();
      for (const v of t.versions) s.add(v);
      by.set(t.group, s);
    }
    const builtinOrder = ["coordination.k8s.io", "apiextensions.k8s.io"];
    return [...by.entries()]
      .sort(([a], [b]) => {
        const ia = builtinOrder.indexOf(a);
        const ib = builtinOrder.indexOf(b);
        if (ia >= 0 || ib >= 0) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
        return a < b ? -1 : 1;
      })
      .map(([name, vs]) => ({ name, versions: [...vs].sort(compareKubeVersions) }));
  }

  resourcesIn(group: string, version: string): ResourceType[] {
    return [...this.types.values()].filter((t) => t.group === group && t.versions.includes(version));
  }

  /** Installs or refreshes the type a CRD defines; returns the previous group/resource if it changed. */
  applyCrd(crd: KObject): void {
    const name = String(crd.metadata?.name ?? "");
    const old = this.crdOwners.get(name);
    if (old) {
      this.types.delete(old);
      this.crdOwners.delete(name);
    }
    if (crd.metadata?.deletionTimestamp) return;
    const t = crdToResourceType(crd);
    if (!t) return;
    const key = `${t.group}/${t.resource}`;
    if (this.types.has(key) && !this.types.get(key)!.crd) return; // never shadow a built-in
    this.types.set(key, t);
    this.crdOwners.set(name, key);
  }

  removeCrd(name: string): void {
    const key = this.crdOwners.get(name);
    if (key) this.types.delete(key);
    this.crdOwners.delete(name);
  }
}
