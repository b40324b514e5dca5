/**
 * The spooler file protocol (docs/protocol.md) for the Next.js API routes.
 *
 * There is no network API: a job is a JSON file dropped into `<spool>/inbox/`, its state is
 * `<spool>/jobs/<jobId>/status.json`, and cancel/remove are marker files. Everything here is
 * plain `node:fs`, safe to call from any number of requests and hosts at once.
 *
 *   const jobId = await submitJob(SPOOL, switchesToJob(edit));   // POST   /api/exports
 *   const status = await readStatus(SPOOL, jobId);               // GET    /api/exports/:id
 *   await cancelJob(SPOOL, jobId);                               // POST   /api/exports/:id/cancel
 *   await removeJob(SPOOL, jobId);                               // DELETE /api/exports/:id
 *
 * Types of the files come from ./types.ts, generated from schema/*.json.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";

import type { JobFile, State, StatusFile } from "./types.js";

export type { JobFile, State, StatusFile } from "./types.js";

/** docs/protocol.md §4: 1-128 of A-Z a-z 0-9 _ -, not starting with _ or -. */
export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
export const FINAL_STATES: readonly State[] = ["succeeded", "failed", "cancelled", "rejected"];

/** A job still in the inbox (or mid-claim) has no status file: the CLI calls it submitted. */
export interface SubmittedView {
  jobId: string;
  state: "submitted";
}
export type JobView = StatusFile | SubmittedView;

export class SpoolerError extends Error {
  constructor(
    message: string,
    readonly code: "invalid_id" | "job_exists" | "invalid_edit",
  ) {
    super(message);
    this.name = "SpoolerError";
  }
}

export function isValidJobId(jobId: string): boolean {
  return JOB_ID_PATTERN.test(jobId);
}

/** A fresh id; never reuse one (outputs are keyed by job id). */
export function newJobId(): string {
  return randomUUID();
}

export function isFinal(state: string): boolean {
  return (FINAL_STATES as readonly string[]).includes(state);
}

/** Every path of the spool tree, from its root (docs/protocol.md §1). */
export function spoolPaths(spoolDir: string) {
  const inbox = path.join(spoolDir, "inbox");
  const jobs = path.join(spoolDir, "jobs");
  return {
    inbox,
    jobs,
    claims: path.join(spoolDir, "claims"),
    inboxJob: (id: string) => path.join(inbox, `${id}.json`),
    inboxCancel: (id: string) => path.join(inbox, `${id}.cancel`),
    inboxDelete: (id: string) => path.join(inbox, `${id}.delete`),
    jobDir: (id: string) => path.join(jobs, id),
    statusFile: (id: string) => path.join(jobs, id, "status.json"),
    jobCancel: (id: string) => path.join(jobs, id, "cancel"),
  };
}

function checkId(jobId: string): void {
  if (!isValidJobId(jobId)) {
    throw new SpoolerError(
      `${JSON.stringify(jobId)} is not a valid job id (letters, digits, _ and -, at most 128, ` +
        "starting with a letter or digit)",
      "invalid_id",
    );
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, "r");
    await handle.sync();
  } catch {
    // Some network filesystems refuse fsync on a directory: the rename is still atomic.
  } finally {
    await handle?.close();
  }
}

/**
 * Write `data` to `target` atomically: a hidden temporary name in the same folder (the daemon
 * ignores names starting with "." and ending in ".tmp"), fsync, rename, fsync the folder.
 */
