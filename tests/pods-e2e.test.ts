/**
 * Issue 4 end to end, all real: cloudcore (embedded API) + edgecore processes, kubectl, pods as
 * child processes. Pods write what they see into a hostPath directory the test reads.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { eventually, joinToken, requireTool, run, startCloud, startEdge, tmpDir, type Cloud, type Daemon, type Edge } from "./helpers/daemons.ts";
import { kubectlFor } from "./helpers/kubectl.ts";

/** pgrep looks at the whole machine: markers are unique to this run, so parallel runs do not mix. */
const MARK = `outpost-e2e-${process.pid}-`;
const haveKubectl = requireTool("/usr/bin/kubectl", "pods are managed with kubectl");
const running: Daemon[] = [];
let cloud: Cloud;
let edge: Edge;
const out = tmpDir("pods-out");

const { kubectl, apply, podJson } = kubectlFor(() => cloud.dataDir);
const pgrep = async (marker: string) => (await run("pgrep", ["-f", marker])).stdout.split("\n").filter(Boolean).length;

beforeAll(async () => {
  if (!haveKubectl) return;
  cloud = await startCloud({ args: ["--node-grace-period", "3"] });
  running.push(cloud.daemon);
  edge = await startEdge({ node: "edge-pods", cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: ["--node-status-interval", "2", "--restart-backoff-ms", "300"] });
  running.push(edge.daemon);
  await eventually(async () => (await kubectl("get", "node", "edge-pods", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")) === "True", 15_000, "node Ready");
});
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop("SIGKILL")));
  await run("pkill", ["-f", MARK]);
});

