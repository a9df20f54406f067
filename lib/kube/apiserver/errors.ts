/** Kubernetes `Status` errors: every failure the API returns is one of these. */

export type StatusReason =
  | "BadRequest"
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "AlreadyExists"
  | "Conflict"
  | "Gone"
  | "Invalid"
  | "MethodNotAllowed"
  | "NotAcceptable"
  | "UnsupportedMediaType"
  | "RequestEntityTooLarge"
  | "Expired"
  | "InternalError"
  | "Timeout";

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: Array<{ reason?: string; message: string; field?: string }>;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: StatusReason,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
  }

  toStatus(): Record<string, unknown> {
    return statusObject(this.code, this.reason, this.message, this.details);
  }
}

export function statusObject(code: number, reason: StatusReason, message: string, details?: StatusDetails): Record<string, unknown> {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

export function successStatus(details?: StatusDetails): Record<string, unknown> {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", ...(details ? { details } : {}) };
}

/** `pods "x" not found` / `pods.apps "x" not found`, as the real server phrases it. */
/**
 * A request value for an error message. Never throws: String() of a JSON object whose own
 * `toString` is not a function (`{"toString": []}`) throws a TypeError, which became a 500.
 */
export function show(v: unknown): string {
  if (typeof v === "string") return v;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

function qualified(group: string, resource: string): string {
  return group ? `${resource}.${group}` : resource;
}

export const errors = {
  badRequest: (msg: string) => new ApiError(400, "BadRequest", msg),
  unauthorized: () => new ApiError(401, "Unauthorized", "Unauthorized"),
  forbidden: (msg: string) => new ApiError(403, "Forbidden", msg),
  notFound: (group: string, resource: string, name: string) =>
    new ApiError(404, "NotFound", `${qualified(group, resource)} "${name}" not found`, { name, group, kind: resource }),
  noRoute: () => new ApiError(404, "NotFound", "the server could not find the requested resource"),
  methodNotAllowed: (method: string) => new ApiError(405, "MethodNotAllowed", `the server does not allow this method on the requested resource (${method})`),
  alreadyExists: (group: string, resource: string, name: string) =>
    new ApiError(409, "AlreadyExists", `${qualified(group, resource)} "${name}" already exists`, { name, group, kind: resource }),
  conflict: (group: string, resource: string, name: string, why: string) =>
    new ApiError(409, "Conflict", `Operation cannot be fulfilled on ${qualified(group, resource)} "${name}": ${why}`, { name, group, kind: resource }),
  gone: (msg: string) => new ApiError(410, "Expired", msg),
  invalid: (group: string, kind: string, name: string, causes: Array<{ field: string; message: string; reason?: string }>) =>
    new ApiError(
      422,
      "Invalid",
      `${kind}${group ? "." + group : ""} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(", ")}`,
      { name, group, kind, causes: causes.map((c) => ({ reason: c.reason ?? "FieldValueInvalid", message: c.message, field: c.field })) },
    ),
  unsupportedMediaType: (type: string) => new ApiError(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json, application/apply-patch+yaml (got ${type || "none"})`),
  tooLarge: (limit: number) => new ApiError(413, "RequestEntityTooLarge", `the request body is larger than the limit of ${limit} bytes`),
  internal: (msg: string) => new ApiError(500, "InternalError", `Internal error occurred: ${msg}`),
};
