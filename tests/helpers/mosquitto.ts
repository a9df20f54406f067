/** Debian's mosquitto as a real external broker for tests, on 127.0.0.1. */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectAsync } from "mqtt";
import { freePort, tmpDir } from "./daemons.ts";

export interface Mosquitto {
  url: string;
  port: number;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts mosquitto (as root it must be told to stay root) on `port`, or a free one, and resolves once
 * it accepts connections. Starting again on the same port after stop() is a broker restart.
 */
export async function startMosquitto(port?: number): Promise<Mosquitto> {
  const p = port ?? (await freePort());
  const conf = join(tmpDir("mosq"), "mosquitto.conf");
  writeFileSync(conf, `listener ${p} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nlog_dest stderr\n`);
  const proc = spawn("/usr/sbin/mosquitto", ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  proc.stderr?.on("data", (d) => (err += d.toString()));
  const url = `mqtt://127.0.0.1:${p}`;
  for (let i = 0; ; i++) {
    try {
      const c = await connectAsync(url, { reconnectPeriod: 0, connectTimeout: 500 });
      await c.endAsync();
      break;
    } catch (e) {
      if (proc.exitCode !== null || i > 50) throw new Error(`mosquitto did not come up: ${err} ${String(e)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    port: p,
    proc,
    stop: async () => {
      if (proc.exitCode === null) {
        proc.kill("SIGTERM");
        await new Promise((r) => proc.once("exit", r));
      }
    },
  };
}