describe.skipIf(!haveKubectl)("pods on an edge node", () => {
  test("the node reports real capacity and its role", async () => {
    const node = JSON.parse(await kubectl("get", "node", "edge-pods", "-o", "json"));
    expect(node.metadata.labels["node-role.kubernetes.io/edge"]).toBe("");
    await eventually(async () => Number(JSON.parse(await kubectl("get", "node", "edge-pods", "-o", "json")).status.capacity?.cpu) > 0, 10_000, "capacity reported");
  });

  test("kubectl apply: the pod runs with env from a configmap and secret and its volumes; status comes back", async () => {
    await apply(`
apiVersion: v1
kind: ConfigMap
metadata: { name: app-config }
data: { GREETING: "hello edge", settings.ini: "mode=fast" }
---
apiVersion: v1
kind: Secret
metadata: { name: app-secret }
stringData: { password: s3cret }
---
apiVersion: v1
kind: Pod
metadata: { name: web }
spec:
  nodeName: edge-pods
  restartPolicy: Always
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c"]
    args: ["echo \\"$GREETING|$PASSWORD|$(cat $OUTPOST_MOUNT_CONFIG/settings.ini)\\" > $OUTPOST_MOUNT_OUT/web.txt; sleep 600; echo done # ${MARK}web"]
    env:
    - name: GREETING
      valueFrom: { configMapKeyRef: { name: app-config, key: GREETING } }
    - name: PASSWORD
      valueFrom: { secretKeyRef: { name: app-secret, key: password } }
    volumeMounts:
    - { name: config, mountPath: /etc/app }
    - { name: out, mountPath: /out }
  volumes:
  - name: config
    configMap: { name: app-config }
  - name: out
    hostPath: { path: ${out}, type: Directory }
`);
    await eventually(async () => (await podJson("web")).status?.phase === "Running", 10_000, "pod Running");
    const status = (await podJson("web")).status;
    expect(status.containerStatuses[0].state.running).toBeDefined();
    expect(status.podIP).toBeTruthy();
    await eventually(() => existsSync(join(out, "web.txt")), 5000, "pod wrote its file");
    expect(readFileSync(join(out, "web.txt"), "utf8").trim()).toBe("hello edge|s3cret|mode=fast");
    expect(await pgrep(MARK + "web")).toBe(1);
  });

  test("exit codes and a missing command come back in the pod status (restartPolicy Never)", async () => {
    await apply(`
apiVersion: v1
kind: Pod
metadata: { name: fails }
spec:
  nodeName: edge-pods
  restartPolicy: Never
  containers:
  - { name: main, image: busybox, command: ["sh", "-c", "exit 3"] }
`);
    await eventually(async () => (await podJson("fails")).status?.phase === "Failed", 10_000, "pod Failed");
    expect((await podJson("fails")).status.containerStatuses[0].state.terminated.exitCode).toBe(3);
    await apply(`
apiVersion: v1
kind: Pod
metadata: { name: missing-binary }
spec:
  nodeName: edge-pods
  restartPolicy: Never
  containers:
  - { name: main, image: busybox, command: ["/no/such/binary"] }
`);
    await eventually(async () => JSON.stringify((await podJson("missing-binary")).status?.containerStatuses ?? []).includes("/no/such/binary"), 10_000, "clear reason for a missing command");
  });

  test("a configmap update is seen by the container's next restart", async () => {
    await apply(`
apiVersion: v1
kind: ConfigMap
metadata: { name: rolling }
data: { VERSION: "one" }
---
apiVersion: v1
kind: Pod
metadata: { name: restarter }
spec:
  nodeName: edge-pods
  restartPolicy: Always
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo $VERSION > $OUTPOST_MOUNT_OUT/restarter.txt; sleep 0.3"]
    envFrom: [{ configMapRef: { name: rolling } }]
    volumeMounts: [{ name: out, mountPath: /out }]
  volumes:
  - name: out
    hostPath: { path: ${out}, type: Directory }
`);
    await eventually(() => existsSync(join(out, "restarter.txt")) && readFileSync(join(out, "restarter.txt"), "utf8").trim() === "one", 10_000, "first run saw 'one'");
    await kubectl("patch", "configmap", "rolling", "-p", JSON.stringify({ data: { VERSION: "two" } }));
    await eventually(() => readFileSync(join(out, "restarter.txt"), "utf8").trim() === "two", 15_000, "a restart saw 'two'");
    await eventually(async () => (await podJson("restarter")).status?.containerStatuses?.[0]?.restartCount > 0, 5000, "restartCount in the API");
    await kubectl("delete", "pod", "restarter", "--grace-period=0", "--force");
  });

  test("a pod the process runtime cannot run gets a clear reason; the edge runs on", async () => {
    await apply(`
apiVersion: v1
kind: Pod
metadata: { name: no-command }
spec:
  nodeName: edge-pods
  restartPolicy: Never
  containers:
  - { name: main, image: busybox }
---
apiVersion: v1
kind: Pod
metadata: { name: bad-volume }
spec:
  nodeName: edge-pods
  restartPolicy: Never
  containers:
  - { name: main, image: busybox, command: ["true"], volumeMounts: [{ name: data, mountPath: /data }] }
  volumes:
  - name: data
    hostPath: { path: /nonexistent/outpost/path, type: Directory }
`);
    await eventually(async () => JSON.stringify((await podJson("no-command")).status ?? {}).match(/command/i), 10_000, "reason names the missing command");
    await eventually(async () => JSON.stringify((await podJson("bad-volume")).status ?? {}).includes("/nonexistent/outpost/path"), 10_000, "reason names the bad volume");
    expect(await pgrep(MARK + "web")).toBe(1); // the healthy pod is untouched
  });

  test("two edge nodes: each runs only its own pods and gets only the configmaps its pods use", async () => {
    const edgeB = await startEdge({ node: "edge-pods-b", cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: ["--node-status-interval", "2"] });
    running.push(edgeB.daemon);
    await apply(`
apiVersion: v1
kind: ConfigMap
metadata: { name: only-b }
data: { WHO: "b" }
---
apiVersion: v1
kind: Pod
metadata: { name: on-b }
spec:
  nodeName: edge-pods-b
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo $WHO:$NODE > $OUTPOST_MOUNT_OUT/on-b.txt; sleep 600; echo done # ${MARK}on-b"]
    env:
    - { name: WHO, valueFrom: { configMapKeyRef: { name: only-b, key: WHO } } }
    - { name: NODE, valueFrom: { fieldRef: { fieldPath: spec.nodeName } } }
    volumeMounts: [{ name: out, mountPath: /out }]
  volumes:
  - name: out
    hostPath: { path: ${out}, type: Directory }
`);
    await eventually(() => existsSync(join(out, "on-b.txt")), 10_000, "pod ran on edge-pods-b");
    expect(readFileSync(join(out, "on-b.txt"), "utf8").trim()).toBe("b:edge-pods-b");
    const names = async (ep: string, what: string) => ((await (await fetch(`http://${ep}/api/v1/namespaces/default/${what}`)).json()) as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name);
    expect(await names(edgeB.endpoints.metaserver!, "pods")).toEqual(["on-b"]);
    expect(await names(edgeB.endpoints.metaserver!, "configmaps")).toEqual(["only-b"]);
    expect(await names(edge.endpoints.metaserver!, "pods")).not.toContain("on-b");
    expect(await names(edge.endpoints.metaserver!, "configmaps")).not.toContain("only-b");
    expect(await names(edgeB.endpoints.metaserver!, "configmaps")).not.toContain("app-config");
    await kubectl("delete", "pod", "on-b", "--timeout=30s");
    await edgeB.daemon.stop();
  });

  test("kubectl delete waits until the edge has stopped the pod", async () => {
    const t = Date.now();
    await kubectl("delete", "pod", "web", "--timeout=30s");
    expect(Date.now() - t).toBeLessThan(20_000);
    await expect(kubectl("get", "pod", "web")).rejects.toThrow(/NotFound/);
    expect(await pgrep(MARK + "web")).toBe(0);
  });

  test("autonomy: without the cloud, a restarted edgecore runs its pods again from the store; then state converges", async () => {
    await apply(`
apiVersion: v1
kind: Pod
metadata: { name: keeper }
spec:
  nodeName: edge-pods
  containers:
  - { name: main, image: busybox, command: ["sh", "-c", "sleep 600; echo done # ${MARK}keeper"] }
---
apiVersion: v1
kind: Pod
metadata: { name: doomed }
spec:
  nodeName: edge-pods
  terminationGracePeriodSeconds: 1
  containers:
  - { name: main, image: busybox, command: ["sh", "-c", "sleep 600; echo done # ${MARK}doomed"] }
`);
    await eventually(async () => (await pgrep(MARK + "keeper")) === 1 && (await pgrep(MARK + "doomed")) === 1, 10_000, "both pods running");
    // the cloud dies; the edge restarts on its own
    await cloud.daemon.stop("SIGKILL");
    await edge.daemon.stop("SIGTERM");
    const t = Date.now();
    const edge2 = await startEdge({ node: "edge-pods", dataDir: edge.dataDir, args: ["--node-status-interval", "2"] });
    running.push(edge2.daemon);
    await eventually(async () => (await pgrep(MARK + "keeper")) === 1, 5000, "keeper running again without the cloud");
    expect(Date.now() - t).toBeLessThan(5000 + 2000);
    // the cloud returns; meanwhile (cloud up, edge away) a pod is deleted and one is added
    await edge2.daemon.stop("SIGTERM");
    const cloud2 = await startCloud({ dataDir: cloud.dataDir, ports: { hub: cloud.endpoints.hub, https: cloud.endpoints.https, metrics: cloud.endpoints.metrics, api: cloud.endpoints.api?.replace(/^https?:\/\//, "") }, args: ["--node-grace-period", "3"] });
    running.push(cloud2.daemon);
    cloud = cloud2;
    await kubectl("delete", "pod", "doomed", "--wait=false");
    await apply(`
apiVersion: v1
kind: Pod
metadata: { name: newcomer }
spec:
  nodeName: edge-pods
  containers:
  - { name: main, image: busybox, command: ["sh", "-c", "sleep 600; echo done # ${MARK}newcomer"] }
`);
    const edge3 = await startEdge({ node: "edge-pods", dataDir: edge.dataDir, args: ["--node-status-interval", "2"] });
    running.push(edge3.daemon);
    await eventually(async () => (await pgrep(MARK + "newcomer")) === 1, 10_000, "newcomer started after reconnect");
    await eventually(async () => (await pgrep(MARK + "doomed")) === 0, 10_000, "doomed stopped after reconnect");
    await eventually(async () => !(await kubectl("get", "pods", "-o", "name")).includes("pod/doomed"), 10_000, "doomed gone from the API");
    expect(await pgrep(MARK + "keeper")).toBe(1); // no duplicate
    await eventually(async () => (await podJson("newcomer")).status?.phase === "Running", 10_000, "status re-reported");
  });
});
