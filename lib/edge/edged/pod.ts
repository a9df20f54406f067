/**
 * The part of v1.Pod that Edged reads, validated with valibot. Unknown fields pass through
 * (loose objects); what Edged relies on is checked so a bad pod becomes a clear Failed status
 * instead of an exception deep inside the pod worker.
 */
import * as v from "valibot";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
/** Relative path inside a volume: no absolute paths, no `..` segments. */
const safeRel = v.pipe(
  v.string(),
  v.minLength(1),
  v.check((p) => !p.startsWith("/") && !p.split("/").includes(".."), "must be a relative path without '..'"),
);
const name = v.pipe(v.string(), v.minLength(1), v.maxLength(253));
const optBool = v.nullish(v.boolean());
const mode = v.nullish(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0o777)));

const KeyToPath = v.looseObject({ key: v.pipe(v.string(), v.minLength(1)), path: safeRel, mode });

const KeyRef = v.looseObject({ name, key: v.pipe(v.string(), v.minLength(1)), optional: optBool });
const FieldRef = v.looseObject({ fieldPath: v.pipe(v.string(), v.minLength(1)), apiVersion: v.nullish(v.string()) });

export const EnvVarSchema = v.looseObject({
  name: v.pipe(v.string(), v.regex(ENV_NAME, "invalid environment variable name")),
  value: v.nullish(v.string()),
  valueFrom: v.nullish(
    v.looseObject({
      configMapKeyRef: v.nullish(KeyRef),
      secretKeyRef: v.nullish(KeyRef),
      fieldRef: v.nullish(FieldRef),
      resourceFieldRef: v.nullish(v.unknown()),
    }),
  ),
});

const SourceRef = v.looseObject({ name, optional: optBool });
export const EnvFromSchema = v.looseObject({
  prefix: v.nullish(v.string()),
  configMapRef: v.nullish(SourceRef),
  secretRef: v.nullish(SourceRef),
});

export const VolumeMountSchema = v.looseObject({
  name: v.pipe(v.string(), v.regex(DNS_LABEL, "volume name must be a DNS label")),
  mountPath: v.pipe(
    v.string(),
    v.check((p) => p.startsWith("/") && p.replace(/\/+$/, "") !== "" && !p.split("/").includes(".."), "mountPath must be absolute, not /, without '..'"),
  ),
  subPath: v.nullish(v.union([v.literal(""), safeRel])),
  subPathExpr: v.nullish(v.string()),
  readOnly: optBool,
});

export const ContainerSchema = v.looseObject({
  name: v.pipe(v.string(), v.regex(DNS_LABEL, "container name must be a DNS label")),
  image: v.nullish(v.string()),
  command: v.nullish(v.array(v.string())),
  args: v.nullish(v.array(v.string())),
  workingDir: v.nullish(v.string()),
  env: v.nullish(v.array(EnvVarSchema)),
  envFrom: v.nullish(v.array(EnvFromSchema)),
  volumeMounts: v.nullish(v.array(VolumeMountSchema)),
  imagePullPolicy: v.nullish(v.picklist(["Always", "IfNotPresent", "Never"], "imagePullPolicy must be Always, IfNotPresent or Never")),
  resources: v.nullish(v.looseObject({ limits: v.nullish(v.record(v.string(), v.union([v.string(), v.number()]))) })),
});

const DownwardItem = v.looseObject({ path: safeRel, fieldRef: v.nullish(FieldRef), mode });

export const VolumeSchema = v.looseObject({
  name: v.pipe(v.string(), v.regex(DNS_LABEL, "volume name must be a DNS label")),
  configMap: v.nullish(v.looseObject({ name, items: v.nullish(v.array(KeyToPath)), defaultMode: mode, optional: optBool })),
  secret: v.nullish(v.looseObject({ secretName: name, items: v.nullish(v.array(KeyToPath)), defaultMode: mode, optional: optBool })),
  emptyDir: v.nullish(v.looseObject({ medium: v.nullish(v.string()) })),
  hostPath: v.nullish(
    v.looseObject({
      path: v.pipe(v.string(), v.startsWith("/", "hostPath.path must be absolute")),
      type: v.nullish(v.picklist(["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"])),
    }),
  ),
  downwardAPI: v.nullish(v.looseObject({ items: v.nullish(v.array(DownwardItem)), defaultMode: mode })),
  projected: v.nullish(
    v.looseObject({
      defaultMode: mode,
      sources: v.nullish(
        v.array(
          v.looseObject({
            configMap: v.nullish(v.looseObject({ name, items: v.nullish(v.array(KeyToPath)), optional: optBool })),
            secret: v.nullish(v.looseObject({ name, items: v.nullish(v.array(KeyToPath)), optional: optBool })),
            downwardAPI: v.nullish(v.looseObject({ items: v.nullish(v.array(DownwardItem)) })),
            serviceAccountToken: v.nullish(v.unknown()),
          }),
        ),
      ),
    }),
  ),
});

