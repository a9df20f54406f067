/**
 * Kubernetes resource quantities (`500m`, `2`, `64Mi`, `1G`, `1e3`) and what CRI makes of
 * `resources.limits`: cpu → CFS quota over a 100 ms period, memory → a byte limit.
 */

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, "": 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

/** The quantity's value as a number (`500m` → 0.5, `64Mi` → 67108864); throws on garbage. */
export function parseQuantity(q: string | number): number {
  if (typeof q === "number") {
    if (!Number.isFinite(q) || q < 0) throw new Error(`invalid quantity ${q}`);
    return q;
  }
  const m = /^([+]?[0-9]*\.?[0-9]+)(?:([eE][-+]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$/.exec(q.trim());
  if (!m) throw new Error(`invalid quantity ${JSON.stringify(q)}`);
  const n = Number(m[1]);
  if (m[2]) return n * 10 ** Number(m[2].slice(1));
  const suffix = m[3] ?? "";
  return n * (BINARY[suffix] ?? DECIMAL[suffix]!);
}

export const CPU_PERIOD_US = 100_000;
/** The kernel's smallest CFS quota. */
const MIN_QUOTA_US = 1_000;

export interface LinuxLimits {
  cpu_period?: string;
  cpu_quota?: string;
  memory_limit_in_bytes?: string;
}

/** `resources.limits` → CRI LinuxContainerResources fields (only what is set). */
export function linuxLimits(limits: Record<string, unknown> | null | undefined): LinuxLimits {
  const out: LinuxLimits = {};
  if (!limits) return out;
  const cpu = limits.cpu;
  if (typeof cpu === "string" || typeof cpu === "number") {
    const cores = parseQuantity(cpu);
    if (cores > 0) {
      out.cpu_period = String(CPU_PERIOD_US);
      out.cpu_quota = String(Math.max(MIN_QUOTA_US, Math.round(cores * CPU_PERIOD_US)));
    }
  }
  const mem = limits.memory;
  if (typeof mem === "string" || typeof mem === "number") {
    const bytes = Math.ceil(parseQuantity(mem));
    if (bytes > 0) out.memory_limit_in_bytes = String(bytes);
  }
  return out;
}
