/** What both daemons share: config loading with --help, logging, endpoints.json, signal handling. */
import { mkdirSync } from "node:fs";
import { writeFileAtomic } from "./files.ts";
import { join } from "node:path";
import { ConfigError, helpText, loadConfig, type OptionSpec, type Listen } from "./config.ts";
import { createLogger, type Logger, type LogFormat, type LogLevel } from "./log.ts";

export const logOptions: OptionSpec[] = [
  { flag: "log-format", type: "string", default: "text", help: "log line format: text or json" },
  { flag: "log-level", type: "string", default: "info", help: "debug, info, warn or error" },
];

/** Parses argv or exits: prints help (exit 0) or the bad field (exit 2). */
export function configOrExit<T extends { logFormat: string; logLevel: string }>(usage: string, specs: OptionSpec[], argv: string[]): T {
  let cfg: T & { help: boolean };
  try {
    cfg = loadConfig<T>(specs, argv);
    if (!["text", "json"].includes(cfg.logFormat)) throw new ConfigError(`--log-format: must be text or json (got "${cfg.logFormat}")`);
    if (!["debug", "info", "warn", "error"].includes(cfg.logLevel)) throw new ConfigError(`--log-level: must be debug, info, warn or error (got "${cfg.logLevel}")`);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(2);
  }
  if (cfg.help) {
    process.stdout.write(helpText(usage, specs));
    process.exit(0);
  }
  return cfg;
}

export function loggerFor(cfg: { logFormat: string; logLevel: string }, component: string): Logger {
  return createLogger({ format: cfg.logFormat as LogFormat, level: cfg.logLevel as LogLevel, component });
}

/** `host:port` as a client on this machine would dial it (wildcards become loopback). */
export function dialAddress(listen: Listen, port: number): string {
  const host = listen.host === "0.0.0.0" || listen.host === "" ? "127.0.0.1" : listen.host === "::" ? "::1" : listen.host;
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Writes a JSON file atomically, so readers never see half of it. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n", 0o644);
}

export function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

export const dataFile = (dataDir: string, name: string) => join(dataDir, name);

/**
 * SIGTERM/SIGINT: run `shutdown` once, exit 0 when it is done, or exit 1 if it has not finished
 * within the contract's 5 s.
 */
export function onSignals(log: Logger, shutdown: () => Promise<void>): void {
  let stopping = false;
  const handler = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${sig} received, shutting down`);
    const force = setTimeout(() => {
      log.error("shutdown took longer than 4.5 s, exiting");
      process.exit(1);
    }, 4500);
    shutdown().then(
      () => {
        clearTimeout(force);
        process.exit(0);
      },
      (e) => {
        log.error("shutdown failed", { err: String(e) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => handler("SIGTERM"));
  process.on("SIGINT", () => handler("SIGINT"));
}