export const PodSchema = v.looseObject({
  metadata: v.looseObject({
    name,
    namespace: v.optional(name, "default"),
    uid: v.pipe(v.string(), v.regex(/^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$/, "uid must be a plain identifier")),
    labels: v.nullish(v.record(v.string(), v.string())),
    annotations: v.nullish(v.record(v.string(), v.string())),
    deletionTimestamp: v.nullish(v.string()),
    deletionGracePeriodSeconds: v.nullish(v.pipe(v.number(), v.integer(), v.minValue(0))),
  }),
  spec: v.looseObject({
    nodeName: v.nullish(v.string()),
    containers: v.pipe(v.array(ContainerSchema), v.minLength(1, "a pod needs at least one container")),
    volumes: v.nullish(v.array(VolumeSchema)),
    restartPolicy: v.nullish(v.picklist(["Always", "OnFailure", "Never"], "restartPolicy must be Always, OnFailure or Never")),
    terminationGracePeriodSeconds: v.nullish(v.pipe(v.number(), v.integer(), v.minValue(0))),
    serviceAccountName: v.nullish(v.string()),
  }),
});

export type Pod = v.InferOutput<typeof PodSchema>;
export type Container = v.InferOutput<typeof ContainerSchema>;
export type Volume = v.InferOutput<typeof VolumeSchema>;
export type VolumeMount = v.InferOutput<typeof VolumeMountSchema>;
export type EnvVar = v.InferOutput<typeof EnvVarSchema>;
export type FieldRefT = v.InferOutput<typeof FieldRef>;

/** The loosest view of a pod: enough to name it even when it does not validate. */
export interface PodIdentity {
  name: string;
  namespace: string;
  uid: string;
  nodeName: string | null;
  deleting: boolean;
}

export function podIdentity(obj: unknown): PodIdentity | null {
  if (!obj || typeof obj !== "object") return null;
  const o = obj as { metadata?: Record<string, unknown>; spec?: Record<string, unknown> };
  const md = o.metadata;
  if (!md || typeof md.name !== "string" || !md.name) return null;
  return {
    name: md.name,
    namespace: typeof md.namespace === "string" && md.namespace ? md.namespace : "default",
    uid: typeof md.uid === "string" ? md.uid : "",
    nodeName: typeof o.spec?.nodeName === "string" ? o.spec.nodeName : null,
    deleting: typeof md.deletionTimestamp === "string" && md.deletionTimestamp !== "",
  };
}

export type ValidationResult = { ok: true; pod: Pod } | { ok: false; message: string };

/** Validates a pod and checks what only the process runtime needs (every container has a command). */
export function validatePod(obj: unknown, runtimeName: string): ValidationResult {
  const r = v.safeParse(PodSchema, obj);
  if (!r.success) {
    const issue = r.issues[0];
    const path = issue ? v.getDotPath(issue) : null;
    return { ok: false, message: `invalid pod: ${path ? `${path}: ` : ""}${issue?.message ?? "invalid"}` };
  }
  const pod = r.output;
  const seen = new Set<string>();
  for (const c of pod.spec.containers) {
    if (seen.has(c.name)) return { ok: false, message: `invalid pod: duplicate container name "${c.name}"` };
    seen.add(c.name);
    if (runtimeName === "process" && !(c.command && c.command.length > 0))
      return {
        ok: false,
        message: `container "${c.name}" has no command: the process runtime does not pull image ${JSON.stringify(c.image ?? "")} and needs spec.containers[].command`,
      };
  }
  const vols = new Map<string, Volume>();
  for (const vol of pod.spec.volumes ?? []) {
    if (vols.has(vol.name)) return { ok: false, message: `invalid pod: duplicate volume name "${vol.name}"` };
    const kinds = ["configMap", "secret", "emptyDir", "hostPath", "downwardAPI", "projected"].filter((k) => (vol as Record<string, unknown>)[k] != null);
    if (kinds.length !== 1) {
      const other = Object.keys(vol).filter((k) => k !== "name");
      return {
        ok: false,
        message:
          kinds.length === 0
            ? `volume "${vol.name}": unsupported volume type ${other.length ? other.join(",") : "(none given)"}; supported: configMap, secret, emptyDir, hostPath, downwardAPI, projected`
            : `volume "${vol.name}": more than one volume type (${kinds.join(",")})`,
      };
    }
    vols.set(vol.name, vol);
  }
  for (const c of pod.spec.containers)
    for (const m of c.volumeMounts ?? []) if (!vols.has(m.name)) return { ok: false, message: `container "${c.name}": volumeMount "${m.name}" names no volume of the pod` };
  return { ok: true, pod };
}
