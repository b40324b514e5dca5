/**
 * The BullMQ transport (docs/fleet.md): the same job JSON, enqueued with BullMQ for Node
 * onto the queue spooler's workers consume with BullMQ for Python (`intake: bullmq`).
 *
 *   const exports = bullmqExports({ connection: { host: "redis", port: 6379 } });
 *   const jobId = await exports.submit(job);          // POST   /api/exports
 *   const view = await exports.status(jobId);         // GET    /api/exports/:id
 *   await exports.cancel(jobId);                      // POST   /api/exports/:id/cancel
 *   await exports.remove(jobId);                      // DELETE /api/exports/:id
 *
 * `spoolExports(spoolDir)` gives the same four calls over the file spool: one client, two
 * transports, chosen by configuration. bullmq and ioredis are peer dependencies, pinned to
 * the versions tested with spooler's Python bullmq (both ship the same Lua scripts).
 */
import { Queue, QueueEvents, type ConnectionOptions, type JobsOptions } from "bullmq";
import type { Redis } from "ioredis";

import { cancelJob, isValidJobId, newJobId, readStatus, removeJob, submitJob } from "./spooler.js";
import type { JobFile } from "./types.js";

export const DEFAULT_QUEUE = "exports";
export const DEFAULT_PREFIX = "bull";
/** The daemon's default retry.max_attempts and backoff_base_seconds (config/spooler.yaml). */
export const DEFAULT_MAX_ATTEMPTS = 3;
export const DEFAULT_BACKOFF_MS = 5000;
/** A cancel request outlives any job: kept a week, then Redis drops it. */
export const CANCEL_TTL_SECONDS = 7 * 24 * 3600;

/** BullMQ's failedReason from spooler: a JSON string (docs/fleet.md, "Failure reason"). */
export interface FailureReason {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

/** What job.updateProgress carries while the job runs. */
export interface ExportProgress {
  state: string;
  progress: number;
  step: string | null;
  etaSeconds: number | null;
  speed: number | null;
  attempt: number;
  cancelRequested: boolean;
}

/** The processor's return value: the published outputs and the warnings. */
export interface ExportResult {
  jobId: string;
  outputs: Array<{ path: string; role: string; sizeBytes: number; [key: string]: unknown }>;
  warnings: Array<{ code: string; message: string; details?: Record<string, unknown> }>;
  worker: string;
}

export interface ExportView {
  jobId: string;
  /** BullMQ's state: waiting, prioritized, delayed, active, completed, failed, unknown. */
  state: string;
  progress: ExportProgress | null;
  result: ExportResult | null;
  failure: FailureReason | null;
  attemptsMade: number;
}

/** The four calls of the web module, over either transport. */
export interface ExportTransport {
  submit(job: JobFile, jobId?: string): Promise<string>;
  status(jobId: string): Promise<unknown>;
  cancel(jobId: string): Promise<void>;
  remove(jobId: string): Promise<void>;
  close(): Promise<void>;
}

/** The job's priority (higher first, -1000..1000) as BullMQ's (1 first): 1001 - priority.
 * Never 0: BullMQ runs jobs without a priority before every prioritised one. */
export function bullmqPriority(priority: number | undefined): number {
  const clamped = Math.max(-1000, Math.min(1000, Math.trunc(priority ?? 0)));
  return 1001 - clamped;
}

/** One source of truth: BullMQ's options come from the job itself. */
export function jobOptions(jobId: string, job: JobFile): JobsOptions {
  return {
    jobId,
    priority: bullmqPriority(job.priority),
    attempts: job.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    backoff: { type: "exponential", delay: DEFAULT_BACKOFF_MS },
    removeOnComplete: { age: 7 * 24 * 3600 },
    removeOnFail: { age: 14 * 24 * 3600 },
  };
}

export function parseFailure(reason: string | undefined): FailureReason | null {
  if (!reason) return null;
  try {
    const parsed = JSON.parse(reason) as Partial<FailureReason>;
    if (typeof parsed.code === "string" && typeof parsed.message === "string") {
      return { code: parsed.code, message: parsed.message, details: parsed.details ?? {} };
    }
  } catch {
    // not ours (BullMQ's own, e.g. "job stalled more than allowable limit")
  }
  return { code: "internal_error", message: reason, details: {} };
}

export interface BullmqOptions {
  connection: ConnectionOptions;
  queueName?: string;
  prefix?: string;
}

export class BullmqExports implements ExportTransport {
  readonly queue: Queue;
  readonly prefix: string;

