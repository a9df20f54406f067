import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, helpText, loadConfig, parseListen, type OptionSpec } from "../lib/config.ts";

const specs: OptionSpec[] = [
  { flag: "config", type: "string", help: "file" },
  { flag: "data-dir", type: "string", default: "./d", help: "dir" },
  { flag: "hub-listen", type: "listen", default: "0.0.0.0:10000", help: "hub" },
  { flag: "heartbeat", type: "int", default: 15, help: "hb" },
  { flag: "verbose", type: "bool", default: false, help: "v" },
  { flag: "mapper", type: "list", default: [], help: "m" },
];
type C = { dataDir: string; hubListen: string; heartbeat: number; verbose: boolean; mapper: string[] };

describe("configuration", () => {
  const dir = mkdtempSync(join(tmpdir(), "outpost-config-"));

  test("defaults < YAML file < flags", () => {
    const file = join(dir, "c.yaml");
    writeFileSync(file, "dataDir: /from/file\nheartbeat: 20\nmapper: [a.ts]\n");
    const c = loadConfig<C>(specs, ["--config", file, "--heartbeat=30", "--verbose"]);
    expect(c.dataDir).toBe("/from/file");
    expect(c.heartbeat).toBe(30);
    expect(c.verbose).toBe(true);
    expect(c.hubListen).toBe("0.0.0.0:10000");
    expect(c.mapper).toEqual(["a.ts"]);
    expect(loadConfig<C>(specs, ["--mapper", "x.ts", "--mapper", "y.ts"]).mapper).toEqual(["x.ts", "y.ts"]);
  });

  test("bad values name the field", () => {
    expect(() => loadConfig(specs, ["--heartbeat", "soon"])).toThrow(/--heartbeat: must be an integer/);
    expect(() => loadConfig(specs, ["--hub-listen", "nowhere"])).toThrow(/--hub-listen: must be HOST:PORT/);
    expect(() => loadConfig(specs, ["--nope"])).toThrow(/unknown flag --nope/);
    expect(() => loadConfig(specs, ["--data-dir"])).toThrow(/needs a value/);
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "heartbeat: [1]\n");
    expect(() => loadConfig(specs, ["--config", file])).toThrow(new RegExp(`${file}: heartbeat`));
    writeFileSync(file, "hartbeat: 1\n");
    expect(() => loadConfig(specs, ["--config", file])).toThrow(/unknown field "hartbeat"/);
    writeFileSync(file, "a: [\n");
    expect(() => loadConfig(specs, ["--config", file])).toThrow(ConfigError);
  });

  test("--help lists every flag with its default", () => {
    const text = helpText("usage", specs);
    for (const s of specs) expect(text).toContain(`--${s.flag}`);
    expect(text).toContain("(default 0.0.0.0:10000)");
    expect(text).toContain("(default 15)");
    expect(loadConfig(specs, ["--help"]).help).toBe(true);
  });

  test("listen addresses", () => {
    expect(parseListen("127.0.0.1:0")).toEqual({ host: "127.0.0.1", port: 0 });
    expect(parseListen(":8080")).toEqual({ host: "0.0.0.0", port: 8080 });
    expect(parseListen("[::1]:1")).toEqual({ host: "::1", port: 1 });
    expect(() => parseListen("h:70000")).toThrow(ConfigError);
  });
});
