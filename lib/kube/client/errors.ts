/** Errors the Kubernetes client raises: API failures carry the server's `Status` object. */

/** The `Status` object the API server returns with every failure. */
export interface KubeStatus {
  kind?: "Status";
  apiVersion?: string;
  metadata?: Record<string, unknown>;
  status?: "Success" | "Failure";
  message?: string;
  reason?: string;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    uid?: string;
    causes?: Array<{ reason?: string; message?: string; field?: string }>;
    retryAfterSeconds?: number;
  };
  code?: number;
}

const REASON_BY_CODE: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  406: "NotAcceptable",
  409: "Conflict",
  410: "Expired",
  413: "RequestEntityTooLarge",
  415: "UnsupportedMediaType",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** A failure answered by the API server (HTTP status >= 400, or an ERROR watch event). */
export class KubeApiError extends Error {
  override readonly name = "KubeApiError";
  /** HTTP status code (or the Status object's `code` for watch ERROR events). */
  readonly code: number;
  /** The Status `reason` (e.g. `Conflict`, `AlreadyExists`, `NotFound`, `Expired`, `Gone`). */
  readonly reason: string;
  /** The Status object as the server sent it (synthesised when the body was not one). */
  readonly status: KubeStatus;

  constructor(code: number, status: KubeStatus, context?: string) {
    const reason = status.reason || REASON_BY_CODE[code] || "Unknown";
    super(`${context ? context + ": " : ""}${status.message || `HTTP ${code} ${reason}`}`);
    this.code = code;
    this.reason = reason;
    this.status = status;
  }

  /** Builds the error from a response body, which may or may not be a Status object. */
  static fromResponse(code: number, body: string, context?: string): KubeApiError {
    let status: KubeStatus | undefined;
    try {
      const parsed: unknown = JSON.parse(body);
      if (parsed && typeof parsed === "object" && (parsed as KubeStatus).kind === "Status") status = parsed as KubeStatus;
    } catch {
      /* not JSON */
    }
    status ??= { kind: "Status", apiVersion: "v1", status: "Failure", code, reason: REASON_BY_CODE[code] ?? "Unknown", message: body.trim().slice(0, 512) || undefined };
    return new KubeApiError(code, status, context);
  }
}

/** A request that never got an API answer: connection refused or reset, TLS failure, timeout, oversized body. */
export class KubeTransportError extends Error {
  override readonly name = "KubeTransportError";
  constructor(
    message: string,
    /** The underlying error code when there is one (ECONNREFUSED, ETIMEDOUT, ERESPONSETOOLARGE…). */
    readonly errno?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const isGone = (e: unknown): boolean => e instanceof KubeApiError && e.code === 410;
export const isNotFound = (e: unknown): boolean => e instanceof KubeApiError && e.code === 404;
export const isConflict = (e: unknown): boolean => e instanceof KubeApiError && e.code === 409;
