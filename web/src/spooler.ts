/**
 * The spooler file protocol (docs/protocol.md) for the Next.js API routes.
 *
 * There is no network API: a job is a JSON file dropped into `<spool>/inbox/`, its state is
 * `<spool>/jobs/<jobId>/status.json`, and cancel/remove are marker files. Everything here is
 * plain `node:fs`, safe to call from any number of requests and hosts at once.
 *
 *   const jobId = await submitJob(SPOOL, switchesToJob(edit));   // POST   /api/export
 *   const status = await readStatus(SPOOL, jobId);               // GET    /api/export/:id/status
 *   await cancelJob(SPOOL, jobId);                               // POST   /api/export/:id/cancel
 *   await removeJob(SPOOL, jobId);                               // DELETE /api/export/:id
 *
 * Types of the files come from ./types.ts, generated from schema/*.json.
 *
 * Every fs call takes a bare variable marked turbopackIgnore: the spool is runtime data, and an
 * unmarked `fs.x(path.join(dir, name))` makes Turbopack trace the whole project into each route.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { constants as fsConstants, promises as fs } from "node:fs";
import path from "node:path";

import type { Angle, ExportJob, JobFile, State, StatusFile, Switch } from "./types.js";

export type * from "./types.js";

/** docs/protocol.md §4: 1-128 of A-Z a-z 0-9 _ -, not starting with _ or -. */
export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
export const FINAL_STATES: readonly State[] = ["succeeded", "failed", "cancelled", "rejected"];

/** status.json as the daemon writes it (cancelRequested, jobsAhead included). */
export type JobStatus = StatusFile;

/** A job still in the inbox (or mid-claim) has no status file: the CLI calls it submitted. */
export interface SubmittedView {
  jobId: string;
  state: "submitted";
  /** A cancel or delete marker is waiting for this job. */
  cancelRequested?: boolean;
  /** Approximate: other job files in this inbox older than this one (priorities ignored). */
  jobsAhead?: number | null;
  /** The job file's metadata (what an authorize hook checks ownership with). */
  metadata?: Record<string, unknown>;
}
export type JobView = JobStatus | SubmittedView;

