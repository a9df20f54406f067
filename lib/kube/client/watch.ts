/**
 * Watch streams: newline-delimited JSON events over a chunked HTTP response. `WatchLoop` keeps one
 * watch alive: it resumes from the last resourceVersion it saw (events and BOOKMARKs), relists on
 * 410 Gone (an HTTP 410 or an ERROR event whose Status code is 410), reconnects at once when the
 * server ends a stream, and backs off exponentially with jitter (bounded) on errors.
 */
import type { IncomingMessage } from "node:http";
import type { KubeClient, WatchQuery } from "./client.ts";
import { isGone, KubeApiError, KubeTransportError, type KubeStatus } from "./errors.ts";
import type { KubeObject, ResourceRef } from "./resources.ts";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";

export interface WatchEvent<T extends KubeObject = KubeObject> {
  type: WatchEventType;
  object: T;
}

export interface BackoffOptions {
  /** First delay (default 250 ms). */
  initialMs?: number;
  /** Upper bound of any delay (default 30 s). */
  maxMs?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /** ± fraction of randomisation (default 0.3). */
  jitter?: number;
}

/** Delay before retry number `attempt` (1-based): initial·factor^(attempt-1) ± jitter, never above maxMs. */
export function backoffDelay(attempt: number, o: BackoffOptions = {}, rand: () => number = Math.random): number {
  const initial = o.initialMs ?? 250;
  const max = o.maxMs ?? 30_000;
  const factor = o.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, o.jitter ?? 0.3));
  const raw = Math.min(max, initial * Math.pow(factor, Math.max(0, attempt - 1)));
  return Math.max(0, Math.min(max, Math.round(raw * (1 - jitter + 2 * jitter * rand()))));
}

export interface WatchLoopOptions<T extends KubeObject = KubeObject> extends Omit<WatchQuery, "resourceVersion" | "allowWatchBookmarks"> {
  /** Where to start. Without one (and after a 410), `relist` is called, or the server replays the current state as ADDED. */
  resourceVersion?: string;
  /** Ask for BOOKMARK events (default true); they advance the resume point without changes. */
  allowWatchBookmarks?: boolean;
  onEvent(ev: WatchEvent<T>): void;
  /** Lists the resource afresh and returns the resourceVersion to watch from (called at start without an RV and after 410 Gone). */
  relist?(signal: AbortSignal): Promise<string>;
  /** The resume point expired (410) and there is no `relist`: the watch restarts from the current state. */
  onExpired?(): void;
  /** Every failure, with the retry it leads to (`delayMs` 0 = retrying at once). */
  onError?(err: Error, info: { attempt: number; delayMs: number }): void;
  /** A watch stream was established (status 200). */
  onConnect?(info: { resourceVersion: string | undefined }): void;
  backoff?: BackoffOptions;
  /** Wait for the response headers (default 30 s). */
  connectTimeoutMs?: number;
  /** Largest single event accepted (default 16 MiB). */
  maxEventBytes?: number;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

export class WatchLoop<T extends KubeObject = KubeObject> {
  private rv: string | undefined;
  private readonly ctrl = new AbortController();
  private running: Promise<void> | undefined;
  private current: { destroy: () => void } | undefined;
  private _connected = false;
  /** Streams opened so far (for tests and metrics). */
  connects = 0;
  /** Change events received on the current stream. */
  private streamEvents = 0;

  constructor(
    private readonly client: KubeClient,
    readonly resource: ResourceRef,
    private readonly opts: WatchLoopOptions<T>,
  ) {
    this.rv = opts.resourceVersion || undefined;
  }

  /** The last resourceVersion seen: where the next stream resumes. */
  get resourceVersion(): string | undefined {
    return this.rv;
  }

  get connected(): boolean {
    return this._connected;
  }

  get stopped(): boolean {
    return this.ctrl.signal.aborted;
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.running = this.run();
  }

  /** Stops the loop and closes the stream; resolves when the loop has exited. */
  async stop(): Promise<void> {
    if (!this.ctrl.signal.aborted) this.ctrl.abort();
    this.current?.destroy();
    await this.running;
  }

  private report(err: Error, attempt: number, delayMs: number): void {
    try {
      this.opts.onError?.(err, { attempt, delayMs });
    } catch {
      /* the reporter's own failure */
    }
  }

