/** Prometheus text-format metrics: counters and gauges with labels, served on /metrics. */
import { createServer, type Server } from "node:http";
import type { Listen } from "./config.ts";

type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge";
  values: Map<string, { labels: Labels; value: number }>;
  /** For gauges computed on scrape. */
  collect?: () => number;
}

const key = (labels: Labels) => JSON.stringify(labels);
const fmt = (labels: Labels) => {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
};

export class Metrics {
  private readonly families = new Map<string, Family>();

  counter(name: string, help: string) {
    const f = this.family(name, help, "counter");
    const series = (labels: Labels) => {
      const k = key(labels);
      let cur = f.values.get(k);
      if (!cur) f.values.set(k, (cur = { labels, value: 0 }));
      return cur;
    };
    return {
      inc: (labels: Labels = {}, by = 1) => void (series(labels).value += by),
      /** A handle on one labelled series, for hot paths: no label lookup per increment. */
      with: (labels: Labels) => {
        const cur = series(labels);
        return { inc: (by = 1) => void (cur.value += by) };
      },
    };
  }

  gauge(name: string, help: string, collect?: () => number) {
    const f = this.family(name, help, "gauge");
    if (collect) f.collect = collect;
    return {
      set: (value: number, labels: Labels = {}) => void f.values.set(key(labels), { labels, value }),
    };
  }

  /** The current value of a series, for tests and benches reading in-process. */
  value(name: string, labels: Labels = {}): number | undefined {
    const f = this.families.get(name);
    return f?.collect ? f.collect() : f?.values.get(key(labels))?.value;
  }

  render(): string {
    let out = "";
    for (const f of this.families.values()) {
      out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`;
      if (f.collect) out += `${f.name} ${f.collect()}\n`;
      else for (const { labels, value } of f.values.values()) out += `${f.name}${fmt(labels)} ${value}\n`;
    }
    return out;
  }

  private family(name: string, help: string, type: Family["type"]): Family {
    let f = this.families.get(name);
    if (!f) this.families.set(name, (f = { name, help, type, values: new Map() }));
    return f;
  }
}

/** Serves `metrics` on GET /metrics. Resolves with the bound port. */
export function serveMetrics(metrics: Metrics, listen: Listen): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url?.split("?")[0] === "/metrics") {
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
      res.end(metrics.render());
    } else {
      res.writeHead(404).end("not found\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === "object" && addr ? addr.port : listen.port });
    });
  });
}