export class SpoolerError extends Error {
  constructor(
    message: string,
    readonly code: "invalid_id" | "job_exists" | "invalid_edit",
    /** For invalid_edit: `{path, code, message}` in the editor's terms (e.g. `switches[3].at`). */
    readonly errors: { path: string; code: string; message: string }[] = [],
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
    workers: path.join(spoolDir, "workers"),
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
    await fs.lstat(/* turbopackIgnore: true */ p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(/* turbopackIgnore: true */ dir, "r");
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
  const handle = await fs.open(/* turbopackIgnore: true */ tmp, "wx", 0o664);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.rm(/* turbopackIgnore: true */ tmp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await fs.rename(/* turbopackIgnore: true */ tmp, /* turbopackIgnore: true */ target);
  } catch (err) {
    await fs.rm(/* turbopackIgnore: true */ tmp, { force: true });
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
  const inbox = paths.inbox;
  await fs.mkdir(/* turbopackIgnore: true */ inbox, { recursive: true });
  await atomicWrite(paths.inboxJob(jobId), JSON.stringify(job));
  return jobId;
}

/** Upper bound on a status or job file read here: both are small; the spool is untrusted. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;

/** Read a small regular file without following a symlink or blocking on a FIFO. */
async function readSmall(file: string): Promise<string> {
  const flags = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
  const handle = await fs.open(/* turbopackIgnore: true */ file, flags);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw Object.assign(new Error(`${file}: not a regular file`), { code: "ENOTFILE" });
    if (info.size > MAX_FILE_BYTES) throw Object.assign(new Error(`${file}: too large`), { code: "EFBIG" });
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

async function readStatusFile(file: string): Promise<JobStatus | null> {
  for (let tries = 0; ; tries++) {
    try {
      return JSON.parse(await readSmall(file)) as JobStatus;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return null;
      // status.json is replaced atomically, so a parse error is not a torn write; still,
      // one retry costs nothing on a flaky network share.
      if (err instanceof SyntaxError && tries < 1) continue;
      throw err;
    }
  }
}

/** What the daemons on a spool accept (docs/protocol.md §13, §17). */
export interface SpoolCapabilities {
  /** Running daemons whose heartbeat could be read. */
  daemons: number;
  /** Job kinds every one of them accepts. */
  kinds: string[];
  /** Features (optional job fields and behaviours) every one of them accepts. */
  features: string[];
}

/**
 * The job kinds and features that every daemon with a heartbeat in workers/ accepts: send an
 * optional field only when its feature is listed here. A daemon too old to announce its
 * capabilities counts as accepting none; with no daemon running, both lists are empty.
 */
export async function spoolCapabilities(spoolDir: string): Promise<SpoolCapabilities> {
  const workers = spoolPaths(spoolDir).workers;
  let names: string[];
  try {
    names = await fs.readdir(/* turbopackIgnore: true */ workers);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { daemons: 0, kinds: [], features: [] };
    throw err;
  }
  let kinds: string[] | undefined;
  let features: string[] | undefined;
  let daemons = 0;
  for (const name of names) {
    if (name.startsWith(".") || !name.endsWith(".json")) continue;
    let beat: { state?: unknown; capabilities?: { kinds?: unknown; features?: unknown } };
    try {
      const file = path.join(workers, name);
      beat = JSON.parse(await readSmall(file));
    } catch {
      continue; // gone meanwhile, or not a heartbeat: any client can write there
    }
    if (beat.state !== "running") continue;
    daemons += 1;
    const caps = beat.capabilities ?? {};
    kinds = intersect(kinds, Array.isArray(caps.kinds) ? caps.kinds.map(String) : []);
    features = intersect(features, Array.isArray(caps.features) ? caps.features.map(String) : []);
  }
  return { daemons, kinds: (kinds ?? []).sort(), features: (features ?? []).sort() };
}

function intersect(known: string[] | undefined, theirs: string[]): string[] {
  return known === undefined ? theirs : known.filter((item) => theirs.includes(item));
}

/**
 * What a job still in the inbox shows: its metadata, whether a marker waits for it, and how
 * many job files in this inbox are older (approximate: priorities are ignored and several
 * daemons, or several hosts' inboxes, may share the work).
 */
async function submittedView(spoolDir: string, jobId: string): Promise<SubmittedView | null> {
  const paths = spoolPaths(spoolDir);
  const inbox = paths.inbox;
  let names: string[];
  try {
    names = await fs.readdir(/* turbopackIgnore: true */ inbox);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  const own = `${jobId}.json`;
  if (!names.includes(own)) return null;
  const view: SubmittedView = { jobId, state: "submitted" };
  view.cancelRequested = names.includes(`${jobId}.cancel`) || names.includes(`${jobId}.delete`);
  let mine: number;
  try {
    const text = await readSmall(paths.inboxJob(jobId));
    const parsed = JSON.parse(text) as { metadata?: unknown } | null;
    const metadata = parsed?.metadata;
    // {} when the file has none: the caller tells "read" from "claimed while we looked".
    view.metadata = typeof metadata === "object" && metadata !== null ? (metadata as Record<string, unknown>) : {};
    mine = (await fs.lstat(/* turbopackIgnore: true */ paths.inboxJob(jobId))).mtimeMs;
  } catch {
    return view; // claimed (or replaced) while we looked: the caller reads again
  }
  // Count older job files; stat at most a few hundred so a flooded inbox stays cheap.
  const others = names.filter((n) => n.endsWith(".json") && n !== own && !n.startsWith(".")).slice(0, 500);
  let ahead = 0;
  for (const name of others) {
    try {
      const other = path.join(inbox, name);
      if ((await fs.lstat(/* turbopackIgnore: true */ other)).mtimeMs <= mine) ahead++;
    } catch {
      // claimed meanwhile: not ahead any more
    }
  }
  view.jobsAhead = ahead;
  return view;
}

/**
 * The job's status: the parsed status.json; a `submitted` view while it waits in the inbox
 * or is being claimed; null if there is no such job (never submitted, or removed).
 * Unknown fields are kept (readers must ignore them: docs/protocol.md §17).
 */
export async function readStatus(spoolDir: string, jobId: string): Promise<JobView | null> {
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  // A claim moves the file inbox → claims → jobs/ in milliseconds: a job seen mid-way is
  // looked at again shortly, so the answer carries its metadata (what authorize checks).
  for (let attempt = 0; ; attempt++) {
    const status = await readStatusFile(paths.statusFile(jobId));
    if (status) return status;
    const submitted = await submittedView(spoolDir, jobId);
    if (submitted?.metadata) return submitted;
    let claiming = false;
    try {
      const claimsDir = paths.claims;
      const claims = await fs.readdir(/* turbopackIgnore: true */ claimsDir);
      claiming = claims.some((name) => name.startsWith(`${jobId}.`) && name.endsWith(".json"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (!submitted && !claiming) {
      // The claim may have finished while we looked: one last read of the status file.
      try {
        return await readStatusFile(paths.statusFile(jobId));
      } catch {
        return null;
      }
    }
    if (attempt >= 3) return submitted ?? { jobId, state: "submitted" };
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Ask for a job to be cancelled, wherever it is (inbox, queued, running): docs §11. */
export async function cancelJob(spoolDir: string, jobId: string): Promise<void> {
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  const inbox = paths.inbox;
  await fs.mkdir(/* turbopackIgnore: true */ inbox, { recursive: true });
  await atomicWrite(paths.inboxCancel(jobId), "");
}

/**
 * Remove a job and its outputs (cancelling it first if it is active): docs §12. Returns at
 * once (answer 202); the job is gone when readStatus returns null.
 */
export async function removeJob(spoolDir: string, jobId: string): Promise<void> {
  checkId(jobId);
  const paths = spoolPaths(spoolDir);
  const inbox = paths.inbox;
  await fs.mkdir(/* turbopackIgnore: true */ inbox, { recursive: true });
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
): { path: string; name: string; mimeType: string | null; sizeBytes: number } | null {
  if (status.state !== "succeeded") return null;
  const output = status.outputs?.find((o) => (o.role ?? "main") === role);
  if (!output) return null;
  const jobDir = spoolPaths(spoolDir).jobDir(status.jobId);
  const resolved = path.resolve(jobDir, output.path);
  if (path.dirname(resolved) !== path.resolve(jobDir)) return null; // outputs are flat
  return {
    path: resolved,
    name: path.basename(resolved),
    mimeType: output.mimeType ?? null,
    sizeBytes: output.sizeBytes,
  };
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
  // 250 ms: status.json changes at most every status_interval_seconds (0.5 s by default).
  const { timeoutMs = 60_000, intervalMs = 250 } = options;
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

/** A switch point as the editor places it: from `at` seconds on, show `angle`. */
export type SwitchPoint = Switch;
export type ExportJobFile = ExportJob;

/**
 * What the editor has: every field of the export job (types generated from the daemon's
 * schema), with `switches` in any order, duplicates allowed, and `end` required.
 */
export type EditorTimeline = Omit<ExportJob, "angles" | "switches" | "end" | "segments" | "kind"> & {
  angles: Angle[];
  switches: SwitchPoint[];
  end: number;
};

/** The job plus, for each of its switches, the index the editor sent it at. */
export interface NormalisedJob {
  job: ExportJob;
  switchIndex: number[];
}

/** Same slack as the daemon (TIME_EPSILON in spooler/export/models.py). */
const TIME_EPSILON = 1e-6;

/**
 * Turn the editor's switch points into an export job the daemon accepts: sorted by time,
 * several points at one instant reduced to the last one placed, switches to the angle
 * already on screen and points at or after `end` dropped; every other field carried as is.
 * Throws SpoolerError ("invalid_edit", with `errors` in the editor's terms) for what cannot
 * be repaired: no angles, an unknown angle, no switch before `end`, a non-finite time.
 */
export function normaliseTimeline(timeline: EditorTimeline): NormalisedJob {
  const errors: { path: string; code: string; message: string }[] = [];
  const angles = Array.isArray(timeline.angles) ? timeline.angles : [];
  if (angles.length === 0) {
    errors.push({ path: "angles", code: "too_short", message: "an export needs at least one angle" });
  }
  const known = new Set(angles.map((a) => a.id));
  if (!Number.isFinite(timeline.end) || timeline.end <= 0) {
    errors.push({ path: "end", code: "invalid", message: "end must be a positive number" });
  }
  const points = Array.isArray(timeline.switches) ? timeline.switches : [];
  points.forEach((point, index) => {
    if (!Number.isFinite(point.at) || point.at < 0) {
      errors.push({ path: `switches[${index}].at`, code: "invalid", message: `switch time ${point.at} is not valid` });
    }
    if (!known.has(point.angle)) {
      errors.push({
        path: `switches[${index}].angle`,
        code: "unknown_angle",
        message: `switch at ${point.at} s: unknown angle ${JSON.stringify(point.angle)}`,
      });
    }
  });
  if (errors.length > 0) {
    throw new SpoolerError(errors.map((e) => `${e.path}: ${e.message}`).join("; "), "invalid_edit", errors);
  }
  // Stable sort by time; the later of two points at the same instant wins.
  const ordered = points
    .map((s, index) => ({ point: s, index }))
    .sort((a, b) => a.point.at - b.point.at || a.index - b.index);
  const kept: { point: SwitchPoint; index: number; at: number }[] = [];
  for (const { point, index } of ordered) {
    if (point.at >= timeline.end - TIME_EPSILON) continue;
    let at = point.at;
    const sameInstant = kept[kept.length - 1];
    if (sameInstant && at - sameInstant.at <= TIME_EPSILON) {
      kept.pop(); // the point placed later wins
      at = sameInstant.at;
    }
    const onScreen = kept[kept.length - 1];
    if (onScreen && onScreen.point.angle === point.angle) continue; // nothing changes on screen
    kept.push({ point, index, at });
  }
  if (kept.length === 0) {
    const error = { path: "switches", code: "empty", message: "no switch point before the end of the timeline" };
    throw new SpoolerError(error.message, "invalid_edit", [error]);
  }
  const { switches: _switches, end, angles: _angles, ...rest } = timeline;
  const job: ExportJob = {
    ...rest,
    kind: "export",
    angles: angles.map((a) => ({ ...a })) as ExportJob["angles"], // non-empty: checked above
    switches: kept.map(({ point, at }) => ({ ...point, at })),
    end,
  };
  return { job, switchIndex: kept.map((k) => k.index) };
}

/** `normaliseTimeline(timeline).job`. */
export function switchesToJob(timeline: EditorTimeline): ExportJob {
  return normaliseTimeline(timeline).job;
}

/**
 * A daemon error path (`switches[2].at`, `switches.2.at` or `/switches/2/at`) in the
 * editor's terms: the switch index it sent, not the normalised one. Other paths pass through.
 */
export function editorPath(jobPath: string, switchIndex: readonly number[]): string {
  return jobPath.replace(/^(\/?switches[[./])(\d+)/, (whole, head: string, index: string) => {
    const original = switchIndex[Number(index)];
    return original === undefined ? whole : `${head}${original}`;
  });
}
export * from "./webhooks.js";
