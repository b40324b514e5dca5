/**
 * Resumable uploads into the user's media folder: the tus protocol (tus.io) through
 * @tus/server and @tus/file-store, so Uppy, tus-js-client or any tus client can upload and
 * resume large camera files.
 *
 *   // app/api/upload/[[...path]]/route.ts
 *   export const { POST, PATCH, HEAD, DELETE, OPTIONS } = createUploadRoutes({ mediaDir, authorize, mediaScope });
 *
 * Parts are written under `stagingDir` (default `<mediaDir>/.uploads`, same filesystem) and
 * each file is moved into `<mediaDir>/<scope>/<folder>/<name>` only once complete, without
 * replacing an existing file: an ingest watcher on the media folder sees finished files only.
 * The finishing response names the new source in the `Spooler-Source` header (relative to
 * the user's folder: what an export's `angles[].source` takes).
 */
import { promises as fs } from "node:fs";
import path from "node:path";

import { FileStore } from "@tus/file-store";
import { Server, type Upload } from "@tus/server";

import { isPlainRelative } from "./media.js";

export interface UploadRoutesOptions {
  mediaDir: string;
  /** true: go on; false: 403; a Response: its status and body (e.g. 401). */
  authorize: (request: Request, target: { action: "upload"; uploadId: string | null }) => boolean | Response | Promise<boolean | Response>;
  /** The user's folder relative to mediaDir ("" = all of it). */
  mediaScope?: (request: Request) => string | Promise<string>;
  /** Where the routes are mounted. Default "/api/upload". */
  basePath?: string;
  /** Folder inside the user's scope the files land in. Default "uploads". */
  folder?: string;
  /** Parts in progress. Default `<mediaDir>/.uploads`: must be on the same filesystem. */
  stagingDir?: string;
  /** Largest file. Default 20 GiB. */
  maxSizeBytes?: number;
}

export type UploadHandler = (request: Request) => Promise<Response>;

export interface UploadRoutes {
  POST: UploadHandler;
  PATCH: UploadHandler;
  HEAD: UploadHandler;
  DELETE: UploadHandler;
  OPTIONS: UploadHandler;
  /** The tus server, for its events (EVENTS.POST_FINISH, ...). */
  server: Server;
}

/** A file name a user may give an upload: one plain segment, no leading dot, no control. */
export function safeUploadName(name: string | null | undefined): string | null {
  if (!name) return null;
  const base = name.split(/[\\/]/).pop() ?? "";
  const cleaned = base.replace(/[^A-Za-z0-9._ -]/g, "_").trim();
  if (cleaned === "" || cleaned.startsWith(".") || cleaned.length > 200) return null;
  return cleaned;
}

/** What the tus hooks throw to refuse a request: it becomes the HTTP answer. */
function refusal(status: number, code: string, message: string) {
  return { status_code: status, body: JSON.stringify({ error: { code, message } }) };
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(/* turbopackIgnore: true */ p);
    return true;
  } catch {
    return false;
  }
}

/** Move a finished part into place without replacing anything (link + unlink is atomic). */
async function publish(staged: string, target: string): Promise<void> {
  const folder = path.dirname(target);
  await fs.mkdir(/* turbopackIgnore: true */ folder, { recursive: true, mode: 0o2775 });
  try {
    await fs.link(/* turbopackIgnore: true */ staged, /* turbopackIgnore: true */ target);
    await fs.unlink(/* turbopackIgnore: true */ staged);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw err;
    // A share without hard links: check, then rename (a small window, said in the docs).
    if (await exists(target)) throw Object.assign(new Error("exists"), { code: "EEXIST" });
    await fs.rename(/* turbopackIgnore: true */ staged, /* turbopackIgnore: true */ target);
  }
}

export function createUploadRoutes(options: UploadRoutesOptions): UploadRoutes {
  const basePath = (options.basePath ?? "/api/upload").replace(/\/+$/, "");
  const folder = options.folder ?? "uploads";
  if (!isPlainRelative(folder)) throw new Error(`upload folder ${JSON.stringify(folder)} is not a plain relative path`);
  const stagingDir = options.stagingDir ?? path.join(options.mediaDir, ".uploads");
  const scopeOf = async (request: Request) => {
    const scope = options.mediaScope ? await options.mediaScope(request) : "";
    if (scope !== "" && !isPlainRelative(scope)) throw refusal(500, "internal_error", "bad media scope");
    return scope;
  };
  const targetOf = (scope: string, name: string) => path.join(options.mediaDir, scope, folder, name);

  async function check(request: Request, uploadId: string | null): Promise<void> {
    const verdict = await options.authorize(request, { action: "upload", uploadId });
    if (verdict instanceof Response) throw { status_code: verdict.status, body: await verdict.text() };
    if (!verdict) throw refusal(403, "forbidden", "not allowed to upload");
  }

  const server: Server = new Server({
    path: basePath,
    datastore: new FileStore({ directory: stagingDir }),
    relativeLocation: true,
    maxSize: options.maxSizeBytes ?? 20 * 1024 ** 3,
    // An upload in progress can be resumed but never read back through this route.
    disableTerminationForFinishedUploads: true,
    async onUploadCreate(request: Request, upload: Upload) {
      await check(request, null);
      const scope = await scopeOf(request);
      const name = safeUploadName(upload.metadata?.filename ?? upload.metadata?.name);
      if (!name) throw refusal(400, "invalid_request", "Upload-Metadata needs a usable filename");
      if (await exists(targetOf(scope, name))) throw refusal(409, "file_exists", `${folder}/${name} already exists`);
      // Set by the server, whatever the client sent: who may resume it, where it goes.
      return { metadata: { ...upload.metadata, filename: name, spoolerScope: scope } };
    },
    async onIncomingRequest(request: Request, uploadId: string) {
      await check(request, uploadId);
      let upload: Upload;
      try {
        upload = await server.datastore.getUpload(uploadId);
      } catch {
        return; // unknown id: the handler answers 404
      }
      if ((upload.metadata?.spoolerScope ?? "") !== (await scopeOf(request))) {
        throw refusal(403, "forbidden", "this upload belongs to another user");
      }
    },
    async onUploadFinish(_request: Request, upload: Upload) {
      const scope = upload.metadata?.spoolerScope ?? "";
      const name = upload.metadata?.filename ?? "";
      const staged = upload.storage?.path ?? path.join(stagingDir, upload.id);
      try {
        await publish(staged, targetOf(scope, name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") {
          throw refusal(409, "file_exists", `${folder}/${name} already exists`);
        }
        throw err;
      }
      await fs.rm(/* turbopackIgnore: true */ `${staged}.json`, { force: true });
      return { headers: { "Spooler-Source": `${folder}/${name}` } };
    },
  });

  const handle: UploadHandler = (request) => server.handleWeb(request);
  return { POST: handle, PATCH: handle, HEAD: handle, DELETE: handle, OPTIONS: handle, server };
}
