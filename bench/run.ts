/** npm run bench [-- --quick]: runs every bench in turn; each prints its table and adds to bench/results.json. */
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dir = fileURLToPath(new URL(".", import.meta.url));
const args = process.argv.slice(2);
rmSync(`${dir}/results.json`, { force: true });
// lib*.ts are shared helpers, not benches
const benches = readdirSync(dir).filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.startsWith("lib")).sort();
let failed = 0;
for (const b of benches) {
  const r = spawnSync(process.execPath, [`${dir}/${b}`, ...args], { stdio: "inherit", timeout: 15 * 60_000 });
  if (r.status !== 0) {
    failed++;
    console.error(`bench ${b} failed (exit ${r.status ?? r.signal})`);
  }
}
console.log(`\n${benches.length - failed}/${benches.length} benches done; figures in bench/results.json`);
process.exit(failed ? 1 : 0);
