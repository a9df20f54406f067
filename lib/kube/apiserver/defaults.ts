/** Per-kind defaulting and status handling on create/update, as the real API server does it. */
import type { ResourceType } from "./resources.ts";
import { isRecord, meta, type KObject } from "./types.ts";
import { show } from "./errors.ts";

export function nowRfc3339(ms = Date.now()): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function rec(o: Record<string, unknown>, k: string): Record<string, unknown> {
  const v = o[k];
  if (isRecord(v)) return v;
  const fresh: Record<string, unknown> = {};
  o[k] = fresh;
  return fresh;
}

function defaultContainer(c: unknown): void {
  if (!isRecord(c)) return;
  c.terminationMessagePath ??= "/dev/termination-log";
  c.terminationMessagePolicy ??= "File";
  if (c.imagePullPolicy === undefined && typeof c.image === "string") {
    const tag = /:([^/:@]+)$/.exec(c.image.split("@")[0]!)?.[1];
    c.imagePullPolicy = !tag || tag === "latest" ? "Always" : "IfNotPresent";
  }
  c.resources ??= {};
  if (Array.isArray(c.ports)) for (const p of c.ports) if (isRecord(p)) p.protocol ??= "TCP";
}

/** Fills the defaults of the built-in kinds; `create` also resets what a create may not set. */
export function applyDefaults(t: ResourceType, obj: KObject, create: boolean, allocateIp: () => string): void {
  const md = meta(obj);
  if (t.crd) {
    if (create && t.hasStatus) delete obj.status;
    return;
  }
  switch (t.kind) {
    case "Pod": {
      const spec = rec(obj, "spec");
      spec.restartPolicy ??= "Always";
      spec.terminationGracePeriodSeconds ??= 30;
      spec.dnsPolicy ??= "ClusterFirst";
      spec.schedulerName ??= "default-scheduler";
      spec.securityContext ??= {};
      spec.enableServiceLinks ??= true;
      spec.preemptionPolicy ??= "PreemptLowerPriority";
      spec.priority ??= 0;
      for (const k of ["containers", "initContainers"]) if (Array.isArray(spec[k])) (spec[k] as unknown[]).forEach(defaultContainer);
      if (create) obj.status = { phase: "Pending", qosClass: "BestEffort" };
      break;
    }
    case "Namespace": {
      md.labels = { ...(md.labels ?? {}), "kubernetes.io/metadata.name": show(md.name) };
      const spec = rec(obj, "spec");
      spec.finalizers ??= ["kubernetes"];
      if (create) obj.status = { phase: "Active" };
      break;
    }
    case "Secret": {
      obj.type ??= "Opaque";
      if (isRecord(obj.stringData)) {
        const data = rec(obj, "data");
        for (const [k, v] of Object.entries(obj.stringData)) data[k] = Buffer.from(String(v), "utf8").toString("base64");
      }
      delete obj.stringData;
      break;
    }
    case "Service": {
      const spec = rec(obj, "spec");
      spec.type ??= "ClusterIP";
      spec.sessionAffinity ??= "None";
      spec.internalTrafficPolicy ??= "Cluster";
      if (Array.isArray(spec.ports))
        for (const p of spec.ports)
          if (isRecord(p)) {
            p.protocol ??= "TCP";
            p.targetPort ??= p.port;
          }
      if (create && spec.clusterIP === undefined && spec.type !== "ExternalName") spec.clusterIP = allocateIp();
      if (typeof spec.clusterIP === "string") {
        spec.clusterIPs ??= [spec.clusterIP];
        if (spec.clusterIP !== "None") {
          spec.ipFamilies ??= ["IPv4"];
          spec.ipFamilyPolicy ??= "SingleStack";
        }
      }
      if (create) obj.status = { loadBalancer: {} };
      break;
    }
    case "CustomResourceDefinition": {
      const spec = rec(obj, "spec");
      const names = rec(spec, "names");
      names.singular ??= String(names.kind ?? "").toLowerCase();
      names.listKind ??= `${String(names.kind ?? "")}List`;
      const storage = Array.isArray(spec.versions) ? spec.versions.filter(isRecord).find((v) => v.storage === true)?.name : undefined;
      const status = isRecord(obj.status) && !create ? obj.status : {};
      const now = nowRfc3339();
      status.acceptedNames = { ...names };
      if (!Array.isArray(status.conditions)) status.conditions = [
        { type: "NamesAccepted", status: "True", reason: "NoConflicts", message: "no conflicts found", lastTransitionTime: now },
        { type: "Established", status: "True", reason: "InitialNamesAccepted", message: "the initial names have been accepted", lastTransitionTime: now },
      ];
      const stored = new Set(Array.isArray(status.storedVersions) ? status.storedVersions.map(String) : []);
      if (storage) stored.add(String(storage));
      status.storedVersions = [...stored];
      obj.status = status;
      break;
    }
  }
}

/** Whether a kind accepts PUT of a missing object as a create (as the real server allows). */
export function allowsCreateOnUpdate(t: ResourceType): boolean {
  return !t.crd && (t.kind === "Endpoints" || t.kind === "Event");
}
