/**
 * The App Router handlers for the export API, from one call:
 *
 *   // app/api/export/[[...path]]/route.ts
 *   export const { GET, HEAD, POST, DELETE } = createExportRoutes({ spoolDir, mediaDir, authorize });
 *
 *   POST   /api/export                    submit the editor's timeline   → 202 | 4xx
 *   GET    /api/export/:jobId/status      the job's status for a UI      → 200 | 404
 *   GET    /api/export/:jobId/download    the output (Range, HEAD)       → 200 | 206 | 302 | 409 | 416
 *   POST   /api/export/:jobId/cancel      cancel, keep the job           → 202
 *   DELETE /api/export/:jobId             cancel and remove everything   → 202 | 404
 *
 * The handlers read the URL, not Next's `params`, so the same object also serves separate
 * route files (`export const GET = routes.status`) and plain `Request → Response` servers.
 */
import { errorResponse, httpStatusFor, jsonResponse } from "./errors.js";
import { serveFile } from "./download.js";
import { scopeSources } from "./media.js";
import { pollDelayMs } from "./poll.js";
import {
  cancelJob,
  editorPath,
  isFinal,
  isValidJobId,
  normaliseTimeline,
  outputFile,
  readStatus,
  removeJob,
  SpoolerError,
  submitJob,
  type EditorTimeline,
  type JobStatus,
  type JobView,
} from "./spooler.js";
import type { OutputInfo } from "./types.js";
import { checkEditorBody } from "./validate.js";

export type ExportAction = "submit" | "status" | "download" | "cancel" | "delete";

export type AuthTarget =
  | { action: "submit" }
  | { action: Exclude<ExportAction, "submit">; jobId: string; job: JobView | null };

/**
 * true: go on; false: 403 forbidden; a Response (say a 401 with a login hint): sent as is.
 * Called by every route before anything else, with the job (and its metadata) for the
 * per-job ones; `job` is null for a job that does not exist (allow it: the route answers 404).
 */
export type Authorize = (request: Request, target: AuthTarget) => boolean | Response | Promise<boolean | Response>;

export interface ExportRoutesOptions {
  /** The spool's root (SPOOLER_SPOOL_DIR of the daemon). */
  spoolDir: string;
  /** The media root the daemon has in media_roots; users' folders are inside it. */
  mediaDir: string;
  authorize: Authorize;
  /** The user's folder, relative to mediaDir ("" = all of it). Sources are relative to it. */
  mediaScope?: (request: Request) => string | Promise<string>;
  /** Merged into the job's metadata (an owner id for `authorize`, a project id, ...). */
  jobMetadata?: (request: Request) => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Where the routes are mounted. Default "/api/export". */
  basePath?: string;
  /** How long submit waits for the daemon's verdict before answering 202. Default 1000 ms. */
  verdictWaitMs?: number;
  /** Largest request body. Default 256 KiB (the daemon's own cap is larger). */
  maxBodyBytes?: number;
  /**
   * For outputs stored elsewhere (S3): a URL to redirect the download to, presigned on
   * demand; null serves the file from the spool.
   */
  outputLocation?: (status: JobStatus, output: OutputInfo) => Promise<string | null>;
}

export type Handler = (request: Request) => Promise<Response>;

export interface ExportRoutes {
  submit: Handler;
  status: Handler;
  download: Handler;
  cancel: Handler;
  remove: Handler;
  /** Dispatchers for a catch-all route file `app/api/export/[[...path]]/route.ts`. */
  GET: Handler;
  HEAD: Handler;
  POST: Handler;
  DELETE: Handler;
}

/** Metadata key under which submit keeps the editor's switch order (for error paths). */
export const SWITCH_INDEX_KEY = "spoolerSwitchIndex";

/** Codes of the daemon's verdict that mean "this job cannot be done as asked" (422). */
const VERDICT_CODES = new Set([
  "invalid_job",
  "unsupported_schema_version",
  "source_not_allowed",
  "source_missing",
  "source_unreadable",
  "source_too_short",
  "unsupported_media",
  "invalid_json",
  "not_a_file",
  "too_large",
]);

async function readBody(request: Request, limit: number): Promise<string | Response> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) return errorResponse("too_large", `the body is over ${limit} bytes`, { details: { limit } });
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      return errorResponse("too_large", `the body is over ${limit} bytes`, { details: { limit } });
    }
    chunks.push(value);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    return errorResponse("not_utf8", "the body is not UTF-8");
  }
}

/** The daemon's `details.errors[].path`, in the editor's switch indices. */
function mapDetails(details: Record<string, unknown> | undefined, switchIndex: number[] | null) {
  if (!details || !switchIndex || !Array.isArray(details.errors)) return details;
  return {
    ...details,
    errors: (details.errors as { path?: unknown }[]).map((e) =>
      typeof e.path === "string" ? { ...e, path: editorPath(e.path, switchIndex) } : e,
    ),
  };
}

