/** Logs to stderr, one line per event, as text or JSON (CONTRACT: --log-format, --log-level). */
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

export function createLogger(opts: { level?: LogLevel; format?: LogFormat; component?: string; write?: (line: string) => void } = {}): Logger {
  const min = rank[opts.level ?? "info"];
  const format = opts.format ?? "text";
  const write = opts.write ?? ((line: string) => void process.stderr.write(line + "\n"));
  const make = (component: string | undefined): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
      if (rank[level] < min) return;
      const time = new Date().toISOString();
      if (format === "json") {
        write(JSON.stringify({ time, level, ...(component ? { component } : {}), msg, ...fields }));
        return;
      }
      let line = `${time} ${level.toUpperCase().padEnd(5)} ${component ? `[${component}] ` : ""}${msg}`;
      if (fields) for (const [k, val] of Object.entries(fields)) line += ` ${k}=${typeof val === "string" && !/[\s"]/.test(val) ? val : JSON.stringify(val)}`;
      write(line);
    };
    return {
      debug: (m, f) => emit("debug", m, f),
      info: (m, f) => emit("info", m, f),
      warn: (m, f) => emit("warn", m, f),
      error: (m, f) => emit("error", m, f),
      child: (c) => make(component ? `${component}.${c}` : c),
    };
  };
  return make(opts.component);
}
