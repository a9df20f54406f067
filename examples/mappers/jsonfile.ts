/**
 * A complete small mapper: the "device" is a JSON file, each property one of its keys.
 * Load it with `edgecore --mapper examples/mappers/jsonfile.ts`; docs/writing-a-mapper.md walks
 * through it. It imports only types and Node built-ins: valibot comes from the host (the SDK),
 * so the same file works from source and in the compiled edgecore, with no node_modules beside it.
 */
import { readFile, rename, writeFile } from "node:fs/promises";
import type { MapperSdk, RawValue } from "../../mappers/plugin.ts";

export default ({ v, defineMapper }: MapperSdk) =>
  defineMapper({
    protocol: "jsonfile",
    // the Device's spec.protocol.configData
    protocolSchema: v.object({ path: v.pipe(v.string(), v.minLength(1, "must name the device file")) }),
    // each property's visitors.configData
    visitorSchema: v.object({ key: v.pipe(v.string(), v.minLength(1)) }),

    async open(device, { log }) {
      const path = device.protocol.path;
      const load = async (): Promise<Record<string, RawValue>> => JSON.parse(await readFile(path, "utf8"));
      await load(); // fail now if the device is not there: the host retries with back-off
      log.info("jsonfile device opened", { device: device.id, path });
      return {
        async read(property) {
          const value = (await load())[property.visitor.key];
          if (value === undefined) throw new Error(`${path} has no key "${property.visitor.key}"`);
          return value;
        },
        async write(property, value) {
          const doc = await load();
          doc[property.visitor.key] = value;
          await writeFile(`${path}.tmp`, JSON.stringify(doc));
          await rename(`${path}.tmp`, path); // readers never see half a file
        },
        async close() {},
      };
    },
  });