function switchIndexOf(view: JobView): number[] | null {
  const value = view.metadata?.[SWITCH_INDEX_KEY];
  return Array.isArray(value) && value.every((n) => typeof n === "number") ? (value as number[]) : null;
}

function publicMetadata(view: JobView): Record<string, unknown> | undefined {
  if (!view.metadata) return undefined;
  const { [SWITCH_INDEX_KEY]: _hidden, ...rest } = view.metadata;
  return rest;
}

export function createExportRoutes(options: ExportRoutesOptions): ExportRoutes {
  const base = (options.basePath ?? "/api/export").replace(/\/+$/, "");
  const verdictWaitMs = options.verdictWaitMs ?? 1000;
  const maxBodyBytes = options.maxBodyBytes ?? 256 * 1024;
  const { spoolDir, mediaDir } = options;

  const urlFor = (jobId: string, what: "status" | "download" | "cancel" | "") =>
    `${base}/${encodeURIComponent(jobId)}${what ? `/${what}` : ""}`;

  /** The job id from `<base>/<id>/...`, or a Response saying why not. */
  function jobIdOf(request: Request): string | Response {
    const rest = new URL(request.url).pathname.slice(base.length).split("/").filter(Boolean);
    const jobId = decodeURIComponent(rest[0] ?? "");
    if (!isValidJobId(jobId)) return errorResponse("invalid_id", "not a valid job id");
    return jobId;
  }

  async function allowed(request: Request, target: AuthTarget): Promise<Response | null> {
    const verdict = await options.authorize(request, target);
    if (verdict instanceof Response) return verdict;
    return verdict ? null : errorResponse("forbidden", `not allowed to ${target.action} this export`);
  }

  /** The job, authorised for `action`; or the Response to send instead (404, 403, ...). */
  async function jobFor(request: Request, action: Exclude<ExportAction, "submit">): Promise<JobView | Response> {
    const jobId = jobIdOf(request);
    if (jobId instanceof Response) return jobId;
    const job = await readStatus(spoolDir, jobId);
    const refused = await allowed(request, { action, jobId, job });
    if (refused) return refused;
    return job ?? errorResponse("not_found", "no such export (never submitted, or deleted)", { jobId });
  }

  function statusBody(view: JobView) {
    const full = view as JobStatus;
    const switchIndex = switchIndexOf(view);
    const error = "error" in view && view.error ? { ...view.error, details: mapDetails(view.error.details, switchIndex) } : null;
    const outputs =
      view.state === "succeeded"
        ? (full.outputs ?? []).map((o) => ({
            role: o.role ?? "main",
            name: o.path,
            mimeType: o.mimeType ?? null,
            sizeBytes: o.sizeBytes,
            width: o.width ?? null,
            height: o.height ?? null,
            durationSeconds: o.durationSeconds ?? null,
            url: `${urlFor(view.jobId, "download")}${(o.role ?? "main") === "main" ? "" : `?role=${encodeURIComponent(o.role ?? "")}`}`,
          }))
        : [];
    return {
      jobId: view.jobId,
      state: view.state,
      progress: full.progress ?? (view.state === "succeeded" ? 1 : 0),
      etaSeconds: full.etaSeconds ?? null,
      step: full.step ?? null,
      cancelRequested: full.cancelRequested ?? false,
      jobsAhead: view.state === "submitted" || view.state === "queued" ? (full.jobsAhead ?? null) : null,
      error,
      warnings: full.warnings ?? [],
      outputs,
      metadata: publicMetadata(view) ?? {},
      submittedAt: full.submittedAt ?? null,
      startedAt: full.startedAt ?? null,
      finishedAt: full.finishedAt ?? null,
      pollAfterMs: pollDelayMs({
        state: view.state,
        jobsAhead: full.jobsAhead ?? null,
        etaSeconds: full.etaSeconds ?? null,
        cancelRequested: full.cancelRequested ?? false,
      }),
    };
  }

  /** Poll the status until the daemon has decided (or `verdictWaitMs` passed). */
  async function verdict(jobId: string): Promise<JobView | null> {
    const deadline = Date.now() + verdictWaitMs;
    let last: JobView | null = null;
    while (Date.now() < deadline) {
      last = await readStatus(spoolDir, jobId);
      if (last && isFinal(last.state)) return last;
      // Past the export's preflight (sources probed, lengths checked): it will run.
      if (last && last.state === "running" && ((last as JobStatus).preflight || ((last as JobStatus).progress ?? 0) > 0)) return last;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return last;
  }

  const submit: Handler = async (request) => {
    const refused = await allowed(request, { action: "submit" });
    if (refused) return refused;
    const text = await readBody(request, maxBodyBytes);
    if (text instanceof Response) return text;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      return errorResponse("invalid_json", `the body is not JSON: ${(err as Error).message}`);
    }
    const shape = checkEditorBody(body);
    if (shape.length > 0) {
      return errorResponse("invalid_request", `the export is not valid: ${shape[0]?.path}: ${shape[0]?.message}`, {
        details: { errors: shape },
      });
    }
    let normalised;
    try {
      normalised = normaliseTimeline(body as EditorTimeline);
    } catch (err) {
      if (err instanceof SpoolerError) return errorResponse("invalid_edit", err.message, { details: { errors: err.errors } });
      throw err;
    }
    const { job, switchIndex } = normalised;
    const scope = options.mediaScope ? await options.mediaScope(request) : "";
    const problems = await scopeSources(job, mediaDir, scope);
    if (problems.length > 0) {
      const code = problems.some((p) => p.code === "source_not_allowed") ? "source_not_allowed" : "source_missing";
      return errorResponse(code, `${problems[0]?.path}: ${problems[0]?.message}`, { details: { errors: problems } });
    }
    const identity = switchIndex.every((original, i) => original === i);
    job.metadata = {
      ...(job.metadata ?? {}),
      ...(options.jobMetadata ? await options.jobMetadata(request) : {}),
      ...(identity ? {} : { [SWITCH_INDEX_KEY]: switchIndex }),
    };
    const jobId = await submitJob(spoolDir, job);
    const seen = await verdict(jobId);
    const error = seen && "error" in seen ? seen.error : null;
    if (seen && error && (seen.state === "rejected" || seen.state === "failed") && VERDICT_CODES.has(error.code)) {
      await removeJob(spoolDir, jobId); // it never ran: nothing for the user to keep
      return errorResponse(error.code, error.message, {
        details: mapDetails(error.details, identity ? null : switchIndex) ?? {},
        status: httpStatusFor(error.code),
      });
    }
    const view = seen ?? { jobId, state: "submitted" as const };
    return jsonResponse(
      { ...statusBody(view), statusUrl: urlFor(jobId, "status"), downloadUrl: urlFor(jobId, "download") },
      202,
      { Location: urlFor(jobId, "status") },
    );
  };

  const status: Handler = async (request) => {
    const job = await jobFor(request, "status");
    if (job instanceof Response) return job;
    return jsonResponse(statusBody(job));
  };

  const download: Handler = async (request) => {
    const job = await jobFor(request, "download");
    if (job instanceof Response) return job;
    const url = new URL(request.url);
    const role = url.searchParams.get("role") ?? "main";
    if (job.state !== "succeeded") {
      return errorResponse("not_ready", `the export is ${job.state}, not succeeded`, {
        jobId: job.jobId,
        details: { state: job.state },
      });
    }
    const info = (job as JobStatus).outputs?.find((o) => (o.role ?? "main") === role);
    const file = outputFile(spoolDir, job, role);
    if (!info || !file) return errorResponse("not_found", `the export has no ${role} output`, { jobId: job.jobId });
    if (options.outputLocation) {
      const location = await options.outputLocation(job as JobStatus, info);
      if (location) return new Response(null, { status: 302, headers: { Location: location, "Cache-Control": "no-store" } });
    }
    return serveFile(request, {
      path: file.path,
      name: file.name,
      mimeType: file.mimeType,
      disposition: url.searchParams.has("attachment") ? "attachment" : "inline",
    });
  };

  const cancel: Handler = async (request) => {
    const job = await jobFor(request, "cancel");
    if (job instanceof Response) return job;
    if (isFinal(job.state)) return jsonResponse(statusBody(job)); // nothing left to cancel
    await cancelJob(spoolDir, job.jobId);
    return jsonResponse({ ...statusBody(job), cancelRequested: true, pollAfterMs: 500 }, 202);
  };

  const remove: Handler = async (request) => {
    const job = await jobFor(request, "delete");
    if (job instanceof Response) return job;
    await removeJob(spoolDir, job.jobId);
    return jsonResponse({ jobId: job.jobId, deleting: true }, 202);
  };

  /** `<base>` + the rest of the path, split: [] for the base itself. */
  const rest = (request: Request) => new URL(request.url).pathname.slice(base.length).split("/").filter(Boolean);
  const notHere = () => errorResponse("not_found", "no such route");
  const wrongMethod = () => errorResponse("method_not_allowed", "method not allowed");

  return {
    submit,
    status,
    download,
    cancel,
    remove,
    GET: async (request) => {
      const parts = rest(request);
      if (parts.length === 2 && parts[1] === "status") return status(request);
      if (parts.length === 2 && parts[1] === "download") return download(request);
      return parts.length <= 2 ? wrongMethod() : notHere();
    },
    HEAD: async (request) => {
      const parts = rest(request);
      return parts.length === 2 && parts[1] === "download" ? download(request) : notHere();
    },
    POST: async (request) => {
      const parts = rest(request);
      if (parts.length === 0) return submit(request);
      if (parts.length === 2 && parts[1] === "cancel") return cancel(request);
      return parts.length <= 2 ? wrongMethod() : notHere();
    },
    DELETE: async (request) => {
      const parts = rest(request);
      return parts.length === 1 ? remove(request) : parts.length <= 2 ? wrongMethod() : notHere();
    },
  };
}
