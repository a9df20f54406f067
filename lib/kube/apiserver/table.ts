/** `as=Table` responses: the columns `kubectl get` prints, for built-ins and CRD printer columns. */
import type { PrinterColumn, ResourceType } from "./resources.ts";
import { isRecord, type KObject } from "./types.ts";

interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

type Cell = string | number | boolean | null;

const col = (name: string, type = "string", priority = 0, format = ""): Column => ({ name, type, format, description: "", priority });

/** "5s", "3m", "2d4h"-style ages, as kubectl prints them. */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ""}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return `${h}h${m % 60 ? `${m % 60}m` : ""}`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 8) return `${d}d${h % 24 ? `${h % 24}h` : ""}`;
  if (d < 365 * 2) return `${d}d`;
  return `${Math.floor(d / 365)}y${d % 365 ? `${d % 365}d` : ""}`;
}

function age(obj: KObject): string {
  const ts = obj.metadata?.creationTimestamp;
  return ts ? humanDuration(Date.now() - Date.parse(ts)) : "<unknown>";
}

function rec(v: unknown): Record<string, unknown> {
  return isRecord(v) ? v : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** Evaluates the simple JSONPath subset CRDs use (`.a.b`, `.a[0].b`, `.a[*].b`, `.a['x.y']`). */
export function evalJsonPath(obj: unknown, path: string): unknown[] {
  const p = path.trim().replace(/^\{|\}$/g, "");
  const tokens: Array<string | number | "*"> = [];
  const re = /\.([A-Za-z0-9_$-]+)|\[(\d+)\]|\[\*\]|\['([^']*)'\]|\["([^"]*)"\]/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(p))) {
    if (m[1] !== undefined) tokens.push(m[1]);
    else if (m[2] !== undefined) tokens.push(Number(m[2]));
    else if (m[3] !== undefined) tokens.push(m[3]);
    else if (m[4] !== undefined) tokens.push(m[4]);
    else tokens.push("*");
  }
  let cur: unknown[] = [obj];
  for (const t of tokens) {
    const next: unknown[] = [];
    for (const c of cur) {
      if (t === "*") next.push(...arr(c));
      else if (typeof t === "number") {
        const x = arr(c)[t];
        if (x !== undefined) next.push(x);
      } else {
        const x = rec(c)[t];
        if (x !== undefined) next.push(x);
      }
    }
    cur = next;
  }
  return cur;
}

function podRow(o: KObject): Cell[] {
  const spec = rec(o.spec);
  const status = rec(o.status);
  const containers = arr(spec.containers);
  const statuses = arr(status.containerStatuses).map(rec);
  const ready = statuses.filter((s) => s.ready === true).length;
  const restarts = statuses.reduce((n, s) => n + (typeof s.restartCount === "number" ? s.restartCount : 0), 0);
  let reason = String(status.reason ?? status.phase ?? "Pending");
  for (const s of statuses) {
    const st = rec(s.state);
    const waiting = rec(st.waiting);
    const term = rec(st.terminated);
    if (waiting.reason) reason = String(waiting.reason);
    else if (term.reason && reason !== "Running") reason = String(term.reason);
  }
  if (o.metadata?.deletionTimestamp) reason = "Terminating";
  return [o.metadata?.name ?? "", `${ready}/${containers.length}`, reason, restarts, age(o), String(status.podIP ?? "<none>"), String(spec.nodeName ?? "<none>"), "<none>", "<none>"];
}

function nodeRow(o: KObject): Cell[] {
  const status = rec(o.status);
  const ready = arr(status.conditions).map(rec).find((c) => c.type === "Ready");
  let st = !ready ? "Unknown" : ready.status === "True" ? "Ready" : ready.status === "False" ? "NotReady" : "Unknown";
  if (rec(o.spec).unschedulable === true) st += ",SchedulingDisabled";
  const roles = Object.keys(o.metadata?.labels ?? {})
    .filter((k) => k.startsWith("node-role.kubernetes.io/"))
    .map((k) => k.slice("node-role.kubernetes.io/".length))
    .filter(Boolean);
  const info = rec(status.nodeInfo);
  const addr = (t: string) => String(arr(status.addresses).map(rec).find((a) => a.type === t)?.address ?? "<none>");
  return [
    o.metadata?.name ?? "",
    st,
    roles.length ? roles.sort().join(",") : "<none>",
    age(o),
    String(info.kubeletVersion ?? ""),
    addr("InternalIP"),
    addr("ExternalIP"),
    String(info.osImage ?? "<unknown>"),
    String(info.kernelVersion ?? "<unknown>"),
    String(info.containerRuntimeVersion ?? "<unknown>"),
  ];
}

