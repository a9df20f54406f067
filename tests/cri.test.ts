/**
 * Issue 9 end to end, all real: a private containerd (temp root/state/socket), a busybox image
 * built here and imported with ctr, cloudcore + edgecore `--runtime cri`, kubectl. Containers write
 * what they see into a hostPath directory the test reads; the runtime is inspected through the
 * CRI client (ListContainers), never through edgecore.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CriClient, CriRuntime, CRI_LABELS, parseCriLog } from "../lib/edge/edged/index.ts";
import { BUSYBOX_IMAGE, startContainerd, type Containerd } from "./helpers/containerd.ts";
import { ROOT, eventually, joinToken, requireTool, run, startCloud, startEdge, tmpDir, type Cloud, type Daemon, type Edge } from "./helpers/daemons.ts";
import { kubectlFor } from "./helpers/kubectl.ts";

function isRoot(): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.CI === "true") throw new Error("the cri tests run containerd and must run as root in CI");
  console.warn("\n!!! SKIPPING: the cri tests run their own containerd and need root. !!!\n");
  return false;
}
const ready =
  requireTool("/usr/bin/kubectl", "pods are managed with kubectl") &&
  requireTool("/usr/bin/containerd", "the cri runtime is tested against Debian's containerd") &&
  requireTool("/usr/sbin/runc", "containerd runs containers with runc") &&
  requireTool("/usr/bin/ctr", "the test image is imported with ctr") &&
  requireTool("/bin/busybox", "the test image is built around busybox-static") &&
  isRoot();

const NODE = "edge-cri";
const running: Daemon[] = [];
let containerd: Containerd;
let cri: CriClient;
let cloud: Cloud;
let edge: Edge;
const out = tmpDir("cri-out");

const { kubectl, apply, podJson } = kubectlFor(() => cloud.dataDir);
/** The CRI containers of a pod (by our labels), as containerd lists them. */
const containersOf = async (pod: string) => cri.listContainers({ [CRI_LABELS.node]: NODE, [CRI_LABELS.podName]: pod });
const edgeArgs = (endpoint: string) => ["--runtime", "cri", "--cri-endpoint", endpoint, "--node-status-interval", "2", "--restart-backoff-ms", "300"];
const pod = (name: string, body: string) => `
apiVersion: v1
kind: Pod
metadata: { name: ${name} }
spec:
  nodeName: ${NODE}
  terminationGracePeriodSeconds: 1
${body}`;

beforeAll(async () => {
  if (!ready) return;
  containerd = await startContainerd();
  running.push(containerd.daemon);
  cri = new CriClient(containerd.endpoint);
  cloud = await startCloud({ args: ["--node-grace-period", "3"] });
  running.push(cloud.daemon);
  edge = await startEdge({ node: NODE, cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), args: edgeArgs(containerd.endpoint) });
  running.push(edge.daemon);
  await eventually(async () => (await kubectl("get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")) === "True", 15_000, "node Ready");
}, 120_000);

afterAll(async () => {
  if (!ready) return;
  await Promise.all(running.filter((d) => d !== containerd?.daemon).map((d) => d.stop("SIGKILL")));
  cri?.close();
  await containerd?.stop();
}, 60_000);

