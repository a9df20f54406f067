/** The real kubectl against a cloudcore's embedded API, with its own HOME (discovery cache). */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { run, tmpDir } from "./daemons.ts";

/** `dataDir` is a getter: tests that restart cloudcore on the same data dir keep one kubectl. */
export function kubectlFor(dataDir: () => string) {
  const home = tmpDir("kubectl-home");
  const kubectl = async (...args: string[]): Promise<string> => {
    const r = await run("kubectl", ["--kubeconfig", join(dataDir(), "kubeconfig"), ...args], { env: { HOME: home }, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${r.stderr}`);
    return r.stdout;
  };
  const apply = async (yaml: string): Promise<string> => {
    const f = join(tmpDir("yaml"), "x.yaml");
    writeFileSync(f, yaml);
    return kubectl("apply", "-f", f);
  };
  const podJson = async (name: string): Promise<any> => JSON.parse(await kubectl("get", "pod", name, "-o", "json"));
  return { kubectl, apply, podJson };
}
