/**
 * The REST semantics of the embedded API: create/get/list/update/patch/delete with optimistic
 * concurrency, generateName, uid, generation, status subresources, finalizers, graceful pod
 * deletion, namespace termination, CRD-defined types and owner-reference garbage collection.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "../../log.ts";
import { allowsCreateOnUpdate, applyDefaults, nowRfc3339 } from "./defaults.ts";
import { ApiError, errors, show } from "./errors.ts";
import { applyPatch, jsonPatch, mergePatch, strategicMergePatch } from "./patch.ts";
import type { Registry, ResourceType } from "./resources.ts";
import { matches, type Selector } from "./selectors.ts";
import type { Change, ObjectStore } from "./storage.ts";
import { clone, isRecord, meta, type KObject, type StoreEvent } from "./types.ts";
import { checkObjectShape, validateObject } from "./validate.ts";

export interface WriteOptions {
  dryRun?: boolean;
  /** fieldValidation=Strict: unknown fields are an error rather than pruned. */
  strict?: boolean;
}

export interface DeleteOptions extends WriteOptions {
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
  propagationPolicy?: string;
}

export type PatchType = "json" | "merge" | "strategic" | "apply";

const PROTECTED_NAMESPACES = new Set(["default", "kube-system", "kube-public", "kube-node-lease"]);
const NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789";

export const gvString = (group: string, version: string) => (group ? `${group}/${version}` : version);

