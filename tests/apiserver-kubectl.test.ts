/** Real kubectl against the embedded API: discovery, apply/patch/replace/delete, watch, selectors, devices. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { openStore, type Store } from "../lib/store/db.ts";
import { apiserverMigrations, startApiServer, type ApiServer } from "../lib/kube/apiserver/index.ts";

const KUBECTL = process.env.KUBECTL ?? (existsSync("/usr/bin/kubectl") ? "/usr/bin/kubectl" : Bun.which("kubectl"));
const haveKubectl = !!KUBECTL && existsSync(KUBECTL);
if (!haveKubectl) {
  if (process.env.CI === "true") {
    test("kubectl is installed (required in CI)", () => {
      throw new Error("kubectl not found: install the kubernetes-client package");
    });
  } else console.warn("SKIPPING tests/apiserver-kubectl.test.ts: kubectl not found (install kubernetes-client)");
}

const d = haveKubectl ? describe : describe.skip;

let dir: string;
let store: Store<any>;
let server: ApiServer;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs kubectl asynchronously (the server lives in this process) with its own HOME and cache. */
async function kubectl(args: string[], opts: { kubeconfig?: string } = {}): Promise<Run> {
  const p = Bun.spawn([KUBECTL!, "--kubeconfig", opts.kubeconfig ?? join(dir, "kubeconfig"), "--cache-dir", join(dir, "kcache"), ...args], {
    env: { ...process.env, HOME: join(dir, "home"), KUBECONFIG: "" },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, stdout, stderr };
}

async function ok(args: string[]): Promise<string> {
  const r = await kubectl(args);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(server.url + path, {
    method,
    headers: { Authorization: `Bearer ${server.adminToken}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    tls: { ca: server.caCert },
  } as RequestInit);
  return { status: res.status, body: await res.json() };
}

const podYaml = (image: string, envValue: string) => `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
    tier: frontend
spec:
  nodeName: edge-1
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: ${image}
    command: ["sleep", "3600"]
    env:
    - name: MODE
      value: "${envValue}"
`;

// KubeEdge's documented modbus example shapes (v1beta1): a temperature model and a TCP device.
const deviceModelYaml = `apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: temperature-model
  namespace: default
spec:
  protocol: modbus
  properties:
  - name: temperature
    description: temperature in degree celsius
    type: INT
    accessMode: ReadWrite
    maximum: "100"
    minimum: "1"
    unit: degree celsius
  - name: temperature-enable
    description: enable data collection of temperature sensor
    type: STRING
    accessMode: ReadWrite
`;

const deviceYaml = (desired: string) => `apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: temperature-instance
  namespace: default
  labels:
    model: temperature-model
spec:
  deviceModelRef:
    name: temperature-model
  nodeName: edge-1
  protocol:
    protocolName: modbus
    configData:
      communicateMode: TCP
      ip: 127.0.0.1
      port: "5502"
      slaveID: 1
  properties:
  - name: temperature
    collectCycle: 10000
    reportCycle: 10000
    reportToCloud: true
    desired:
      value: "${desired}"
    visitors:
      protocolName: modbus
      configData:
        register: HoldingRegister
        offset: 2
        limit: 1
        scale: 1
        isSwap: true
        isRegisterSwap: true
        dataType: int
  - name: temperature-enable
    desired:
      value: "OFF"
    visitors:
      protocolName: modbus
      configData:
        register: CoilRegister
        offset: 2
        limit: 1
        scale: 1
        isSwap: true
        isRegisterSwap: true
        dataType: string
`;

d("kubectl against the embedded API", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "outpost-kubectl-"));
    mkdirSync(join(dir, "home"));
    store = await openStore<any>(join(dir, "cloudcore.db"), apiserverMigrations);
    server = await startApiServer({ store, host: "127.0.0.1", port: 0, dataDir: dir, log: createLogger({ level: "error" }) });
  });
  afterAll(async () => {
    await server?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("version, get, api-resources (devices.kubeedge.io listed)", async () => {
    expect(await ok(["version", "-o", "json"])).toContain("v1.32.0-outpost");
    const ns = await ok(["get", "namespaces"]);
    for (const n of ["default", "kube-system", "kube-node-lease"]) expect(ns).toContain(n);
    expect(ns).toContain("Active");
    const ar = await ok(["api-resources"]);
    expect(ar).toMatch(/devices\s+devices\.kubeedge\.io\/v1beta1\s+true\s+Device/);
    expect(ar).toMatch(/devicemodels\s+devices\.kubeedge\.io\/v1beta1\s+true\s+DeviceModel/);
    expect(ar).toMatch(/devicestatuses\s+devices\.kubeedge\.io\/v1beta1\s+true\s+DeviceStatus/);
    expect(ar).toMatch(/leases\s+coordination\.k8s\.io\/v1/);
    expect(await ok(["api-resources", "--api-group=devices.kubeedge.io", "-o", "name"])).toContain("devices.devices.kubeedge.io");
    expect(await ok(["get", "nodes"])).toBe("");
  });

  test("apply creates, re-apply of a change configures, unchanged stays", async () => {
    const f = file("pod.yaml", podYaml("nginx:1.25", "a"));
    expect(await ok(["apply", "-f", f])).toContain("pod/web created");
    writeFileSync(f, podYaml("nginx:1.26", "b"));
    expect(await ok(["apply", "-f", f])).toContain("pod/web configured");
    expect(await ok(["apply", "-f", f])).toContain("pod/web unchanged");
    const got = JSON.parse(await ok(["get", "pod", "web", "-o", "json"]));
    expect(got.spec.containers[0].image).toBe("nginx:1.26");
    expect(got.spec.containers[0].env).toEqual([{ name: "MODE", value: "b" }]);
    expect(got.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]).toContain("nginx:1.26");
    const table = await ok(["get", "pods", "-o", "wide"]);
    expect(table).toMatch(/web\s+0\/1\s+Pending\s+0\s+\S+\s+<none>\s+edge-1/);
  });

  test("patch: strategic (merging containers by name), merge and json", async () => {
    expect(await ok(["patch", "pod", "web", "-p", '{"spec":{"containers":[{"name":"main","env":[{"name":"EXTRA","value":"1"}]}]}}'])).toContain("patched");
    let got = JSON.parse(await ok(["get", "pod", "web", "-o", "json"]));
    expect(got.spec.containers[0].env.map((e: any) => e.name)).toEqual(["MODE", "EXTRA"]);
    expect(got.spec.containers[0].image).toBe("nginx:1.26");
    await ok(["patch", "pod", "web", "--type=merge", "-p", '{"metadata":{"labels":{"patched":"merge"}}}']);
    await ok(["patch", "pod", "web", "--type=json", "-p", '[{"op":"add","path":"/metadata/annotations/j","value":"p"}]']);
    got = JSON.parse(await ok(["get", "pod", "web", "-o", "json"]));
    expect(got.metadata.labels.patched).toBe("merge");
    expect(got.metadata.annotations.j).toBe("p");
    await ok(["label", "pod", "web", "extra=yes"]);
    await ok(["annotate", "pod", "web", "note=hi"]);
    expect(await ok(["get", "pod", "web", "-o", "jsonpath={.metadata.labels.extra}/{.metadata.annotations.note}"])).toBe("yes/hi");
  });

  test("replace -f (edit-style), and a stale replace conflicts", async () => {
    const current = await ok(["get", "pod", "web", "-o", "yaml"]);
    const f = file("web-edit.yaml", current.replace("tier: frontend", "tier: edited"));
    expect(await ok(["replace", "-f", f])).toContain("pod/web replaced");
    expect(await ok(["get", "pod", "web", "-o", "jsonpath={.metadata.labels.tier}"])).toBe("edited");
    const stale = await kubectl(["replace", "-f", f]);
    expect(stale.code).not.toBe(0);
    expect(stale.stderr).toContain("Conflict");
  });

  test("get -l and --field-selector spec.nodeName", async () => {
    await ok(["run", "other", "--image=busybox:1.36", "--labels=app=other", "--restart=Never", "--", "sleep", "1"]);
    expect(await ok(["get", "pods", "-l", "app=web", "-o", "name"])).toBe("pod/web\n");
    expect(await ok(["get", "pods", "-l", "app in (web,other)", "-o", "name"])).toBe("pod/other\npod/web\n");
    expect(await ok(["get", "pods", "-l", "app!=web", "-o", "name"])).toBe("pod/other\n");
    expect(await ok(["get", "pods", "--field-selector", "spec.nodeName=edge-1", "-o", "name"])).toBe("pod/web\n");
    expect(await ok(["get", "pods", "--field-selector", "spec.nodeName=edge-2", "-o", "name"])).toBe("");
    expect(await ok(["get", "pods", "-A", "--field-selector", "metadata.name=other", "-o", "name"])).toBe("pod/other\n");
    await ok(["delete", "pod", "other"]);
  });

  test("get -w receives an update", async () => {
    await ok(["create", "configmap", "watched", "--from-literal=k=v1"]);
    const p = Bun.spawn([KUBECTL!, "--kubeconfig", join(dir, "kubeconfig"), "--cache-dir", join(dir, "kcache"), "get", "configmap", "watched", "-w", "-o", "jsonpath={.data.k}{\"\\n\"}"], {
      env: { ...process.env, HOME: join(dir, "home"), KUBECONFIG: "" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const reader = p.stdout.getReader();
    const dec = new TextDecoder();
    let out = "";
    const until = async (want: string, ms: number) => {
      const deadline = Date.now() + ms;
      while (!out.includes(want) && Date.now() < deadline) {
        const r = await Promise.race([reader.read(), Bun.sleep(deadline - Date.now()).then(() => null)]);
        if (!r || r.done) break;
        out += dec.decode(r.value);
      }
    };
    await until("v1\n", 10_000);
    expect(out).toContain("v1");
    await ok(["patch", "configmap", "watched", "--type=merge", "-p", '{"data":{"k":"v2"}}']);
    await until("v2\n", 10_000);
    p.kill();
    await p.exited;
    expect(out.trim().split("\n")).toEqual(["v1", "v2"]);
  });

  test("delete: a pod on a node stays Terminating until a grace-0 delete; kubectl delete waits for it", async () => {
    expect(await ok(["delete", "pod", "web", "--wait=false"])).toContain('pod "web" deleted');
    const got = JSON.parse(await ok(["get", "pod", "web", "-o", "json"]));
    expect(got.metadata.deletionTimestamp).toBeTruthy();
    expect(got.metadata.deletionGracePeriodSeconds).toBe(30);
    expect(await ok(["get", "pods"])).toMatch(/web\s+0\/1\s+Terminating/);
    // A waiting `kubectl delete` returns once the edge (here: us) does the final grace-0 delete.
    const waiting = kubectl(["delete", "pod", "web", "--timeout=20s"]);
    await Bun.sleep(800);
    const final = await api("DELETE", "/api/v1/namespaces/default/pods/web", { gracePeriodSeconds: 0 });
    expect(final.status).toBe(200);
    const r = await waiting;
    expect(r.code).toBe(0);
    expect((await kubectl(["get", "pod", "web"])).stderr).toContain("NotFound");
    // And the force path.
    await ok(["apply", "-f", join(dir, "pod.yaml")]);
    await ok(["delete", "pod", "web", "--grace-period=0", "--force"]);
    expect((await kubectl(["get", "pod", "web"])).code).not.toBe(0);
  });

  test("apply a DeviceModel and a modbus Device (KubeEdge examples); DeviceStatus columns", async () => {
    const model = file("model.yaml", deviceModelYaml);
    const dev = file("device.yaml", deviceYaml("30"));
    expect(await ok(["apply", "-f", model])).toContain("devicemodel.devices.kubeedge.io/temperature-model created");
    expect(await ok(["apply", "-f", dev])).toContain("device.devices.kubeedge.io/temperature-instance created");
    writeFileSync(dev, deviceYaml("35"));
    expect(await ok(["apply", "-f", dev])).toContain("configured");
    const got = JSON.parse(await ok(["get", "device", "temperature-instance", "-o", "json"]));
    expect(got.spec.properties[0].desired.value).toBe("35");
    expect(got.spec.properties[0].visitors.configData.register).toBe("HoldingRegister");
    expect(got.spec.protocol.configData.slaveID).toBe(1);
    expect(got.metadata.generation).toBe(2);
    expect(await ok(["get", "devices", "-o", "name"])).toBe("device.devices.kubeedge.io/temperature-instance\n");
    expect(await ok(["get", "devicemodels.devices.kubeedge.io", "-o", "name"])).toBe("devicemodel.devices.kubeedge.io/temperature-model\n");
    const ds = file("ds.yaml", "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceStatus\nmetadata:\n  name: temperature-instance\n");
    await ok(["apply", "-f", ds]);
    await ok(["patch", "devicestatus", "temperature-instance", "--subresource=status", "--type=merge", "-p", '{"status":{"state":"online","lastOnlineTime":"2026-11-25T10:00:00Z","twins":[{"propertyName":"temperature","reported":{"value":"35"}}]}}']);
    const table = await ok(["get", "devicestatus"]);
    expect(table).toMatch(/NAME\s+STATE\s+LASTONLINETIME\s+AGE/);
    expect(table).toMatch(/temperature-instance\s+online\s+2026-11-25T10:00:00Z/);
    const bad = await kubectl(["apply", "-f", file("bad-model.yaml", deviceModelYaml.replace("type: INT", "type: NUMBER"))]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/Unsupported value|Invalid/);
  });

  test("kubectl create (protobuf bodies): namespace, configmap, secret, service; namespace delete", async () => {
    await ok(["create", "namespace", "team"]);
    await ok(["create", "configmap", "conf", "-n", "team", "--from-literal=a=b", "--from-literal=c=d"]);
    await ok(["create", "secret", "generic", "pw", "-n", "team", "--from-literal=pw=s3cret"]);
    await ok(["create", "service", "clusterip", "svc", "-n", "team", "--tcp=80:8080"]);
    expect(await ok(["get", "configmap", "conf", "-n", "team", "-o", "jsonpath={.data}"])).toBe('{"a":"b","c":"d"}');
    expect(await ok(["get", "secret", "pw", "-n", "team", "-o", "jsonpath={.type}/{.data.pw}"])).toBe(`Opaque/${Buffer.from("s3cret").toString("base64")}`);
    const svc = JSON.parse(await ok(["get", "service", "svc", "-n", "team", "-o", "json"]));
    expect(svc.spec.clusterIP).toMatch(/^10\.96\./);
    expect(svc.spec.ports[0]).toMatchObject({ port: 80, targetPort: 8080, protocol: "TCP" });
    expect(await ok(["delete", "namespace", "team"])).toContain('namespace "team" deleted');
    expect((await kubectl(["get", "namespace", "team"])).code).not.toBe(0);
  });

  test("read-only kubeconfig can get but not delete", async () => {
    const ro = join(dir, "kubeconfig-readonly");
    expect((await kubectl(["get", "devices"], { kubeconfig: ro })).code).toBe(0);
    const r = await kubectl(["delete", "device", "temperature-instance"], { kubeconfig: ro });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("Forbidden");
  });
});