export async function atomicWrite(target: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(4).toString("hex")}.tmp`);
  const handle = await fs.open(tmp, "wx", 0o664);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await fs.rename(tmp, target);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

export interface SubmitOptions {
  /** Default: a new UUID. */
  jobId?: string;
}

/**
 * Submit a job (docs/protocol.md §3): refuses an id already in inbox/ or jobs/, then writes
 * `inbox/.<id>.json.<hex>.tmp` and renames it to `inbox/<id>.json`. Returns the job id.
 */
export async function submitJob(
  spoolDir: string,
  job: JobFile | ExportJobFile,
  options: SubmitOptions = {},
): Promise<string> {
  const jobId = options.jobId ?? newJobId();
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  if ((await exists(paths.inboxJob(jobId))) || (await exists(paths.jobDir(jobId)))) {
    throw new SpoolerError(`job ${jobId} already exists`, "job_exists");
  }
  await fs.mkdir(paths.inbox, { recursive: true });
  await atomicWrite(paths.inboxJob(jobId), JSON.stringify(job));
  return jobId;
}

/**
 * The job's status: the parsed status.json; `{state: "submitted"}` while it waits in the
 * inbox or is being claimed; null if there is no such job (never submitted, or removed).
 * Unknown fields are kept (readers must ignore them: docs/protocol.md §17).
 */
export async function readStatus(spoolDir: string, jobId: string): Promise<JobView | null> {
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  for (let tries = 0; ; tries++) {
    try {
      return JSON.parse(await fs.readFile(paths.statusFile(jobId), "utf8")) as StatusFile;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") break;
      // status.json is replaced atomically, so a parse error is not a torn write; still,
      // one retry costs nothing on a flaky network share.
      if (err instanceof SyntaxError && tries < 1) continue;
      throw err;
    }
  }
  if (await exists(paths.inboxJob(jobId))) return { jobId, state: "submitted" };
  // Between the claim's first rename and its job folder (milliseconds), the file is in claims/.
  try {
    const claims = await fs.readdir(paths.claims);
    if (claims.some((name) => name.startsWith(`${jobId}.`) && name.endsWith(".json"))) {
      return { jobId, state: "submitted" };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  // The claim may have finished while we looked: one last read of the status file.
  try {
    return JSON.parse(await fs.readFile(paths.statusFile(jobId), "utf8")) as StatusFile;
  } catch {
    return null;
  }
}

/** Ask for a job to be cancelled, wherever it is (inbox, queued, running): docs §11. */
export async function cancelJob(spoolDir: string, jobId: string): Promise<void> {
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  await fs.mkdir(paths.inbox, { recursive: true });
  await atomicWrite(paths.inboxCancel(jobId), "");
}

/**
 * Remove a job and its outputs (cancelling it first if it is active): docs §12. Returns at
 * once (answer 202); the job is gone when readStatus returns null.
 */
export async function removeJob(spoolDir: string, jobId: string): Promise<void> {
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  await fs.mkdir(paths.inbox, { recursive: true });
  await atomicWrite(paths.inboxDelete(jobId), "");
}

/**
 * Absolute path of a succeeded job's output (by role, default "main"), for a download route.
 * Null unless the job succeeded: files of other states are not results (docs §10).
 */
export function outputFile(
  spoolDir: string,
  status: JobView,
  role = "main",
): { path: string; mimeType: string | null; sizeBytes: number } | null {
  if (status.state !== "succeeded") return null;
  const output = status.outputs?.find((o) => o.role === role);
  if (!output) return null;
  const jobDir = spoolPaths(spoolDir).jobDir(status.jobId);
  const resolved = path.resolve(jobDir, output.path);
  if (path.dirname(resolved) !== path.resolve(jobDir)) return null; // outputs are flat
  return { path: resolved, mimeType: output.mimeType ?? null, sizeBytes: output.sizeBytes };
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Stop waiting when this returns true (default: a final state). */
  until?: (status: JobView) => boolean;
  onStatus?: (status: JobView) => void;
}

/** Poll the status until `until` (default: a final state); rejects on timeout. */
export async function waitForJob(
  spoolDir: string,
  jobId: string,
  options: WaitOptions = {},
): Promise<JobView> {
  const { timeoutMs = 60_000, intervalMs = 100 } = options;
  const until = options.until ?? ((s: JobView) => isFinal(s.state));
  const deadline = Date.now() + timeoutMs;
  let last: JobView | null = null;
  for (;;) {
    last = await readStatus(spoolDir, jobId);
    if (last) {
      options.onStatus?.(last);
      if (until(last)) return last;
    }
    if (Date.now() >= deadline) {
      throw new Error(`job ${jobId}: not done within ${timeoutMs} ms (last: ${last?.state})`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---- switch points -> export job ----------------------------------------------------------
//
// The export job as spooler/export/models.py (ExportJob) accepts it. These interfaces mirror
// the models by hand because the committed schema/job.schema.json does not describe the
// export kind yet; once it does (`make schema`, then `npm run gen-types`), types.ts exports
// `ExportJob` and these can become aliases of the generated types. The node tests check the
// helper's output with `spooler validate` against the real models.

export interface Angle {
  /** ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$; referenced by switches and audio. */
  id: string;
  /** Path relative to a media root (no "..", not absolute, no URL). */
  source: string;
  /** Source time shown at timeline 0: source_time = timeline_time + syncOffset. */
  syncOffset?: number;
}

export type AudioSpec =
  | { mode?: "angle"; angle?: string | null }
  | { mode: "external"; source: string; offset?: number; gainDb?: number }
  | { mode: "follow" }
  | { mode: "none" };

export type SizeSpec =
  | { mode?: "keep" }
  | { mode: "height"; height: number }
  | { mode: "exact"; width: number; height: number; fit?: "pad" | "crop" };

export interface OutputSpec {
  container?: "mp4" | "mov" | "mkv" | "webm";
  videoCodec?: "h264" | "hevc" | "vp9" | "av1" | "copy";
  crf?: number | null;
  preset?: string | null;
  videoBitrateKbps?: number | null;
  size?: SizeSpec;
  fps?: "keep" | number | string;
  audioCodec?: "aac" | "opus" | null;
  audioBitrateKbps?: number;
  faststart?: boolean;
  fileName?: string;
}

export interface SwitchPoint {
  /** Timeline seconds at which `angle` takes over. */
  at: number;
  angle: string;
}

export interface ExportJobFile {
  schemaVersion?: 1;
  kind?: "export";
  priority?: number;
  timeoutSeconds?: number | null;
  maxAttempts?: number | null;
  metadata?: Record<string, unknown>;
  angles: Angle[];
  switches: SwitchPoint[];
  end: number;
  range?: { start: number; end: number } | null;
  audio?: AudioSpec;
  output?: OutputSpec;
  mode?: "reencode" | "copy" | "auto";
}

/** What the editor has: its angles, the switch points as the user placed them, the end. */
export interface EditorTimeline {
  angles: Angle[];
  /** In any order; duplicates and switches to the angle already on screen are dropped. */
  switches: SwitchPoint[];
  /** Timeline end in seconds (the first switch point is the timeline's start, usually 0). */
  end: number;
  range?: { start: number; end: number } | null;
  audio?: AudioSpec;
  output?: OutputSpec;
  mode?: "reencode" | "copy" | "auto";
  priority?: number;
  timeoutSeconds?: number;
  metadata?: Record<string, unknown>;
}

/** Same slack as the daemon (TIME_EPSILON in spooler/export/models.py). */
const TIME_EPSILON = 1e-6;

/**
 * Turn the editor's switch points into an export job the daemon accepts: sorted by time,
 * several points at one instant reduced to the last one placed, switches to the angle
 * already on screen and points at or after `end` dropped. Throws SpoolerError
 * ("invalid_edit") for what cannot be repaired: no angles, an unknown angle, no switch
 * before `end`, a non-finite time.
 */
export function switchesToJob(timeline: EditorTimeline): ExportJobFile {
  const fail = (message: string): never => {
    throw new SpoolerError(message, "invalid_edit");
  };
  if (timeline.angles.length === 0) fail("an export needs at least one angle");
  const known = new Set(timeline.angles.map((a) => a.id));
  if (!Number.isFinite(timeline.end) || timeline.end <= 0) fail("end must be a positive number");
  // Stable sort by time; the later of two points at the same instant wins.
  const ordered = timeline.switches
    .map((s, index) => ({ ...s, index }))
    .sort((a, b) => a.at - b.at || a.index - b.index);
  const switches: SwitchPoint[] = [];
  for (const point of ordered) {
    if (!Number.isFinite(point.at) || point.at < 0) fail(`switch time ${point.at} is not valid`);
    if (!known.has(point.angle)) fail(`switch at ${point.at} s: unknown angle ${point.angle}`);
    if (point.at >= timeline.end - TIME_EPSILON) continue;
    let at = point.at;
    const sameInstant = switches[switches.length - 1];
    if (sameInstant && at - sameInstant.at <= TIME_EPSILON) {
      switches.pop(); // the point placed later wins
      at = sameInstant.at;
    }
    const onScreen = switches[switches.length - 1];
    if (onScreen && onScreen.angle === point.angle) continue; // nothing changes on screen
    switches.push({ at, angle: point.angle });
  }
  if (switches.length === 0) fail("no switch point before the end of the timeline");
  const job: ExportJobFile = {
    kind: "export",
    angles: timeline.angles.map((a) => ({
      id: a.id,
      source: a.source,
      ...(a.syncOffset !== undefined ? { syncOffset: a.syncOffset } : {}),
    })),
    switches,
    end: timeline.end,
  };
  if (timeline.range) job.range = timeline.range;
  if (timeline.audio) job.audio = timeline.audio;
  if (timeline.output) job.output = timeline.output;
  if (timeline.mode) job.mode = timeline.mode;
  if (timeline.priority !== undefined) job.priority = timeline.priority;
  if (timeline.timeoutSeconds !== undefined) job.timeoutSeconds = timeline.timeoutSeconds;
  if (timeline.metadata) job.metadata = timeline.metadata;
  return job;
}
export * from "./webhooks.js";