/** JSON with object keys sorted, so equal objects compare equal whatever their key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isRecord(v)) {
    return `{${Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

function stripForCompare(o: KObject): string {
  const c = { ...o, metadata: { ...(o.metadata ?? {}) } };
  delete c.metadata.resourceVersion;
  delete c.metadata.managedFields;
  delete c.apiVersion;
  return canonical(c);
}

function specPart(o: KObject): string {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = o;
  return canonical(rest);
}

export class Api {
  /** Keys (group|resource|namespace|name) of objects carrying a deletionTimestamp. */
  private terminating = new Set<string>();
  private sweeper: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly store: ObjectStore,
    readonly registry: Registry,
    private readonly log: Logger,
  ) {
    for (const crd of store.list("apiextensions.k8s.io", "customresourcedefinitions")) registry.applyCrd(crd);
    store.subscribe((ev) => this.onEvent(ev));
    for (const k of store.listTerminatingKeys()) this.terminating.add(this.key(k, k.namespace, k.name));
  }

  startSweeper(intervalMs = 1000): void {
    this.sweeper = setInterval(() => {
      try {
        this.sweep();
      } catch (err) {
        this.log.warn("sweep failed", { error: String(err) });
      }
    }, intervalMs);
    (this.sweeper as { unref?: () => void }).unref?.();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
  }

  private key(t: { group: string; resource: string }, ns: string, name: string): string {
    return `${t.group}|${t.resource}|${ns}|${name}`;
  }

  private onEvent(ev: StoreEvent): void {
    const k = this.key(ev, ev.namespace, ev.name);
    if (ev.type !== "DELETED" && ev.object.metadata?.deletionTimestamp) this.terminating.add(k);
    else this.terminating.delete(k);
    if (ev.group === "apiextensions.k8s.io" && ev.resource === "customresourcedefinitions") {
      if (ev.type === "DELETED") this.registry.removeCrd(ev.name);
      else this.registry.applyCrd(ev.object);
    }
  }

  /** The object as served at `version`: apiVersion and kind first. */
  output(t: ResourceType, version: string, obj: KObject): KObject {
    const { apiVersion: _a, kind: _k, ...rest } = obj;
    return { apiVersion: gvString(t.group, version), kind: t.kind, ...rest };
  }

  private nsKey(t: ResourceType, ns: string): string {
    return t.namespaced ? ns : "";
  }

  private allocateIp = (): string => {
    const n = Number(this.store.getMeta("service_ip_seq") ?? "10") + 1;
    this.store.setMeta("service_ip_seq", String(n));
    return `10.96.${(n >> 8) & 255}.${n & 255}`;
  };

  get(t: ResourceType, version: string, ns: string, name: string): KObject {
    const o = this.store.get(t.group, t.resource, this.nsKey(t, ns), name);
    if (!o) throw errors.notFound(t.group, t.resource, name);
    return this.output(t, version, o);
  }

  list(
    t: ResourceType,
    version: string,
    ns: string | undefined,
    sel: Selector,
    limit?: number,
    cont?: string,
  ): { items: KObject[]; resourceVersion: string; continue?: string; remaining?: number } {
    const rv = String(this.store.currentRV);
    let all = this.store.list(t.group, t.resource, t.namespaced ? ns : undefined).filter((o) => matches(sel, o));
    if (cont) {
      let start: string;
      try {
        const tok = JSON.parse(Buffer.from(cont, "base64url").toString("utf8")) as { start?: unknown };
        if (typeof tok.start !== "string") throw new Error("bad");
        start = tok.start;
      } catch {
        throw errors.badRequest("invalid continue token");
      }
      all = all.filter((o) => `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}` > start);
    }
    if (limit && limit > 0 && all.length > limit) {
      const page = all.slice(0, limit);
      const last = page[page.length - 1]!;
      const token = Buffer.from(JSON.stringify({ rv, start: `${last.metadata?.namespace ?? ""}/${last.metadata?.name ?? ""}` })).toString("base64url");
      return { items: page.map((o) => this.output(t, version, o)), resourceVersion: rv, continue: token, remaining: all.length - limit };
    }
    return { items: all.map((o) => this.output(t, version, o)), resourceVersion: rv };
  }

  private checkKindAndVersion(t: ResourceType, version: string, obj: KObject): void {
    if (obj.kind !== undefined && obj.kind !== t.kind) throw errors.badRequest(`the kind in the body (${show(obj.kind)}) does not match the expected kind (${t.kind})`);
    const want = gvString(t.group, version);
    if (obj.apiVersion !== undefined && obj.apiVersion !== want) {
      // CRDs may serve several versions without conversion; anything in the same group is accepted.
      const ok = t.crd && typeof obj.apiVersion === "string" && t.versions.some((v) => gvString(t.group, v) === obj.apiVersion);
      if (!ok) throw errors.badRequest(`the API version in the data (${show(obj.apiVersion)}) does not match the expected API version (${want})`);
    }
  }

  private checkNamespace(t: ResourceType, ns: string, forCreate: boolean): void {
    if (!t.namespaced) return;
    const nsObj = this.store.get("", "namespaces", "", ns);
    if (!nsObj) throw errors.notFound("", "namespaces", ns);
    if (forCreate && nsObj.metadata?.deletionTimestamp)
      throw new ApiError(403, "Forbidden", `${t.resource} "${"x"}" is forbidden: unable to create new content in namespace ${ns} because it is being terminated`);
  }

  create(t: ResourceType, version: string, ns: string, body: unknown, opts: WriteOptions = {}): KObject {
    const obj = clone(checkObjectShape(body));
    this.checkKindAndVersion(t, version, obj);
    const md = meta(obj);
    if (t.namespaced) {
      if (md.namespace && md.namespace !== ns) throw errors.badRequest("the namespace of the provided object does not match the namespace sent on the request");
      md.namespace = ns;
    } else delete md.namespace;
    this.checkNamespace(t, ns, true);
    let generated = false;
    if (!md.name && typeof md.generateName === "string" && md.generateName) {
      generated = true;
      md.name = this.generateName(t, ns, md.generateName);
    }
    md.uid = randomUUID();
    md.creationTimestamp = nowRfc3339();
    md.generation = 1;
    delete md.resourceVersion;
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    delete md.managedFields;
    delete md.selfLink;
    applyDefaults(t, obj, true, this.allocateIp);
    validateObject(t, obj, version, { strict: opts.strict });
    obj.apiVersion = gvString(t.group, version);
    obj.kind = t.kind;
    const name = md.name!;
    if (this.store.get(t.group, t.resource, this.nsKey(t, ns), name)) {
      if (generated) throw new ApiError(409, "AlreadyExists", `${t.resource} "${name}" already exists, the server was not able to generate a unique name for the object`);
      throw errors.alreadyExists(t.group, t.resource, name);
    }
    if (!opts.dryRun) this.store.commit([{ type: "ADDED", group: t.group, resource: t.resource, namespace: this.nsKey(t, ns), name, object: obj }]);
    return this.output(t, version, obj);
  }

  private generateName(t: ResourceType, ns: string, prefix: string): string {
    const base = prefix.length > 58 ? prefix.slice(0, 58) : prefix;
    for (let i = 0; i < 8; i++) {
      let s = base;
      for (let j = 0; j < 5; j++) s += NAME_CHARS[Math.floor(Math.random() * NAME_CHARS.length)];
      if (!this.store.get(t.group, t.resource, this.nsKey(t, ns), s)) return s;
    }
    return base + randomUUID().slice(0, 5);
  }

  private statusVersion(t: ResourceType, version: string): boolean {
    return t.crd ? t.crd.statusVersions.includes(version) : t.hasStatus;
  }

  update(t: ResourceType, version: string, ns: string, name: string, body: unknown, sub: string | undefined, opts: WriteOptions = {}): { object: KObject; created: boolean } {
    const obj = clone(checkObjectShape(body));
    this.checkKindAndVersion(t, version, obj);
    const md = meta(obj);
    if (md.name !== undefined && md.name !== name) throw errors.badRequest(`the name of the object (${show(md.name)}) does not match the name on the URL (${name})`);
    if (t.namespaced && md.namespace && md.namespace !== ns) throw errors.badRequest("the namespace of the provided object does not match the namespace sent on the request");
    md.name = name;
    const existing = this.store.get(t.group, t.resource, this.nsKey(t, ns), name);
    if (!existing) {
      if (!sub && allowsCreateOnUpdate(t)) return { object: this.create(t, version, ns, obj, opts), created: true };
      throw errors.notFound(t.group, t.resource, name);
    }
    return { object: this.replace(t, version, ns, existing, obj, sub, opts), created: false };
  }

  /** Shared tail of update and patch: `incoming` is the full desired object. */
  private replace(t: ResourceType, version: string, ns: string, existing: KObject, incoming: KObject, sub: string | undefined, opts: WriteOptions): KObject {
    const name = existing.metadata!.name!;
    const md = meta(incoming);
    if (md.resourceVersion && md.resourceVersion !== existing.metadata?.resourceVersion)
      throw errors.conflict(t.group, t.resource, name, "the object has been modified; please apply your changes to the latest version and try again");
    if (sub !== undefined && sub !== "status") throw errors.noRoute();
    if (sub === "status" && !this.statusVersion(t, version)) throw errors.noRoute();
    let next: KObject;
    if (sub === "status") {
      next = clone(existing);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = incoming;
      const em = existing.metadata ?? {};
      md.uid = em.uid;
      md.creationTimestamp = em.creationTimestamp;
      md.namespace = em.namespace;
      md.generation = em.generation ?? 1;
      if (em.deletionTimestamp) md.deletionTimestamp = em.deletionTimestamp;
      else delete md.deletionTimestamp;
      if (em.deletionGracePeriodSeconds !== undefined) md.deletionGracePeriodSeconds = em.deletionGracePeriodSeconds;
      else delete md.deletionGracePeriodSeconds;
      delete md.managedFields;
      delete md.selfLink;
      if (!t.namespaced) delete md.namespace;
      if (this.statusVersion(t, version)) {
        if (existing.status === undefined) delete next.status;
        else next.status = existing.status;
      }
      if ((t.kind === "ConfigMap" || t.kind === "Secret") && existing.immutable === true) {
        if (JSON.stringify(next.data ?? null) !== JSON.stringify(existing.data ?? null) || JSON.stringify(next.binaryData ?? null) !== JSON.stringify(existing.binaryData ?? null) || next.immutable !== true)
          throw errors.invalid(t.group, t.kind, name, [{ field: "data", message: "Forbidden: field is immutable when `immutable` is set", reason: "FieldValueForbidden" }]);
      }
      applyDefaults(t, next, false, this.allocateIp);
    }
    next.apiVersion = gvString(t.group, version);
    next.kind = t.kind;
    meta(next).resourceVersion = existing.metadata?.resourceVersion;
    validateObject(t, next, version, { strict: opts.strict });
    if (specPart(next) !== specPart(existing)) meta(next).generation = (existing.metadata?.generation ?? 1) + 1;
    if (stripForCompare(next) === stripForCompare(existing)) return this.output(t, version, existing);
    const nm = meta(next);
    const finalize = !!nm.deletionTimestamp && (nm.finalizers?.length ?? 0) === 0 && !((nm.deletionGracePeriodSeconds ?? 0) > 0);
    if (!opts.dryRun) {
      this.store.commit([{ type: finalize ? "DELETED" : "MODIFIED", group: t.group, resource: t.resource, namespace: this.nsKey(t, ns), name, object: next, prev: existing }]);
      if (finalize) this.afterDelete(t, next, "Background");
    }
    return this.output(t, version, next);
  }

  patch(
    t: ResourceType,
    version: string,
    ns: string,
    name: string,
    type: PatchType,
    body: unknown,
    sub: string | undefined,
    opts: WriteOptions & { force?: boolean } = {},
  ): { object: KObject; created: boolean } {
    const existing = this.store.get(t.group, t.resource, this.nsKey(t, ns), name);
    if (!existing) {
      if (type === "apply" && !sub) {
        const obj = checkObjectShape(body);
        const md = meta(obj);
        if (md.name !== undefined && md.name !== name) throw errors.badRequest(`the name of the object (${show(md.name)}) does not match the name on the URL (${name})`);
        md.name = name;
        return { object: this.create(t, version, ns, obj, opts), created: true };
      }
      throw errors.notFound(t.group, t.resource, name);
    }
    let patched: unknown;
    switch (type) {
      case "json":
        patched = jsonPatch(existing, body);
        break;
      case "merge":
        if (!isRecord(body)) throw errors.badRequest("merge patch: the body must be a JSON object");
        patched = mergePatch(existing, body);
        break;
      case "strategic":
        if (t.crd) throw new ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml");
        if (!isRecord(body)) throw errors.badRequest("strategic merge patch: the body must be a JSON object");
        patched = strategicMergePatch(t.kind, existing, body);
        break;
      case "apply": {
        const obj = checkObjectShape(body);
        this.checkKindAndVersion(t, version, obj);
        const am = isRecord(obj.metadata) ? obj.metadata : {};
        if (am.name !== undefined && am.name !== name) throw errors.badRequest(`the name of the object (${show(am.name)}) does not match the name on the URL (${name})`);
        patched = applyPatch(t.kind, existing, obj);
        break;
      }
    }
    if (!isRecord(patched)) throw errors.badRequest("the patched object is not a JSON object");
    const po = patched as KObject;
    const pm = meta(po);
    if (pm.name !== name) throw errors.badRequest(`the name of the object (${show(pm.name)}) does not match the name on the URL (${name})`);
    return { object: this.replace(t, version, ns, existing, po, sub, opts), created: false };
  }

  delete(t: ResourceType, version: string, ns: string, name: string, opts: DeleteOptions = {}): KObject {
    const nsKey = this.nsKey(t, ns);
    const existing = this.store.get(t.group, t.resource, nsKey, name);
    if (!existing) throw errors.notFound(t.group, t.resource, name);
    const em = meta(existing);
    if (opts.preconditions?.uid && opts.preconditions.uid !== em.uid)
      throw errors.conflict(t.group, t.resource, name, `Precondition failed: UID in precondition: ${opts.preconditions.uid}, UID in object meta: ${em.uid}`);
    if (opts.preconditions?.resourceVersion && opts.preconditions.resourceVersion !== em.resourceVersion)
      throw errors.conflict(t.group, t.resource, name, `Precondition failed: ResourceVersion in precondition: ${opts.preconditions.resourceVersion}, ResourceVersion in object meta: ${em.resourceVersion}`);
    if (t.kind === "Namespace" && !t.crd) return this.deleteNamespace(t, version, existing, opts);
    const finalizers = em.finalizers ?? [];
    let grace = 0;
    if (t.kind === "Pod" && !t.crd) {
      const spec = isRecord(existing.spec) ? existing.spec : {};
      const phase = isRecord(existing.status) ? existing.status.phase : undefined;
      grace = opts.gracePeriodSeconds ?? (typeof spec.terminationGracePeriodSeconds === "number" ? spec.terminationGracePeriodSeconds : 30);
      if (!spec.nodeName || phase === "Succeeded" || phase === "Failed") grace = 0;
      if (grace < 0) grace = 0;
    }
    const change = (type: "MODIFIED" | "DELETED", object: KObject): KObject => {
      if (!opts.dryRun) {
        this.store.commit([{ type, group: t.group, resource: t.resource, namespace: nsKey, name, object, prev: existing }]);
        if (type === "DELETED") this.afterDelete(t, object, opts.propagationPolicy);
      }
      return this.output(t, version, object);
    };
    if (em.deletionTimestamp) {
      // Already terminating: a shorter grace period may bring the end forward.
      const current = em.deletionGracePeriodSeconds ?? 0;
      if (grace >= current && !(grace === 0 && current === 0 && finalizers.length === 0)) return this.output(t, version, existing);
      const next = clone(existing);
      const nm = meta(next);
      nm.deletionGracePeriodSeconds = grace;
      if (grace > 0) nm.deletionTimestamp = nowRfc3339(Date.now() + grace * 1000);
      if (grace === 0 && finalizers.length === 0) return change("DELETED", next);
      return change("MODIFIED", next);
    }
    if (grace > 0 || finalizers.length > 0 || opts.propagationPolicy === "Foreground") {
      const next = clone(existing);
      const nm = meta(next);
      nm.deletionTimestamp = nowRfc3339(Date.now() + grace * 1000);
      nm.deletionGracePeriodSeconds = grace;
      if (grace === 0 && finalizers.length === 0) return change("DELETED", next);
      return change("MODIFIED", next);
    }
    return change("DELETED", clone(existing));
  }

  deleteCollection(t: ResourceType, version: string, ns: string | undefined, sel: Selector, opts: DeleteOptions): KObject[] {
    const { items } = this.list(t, version, ns, sel);
    const out: KObject[] = [];
    for (const o of items) {
      try {
        out.push(this.delete(t, version, o.metadata?.namespace ?? "", o.metadata?.name ?? "", opts));
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 404)) throw err;
      }
    }
    return out;
  }

  private deleteNamespace(t: ResourceType, version: string, existing: KObject, opts: DeleteOptions): KObject {
    const name = existing.metadata!.name!;
    if (PROTECTED_NAMESPACES.has(name)) throw new ApiError(403, "Forbidden", `namespaces "${name}" is forbidden: this namespace may not be deleted`, { name, kind: "namespaces" });
    if (opts.dryRun) return this.output(t, version, existing);
    let current = existing;
    if (!existing.metadata?.deletionTimestamp) {
      const next = clone(existing);
      meta(next).deletionTimestamp = nowRfc3339();
      meta(next).deletionGracePeriodSeconds = 0;
      next.status = { ...(isRecord(next.status) ? next.status : {}), phase: "Terminating" };
      this.store.commit([{ type: "MODIFIED", group: "", resource: "namespaces", namespace: "", name, object: next, prev: existing }]);
      current = next;
    }
    this.purgeNamespace(name);
    const gone = this.finalizeNamespace(name);
    return this.output(t, version, gone ?? current);
  }

  /** Deletes (gracefully where that applies) everything in a terminating namespace. */
  private purgeNamespace(ns: string): void {
    for (const item of this.store.listNamespaceContents(ns)) {
      const t = this.registry.byGroupResource(item.group, item.resource);
      if (!t || item.object.metadata?.deletionTimestamp) continue;
      try {
        this.delete(t, t.versions[0]!, ns, item.name, { propagationPolicy: "Background" });
      } catch (err) {
        this.log.debug("namespace purge: delete failed", { ns, name: item.name, error: String(err) });
      }
    }
  }

  private finalizeNamespace(ns: string): KObject | undefined {
    if (this.store.listNamespaceContents(ns).length > 0) return undefined;
    const obj = this.store.get("", "namespaces", "", ns);
    if (!obj || !obj.metadata?.deletionTimestamp) return undefined;
    const next = clone(obj);
    this.store.commit([{ type: "DELETED", group: "", resource: "namespaces", namespace: "", name: ns, object: next, prev: obj }]);
    return next;
  }

  /** After an object is gone: its CRs if it was a CRD, and dependents whose only owner it was. */
  private afterDelete(t: ResourceType, obj: KObject, policy: string | undefined): void {
    if (t.kind === "CustomResourceDefinition" && !t.crd) {
      const spec = isRecord(obj.spec) ? obj.spec : {};
      const names = isRecord(spec.names) ? spec.names : {};
      const group = String(spec.group ?? "");
      const plural = String(names.plural ?? "");
      const changes: Change[] = this.store
        .list(group, plural)
        .map((o) => ({ type: "DELETED" as const, group, resource: plural, namespace: o.metadata?.namespace ?? "", name: o.metadata?.name ?? "", object: o }));
      if (changes.length) this.store.commit(changes);
    }
    const uid = obj.metadata?.uid;
    if (!uid || policy === "Orphan") return;
    setTimeout(() => {
      try {
        this.collectDependents(uid);
      } catch (err) {
        this.log.warn("garbage collection failed", { uid, error: String(err) });
      }
    }, 0);
  }

  private collectDependents(uid: string): void {
    for (const c of this.store.findMentioning(uid)) {
      const refs = c.object.metadata?.ownerReferences ?? [];
      if (!refs.some((r) => r.uid === uid)) continue;
      const t = this.registry.byGroupResource(c.group, c.resource);
      if (!t) continue;
      const remaining = refs.filter((r) => r.uid !== uid);
      if (remaining.length === 0) {
        if (!c.object.metadata?.deletionTimestamp) this.delete(t, t.versions[0]!, c.namespace, c.name, { propagationPolicy: "Background" });
      } else {
        const next = clone(c.object);
        meta(next).ownerReferences = remaining;
        this.store.commit([{ type: "MODIFIED", group: c.group, resource: c.resource, namespace: c.namespace, name: c.name, object: next, prev: c.object }]);
      }
    }
  }

  /** Periodic housekeeping: pods whose grace period ran out, terminating namespaces. */
  sweep(now = Date.now()): void {
    for (const k of [...this.terminating]) {
      const [group, resource, ns, name] = k.split("|") as [string, string, string, string];
      const t = this.registry.byGroupResource(group, resource);
      const obj = this.store.get(group, resource, ns, name);
      if (!t || !obj) {
        this.terminating.delete(k);
        continue;
      }
      const md = meta(obj);
      if (t.kind === "Namespace" && !t.crd) {
        this.purgeNamespace(name);
        this.finalizeNamespace(name);
        continue;
      }
      if ((md.finalizers?.length ?? 0) > 0) continue;
      // As in Kubernetes, the node's agent (our edge) finishes a scheduled pod with a grace-0 delete
      // once it has stopped it; an expired grace period alone never removes a pod that may still run.
      if (t.kind === "Pod" && !t.crd && (obj as { spec?: { nodeName?: string } }).spec?.nodeName) continue;
      const deadline = Date.parse(md.deletionTimestamp ?? "");
      if (!Number.isNaN(deadline) && deadline <= now) {
        this.store.commit([{ type: "DELETED", group, resource, namespace: ns, name, object: clone(obj), prev: obj }]);
        this.afterDelete(t, obj, "Background");
      }
    }
  }

  /** Creates an object unless it exists (start-up seeding). */
  ensure(t: ResourceType, ns: string, obj: KObject): void {
    const name = obj.metadata?.name ?? "";
    if (this.store.get(t.group, t.resource, this.nsKey(t, ns), name)) return;
    this.create(t, t.versions[0]!, ns, obj);
  }
}