describe.skipIf(!ready)("cri runtime: real containers on containerd", () => {
  test("the node reports containerd's version and the images it has", async () => {
    const node = await eventually(async () => {
      const n = JSON.parse(await kubectl("get", "node", NODE, "-o", "json"));
      return n.status?.images?.length ? n : null;
    }, 10_000, "images in the node status");
    expect(node.status.nodeInfo.containerRuntimeVersion).toMatch(/^containerd:\/\/1\./);
    expect(node.status.images.flatMap((i: { names: string[] }) => i.names)).toContain(BUSYBOX_IMAGE);
  });

  test("a pod runs in a real container: env, a configmap volume, a hostPath bind mount, limits, logs", async () => {
    await apply(`
apiVersion: v1
kind: ConfigMap
metadata: { name: cri-config }
data: { GREETING: "hello container", settings.ini: "mode=fast" }
---
${pod(
  "web",
  `  containers:
  - name: main
    image: ${BUSYBOX_IMAGE}
    command: ["sh", "-c"]
    args:
    - |
      echo "$GREETING|$(cat /etc/app/settings.ini)|$OUTPOST_MOUNT_OUT|$(test -e ${out}/.. && echo host-fs || echo own-fs)|$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)|$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)" > /out/web.txt
      echo "to the log: $GREETING"
      exec sleep 600
    env:
    - name: GREETING
      valueFrom: { configMapKeyRef: { name: cri-config, key: GREETING } }
    resources:
      limits: { memory: 64Mi, cpu: 250m }
    volumeMounts:
    - { name: config, mountPath: /etc/app }
    - { name: out, mountPath: /out }
  volumes:
  - name: config
    configMap: { name: cri-config }
  - name: out
    hostPath: { path: ${out}, type: Directory }`,
)}`);
    await eventually(async () => (await podJson("web")).status?.phase === "Running", 20_000, "pod Running");
    const p = await podJson("web");
    const cs = p.status.containerStatuses[0];
    expect(cs.state.running).toBeDefined();
    expect(cs.containerID).toMatch(/^containerd:\/\/[0-9a-f]{64}$/);
    await eventually(() => existsSync(join(out, "web.txt")), 10_000, "the container wrote its file");
    // the path of `out` does not exist inside: the container has its own filesystem
    expect(readFileSync(join(out, "web.txt"), "utf8").trim()).toBe(`hello container|mode=fast|/out|own-fs|${64 * 1024 * 1024}|25000`);
    const listed = await containersOf("web");
    expect(listed.map((c) => c.id)).toEqual([cs.containerID.replace("containerd://", "")]);
    expect(listed[0]!.state).toBe("CONTAINER_RUNNING");
    const log = join(edge.dataDir, "pods", p.metadata.uid, "logs", "main.log");
    await eventually(() => existsSync(log) && parseCriLog(readFileSync(log, "utf8")).includes("to the log: hello container\n"), 5000, "container log in the CRI log path");
  });

  test("exit codes and restarts come back in the pod status", async () => {
    await apply(`${pod("fails", `  restartPolicy: Never\n  containers:\n  - { name: main, image: ${BUSYBOX_IMAGE}, command: ["sh", "-c", "exit 3"] }`)}
---
${pod("crasher", `  restartPolicy: Always\n  containers:\n  - { name: main, image: ${BUSYBOX_IMAGE}, command: ["sh", "-c", "exit 7"] }`)}`);
    await eventually(async () => (await podJson("fails")).status?.phase === "Failed", 20_000, "pod Failed");
    const term = (await podJson("fails")).status.containerStatuses[0].state.terminated;
    expect(term.exitCode).toBe(3);
    expect(term.reason).toBe("Error");
    expect(term.containerID).toMatch(/^containerd:\/\//);
    const cs = await eventually(async () => {
      const s = (await podJson("crasher")).status?.containerStatuses?.[0];
      return s?.restartCount >= 2 ? s : null;
    }, 20_000, "crasher restarted twice");
    expect(cs.lastState.terminated.exitCode).toBe(7);
    // each run is a new container; exited ones are removed: never more than one per pod container
    expect((await containersOf("crasher")).length).toBeLessThanOrEqual(1);
    await kubectl("delete", "pod", "crasher", "fails", "--timeout=30s");
    await eventually(async () => (await containersOf("crasher")).length === 0, 10_000, "crasher's container removed");
  });

  test("bad input: an image that does not exist and a command that does not exist get a reason", async () => {
    await apply(`${pod("no-image", `  restartPolicy: Never\n  containers:\n  - { name: main, image: "no-such-registry.invalid/outpost/nope:1", command: ["true"] }`)}
---
${pod("no-command", `  restartPolicy: Never\n  containers:\n  - { name: main, image: ${BUSYBOX_IMAGE}, command: ["no-such-command"] }`)}
---
${pod("never-pull", `  restartPolicy: Never\n  containers:\n  - { name: main, image: "docker.io/outpost/absent:1", imagePullPolicy: Never, command: ["true"] }`)}`);
    const waiting = await eventually(async () => (await podJson("no-image")).status?.containerStatuses?.[0]?.state?.waiting, 20_000, "no-image waiting");
    expect(["ErrImagePull", "ImagePullBackOff"]).toContain(waiting.reason);
    expect(waiting.message).toContain("no-such-registry.invalid/outpost/nope:1");
    expect((await podJson("no-image")).status.phase).toBe("Pending");
    // the next tries wait out the pull back-off
    await eventually(async () => (await podJson("no-image")).status?.containerStatuses?.[0]?.state?.waiting?.reason === "ImagePullBackOff", 15_000, "ImagePullBackOff");
    const never = await eventually(async () => (await podJson("never-pull")).status?.containerStatuses?.[0]?.state?.waiting, 20_000, "never-pull waiting");
    expect(never.reason).toBe("ErrImageNeverPull");
    await eventually(async () => (await podJson("no-command")).status?.phase === "Failed", 20_000, "no-command Failed");
    const term = (await podJson("no-command")).status.containerStatuses[0].state.terminated;
    expect(term.reason).toBe("StartError");
    expect(term.exitCode).toBe(128);
    expect(term.message).toContain(`exec: "no-such-command": executable file not found in $PATH`);
    await kubectl("delete", "pod", "no-image", "no-command", "never-pull", "--timeout=30s");
  });

  test("kubectl delete removes the container and the pod sandbox", async () => {
    const uid = (await podJson("web")).metadata.uid;
    expect((await containersOf("web")).length).toBe(1);
    await kubectl("delete", "pod", "web", "--timeout=30s");
    // (the API ends the pod when its grace period is over; the edge may still be at it)
    await eventually(async () => (await containersOf("web")).length === 0, 10_000, "web's container removed");
    await eventually(async () => (await cri.listPodSandbox({ [CRI_LABELS.podUid]: uid })).length === 0, 10_000, "web's sandbox removed");
  });

  test("an edgecore restart adopts the running container: same container id, no duplicate", async () => {
    await apply(pod("keeper", `  containers:\n  - { name: main, image: ${BUSYBOX_IMAGE}, command: ["sleep", "600"] }`));
    await eventually(async () => (await podJson("keeper")).status?.phase === "Running", 20_000, "keeper Running");
    const before = (await podJson("keeper")).status.containerStatuses[0];
    // a graceful stop leaves containers running, as the kubelet does
    await edge.daemon.stop("SIGTERM");
    const after = await containersOf("keeper");
    expect(after.map((c) => [c.id, c.state])).toEqual([[before.containerID.replace("containerd://", ""), "CONTAINER_RUNNING"]]);
    const edge2 = await startEdge({ node: NODE, dataDir: edge.dataDir, args: edgeArgs(containerd.endpoint) });
    running.push(edge2.daemon);
    await edge2.daemon.waitFor(/container adopted/, 10_000);
    // and a crash (SIGKILL) too
    await edge2.daemon.stop("SIGKILL");
    const edge3 = await startEdge({ node: NODE, dataDir: edge.dataDir, args: edgeArgs(containerd.endpoint) });
    running.push(edge3.daemon);
    edge = edge3;
    await edge3.daemon.waitFor(/container adopted/, 10_000);
    await Bun.sleep(1500);
    const listed = await containersOf("keeper");
    expect(listed.map((c) => c.id)).toEqual([before.containerID.replace("containerd://", "")]);
    const now = (await podJson("keeper")).status.containerStatuses[0];
    expect(now.containerID).toBe(before.containerID);
    expect(now.restartCount).toBe(0);
    expect(now.state.running.startedAt).toBe(before.state.running.startedAt);
    // it is still managed: delete stops it
    await kubectl("delete", "pod", "keeper", "--timeout=30s");
    await eventually(async () => (await containersOf("keeper")).length === 0, 10_000, "keeper's container removed");
  });

  const haveBinary = existsSync(join(ROOT, "dist", "edgecore"));
  if (!haveBinary && process.env.CI === "true") throw new Error("dist/edgecore is required in CI (npm run build runs before npm test)");
  test.skipIf(!haveBinary)("the compiled edgecore (api.proto inlined) runs a pod in a container", async () => {
    const bin = await startEdge({ node: "edge-cri-bin", cloud: cloud.endpoints, token: await joinToken(cloud.dataDir), flavour: "binary", args: edgeArgs(containerd.endpoint) });
    running.push(bin.daemon);
    await apply(`${pod("from-binary", `  containers:\n  - { name: main, image: ${BUSYBOX_IMAGE}, command: ["sh", "-c", "echo $WHO > /out/bin.txt; exec sleep 600"], env: [{ name: WHO, value: compiled }], volumeMounts: [{ name: out, mountPath: /out }] }\n  volumes:\n  - { name: out, hostPath: { path: ${out} } }`).replace(`nodeName: ${NODE}`, "nodeName: edge-cri-bin")}`);
    await eventually(async () => (await podJson("from-binary")).status?.phase === "Running", 20_000, "pod Running on the compiled edgecore");
    expect((await podJson("from-binary")).status.containerStatuses[0].containerID).toMatch(/^containerd:\/\//);
    await eventually(() => existsSync(join(out, "bin.txt")) && readFileSync(join(out, "bin.txt"), "utf8").trim() === "compiled", 10_000, "the container wrote its file");
    await kubectl("delete", "pod", "from-binary", "--timeout=30s");
    await eventually(async () => (await cri.listContainers({ [CRI_LABELS.podName]: "from-binary" })).length === 0, 10_000, "container removed");
    await bin.daemon.stop("SIGTERM");
  });

  test("at start, sandboxes and containers of pods that are no longer stored are removed", async () => {
    // A sandbox + container labelled for this node but for a pod the edge never stored.
    const rt = new CriRuntime({ endpoint: containerd.endpoint, nodeName: NODE });
    await rt.recover();
    const dir = tmpDir("ghost");
    const id = await rt.createContainer({
      podUid: "ghost-uid",
      podName: "ghost",
      podNamespace: "default",
      name: "main",
      image: BUSYBOX_IMAGE,
      argv: ["sleep", "600"],
      env: {},
      workingDir: "",
      logPath: join(dir, "logs", "main.log"),
      mounts: [],
    });
    await rt.startContainer(id);
    await rt.close();
    expect((await containersOf("ghost")).length).toBe(1);
    await edge.daemon.stop("SIGTERM");
    const edge4 = await startEdge({ node: NODE, dataDir: edge.dataDir, args: edgeArgs(containerd.endpoint) });
    running.push(edge4.daemon);
    edge = edge4;
    await eventually(async () => (await containersOf("ghost")).length === 0, 10_000, "ghost container removed");
    expect(await cri.listPodSandbox({ [CRI_LABELS.podUid]: "ghost-uid" })).toEqual([]);
  });
});
