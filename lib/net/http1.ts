/**
 * A bounded HTTP/1.1 request reader for raw (TLS) sockets. Bun's node:https does not expose the
 * peer certificate, so the servers that must see the client certificate (hub, certificate service)
 * listen with node:tls and read the request themselves through this one small parser.
 */
import type { Duplex } from "node:stream";

export interface RawRequest {
  method: string;
  /** Path + query as sent. */
  url: string;
  /** Lower-cased header names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Request body (Content-Length bytes), empty when none. */
  body: Buffer;
  /** Bytes that arrived after the head and body (e.g. the first WebSocket frame). */
  rest: Buffer;
}

export class HttpParseError extends Error {
  constructor(message: string, readonly status = 400) {
    super(message);
  }
}

export interface ReadRequestOptions {
  maxHeadBytes?: number;
  maxBodyBytes?: number;
  timeoutMs?: number;
}

/** Reads one request from `socket`. Rejects with HttpParseError on malformed, oversize or slow input. */
export function readRequest(socket: Duplex, opts: ReadRequestOptions = {}): Promise<RawRequest> {
  const maxHead = opts.maxHeadBytes ?? 16 * 1024;
  const maxBody = opts.maxBodyBytes ?? 64 * 1024;
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let head: Omit<RawRequest, "body" | "rest"> | null = null;
    let bodyStart = 0;
    let bodyLen = 0;
    const done = (err: Error | null, req?: RawRequest) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onEnd);
      if (err) reject(err);
      else resolve(req!);
    };
    const timer = setTimeout(() => done(new HttpParseError("request head not received in time", 408)), opts.timeoutMs ?? 10_000);
    const onEnd = () => done(new HttpParseError("connection closed before a complete request"));
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (!head) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) {
          if (buf.length > maxHead) done(new HttpParseError("request head too large", 431));
          return;
        }
        if (end > maxHead) return done(new HttpParseError("request head too large", 431));
        try {
          head = parseHead(buf.subarray(0, end).toString("latin1"));
        } catch (e) {
          return done(e as Error);
        }
        bodyStart = end + 4;
        const cl = head.headers["content-length"];
        if (head.headers["transfer-encoding"]) return done(new HttpParseError("chunked request bodies are not accepted", 411));
        bodyLen = cl === undefined ? 0 : Number(cl);
        if (!Number.isSafeInteger(bodyLen) || bodyLen < 0) return done(new HttpParseError("bad Content-Length"));
        if (bodyLen > maxBody) return done(new HttpParseError("request body too large", 413));
      }
      if (buf.length < bodyStart + bodyLen) return;
      done(null, { ...head, body: buf.subarray(bodyStart, bodyStart + bodyLen), rest: buf.subarray(bodyStart + bodyLen) });
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", onEnd);
  });
}

function parseHead(text: string): Omit<RawRequest, "body" | "rest"> {
  const lines = text.split("\r\n");
  const m = /^([A-Z]{1,16}) (\S{1,8192}) HTTP\/1\.[01]$/.exec(lines[0] ?? "");
  if (!m) throw new HttpParseError("not an HTTP/1.1 request line");
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) throw new HttpParseError("malformed header line");
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { method: m[1]!, url: m[2]!, headers };
}

const reasons: Record<number, string> = {
  200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
  408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large", 426: "Upgrade Required",
  431: "Request Header Fields Too Large", 500: "Internal Server Error",
};

/** Writes a complete HTTP/1.1 response and closes the socket once written. */
export function writeResponse(socket: Duplex, status: number, body: Buffer | string = "", headers: Record<string, string> = {}): void {
  const payload = typeof body === "string" ? Buffer.from(body) : body;
  let head = `HTTP/1.1 ${status} ${reasons[status] ?? "Status"}\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n`;
  if (!headers["Content-Type"]) head += `Content-Type: ${typeof body === "string" ? "text/plain; charset=utf-8" : "application/octet-stream"}\r\n`;
  for (const [k, val] of Object.entries(headers)) head += `${k}: ${val}\r\n`;
  socket.end(Buffer.concat([Buffer.from(head + "\r\n", "latin1"), payload]));
}
