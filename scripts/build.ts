/** npm run build: dist/cloudcore and dist/edgecore as standalone executables (bun build --compile). */
import { $ } from "bun";

// proper-lockfile: an optional peer of node-opcua's @ster5/global-mutex, imported only by a provider we never select
const external = ["--external", "proper-lockfile"];

for (const name of ["cloudcore", "edgecore"]) {
  await $`bun build --compile --minify --sourcemap=none ${external} ${name}.ts --outfile dist/${name}`.quiet();
  const size = Bun.file(`dist/${name}`).size;
  console.log(`dist/${name}  ${(size / 1024 / 1024).toFixed(1)} MiB`);
}
