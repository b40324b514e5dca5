"use client";
/**
 * The browser side: `useExport(jobId)` polls the status route (backing off as the status
 * suggests, see poll.ts) and `ExportButton` submits the editor's timeline and shows progress,
 * ETA, cancel, the download link and errors. Unstyled: every element carries a
 * `data-spooler` attribute to style or test it by.
 */
import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";

import { isFinalState, pollDelayMs } from "./poll.js";

/** The status route's body (routes.ts `statusBody`). */
export interface ExportStatus {
  jobId: string;
  state: "submitted" | "queued" | "running" | "succeeded" | "failed" | "cancelled" | "rejected";
  progress: number;
  etaSeconds: number | null;
  step: string | null;
  cancelRequested: boolean;
  jobsAhead: number | null;
  error: { code: string; message: string; details?: Record<string, unknown> } | null;
  outputs: { role: string; name: string; mimeType: string | null; sizeBytes: number; url: string }[];
  pollAfterMs: number | null;
}

/** The routes' error body. */
export interface ExportError {
  code: string;
  message: string;
  status: number;
  details?: { errors?: { path: string; code: string; message: string }[] } & Record<string, unknown>;
}

export interface UseExportOptions {
  /** Where createExportRoutes is mounted. Default "/api/export". */
  basePath?: string;
}

export interface UseExport {
  status: ExportStatus | null;
  /** The job was deleted (the status route answers 404). */
  gone: boolean;
  error: ExportError | null;
  /** URL of the main output once it succeeded. */
  downloadUrl: string | null;
  cancel: () => Promise<void>;
  remove: () => Promise<void>;
}

async function asError(response: Response): Promise<ExportError> {
  try {
    const body = (await response.json()) as { error?: Omit<ExportError, "status"> };
    if (body.error) return { ...body.error, status: response.status };
  } catch {
    // not our JSON: a proxy's page, say
  }
  return { code: "http_error", message: `HTTP ${response.status}`, status: response.status };
}

export function useExport(jobId: string | null, options: UseExportOptions = {}): UseExport {
  const base = options.basePath ?? "/api/export";
  const [status, setStatus] = useState<ExportStatus | null>(null);
  const [gone, setGone] = useState(false);
  const [error, setError] = useState<ExportError | null>(null);
  const kick = useRef<() => void>(() => {});

  useEffect(() => {
    setStatus(null);
    setGone(false);
    setError(null);
    if (!jobId) return;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let failures = 0;
    const poll = async () => {
      timer = undefined;
      let next: number | null = 1000;
      try {
        const response = await fetch(`${base}/${encodeURIComponent(jobId)}/status`, { cache: "no-store" });
        if (stopped) return;
        if (response.status === 404) {
          setGone(true);
          next = null;
        } else if (!response.ok) {
          setError(await asError(response));
          failures++;
          next = Math.min(30_000, 1000 * 2 ** failures); // back off while the server is unwell
        } else {
          const body = (await response.json()) as ExportStatus;
          if (stopped) return;
          failures = 0;
          setError(null);
          setStatus(body);
          next = body.pollAfterMs ?? pollDelayMs(body);
        }
      } catch {
        failures++;
        next = Math.min(30_000, 1000 * 2 ** failures);
      }
      if (!stopped && next !== null) timer = setTimeout(poll, next);
    };
    kick.current = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(poll, 0);
    };
    void poll();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [jobId, base]);

  const send = useCallback(
    async (method: "POST" | "DELETE", suffix: string) => {
      if (!jobId) return;
      const response = await fetch(`${base}/${encodeURIComponent(jobId)}${suffix}`, { method });
      if (!response.ok) setError(await asError(response));
      kick.current(); // show cancelRequested at once instead of at the next poll
    },
    [jobId, base],
  );

  const main = status?.state === "succeeded" ? status.outputs.find((o) => o.role === "main") : undefined;
  return {
    status,
    gone,
    error,
    downloadUrl: main?.url ?? null,
    cancel: () => send("POST", "/cancel"),
    remove: () => send("DELETE", ""),
  };
}

/** Submit a timeline to the export route; the job id, or the route's error. */
export async function submitExport(timeline: unknown, basePath = "/api/export"): Promise<{ jobId: string } | { error: ExportError }> {
  const response = await fetch(basePath, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(timeline),
  });
  if (!response.ok) return { error: await asError(response) };
  const body = (await response.json()) as { jobId: string };
  return { jobId: body.jobId };
}

function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s left` : `${Math.floor(s / 60)} min ${s % 60} s left`;
}

export interface ExportButtonProps {
  /** The editor's timeline (or a function giving it at click time). */
  timeline: unknown | (() => unknown);
  basePath?: string;
  /** Called with the new job id. */
  onJob?: (jobId: string) => void;
  children?: ReactNode;
}

/** A button that exports, then shows state, progress, ETA, cancel, download, errors. */
export function ExportButton({ timeline, basePath = "/api/export", onJob, children }: ExportButtonProps) {
  const [jobId, setJobId] = useState<string | null>(null);
  const [submitError, setSubmitError] = useState<ExportError | null>(null);
  const [busy, setBusy] = useState(false);
  const job = useExport(jobId, { basePath });
  const state = job.status?.state ?? (jobId ? "submitted" : null);
  const active = state !== null && !isFinalState(state) && !job.gone;

  const start = async () => {
    setBusy(true);
    setSubmitError(null);
    try {
      const body = typeof timeline === "function" ? (timeline as () => unknown)() : timeline;
      const result = await submitExport(body, basePath);
      if ("error" in result) setSubmitError(result.error);
      else {
        setJobId(result.jobId);
        onJob?.(result.jobId);
      }
    } finally {
      setBusy(false);
    }
  };

  const jobError = job.status?.error && job.status.state !== "cancelled" ? job.status.error : null;
  const shownError: ExportError | null =
    submitError ?? job.error ?? (jobError ? { code: jobError.code, message: jobError.message, status: 0, details: jobError.details as ExportError["details"] } : null);
  const fieldErrors = shownError?.details?.errors ?? [];
  return (
    <div data-spooler="export">
      <button type="button" data-spooler="start" onClick={start} disabled={busy || active}>
        {children ?? "Export"}
      </button>
      {state && (
        <div data-spooler="job" data-job-id={jobId ?? ""} data-state={state}>
          <span data-spooler="state">
            {job.status?.cancelRequested && active ? "cancelling" : state}
          </span>
          {job.status?.jobsAhead ? <span data-spooler="ahead"> ({job.status.jobsAhead} ahead)</span> : null}
          {job.status?.step ? <span data-spooler="step"> {job.status.step}</span> : null}
          <progress data-spooler="progress" max={1} value={job.status?.progress ?? 0} />
          <span data-spooler="eta">{active ? formatEta(job.status?.etaSeconds ?? null) : ""}</span>
          {active && (
            <button type="button" data-spooler="cancel" onClick={() => void job.cancel()} disabled={job.status?.cancelRequested}>
              Cancel
            </button>
          )}
          {job.downloadUrl && (
            <a data-spooler="download" href={`${job.downloadUrl}${job.downloadUrl.includes("?") ? "&" : "?"}attachment`} download>
              Download
            </a>
          )}
        </div>
      )}
      {shownError && (
        <div data-spooler="error" role="alert" data-code={shownError.code}>
          <p>{shownError.message}</p>
          {fieldErrors.length > 0 && (
            <ul>
              {fieldErrors.map((e) => (
                <li key={`${e.path}:${e.code}`} data-path={e.path}>
                  {e.path}: {e.message}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </div>
  );
}