function serviceRow(o: KObject): Cell[] {
  const spec = rec(o.spec);
  const ports = arr(spec.ports)
    .map(rec)
    .map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol ?? "TCP"}`)
    .join(",");
  const sel = Object.entries(rec(spec.selector))
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(",");
  const ext = arr(spec.externalIPs).join(",");
  return [o.metadata?.name ?? "", String(spec.type ?? "ClusterIP"), String(spec.clusterIP ?? "<none>"), ext || "<none>", ports || "<none>", age(o), sel || "<none>"];
}

function endpointsRow(o: KObject): Cell[] {
  const eps: string[] = [];
  for (const s of arr(o.subsets).map(rec)) {
    const ports = arr(s.ports).map(rec);
    for (const a of arr(s.addresses).map(rec)) {
      if (ports.length === 0) eps.push(String(a.ip));
      for (const p of ports) eps.push(`${String(a.ip)}:${String(p.port)}`);
    }
  }
  const shown = eps.length > 3 ? `${eps.slice(0, 3).join(",")} + ${eps.length - 3} more...` : eps.join(",");
  return [o.metadata?.name ?? "", shown || "<none>", age(o)];
}

function eventRow(o: KObject): Cell[] {
  const inv = rec(o.involvedObject);
  const last = String(o.lastTimestamp ?? o.eventTime ?? o.metadata?.creationTimestamp ?? "");
  return [last ? humanDuration(Date.now() - Date.parse(last)) : "<unknown>", String(o.type ?? ""), String(o.reason ?? ""), `${String(inv.kind ?? "").toLowerCase()}/${String(inv.name ?? "")}`, String(o.message ?? "")];
}

const builtinTables: Record<string, { columns: Column[]; row: (o: KObject) => Cell[] }> = {
  Pod: {
    columns: [col("Name", "string", 0, "name"), col("Ready"), col("Status"), col("Restarts", "string"), col("Age"), col("IP", "string", 1), col("Node", "string", 1), col("Nominated Node", "string", 1), col("Readiness Gates", "string", 1)],
    row: podRow,
  },
  Node: {
    columns: [col("Name", "string", 0, "name"), col("Status"), col("Roles"), col("Age"), col("Version"), col("Internal-IP", "string", 1), col("External-IP", "string", 1), col("OS-Image", "string", 1), col("Kernel-Version", "string", 1), col("Container-Runtime", "string", 1)],
    row: nodeRow,
  },
  Namespace: { columns: [col("Name", "string", 0, "name"), col("Status"), col("Age")], row: (o) => [o.metadata?.name ?? "", String(rec(o.status).phase ?? "Active"), age(o)] },
  ConfigMap: { columns: [col("Name", "string", 0, "name"), col("Data", "integer"), col("Age")], row: (o) => [o.metadata?.name ?? "", Object.keys(rec(o.data)).length + Object.keys(rec(o.binaryData)).length, age(o)] },
  Secret: { columns: [col("Name", "string", 0, "name"), col("Type"), col("Data", "integer"), col("Age")], row: (o) => [o.metadata?.name ?? "", String(o.type ?? "Opaque"), Object.keys(rec(o.data)).length, age(o)] },
  Service: { columns: [col("Name", "string", 0, "name"), col("Type"), col("Cluster-IP"), col("External-IP"), col("Port(s)"), col("Age"), col("Selector", "string", 1)], row: serviceRow },
  Endpoints: { columns: [col("Name", "string", 0, "name"), col("Endpoints"), col("Age")], row: endpointsRow },
  Event: { columns: [col("Last Seen"), col("Type"), col("Reason"), col("Object"), col("Message")], row: eventRow },
  Lease: { columns: [col("Name", "string", 0, "name"), col("Holder"), col("Age")], row: (o) => [o.metadata?.name ?? "", String(rec(o.spec).holderIdentity ?? ""), age(o)] },
  CustomResourceDefinition: { columns: [col("Name", "string", 0, "name"), col("Created At", "date")], row: (o) => [o.metadata?.name ?? "", String(o.metadata?.creationTimestamp ?? "")] },
};

function crdColumns(cols: PrinterColumn[]): { columns: Column[]; row: (o: KObject) => Cell[] } {
  const defs = cols.length ? cols : [{ name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" }];
  return {
    columns: [col("Name", "string", 0, "name"), ...defs.map((c) => ({ name: c.name, type: c.type, format: c.format ?? "", description: c.description ?? "", priority: c.priority ?? 0 }))],
    row: (o) => [
      o.metadata?.name ?? "",
      ...defs.map((c): Cell => {
        const vals = evalJsonPath(o, c.jsonPath);
        if (vals.length === 0) return null;
        if (c.type === "date") {
          const t = Date.parse(String(vals[0]));
          return Number.isNaN(t) ? String(vals[0]) : humanDuration(Date.now() - t);
        }
        if (vals.length === 1 && (typeof vals[0] === "number" || typeof vals[0] === "boolean")) return vals[0];
        return vals.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(",");
      }),
    ],
  };
}

export type IncludeObject = "None" | "Metadata" | "Object";

export function toTable(
  t: ResourceType,
  version: string,
  objects: KObject[],
  opts: { includeObject: IncludeObject; resourceVersion?: string; continue?: string; noHeaders?: boolean },
): Record<string, unknown> {
  const spec = t.crd ? crdColumns(t.crd.printerColumns[version] ?? []) : builtinTables[t.kind] ?? crdColumns([]);
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: { ...(opts.resourceVersion ? { resourceVersion: opts.resourceVersion } : {}), ...(opts.continue ? { continue: opts.continue } : {}) },
    ...(opts.noHeaders ? {} : { columnDefinitions: spec.columns }),
    rows: objects.map((o) => ({
      cells: spec.row(o),
      object:
        opts.includeObject === "None"
          ? null
          : opts.includeObject === "Object"
            ? o
            : { kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: o.metadata ?? {} },
    })),
  };
}
