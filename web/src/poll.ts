/**
 * How long a UI should wait before asking for a job's status again: pure, shared by the
 * status route (the `pollAfterMs` field) and the React hook.
 *
 * - waiting in the inbox or queued: 1 s, plus half a second per job ahead (at most 10 s);
 * - running: a tenth of the estimated time left, between 0.5 s and 5 s (status.json changes
 *   at most every status_interval_seconds, 0.5 s by default);
 * - final: null, stop polling.
 */
const FINAL = new Set(["succeeded", "failed", "cancelled", "rejected"]);

export interface PollInput {
  state: string;
  jobsAhead?: number | null;
  etaSeconds?: number | null;
  cancelRequested?: boolean;
}

export function pollDelayMs(view: PollInput): number | null {
  if (FINAL.has(view.state)) return null;
  if (view.cancelRequested) return 500; // the end is near: show it promptly
  if (view.state === "running") {
    const eta = view.etaSeconds;
    if (eta === null || eta === undefined || !Number.isFinite(eta)) return 1000;
    return Math.round(Math.min(5000, Math.max(500, (eta * 1000) / 10)));
  }
  const ahead = view.jobsAhead ?? 0;
  return Math.round(Math.min(10_000, 1000 + 500 * Math.max(0, ahead)));
}

export function isFinalState(state: string): boolean {
  return FINAL.has(state);
}
