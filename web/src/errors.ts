/**
 * One JSON error shape for every route and one HTTP status per error code.
 *
 *   { "error": { "code": "source_missing", "message": "...", "details": {...}, "jobId": "..." } }
 *
 * `details.errors` is `[{path, code, message}]` with paths in the editor's terms.
 */
import type { ErrorCode } from "./types.js";

/** Codes the routes produce themselves, beside the daemon's (ErrorCode). */
export type RouteErrorCode =
  | "invalid_request"
  | "invalid_edit"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "not_ready"
  | "job_exists"
  | "file_exists"
  | "range_not_satisfiable"
  | "method_not_allowed";

export type AnyErrorCode = ErrorCode | RouteErrorCode;

/**
 * Every code → its status. Typed as a full Record so a new daemon code fails the build here
 * until it is mapped. Job failures (ffmpeg_failed, timeout, ...) appear in a 200 status
 * body, not as route errors; they map to 500/503 only for a route that has to report one
 * (the submit route when the daemon's verdict comes within its wait).
 */
export const HTTP_STATUS: Readonly<Record<AnyErrorCode, number>> = {
  // The request itself
  invalid_request: 400,
  invalid_edit: 400,
  invalid_json: 400,
  not_utf8: 400,
  invalid_id: 400,
  too_large: 413,
  unauthorized: 401,
  forbidden: 403,
  source_not_allowed: 403,
  not_found: 404,
  unknown_job: 404,
  method_not_allowed: 405,
  job_exists: 409,
  file_exists: 409,
  duplicate_id: 409,
  not_ready: 409,
  cancelled: 409,
  range_not_satisfiable: 416,
  // The daemon's verdict on a well-formed job: understood, but it cannot be done
  invalid_job: 422,
  unsupported_schema_version: 422,
  source_missing: 422,
  source_unreadable: 422,
  source_too_short: 422,
  unsupported_media: 422,
  not_a_file: 422,
  // The server side failed
  timeout: 500,
  verify_failed: 500,
  ffmpeg_failed: 500,
  ffmpeg_killed: 500,
  internal_error: 500,
  worker_lost: 503,
  stalled: 503,
  disk_full: 507,
  ffmpeg_missing: 503,
};

export function httpStatusFor(code: string): number {
  return (HTTP_STATUS as Record<string, number>)[code] ?? 500;
}

export interface ErrorBody {
  error: {
    code: string;
    message: string;
    details?: Record<string, unknown>;
    jobId?: string;
  };
}

export function jsonResponse(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("Content-Type", "application/json; charset=utf-8");
  h.set("Cache-Control", "no-store");
  return new Response(JSON.stringify(body), { status, headers: h });
}

export function errorResponse(
  code: string,
  message: string,
  extra: { details?: Record<string, unknown>; jobId?: string; status?: number; headers?: HeadersInit } = {},
): Response {
  const body: ErrorBody = { error: { code, message } };
  if (extra.details) body.error.details = extra.details;
  if (extra.jobId) body.error.jobId = extra.jobId;
  return jsonResponse(body, extra.status ?? httpStatusFor(code), extra.headers);
}
