/**
 * Serve one output file: Range / If-Range / HEAD, its real name and MIME type.
 *
 * The file is opened before anything is answered and streamed from that descriptor, so a
 * DELETE that removes the job folder mid-download does not cut the answer short (the data
 * stays readable until the descriptor closes), and a 200 is never sent for a file that is
 * gone. Opened with O_NOFOLLOW | O_NONBLOCK: the spool is untrusted input.
 */
import { constants as fsConstants, promises as fs } from "node:fs";
import { Readable } from "node:stream";

import { errorResponse } from "./errors.js";
import { ifRangeMatches, parseRange } from "./range.js";

export interface ServeOptions {
  /** Absolute path of the output file. */
  path: string;
  /** Name the browser saves it under. */
  name: string;
  mimeType: string | null;
  /** `attachment` (a download link) or `inline` (a `<video src>`). */
  disposition: "attachment" | "inline";
}

/** RFC 6266 / 8187: an ASCII fallback and the UTF-8 name. */
export function contentDisposition(kind: "attachment" | "inline", name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_");
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

export async function serveFile(request: Request, options: ServeOptions): Promise<Response> {
  const flags = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(/* turbopackIgnore: true */ options.path, flags);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return errorResponse("not_found", "the output is gone (the job was deleted)");
    throw err;
  }
  let streaming = false;
  try {
    const info = await handle.stat();
    if (!info.isFile()) return errorResponse("not_found", "the output is not a regular file");
    const size = info.size;
    const etag = `"${info.ino.toString(36)}-${size.toString(36)}-${Math.floor(info.mtimeMs).toString(36)}"`;
    const lastModified = new Date(Math.floor(info.mtimeMs / 1000) * 1000).toUTCString();
    const headers = new Headers({
      "Accept-Ranges": "bytes",
      "Content-Type": options.mimeType ?? "application/octet-stream",
      "Content-Disposition": contentDisposition(options.disposition, options.name),
      ETag: etag,
      "Last-Modified": lastModified,
      "Cache-Control": "private, no-cache",
    });
    const rangeHeader = ifRangeMatches(request.headers.get("if-range"), etag, lastModified)
      ? request.headers.get("range")
      : null;
    const range = parseRange(rangeHeader, size);
    if (range.kind === "unsatisfiable") {
      headers.set("Content-Range", `bytes */${size}`);
      return errorResponse("range_not_satisfiable", `no byte of the range is within the file (${size} bytes)`, {
        headers,
      });
    }
    const start = range.kind === "partial" ? range.start : 0;
    const end = range.kind === "partial" ? range.end : size - 1;
    const status = range.kind === "partial" ? 206 : 200;
    headers.set("Content-Length", String(Math.max(0, end - start + 1)));
    if (range.kind === "partial") headers.set("Content-Range", `bytes ${start}-${end}/${size}`);
    if (request.method === "HEAD" || size === 0) return new Response(null, { status, headers });
    const stream = handle.createReadStream({ start, end, autoClose: true });
    streaming = true; // the stream owns the descriptor now and closes it at its end or abort
    return new Response(Readable.toWeb(stream) as ReadableStream<Uint8Array>, { status, headers });
  } finally {
    if (!streaming) await handle.close();
  }
}
