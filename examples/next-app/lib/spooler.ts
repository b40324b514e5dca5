// The app's one place for spooler: where the spool and media are, who the user is, what
// they may touch. Every route file re-exports handlers built here.
import { createExportRoutes, type AuthTarget } from "@spooler/client";
import { createUploadRoutes } from "@spooler/client/uploads";

const spoolDir = process.env.SPOOLER_SPOOL_DIR ?? "/data/spool";
const mediaDir = process.env.SPOOLER_MEDIA_DIR ?? "/data/media";

/**
 * A deliberately trivial identity: the `user` cookie. A real app asks its session library
 * (Auth.js, Clerk, iron-session, ...) here.
 */
export function userOf(request: Request): string | null {
  const cookie = request.headers.get("cookie") ?? "";
  const match = /(?:^|;\s*)user=([a-z0-9]{1,32})(?:;|$)/.exec(cookie);
  return match?.[1] ?? null;
}

const unauthorized = () =>
  Response.json({ error: { code: "unauthorized", message: "log in first" } }, { status: 401 });

/** Anyone logged in may submit and upload; a job is its owner's only. */
function authorize(request: Request, target: AuthTarget | { action: "upload" }) {
  const user = userOf(request);
  if (!user) return unauthorized();
  if (!("job" in target) || !target.job) return true; // submit, upload; a missing job is a 404
  return target.job.metadata?.owner === user;
}

/** Each user's files live in media/users/<user>/; sources are relative to it. */
const mediaScope = (request: Request) => `users/${userOf(request)}`;

export const exportRoutes = createExportRoutes({
  spoolDir,
  mediaDir,
  authorize,
  mediaScope,
  jobMetadata: (request) => ({ owner: userOf(request) }),
  // How long a submit waits for the daemon's verdict (the documented default is 1000 ms).
  verdictWaitMs: Number(process.env.SPOOLER_VERDICT_WAIT_MS ?? 1000),
});

export const uploadRoutes = createUploadRoutes({ mediaDir, authorize, mediaScope });
