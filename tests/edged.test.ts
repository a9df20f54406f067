/**
 * Edged with the process runtime: real child processes, real files, a real Router with a recorder
 * registered as "websocket", and a Map-backed object source standing in for MetaManager's interface.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createLogger } from "../lib/log.ts";
import { Metrics } from "../lib/metrics.ts";
import { newMessage, type Message } from "../lib/message.ts";
import { Router, type Module } from "../lib/router.ts";
import { Edged, ProcessRuntime, type EdgedOptions, type V1PodStatus } from "../lib/edge/edged/index.ts";

const NODE = "edge-1";
const NODE_IP = "10.9.8.7";
const log = createLogger({ level: process.env.EDGED_TEST_DEBUG ? "debug" : "error" });

// ---- helpers ------------------------------------------------------------------------------

class FakeMeta {
  readonly objects = new Map<string, unknown>();
  put(type: string, obj: { metadata: { name: string; namespace?: string } }): void {
    this.objects.set(`${obj.metadata.namespace ?? "default"}/${type}/${obj.metadata.name}`, obj);
  }
  async get(type: string, namespace: string, name: string): Promise<unknown | null> {
    return this.objects.get(`${namespace}/${type}/${name}`) ?? null;
  }
  async list(type: string): Promise<unknown[]> {
    return [...this.objects.entries()].filter(([k]) => k.split("/")[1] === type).map(([, v]) => v);
  }
}

class Recorder implements Module {
  readonly name = "websocket";
  readonly group = "hub";
  readonly messages: Message[] = [];
  start(): void {}
  stop(): void {}
  handle(msg: Message): void {
    this.messages.push(msg);
  }
  podStatuses(ns: string, name: string): V1PodStatus[] {
    return this.messages
      .filter((m) => m.route.resource === `${ns}/podstatus/${name}` && m.route.operation === "update")
      .map((m) => (m.content as { status: V1PodStatus }).status);
  }
  latest(ns: string, name: string): V1PodStatus | undefined {
    return this.podStatuses(ns, name).at(-1);
  }
}

const dirs: string[] = [];
/** Markers of pod processes: whatever still carries one after a test is killed (a failed test must not leak). */
const markers: string[] = [];
function newMarker(name: string): string {
  const m = `${name}-${process.pid}-${Date.now()}`;
  markers.push(m);
  return m;
}
const running: { router: Router }[] = [];

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "edged-test-"));
  dirs.push(d);
  return d;
}

afterEach(async () => {
  for (const r of running.splice(0)) await r.router.stopAll();
  for (const m of markers.splice(0))
    for (const pid of pidsWith(m)) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Env {
  dataDir: string;
  meta: FakeMeta;
  router: Router;
  rec: Recorder;
  edged: Edged;
  metrics: Metrics;
}

async function startEdged(dataDir: string, meta: FakeMeta, extra: Partial<EdgedOptions> & { logMaxBytes?: number } = {}): Promise<Env> {
  const router = new Router(log);
  const rec = new Recorder();
  const metrics = new Metrics();
  const runtime = new ProcessRuntime({ stateDir: join(dataDir, "runtime", "process"), log, ...(extra.logMaxBytes ? { logMaxBytes: extra.logMaxBytes } : {}) });
  const edged = new Edged({
    nodeName: NODE,
    dataDir,
    runtime,
    meta,
    log,
    metrics,
    nodeIP: NODE_IP,
    statusReportDelayMs: 100,
    restartBackoffBaseMs: 100,
    restartBackoffMaxMs: 2000,
    configRetryMs: 300,
    ...extra,
  });
  router.register(rec);
  router.register(edged);
  await router.startAll();
  const env = { dataDir, meta, router, rec, edged, metrics };
  running.push(env);
  return env;
}

async function stopEdged(env: Env): Promise<void> {
  const i = running.findIndex((r) => r.router === env.router);
  if (i >= 0) running.splice(i, 1);
  await env.router.stopAll();
}

async function waitFor<T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(25);
  }
}

let seq = 0;
function pod(name: string, spec: Record<string, unknown>, meta: Record<string, unknown> = {}) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "default", uid: `uid-${name}-${++seq}-${Date.now()}`, ...meta },
    spec: { nodeName: NODE, restartPolicy: "Always", ...spec },
  };
}
type PodObj = ReturnType<typeof pod>;

function send(env: Env, op: string, obj: { metadata: { name: string; namespace?: string; [k: string]: unknown }; [k: string]: unknown }, type = "pod"): void {
  env.router.send("edged", newMessage({ source: "metamanager", group: "meta", operation: op, resource: `${obj.metadata.namespace ?? "default"}/${type}/${obj.metadata.name}` }, obj));
}

