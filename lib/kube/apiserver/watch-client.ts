/**
 * A minimal watch stream reader over a raw (TLS) socket, one connection per watch. Tests and the
 * benchmark use it to hold thousands of watches open, which fetch's per-process connection cap
 * does not allow. It speaks just enough HTTP/1.1: one GET, chunked or close-delimited body.
 */
import { connect as tlsConnect } from "node:tls";
import { connect as netConnect, type Socket } from "node:net";

export interface RawWatch {
  /** HTTP status of the response. */
  status: Promise<number>;
  /** Called with each decoded watch event. */
  onEvent: ((ev: { type: string; object: Record<string, any> }) => void) | null;
  close(): void;
}

export function openRawWatch(url: string, path: string, token: string, ca?: string): RawWatch {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, "");
  const sock: Socket = u.protocol === "https:" ? tlsConnect({ host, port, ca, servername: host === "127.0.0.1" ? undefined : host }) : netConnect({ host, port });
  let resolveStatus!: (n: number) => void;
  let rejectStatus!: (e: Error) => void;
  const status = new Promise<number>((res, rej) => {
    resolveStatus = res;
    rejectStatus = rej;
  });
  status.catch(() => {});
  const w: RawWatch = { status, onEvent: null, close: () => sock.destroy() };
  let head: Buffer | null = Buffer.alloc(0) as Buffer;
  let chunked = false;
  let body: Buffer = Buffer.alloc(0); // raw body bytes not yet de-chunked
  let text = ""; // de-chunked text not yet split into lines
  const emit = () => {
    let nl: number;
    while ((nl = text.indexOf("\n")) >= 0) {
      const line = text.slice(0, nl);
      text = text.slice(nl + 1);
      if (line.trim() && w.onEvent) w.onEvent(JSON.parse(line));
    }
  };
  const dechunk = () => {
    if (!chunked) {
      text += body.toString("utf8");
      body = Buffer.alloc(0);
      return;
    }
    for (;;) {
      const crlf = body.indexOf("\r\n");
      if (crlf < 0) return;
      const size = parseInt(body.subarray(0, crlf).toString("latin1"), 16);
      if (Number.isNaN(size)) return void sock.destroy();
      if (size === 0) return void sock.end();
      if (body.length < crlf + 2 + size + 2) return;
      text += body.subarray(crlf + 2, crlf + 2 + size).toString("utf8");
      body = body.subarray(crlf + 2 + size + 2);
    }
  };
  sock.on("data", (chunk: Buffer) => {
    if (head) {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const lines = head.subarray(0, end).toString("latin1").split("\r\n");
      resolveStatus(Number(lines[0]!.split(" ")[1]));
      chunked = lines.some((l) => /^transfer-encoding:\s*chunked/i.test(l));
      body = head.subarray(end + 4);
      head = null;
    } else body = Buffer.concat([body, chunk]);
    dechunk();
    emit();
  });
  sock.on("error", (e) => rejectStatus(e));
  sock.on("close", () => rejectStatus(new Error("connection closed")));
  sock.write(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n`);
  return w;
}
