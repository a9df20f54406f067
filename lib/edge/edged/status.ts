/** v1.PodStatus pieces: container states, phase (kubelet's getPhase rules), conditions. */

export interface Terminated {
  exitCode: number;
  signal?: number;
  reason: string;
  message?: string;
  startedAt: string;
  finishedAt: string;
  containerID?: string;
}

export type ContainerState =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | { terminated: Terminated };

export interface V1ContainerStatus {
  name: string;
  state: ContainerState;
  lastState: { terminated?: Terminated };
  ready: boolean;
  started: boolean;
  restartCount: number;
  image: string;
  imageID: string;
  containerID?: string;
}

export interface V1PodCondition {
  type: string;
  status: "True" | "False" | "Unknown";
  lastProbeTime: null;
  lastTransitionTime: string;
  reason?: string;
  message?: string;
}

export type PodPhase = "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown";

export interface V1PodStatus {
  phase: PodPhase;
  conditions: V1PodCondition[];
  hostIP: string;
  hostIPs: { ip: string }[];
  podIP: string;
  podIPs: { ip: string }[];
  startTime?: string;
  containerStatuses: V1ContainerStatus[];
  reason?: string;
  message?: string;
}

/** Kubernetes timestamps: RFC 3339, seconds precision, UTC. */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export type RestartPolicy = "Always" | "OnFailure" | "Never";

/** kubelet's getPhase for a pod without init containers. */
export function podPhase(policy: RestartPolicy, statuses: Pick<V1ContainerStatus, "state" | "lastState">[]): PodPhase {
  let pending = 0;
  let running = 0;
  let stopped = 0;
  let succeeded = 0;
  for (const s of statuses) {
    if ("running" in s.state) running++;
    else if ("terminated" in s.state) {
      stopped++;
      if (s.state.terminated.exitCode === 0) succeeded++;
    } else if (s.lastState.terminated) stopped++;
    else pending++;
  }
  if (pending > 0) return "Pending";
  if (running > 0) return "Running";
  if (stopped > 0) {
    if (policy === "Always") return "Running";
    if (stopped === succeeded) return "Succeeded";
    return policy === "Never" ? "Failed" : "Running";
  }
  return "Pending";
}

/** Keeps lastTransitionTime of each condition stable while its status does not change. */
export class ConditionClock {
  private readonly seen = new Map<string, { status: string; at: string }>();

  restore(saved: Record<string, { status: string; at: string }> | undefined): void {
    for (const [k, val] of Object.entries(saved ?? {})) this.seen.set(k, val);
  }

  snapshot(): Record<string, { status: string; at: string }> {
    return Object.fromEntries(this.seen);
  }

  condition(type: string, status: V1PodCondition["status"], reason?: string, message?: string): V1PodCondition {
    let s = this.seen.get(type);
    if (!s || s.status !== status) this.seen.set(type, (s = { status, at: rfc3339(Date.now()) }));
    return { type, status, lastProbeTime: null, lastTransitionTime: s.at, ...(reason ? { reason } : {}), ...(message ? { message } : {}) };
  }
}