/** Pids of live processes whose command line contains `marker`. */
function pidsWith(marker: string): number[] {
  const out: number[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n) || Number(n) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${n}/cmdline`, "utf8");
      const stat = readFileSync(`/proc/${n}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      if (cmd.includes(marker)) out.push(Number(n));
    } catch {
      /* gone */
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
const sh = (script: string) => ({ command: ["sh", "-c", script] });
const cs = (st: V1PodStatus | undefined, i = 0) => st?.containerStatuses[i];

// ---- tests --------------------------------------------------------------------------------

describe("edged: running pods", () => {
  test("a pod runs; env, envFrom and valueFrom come from stored configmaps, secrets and the downward API; status goes up", async () => {
    const dir = tmp();
    const out = join(dir, "env.txt");
    const meta = new FakeMeta();
    meta.put("configmap", { metadata: { name: "cm1", namespace: "default" }, data: { A: "alpha", B: "beta", "bad key": "x" } } as never);
    meta.put("secret", { metadata: { name: "s1", namespace: "default" }, data: { PASS: b64("hunter2") } } as never);
    const p = pod("envpod", {
      containers: [
        {
          name: "main",
          image: "busybox:1.36",
          ...sh(`env > ${out}.tmp && mv ${out}.tmp ${out}; exec sleep 30`),
          env: [
            { name: "PLAIN", value: "plain-value" },
            { name: "FROM_CM", valueFrom: { configMapKeyRef: { name: "cm1", key: "A" } } },
            { name: "FROM_SECRET", valueFrom: { secretKeyRef: { name: "s1", key: "PASS" } } },
            { name: "MY_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
            { name: "MY_NS", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
            { name: "MY_UID", valueFrom: { fieldRef: { fieldPath: "metadata.uid" } } },
            { name: "MY_NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
            { name: "MY_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
            { name: "EXPANDED", value: "x-$(FROM_CM)-$$(FROM_CM)" },
            { name: "OPTIONAL", valueFrom: { configMapKeyRef: { name: "nope", key: "k", optional: true } } },
          ],
          envFrom: [{ configMapRef: { name: "cm1" }, prefix: "CM_" }, { secretRef: { name: "s1" } }],
        },
      ],
    });
    const env = await startEdged(dir, meta);
    send(env, "insert", p);
    const text = await waitFor("env file", () => existsSync(out) && readFileSync(out, "utf8"));
    const vars = new Map(text.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const));
    expect(vars.get("PLAIN")).toBe("plain-value");
    expect(vars.get("FROM_CM")).toBe("alpha");
    expect(vars.get("FROM_SECRET")).toBe("hunter2");
    expect(vars.get("MY_NAME")).toBe("envpod");
    expect(vars.get("MY_NS")).toBe("default");
    expect(vars.get("MY_UID")).toBe(p.metadata.uid);
    expect(vars.get("MY_NODE")).toBe(NODE);
    expect(vars.get("MY_IP")).toBe(NODE_IP);
    expect(vars.get("EXPANDED")).toBe("x-alpha-$(FROM_CM)");
    expect(vars.get("CM_A")).toBe("alpha");
    expect(vars.get("CM_B")).toBe("beta");
    expect(vars.get("PASS")).toBe("hunter2");
    expect(vars.has("OPTIONAL")).toBe(false);
    expect(vars.has("CM_bad key")).toBe(false);
    expect(vars.get("HOSTNAME")).toBe("envpod");

    const st = await waitFor("Running status upstream", () => {
      const s = env.rec.latest("default", "envpod");
      return s?.phase === "Running" && s;
    });
    const c = cs(st)!;
    expect("running" in c.state).toBe(true);
    expect(c.ready).toBe(true);
    expect(c.started).toBe(true);
    expect(c.image).toBe("busybox:1.36");
    expect(c.restartCount).toBe(0);
    const pid = Number(/^process:\/\/(\d+)$/.exec(c.containerID ?? "")?.[1]);
    expect(alive(pid)).toBe(true);
    expect(st.podIP).toBe(NODE_IP);
    expect(st.hostIP).toBe(NODE_IP);
    expect(st.startTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const cond = Object.fromEntries(st.conditions.map((x) => [x.type, x.status]));
    expect(cond).toEqual({ PodScheduled: "True", Initialized: "True", ContainersReady: "True", Ready: "True" });
    const msg = env.rec.messages.find((m) => m.route.resource === "default/podstatus/envpod")!;
    expect(msg.route).toMatchObject({ source: "edged", group: "resource", operation: "update" });
    expect((msg.content as { metadata: unknown }).metadata).toEqual({ name: "envpod", namespace: "default", uid: p.metadata.uid });
    expect(env.metrics.value("outpost_edged_container_events_total", { event: "start" })).toBe(1);
  });

  test("pods of other nodes are ignored", async () => {
    const dir = tmp();
    const env = await startEdged(dir, new FakeMeta());
    const marker = newMarker("other-node");
    send(env, "insert", pod("elsewhere", { nodeName: "edge-2", containers: [{ name: "c", ...sh(`: ${marker}; sleep 30`) }] }));
    await Bun.sleep(600);
    expect(pidsWith(marker)).toEqual([]);
    expect(env.rec.podStatuses("default", "elsewhere")).toEqual([]);
  });

  test("volumes are materialised and findable through OUTPOST_MOUNT_* and the rootfs symlinks; configmap updates re-materialise without restart", async () => {
    const dir = tmp();
    const host = join(dir, "host-data");
    const meta = new FakeMeta();
    meta.put("configmap", { metadata: { name: "app", namespace: "default" }, data: { "app.conf": "v1", other: "o" } } as never);
    meta.put("secret", { metadata: { name: "creds", namespace: "default" }, data: { token: b64("t0k3n") } } as never);
    const p = pod("volpod", {
      volumes: [
        { name: "cfg", configMap: { name: "app", items: [{ key: "app.conf", path: "conf/app.conf" }], defaultMode: 0o600 } },
        { name: "sec", secret: { secretName: "creds" } },
        { name: "scratch", emptyDir: {} },
        { name: "data", hostPath: { path: host, type: "DirectoryOrCreate" } },
      ],
      containers: [
        {
          name: "main",
          ...sh(
            [
              'cat "$OUTPOST_MOUNT_CFG/conf/app.conf" > "$OUTPOST_MOUNT_DATA/cfg-env"',
              "cat ./etc/app/conf/app.conf > /dev/null && cat etc/app/conf/app.conf > \"$OUTPOST_ROOTFS/data/cfg-rel\"",
              'cat "$OUTPOST_ROOTFS/run/secrets/token" > "$OUTPOST_MOUNT_DATA/secret"',
              'echo scratch > "$OUTPOST_MOUNT_SCRATCH/x" && cat /dev/null',
              'pwd > "$OUTPOST_MOUNT_DATA/pwd"',
              "exec sleep 30",
            ].join("; "),
          ),
          volumeMounts: [
            { name: "cfg", mountPath: "/etc/app" },
            { name: "sec", mountPath: "/run/secrets" },
            { name: "scratch", mountPath: "/scratch" },
            { name: "data", mountPath: "/data" },
          ],
        },
      ],
    });
    const env = await startEdged(dir, meta);
    send(env, "insert", p);
    await waitFor("pwd file", () => existsSync(join(host, "pwd")));
    const podDir = join(dir, "pods", p.metadata.uid);
    expect(readFileSync(join(host, "cfg-env"), "utf8")).toBe("v1");
    expect(readFileSync(join(host, "cfg-rel"), "utf8")).toBe("v1");
    expect(readFileSync(join(host, "secret"), "utf8")).toBe("t0k3n");
    expect(readFileSync(join(host, "pwd"), "utf8").trim()).toBe(join(podDir, "rootfs", "main"));
    expect(readFileSync(join(podDir, "volumes", "scratch", "x"), "utf8")).toBe("scratch\n");
    const cfgFile = join(podDir, "volumes", "cfg", "conf", "app.conf");
    expect(statSync(cfgFile).mode & 0o777).toBe(0o600);
    expect(existsSync(join(podDir, "volumes", "cfg", "other"))).toBe(false);
    expect(statSync(join(podDir, "volumes", "sec", "token")).mode & 0o777).toBe(0o644);

    const pid1 = cs(env.edged.podStatus("default", "volpod")!)!.containerID;
    send(env, "update", { metadata: { name: "app", namespace: "default" }, data: { "app.conf": "v2" } } as never, "configmap");
    await waitFor("updated configmap file", () => readFileSync(cfgFile, "utf8") === "v2");
    expect(cs(env.edged.podStatus("default", "volpod")!)!.containerID).toBe(pid1);
    expect(cs(env.edged.podStatus("default", "volpod")!)!.restartCount).toBe(0);
  });

  test("a missing configmap blocks the container with CreateContainerConfigError until it arrives", async () => {
    const dir = tmp();
    const out = join(dir, "out");
    const env = await startEdged(dir, new FakeMeta());
    send(env, "insert", pod("late", { containers: [{ name: "c", ...sh(`echo "$V" > ${out}; exec sleep 30`), env: [{ name: "V", valueFrom: { configMapKeyRef: { name: "later", key: "v" } } }] }] }));
    const st = await waitFor("config error", () => {
      const s = env.rec.latest("default", "late");
      return s && cs(s) && "waiting" in cs(s)!.state && (cs(s)!.state as { waiting: { reason: string } }).waiting.reason === "CreateContainerConfigError" && s;
    });
    expect(st.phase).toBe("Pending");
    expect(JSON.stringify(cs(st)!.state)).toContain('configmap \\"later\\" not found');
    send(env, "insert", { metadata: { name: "later", namespace: "default" }, data: { v: "arrived" } } as never, "configmap");
    await waitFor("output", () => existsSync(out) && readFileSync(out, "utf8") === "arrived\n");
    await waitFor("Running", () => env.rec.latest("default", "late")?.phase === "Running");
  });

  test("stdout and stderr go to the container log, rotated by size", async () => {
    const dir = tmp();
    const env = await startEdged(dir, new FakeMeta(), { logMaxBytes: 2000 });
    const p = pod("logger", {
      restartPolicy: "Never",
      containers: [{ name: "c", ...sh('echo to-stdout; echo to-stderr >&2; i=0; while [ $i -lt 150 ]; do echo "line $i padding padding padding padding padding padding padding"; i=$((i+1)); done; echo last-line') }],
    });
    send(env, "insert", p);
    await waitFor("Succeeded", () => env.rec.latest("default", "logger")?.phase === "Succeeded");
    const logs = join(dir, "pods", p.metadata.uid, "logs");
    const files = readdirSync(logs).sort();
    expect(files).toEqual(["c.log", "c.log.1", "c.log.2"]);
    for (const f of files) expect(statSync(join(logs, f)).size).toBeLessThanOrEqual(2000);
    expect(readFileSync(join(logs, "c.log"), "utf8")).toContain("last-line");
    const all = files.map((f) => readFileSync(join(logs, f), "utf8")).join("");
    expect(all).not.toContain("to-stdout"); // rotated away: only 3 × 2000 bytes are kept

    const p2 = pod("logger2", { restartPolicy: "Never", containers: [{ name: "c", ...sh("echo to-stdout; echo to-stderr >&2") }] });
    send(env, "insert", p2);
    await waitFor("Succeeded", () => env.rec.latest("default", "logger2")?.phase === "Succeeded");
    const text = readFileSync(join(dir, "pods", p2.metadata.uid, "logs", "c.log"), "utf8");
    expect(text).toContain("to-stdout\n");
    expect(text).toContain("to-stderr\n");
  });
});

describe("edged: exits and restarts", () => {
  test("restartPolicy Never: exit codes end the pod (Failed / Succeeded), no restart", async () => {
    const dir = tmp();
    const env = await startEdged(dir, new FakeMeta());
    send(env, "insert", pod("fails", { restartPolicy: "Never", containers: [{ name: "c", ...sh("exit 3") }] }));
    send(env, "insert", pod("works", { restartPolicy: "Never", containers: [{ name: "c", ...sh("exit 0") }] }));
    const failed = await waitFor("Failed", () => {
      const s = env.rec.latest("default", "fails");
      return s?.phase === "Failed" && s;
    });
    const t = (cs(failed)!.state as { terminated: { exitCode: number; reason: string; containerID: string; finishedAt: string } }).terminated;
    expect(t.exitCode).toBe(3);
    expect(t.reason).toBe("Error");
    expect(t.containerID).toMatch(/^process:\/\/\d+$/);
    expect(t.finishedAt).toMatch(/Z$/);
    expect(cs(failed)!.restartCount).toBe(0);
    const ok = await waitFor("Succeeded", () => {
      const s = env.rec.latest("default", "works");
      return s?.phase === "Succeeded" && s;
    });
    expect((cs(ok)!.state as { terminated: { exitCode: number; reason: string } }).terminated).toMatchObject({ exitCode: 0, reason: "Completed" });
    expect(ok.conditions.find((c) => c.type === "Ready")).toMatchObject({ status: "False", reason: "PodCompleted" });
    await Bun.sleep(500);
    expect(cs(env.rec.latest("default", "fails"))!.restartCount).toBe(0);
  });

  test("restartPolicy OnFailure restarts failures until success", async () => {
    const dir = tmp();
    const counter = join(dir, "count");
    const env = await startEdged(dir, new FakeMeta());
    send(env, "insert", pod("retry", { restartPolicy: "OnFailure", containers: [{ name: "c", ...sh(`n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; [ $n -ge 3 ] && exit 0; exit 1`) }] }));
    const st = await waitFor("Succeeded", () => {
      const s = env.rec.latest("default", "retry");
      return s?.phase === "Succeeded" && s;
    });
    expect(cs(st)!.restartCount).toBe(2);
    expect(cs(st)!.lastState.terminated?.exitCode).toBe(1);
    expect(readFileSync(counter, "utf8").trim()).toBe("3");
    expect(env.rec.podStatuses("default", "retry").some((s) => s.phase === "Running" && JSON.stringify(cs(s)!.state).includes("CrashLoopBackOff"))).toBe(true);
  });

  test("restartPolicy Always: restartCount grows with back-off, CrashLoopBackOff and lastState are shown", async () => {
    const dir = tmp();
    const starts = join(dir, "starts");
    const env = await startEdged(dir, new FakeMeta(), { restartBackoffBaseMs: 100, restartBackoffMaxMs: 10_000 });
    send(env, "insert", pod("crashy", { containers: [{ name: "c", ...sh(`date +%s%N >> ${starts}; exit 1`) }] }));
    await waitFor("4 starts", () => existsSync(starts) && readFileSync(starts, "utf8").trim().split("\n").length >= 4, 15_000);
    const st = await waitFor("CrashLoopBackOff", () => {
      const s = env.rec.latest("default", "crashy");
      return s && cs(s)!.restartCount >= 3 && "waiting" in cs(s)!.state && s;
    });
    const w = (cs(st)!.state as { waiting: { reason: string; message: string } }).waiting;
    expect(w.reason).toBe("CrashLoopBackOff");
    expect(w.message).toContain("restarting failed container=c pod=crashy_default");
    expect(cs(st)!.lastState.terminated).toMatchObject({ exitCode: 1, reason: "Error" });
    expect(st.phase).toBe("Running");
    expect(cs(st)!.ready).toBe(false);
    // Back-off doubles: 100, 200, 400 ms between starts (not a tight loop).
    const t = readFileSync(starts, "utf8").trim().split("\n").map((x) => Number(BigInt(x) / 1_000_000n));
    const gaps = t.slice(1).map((x, i) => x - t[i]!);
    expect(gaps[0]!).toBeGreaterThanOrEqual(90);
    expect(gaps[2]!).toBeGreaterThanOrEqual(350);
    expect(gaps[2]!).toBeGreaterThan(gaps[0]!);
  });

  test("a missing executable gives a clear StartError; the rest of the node is unharmed", async () => {
    const dir = tmp();
    const out = join(dir, "fine");
    const env = await startEdged(dir, new FakeMeta());
    send(env, "insert", pod("noexe", { restartPolicy: "Never", containers: [{ name: "c", command: ["/definitely/not/here", "x"] }] }));
    send(env, "insert", pod("nopath", { containers: [{ name: "c", command: ["no-such-program-xyz"] }] }));
    send(env, "insert", pod("fine", { containers: [{ name: "c", ...sh(`touch ${out}; exec sleep 30`) }] }));
    const a = await waitFor("StartError", () => {
      const s = env.rec.latest("default", "noexe");
      return s?.phase === "Failed" && s;
    });
    const t = (cs(a)!.state as { terminated: { exitCode: number; reason: string; message: string } }).terminated;
    expect(t.reason).toBe("StartError");
    expect(t.exitCode).toBe(128);
    expect(t.message).toContain("/definitely/not/here");
    const b = await waitFor("CrashLoopBackOff with StartError", () => {
      const s = env.rec.latest("default", "nopath");
      return s && cs(s)!.lastState.terminated?.reason === "StartError" && s;
    });
    expect(cs(b)!.lastState.terminated!.message).toBe('exec: "no-such-program-xyz": executable file not found in $PATH');
    await waitFor("healthy pod runs", () => existsSync(out) && env.rec.latest("default", "fine")?.phase === "Running");
  });

  test("bad pod objects become Failed with a clear message; good pods still run", async () => {
    const dir = tmp();
    const out = join(dir, "good");
    const env = await startEdged(dir, new FakeMeta());
    send(env, "insert", pod("nocontainers", { containers: [] }));
    send(env, "insert", pod("nocommand", { containers: [{ name: "c", image: "nginx" }] }));
    send(env, "insert", pod("badvolume", { volumes: [{ name: "v", persistentVolumeClaim: { claimName: "x" } }], containers: [{ name: "c", ...sh("sleep 1") }] }));
    send(env, "insert", pod("badpolicy", { restartPolicy: "Sometimes", containers: [{ name: "c", ...sh("sleep 1") }] }));
    send(env, "insert", pod("escape", { volumes: [{ name: "v", emptyDir: {} }], containers: [{ name: "c", ...sh("sleep 1"), volumeMounts: [{ name: "v", mountPath: "/x", subPath: "../../etc" }] }] }));
    env.router.send("edged", newMessage({ operation: "insert", resource: "default/pod/garbage" }, "not a pod"));
    send(env, "insert", pod("good", { containers: [{ name: "c", ...sh(`touch ${out}; exec sleep 30`) }] }));
    const expectFailed = async (name: string, text: string) => {
      const s = await waitFor(`${name} Failed`, () => {
        const x = env.rec.latest("default", name);
        return x?.phase === "Failed" && x;
      });
      expect(s.reason).toBe("InvalidPod");
      expect(s.message).toContain(text);
    };
    await expectFailed("nocontainers", "at least one container");
    await expectFailed("nocommand", 'container "c" has no command');
    await expectFailed("badvolume", "unsupported volume type persistentVolumeClaim");
    await expectFailed("badpolicy", "restartPolicy");
    await expectFailed("escape", "subPath");
    const cst = cs(env.rec.latest("default", "nocommand"))!;
    expect((cst.state as { waiting: { reason: string } }).waiting.reason).toBe("CreateContainerConfigError");
    await waitFor("good pod runs", () => existsSync(out) && env.rec.latest("default", "good")?.phase === "Running");
    // A pod that cannot run can still be deleted.
    const bad = pod("nocommand2", { containers: [{ name: "c", image: "nginx" }] });
    send(env, "insert", bad);
    await waitFor("Failed", () => env.rec.latest("default", "nocommand2")?.phase === "Failed");
    send(env, "update", { ...bad, metadata: { ...bad.metadata, deletionTimestamp: new Date().toISOString() } });
    await waitFor("delete reported", () => env.rec.messages.some((m) => m.route.resource === "default/pod/nocommand2" && m.route.operation === "delete"));
  });
});

describe("edged: status reporting", () => {
  test("changes are coalesced: only the latest status per pod goes up, at most once per report delay", async () => {
    const dir = tmp();
    const env = await startEdged(dir, new FakeMeta(), { statusReportDelayMs: 300, restartBackoffBaseMs: 10, restartBackoffMaxMs: 10 });
    const t0 = Date.now();
    send(env, "insert", pod("flappy", { containers: [{ name: "c", ...sh("exit 1") }] }));
    await waitFor("many restarts", () => (cs(env.edged.podStatus("default", "flappy")!)?.restartCount ?? 0) >= 15, 15_000);
    const elapsed = Date.now() - t0;
    await Bun.sleep(400);
    const sent = env.rec.podStatuses("default", "flappy");
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(sent.length).toBeLessThanOrEqual(Math.ceil(elapsed / 300) + 3);
    expect(cs(sent.at(-1))!.restartCount).toBeGreaterThanOrEqual(15);
  });

  test("a pod update carrying another status than ours makes edged report again; an equal one does not", async () => {
    const dir = tmp();
    const env = await startEdged(dir, new FakeMeta());
    const p = pod("resync", { containers: [{ name: "c", ...sh("exec sleep 30") }] });
    send(env, "insert", p);
    const st = await waitFor("Running", () => {
      const s = env.rec.latest("default", "resync");
      return s?.phase === "Running" && s;
    });
    await Bun.sleep(300);
    const n = env.rec.podStatuses("default", "resync").length;
    send(env, "update", { ...p, status: st });
    await Bun.sleep(400);
    expect(env.rec.podStatuses("default", "resync").length).toBe(n);
    send(env, "update", { ...p, status: { phase: "Pending" } });
    await waitFor("re-reported", () => env.rec.podStatuses("default", "resync").length === n + 1);
    expect(env.rec.latest("default", "resync")!.phase).toBe("Running");
  });
});

describe("edged: deletion", () => {
  test("deletionTimestamp: SIGTERM (trapped), then the pod is reported gone and its directory removed", async () => {
    const dir = tmp();
    const out = join(dir, "term");
    const env = await startEdged(dir, new FakeMeta());
    const p = pod("graceful", { terminationGracePeriodSeconds: 10, containers: [{ name: "c", ...sh(`trap 'echo got-term > ${out}; exit 0' TERM; while :; do sleep 0.05; done`) }] });
    send(env, "insert", p);
    const st = await waitFor("Running", () => {
      const s = env.rec.latest("default", "graceful");
      return s?.phase === "Running" && s;
    });
    const pid = Number(cs(st)!.containerID!.slice("process://".length));
    expect(alive(pid)).toBe(true);
    const t0 = Date.now();
    send(env, "update", { ...p, metadata: { ...p.metadata, deletionTimestamp: new Date().toISOString(), deletionGracePeriodSeconds: 10 } });
    const del = await waitFor("delete message", () => env.rec.messages.find((m) => m.route.resource === "default/pod/graceful" && m.route.operation === "delete"));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(del.route).toMatchObject({ source: "edged", group: "resource" });
    expect(del.content).toEqual({ metadata: { name: "graceful", namespace: "default", uid: p.metadata.uid } });
    expect(readFileSync(out, "utf8")).toBe("got-term\n");
    expect(alive(pid)).toBe(false);
    expect(existsSync(join(dir, "pods", p.metadata.uid))).toBe(false);
    expect(env.edged.podStatus("default", "graceful")).toBeNull();
  });

  test("a process ignoring SIGTERM is killed after the grace period", async () => {
    const dir = tmp();
    const marker = newMarker("ignore-term");
    const env = await startEdged(dir, new FakeMeta());
    const p = pod("stubborn", { terminationGracePeriodSeconds: 1, containers: [{ name: "c", ...sh(`trap '' TERM; : ${marker}; while :; do sleep 0.05; done`) }] });
    send(env, "insert", p);
    await waitFor("process", () => pidsWith(marker).length === 1);
    const t0 = Date.now();
    send(env, "update", { ...p, metadata: { ...p.metadata, deletionTimestamp: new Date().toISOString() } });
    await waitFor("delete message", () => env.rec.messages.find((m) => m.route.resource === "default/pod/stubborn" && m.route.operation === "delete"));
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(4000);
    expect(pidsWith(marker)).toEqual([]);
  });

  test("a delete message stops the pod and forgets it without reporting", async () => {
    const dir = tmp();
    const marker = newMarker("deleted");
    const env = await startEdged(dir, new FakeMeta());
    const p = pod("gone", { terminationGracePeriodSeconds: 0, containers: [{ name: "c", ...sh(`: ${marker}; while :; do sleep 0.05; done`) }] });
    send(env, "insert", p);
    await waitFor("process", () => pidsWith(marker).length === 1);
    send(env, "delete", p);
    await waitFor("process gone", () => pidsWith(marker).length === 0);
    await waitFor("dir removed", () => !existsSync(join(dir, "pods", p.metadata.uid)));
    expect(env.edged.podStatus("default", "gone")).toBeNull();
    expect(env.rec.messages.some((m) => m.route.resource === "default/pod/gone" && m.route.operation === "delete")).toBe(false);
  });
});

describe("edged: restarts of edgecore", () => {
  test("stop → start on the same data dir runs stored pods again, once; finished Never pods stay finished", async () => {
    const dir = tmp();
    const marker = newMarker("autonomy");
    const once = join(dir, "once");
    const meta = new FakeMeta();
    const p = pod("stored", { containers: [{ name: "c", ...sh(`: ${marker}; while :; do sleep 0.05; done`) }] });
    const done = pod("done", { restartPolicy: "Never", containers: [{ name: "c", ...sh(`echo x >> ${once}`) }] });
    meta.put("pod", p);
    meta.put("pod", done);
    meta.put("pod", pod("foreign", { nodeName: "edge-2", containers: [{ name: "c", ...sh(`: ${marker}; sleep 30`) }] }));
    const a = await startEdged(dir, meta);
    await waitFor("pod running", () => pidsWith(marker).length === 1);
    await waitFor("done pod finished", () => a.rec.latest("default", "done")?.phase === "Succeeded");
    const first = pidsWith(marker)[0]!;
    await stopEdged(a);
    expect(pidsWith(marker)).toEqual([]); // graceful shutdown leaves no orphans
    expect(a.rec.latest("default", "stored")?.phase).toBe("Running"); // the shutdown is not reported as the pod's end

    const t0 = Date.now();
    const b = await startEdged(dir, meta);
    await waitFor("pod running again", () => pidsWith(marker).length === 1, 5000);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(pidsWith(marker)[0]).not.toBe(first);
    const st = await waitFor("status", () => b.rec.latest("default", "stored")?.phase === "Running" && b.rec.latest("default", "stored"));
    expect(cs(st)!.restartCount).toBe(0);
    const d = await waitFor("done status re-reported", () => b.rec.latest("default", "done"));
    expect(d.phase).toBe("Succeeded");
    await Bun.sleep(300);
    expect(readFileSync(once, "utf8")).toBe("x\n"); // not run twice
    expect(pidsWith(marker).length).toBe(1);
  });

  test("after a crash of edgecore, leftover processes are killed and pods start fresh without duplicates", async () => {
    const dir = tmp();
    const marker = newMarker("crash");
    const p = pod("survivor", { containers: [{ name: "c", ...sh(`: ${marker}; while :; do sleep 0.05; done`) }] });
    writeFileSync(join(dir, "pods.json"), JSON.stringify([p]));
    const lib = resolve(import.meta.dir, "../lib");
    const script = join(dir, "child.ts");
    writeFileSync(
      script,
      `import { Edged, ProcessRuntime } from ${JSON.stringify(join(lib, "edge/edged/index.ts"))};
import { Router } from ${JSON.stringify(join(lib, "router.ts"))};
import { createLogger } from ${JSON.stringify(join(lib, "log.ts"))};
import { readFileSync } from "node:fs";
const dir = ${JSON.stringify(dir)};
const pods = JSON.parse(readFileSync(dir + "/pods.json", "utf8"));
const log = createLogger({ level: "error" });
const router = new Router(log);
router.register(new Edged({ nodeName: ${JSON.stringify(NODE)}, dataDir: dir, runtime: new ProcessRuntime({ stateDir: dir + "/runtime/process" }), log,
  meta: { get: async () => null, list: async (t) => (t === "pod" ? pods : []) } }));
await router.startAll();
setInterval(() => {}, 1000);
`,
    );
    const child = spawn(process.execPath, [script], { stdio: "ignore" });
    try {
      await waitFor("pod started by the child edgecore", () => pidsWith(marker).length === 1, 15_000);
    } finally {
      child.kill("SIGKILL");
    }
    await new Promise((r) => child.once("exit", r));
    const leftover = pidsWith(marker);
    expect(leftover.length).toBe(1); // the crash left it running

    const meta = new FakeMeta();
    meta.put("pod", p);
    const env = await startEdged(dir, meta);
    await waitFor("leftover killed", () => !alive(leftover[0]!));
    await waitFor("running again", () => pidsWith(marker).length === 1);
    await Bun.sleep(300);
    expect(pidsWith(marker).length).toBe(1);
    expect(pidsWith(marker)[0]).not.toBe(leftover[0]);
    await waitFor("Running", () => env.rec.latest("default", "survivor")?.phase === "Running");
  });
});

describe("edged: leftovers without a record", () => {
  test("a leftover whose record was never written is found by OUTPOST_RUNTIME_DIR in its environment", async () => {
    const dir = tmp();
    const marker = newMarker("unrecorded");
    const stateDir = join(dir, "runtime", "process");
    const orphan = spawn("sh", ["-c", `: ${marker}; while :; do sleep 0.05; done`], { detached: true, stdio: "ignore", env: { PATH: process.env.PATH, OUTPOST_RUNTIME_DIR: stateDir } });
    const stranger = spawn("sh", ["-c", `: ${marker}-stranger; while :; do sleep 0.05; done`], { detached: true, stdio: "ignore", env: { PATH: process.env.PATH, OUTPOST_RUNTIME_DIR: `${stateDir}-other` } });
    try {
      await waitFor("orphan running", () => pidsWith(marker).length === 2);
      await startEdged(dir, new FakeMeta());
      await waitFor("orphan killed", () => !alive(orphan.pid!));
      expect(alive(stranger.pid!)).toBe(true); // another runtime's process is left alone
    } finally {
      for (const c of [orphan, stranger]) {
        try {
          process.kill(-c.pid!, "SIGKILL");
        } catch {
          /* gone */
        }
      }
    }
  });
});

describe("edged: node status", () => {
  test("node status is sent at start and on the interval with the machine's figures", async () => {
    const dir = tmp();
    const env = await startEdged(dir, new FakeMeta(), { nodeStatusIntervalMs: 300 });
    const msgs = await waitFor("two node statuses", () => {
      const m = env.rec.messages.filter((x) => x.route.resource === `null/nodestatus/${NODE}`);
      return m.length >= 2 && m;
    });
    const m = msgs[0]!;
    expect(m.route).toMatchObject({ source: "edged", group: "resource", operation: "update" });
    const c = m.content as { metadata: { name: string; labels: Record<string, string> }; status: Record<string, any> };
    expect(c.metadata.name).toBe(NODE);
    expect(c.metadata.labels).toEqual({ "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "" });
    const s = c.status;
    expect(Number(s.capacity.cpu)).toBeGreaterThan(0);
    expect(s.capacity.memory).toMatch(/^\d+Ki$/);
    expect(parseInt(s.capacity.memory)).toBeGreaterThan(1024);
    expect(parseInt(s.capacity["ephemeral-storage"])).toBeGreaterThan(0);
    expect(s.capacity.pods).toBe("110");
    expect(s.allocatable.cpu).toBe(s.capacity.cpu);
    expect(s.nodeInfo.kubeletVersion).toBe("v1.32.0-outpost");
    expect(s.nodeInfo.containerRuntimeVersion).toBe("process://outpost");
    expect(s.nodeInfo.kubeProxyVersion).toBe("");
    expect(s.nodeInfo.operatingSystem).toBe("linux");
    expect(["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"]).toContain(s.nodeInfo.architecture);
    expect(s.nodeInfo.kernelVersion.length).toBeGreaterThan(0);
    expect(s.nodeInfo.osImage.length).toBeGreaterThan(0);
    expect(s.addresses).toContainEqual({ type: "InternalIP", address: NODE_IP });
    expect(s.addresses.some((a: { type: string }) => a.type === "Hostname")).toBe(true);
    expect(s.conditions[0]).toMatchObject({ type: "Ready", status: "True", reason: "EdgeReady" });
    expect(s.daemonEndpoints).toEqual({ kubeletEndpoint: { Port: 0 } });
  });
});