  constructor(options: BullmqOptions) {
    this.prefix = options.prefix ?? DEFAULT_PREFIX;
    this.queue = new Queue(options.queueName ?? DEFAULT_QUEUE, {
      connection: options.connection,
      prefix: this.prefix,
    });
  }

  cancelKey(jobId: string): string {
    return `${this.prefix}:${this.queue.name}:spooler:cancel:${jobId}`;
  }

  get cancelChannel(): string {
    return `${this.prefix}:${this.queue.name}:spooler:cancel`;
  }

  /** enqueueExport: the job JSON as job.data, its priority and maxAttempts as options. */
  async submit(job: JobFile, jobId: string = newJobId()): Promise<string> {
    if (!isValidJobId(jobId)) throw new Error(`invalid job id ${JSON.stringify(jobId)}`);
    await this.queue.add(job.kind ?? "export", job, jobOptions(jobId, job));
    return jobId;
  }

  async status(jobId: string): Promise<ExportView | null> {
    const job = await this.queue.getJob(jobId);
    if (!job) return null;
    const progress = typeof job.progress === "object" ? (job.progress as unknown as ExportProgress) : null;
    return {
      jobId,
      state: await job.getState(),
      progress,
      result: (job.returnvalue as ExportResult | null) ?? null,
      failure: parseFailure(job.failedReason),
      attemptsMade: job.attemptsMade,
    };
  }

  /** A durable cancel key every worker reads, a pub/sub hint for speed; a job still
   * waiting is simply removed (a locked, i.e. running, job refuses removal). */
  async cancel(jobId: string): Promise<void> {
    // The raw ioredis client of the queue (bullmq types it as its own narrower interface).
    const client = (await this.queue.getBackend().client) as unknown as Redis;
    await client.set(this.cancelKey(jobId), "1", "EX", CANCEL_TTL_SECONDS);
    await client.publish(this.cancelChannel, jobId);
    const job = await this.queue.getJob(jobId);
    if (job && ["waiting", "prioritized", "delayed", "paused"].includes(await job.getState())) {
      await job.remove().catch(() => undefined); // taken meanwhile: the cancel key stops it
    }
  }

  /** Remove a finished job's record (cancel first if it may still run). */
  async remove(jobId: string): Promise<void> {
    const job = await this.queue.getJob(jobId);
    if (!job) return;
    if (["active"].includes(await job.getState())) {
      await this.cancel(jobId);
      return;
    }
    await job.remove();
  }

  events(): QueueEvents {
    return new QueueEvents(this.queue.name, {
      connection: this.queue.opts.connection,
      prefix: this.prefix,
    });
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

export function bullmqExports(options: BullmqOptions): BullmqExports {
  return new BullmqExports(options);
}

/** The same four calls over the file spool (docs/protocol.md). */
export function spoolExports(spoolDir: string): ExportTransport {
  return {
    async submit(job: JobFile, jobId: string = newJobId()) {
      return submitJob(spoolDir, job, { jobId });
    },
    status: (jobId: string) => readStatus(spoolDir, jobId),
    cancel: (jobId: string) => cancelJob(spoolDir, jobId),
    remove: (jobId: string) => removeJob(spoolDir, jobId),
    close: async () => undefined,
  };
}
