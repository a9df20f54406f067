/** Discovery documents (legacy and aggregated) and the small OpenAPI v3 surface kubectl probes. */
import { VERBS, type Registry, type ResourceType } from "./resources.ts";

const gv = (group: string, version: string) => (group ? `${group}/${version}` : version);

export function apiVersions(serverAddress: string): Record<string, unknown> {
  return { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress }] };
}

export function apiGroupList(reg: Registry): Record<string, unknown> {
  return { kind: "APIGroupList", apiVersion: "v1", groups: reg.groups().map((g) => apiGroup(g.name, g.versions)) };
}

export function apiGroup(name: string, versions: string[]): Record<string, unknown> {
  const vs = versions.map((v) => ({ groupVersion: gv(name, v), version: v }));
  return { kind: "APIGroup", apiVersion: "v1", name, versions: vs, preferredVersion: vs[0] };
}

export function apiResourceList(reg: Registry, group: string, version: string): Record<string, unknown> | undefined {
  const types = reg.resourcesIn(group, version);
  if (types.length === 0) return undefined;
  const resources: Array<Record<string, unknown>> = [];
  for (const t of types.sort((a, b) => (a.resource < b.resource ? -1 : 1))) {
    resources.push({
      name: t.resource,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: VERBS,
      ...(t.shortNames.length ? { shortNames: t.shortNames } : {}),
      ...(t.categories.length ? { categories: t.categories } : {}),
    });
    if (hasStatus(t, version)) resources.push({ name: `${t.resource}/status`, singularName: "", namespaced: t.namespaced, kind: t.kind, verbs: ["get", "patch", "update"] });
  }
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion: gv(group, version), resources };
}

function hasStatus(t: ResourceType, version: string): boolean {
  return t.crd ? t.crd.statusVersions.includes(version) : t.hasStatus;
}

/** The aggregated discovery media type the client asked for, if any (v2 preferred). */
export function wantsAggregated(accept: string): "v2" | "v2beta1" | null {
  const parts = accept.split(",").map((p) => p.trim());
  for (const p of parts) {
    if (!p.includes("as=APIGroupDiscoveryList") || !p.includes("g=apidiscovery.k8s.io")) continue;
    if (/v=v2(;|$)/.test(p)) return "v2";
    if (/v=v2beta1(;|$)/.test(p)) return "v2beta1";
  }
  return null;
}

export function aggregatedContentType(v: "v2" | "v2beta1"): string {
  return `application/json;g=apidiscovery.k8s.io;v=${v};as=APIGroupDiscoveryList`;
}

/** APIGroupDiscoveryList for /api (core only) or /apis (all named groups). */
export function aggregatedDiscovery(reg: Registry, core: boolean, v: "v2" | "v2beta1"): Record<string, unknown> {
  const groups = core ? [{ name: "", versions: ["v1"] }] : reg.groups();
  return {
    kind: "APIGroupDiscoveryList",
    apiVersion: `apidiscovery.k8s.io/${v}`,
    metadata: {},
    items: groups.map((g) => ({
      metadata: { name: g.name },
      versions: g.versions.map((version) => ({
        version,
        freshness: "Current",
        resources: reg
          .resourcesIn(g.name, version)
          .sort((a, b) => (a.resource < b.resource ? -1 : 1))
          .map((t) => ({
            resource: t.resource,
            responseKind: { group: t.group, version, kind: t.kind },
            scope: t.namespaced ? "Namespaced" : "Cluster",
            singularResource: t.singular,
            verbs: VERBS,
            ...(t.shortNames.length ? { shortNames: t.shortNames } : {}),
            ...(t.categories.length ? { categories: t.categories } : {}),
            ...(hasStatus(t, version) ? { subresources: [{ subresource: "status", responseKind: { group: t.group, version, kind: t.kind }, verbs: ["get", "patch", "update"] }] } : {}),
          })),
      })),
    })),
  };
}

/** /openapi/v3: the index of group-version documents. */
export function openapiV3Index(reg: Registry): Record<string, unknown> {
  const paths: Record<string, { serverRelativeURL: string }> = {
    "api/v1": { serverRelativeURL: "/openapi/v3/api/v1" },
  };
  for (const g of reg.groups()) for (const v of g.versions) paths[`apis/${g.name}/${v}`] = { serverRelativeURL: `/openapi/v3/apis/${g.name}/${v}` };
  return { paths };
}

const fieldValidationParam = {
  name: "fieldValidation",
  in: "query",
  description: "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.",
  schema: { type: "string", uniqueItems: true },
};

/**
 * A group-version OpenAPI v3 document: the resource paths (with the fieldValidation parameter,
 * which tells kubectl the server validates fields itself) and the CRD schemas.
 */
export function openapiV3Doc(reg: Registry, group: string, version: string): Record<string, unknown> | undefined {
  const types = reg.resourcesIn(group, version);
  if (types.length === 0) return undefined;
  const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
  const paths: Record<string, unknown> = {};
  const schemas: Record<string, unknown> = {};
  for (const t of types) {
    const gvk = { group: t.group, version, kind: t.kind };
    const base = t.namespaced ? `${prefix}/namespaces/{namespace}/${t.resource}` : `${prefix}/${t.resource}`;
    const op = (action: string) => ({
      "x-kubernetes-action": action,
      "x-kubernetes-group-version-kind": gvk,
      parameters: action === "patch" || action === "put" || action === "post" ? [fieldValidationParam] : [],
      responses: { "200": { description: "OK" } },
    });
    paths[base] = { get: op("list"), post: op("post"), delete: op("deletecollection") };
    paths[`${base}/{name}`] = { get: op("get"), put: op("put"), patch: op("patch"), delete: op("delete") };
    // Built-in kinds carry no schema here, so kubectl uses its compiled-in types for them.
    const crdSchema = t.crd?.schemas[version];
    if (crdSchema && typeof crdSchema === "object") {
      schemas[`${t.group.split(".").reverse().join(".")}.${version}.${t.kind}`] = { ...(crdSchema as Record<string, unknown>), "x-kubernetes-group-version-kind": [gvk] };
    }
  }
  return {
    openapi: "3.0.0",
    info: { title: "Outpost embedded API", version: "v1.32.0-outpost" },
    paths,
    components: { schemas },
  };
}