  private async run(): Promise<void> {
    const signal = this.ctrl.signal;
    let attempt = 0;
    let goneInARow = 0;
    while (!signal.aborted) {
      let openedAt = 0;
      this.streamEvents = 0;
      try {
        if (this.rv === undefined && this.opts.relist) {
          this.rv = (await this.opts.relist(signal)) || undefined;
          if (signal.aborted) break;
        }
        // A server-side timeout spreads reconnects; a client-side deadline catches dead connections.
        const timeoutSeconds = this.opts.timeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
        const stream = await this.client.openWatch(
          this.resource,
          {
            namespace: this.opts.namespace,
            labelSelector: this.opts.labelSelector,
            fieldSelector: this.opts.fieldSelector,
            resourceVersion: this.rv,
            allowWatchBookmarks: this.opts.allowWatchBookmarks ?? true,
            timeoutSeconds,
          },
          signal,
          this.opts.connectTimeoutMs,
        );
        if (signal.aborted) {
          stream.destroy();
          break;
        }
        openedAt = Date.now();
        this.current = stream;
        this._connected = true;
        this.connects++;
        try {
          this.opts.onConnect?.({ resourceVersion: this.rv });
        } catch {
          /* ignore */
        }
        const deadline = setTimeout(() => stream.destroy(), (timeoutSeconds + 30) * 1000);
        try {
          await this.consume(stream.res);
        } finally {
          clearTimeout(deadline);
          this._connected = false;
          this.current = undefined;
          stream.destroy();
        }
        if (signal.aborted) break;
        goneInARow = 0;
        if (this.streamEvents > 0 || Date.now() - openedAt >= 500) {
          attempt = 0;
          continue; // the server ended the stream (its timeout): resume at once
        }
        throw new KubeTransportError("watch stream ended without events", "EWATCHENDED");
      } catch (e) {
        this._connected = false;
        if (signal.aborted) break;
        const err = e instanceof Error ? e : new Error(String(e));
        // A stream that delivered changes (or lived a while) was healthy: start the back-off afresh.
        if (this.streamEvents > 0 || (openedAt && Date.now() - openedAt > 10_000)) {
          attempt = 0;
          goneInARow = 0;
        }
        if (isGone(err)) {
          this.rv = undefined;
          if (!this.opts.relist) {
            try {
              this.opts.onExpired?.();
            } catch {
              /* ignore */
            }
          }
          // Relist at once the first time; a server that keeps answering 410 gets the back-off.
          if (++goneInARow === 1) {
            this.report(err, 0, 0);
            continue;
          }
        }
        attempt++;
        const delayMs = backoffDelay(attempt, this.opts.backoff);
        this.report(err, attempt, delayMs);
        await sleep(delayMs, signal);
      }
    }
    this._connected = false;
  }

  /** Reads one stream to its end (counting events in streamEvents). ERROR events throw KubeApiError. */
  private async consume(res: IncomingMessage): Promise<void> {
    const max = this.opts.maxEventBytes ?? 16 * 1024 * 1024;
    let buf = "";
    res.setEncoding("utf8");
    try {
      for await (const chunk of res as AsyncIterable<string>) {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          this.handleLine(line);
          if (this.stopped) return;
        }
        if (buf.length > max) throw new KubeTransportError(`watch event larger than ${max} bytes`, "ERESPONSETOOLARGE");
      }
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof KubeApiError || e instanceof KubeTransportError) throw e;
      throw new KubeTransportError(`watch stream failed: ${(e as Error).message}`, (e as NodeJS.ErrnoException).code, { cause: e });
    }
    if (buf.trim()) this.handleLine(buf.trim());
  }

  private handleLine(line: string): void {
    let ev: { type?: string; object?: unknown };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      throw new KubeTransportError(`watch: undecodable event: ${line.slice(0, 120)}`, "EBADEVENT");
    }
    const obj = (ev.object ?? {}) as T;
    if (ev.type === "ERROR") {
      const st = obj as unknown as KubeStatus;
      throw new KubeApiError(typeof st.code === "number" ? st.code : 500, { ...st, kind: "Status" }, `watch ${this.resource.resource}`);
    }
    if (ev.type !== "ADDED" && ev.type !== "MODIFIED" && ev.type !== "DELETED" && ev.type !== "BOOKMARK") {
      throw new KubeTransportError(`watch: unknown event type ${String(ev.type)}`, "EBADEVENT");
    }
    const rv = obj.metadata?.resourceVersion;
    if (rv) this.rv = rv;
    if (ev.type !== "BOOKMARK") this.streamEvents++;
    try {
      this.opts.onEvent({ type: ev.type, object: obj });
    } catch (e) {
      this.report(e instanceof Error ? e : new Error(String(e)), 0, 0);
    }
  }
}
