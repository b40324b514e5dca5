/**
 * The sources an export names, checked against the user's media scope before it is
 * submitted: a plain relative path, inside the user's folder once symlinks are resolved,
 * an existing regular file. The job then names them relative to the media root, which is
 * the daemon's media root (the daemon checks again: this is for a clear, early answer).
 */
import { promises as fs } from "node:fs";
import path from "node:path";

import type { FieldError } from "./validate.js";
import type { ExportJob } from "./types.js";

export interface SourceRef {
  /** Editor path of the field: `angles[1].source`, `audio.source`, `watermark.image`. */
  field: string;
  value: string;
  set: (value: string) => void;
}

/** Every media path field of an export job (the ones the daemon resolves in media_roots). */
export function sourceRefs(job: ExportJob): SourceRef[] {
  const refs: SourceRef[] = job.angles.map((angle, i) => ({
    field: `angles[${i}].source`,
    value: angle.source,
    set: (v: string) => (angle.source = v),
  }));
  const audio = job.audio;
  if (audio && audio.mode === "external") {
    refs.push({ field: "audio.source", value: audio.source, set: (v) => (audio.source = v) });
  }
  const watermark = job.watermark;
  if (watermark && typeof watermark.image === "string") {
    refs.push({ field: "watermark.image", value: watermark.image, set: (v) => (watermark.image = v) });
  }
  return refs;
}

/** A user's media scope must itself be a plain relative path ("" is the whole root). */
export function isPlainRelative(p: string): boolean {
  if (p === "") return false;
  if (p.includes("\0") || p.includes("\\") || p.startsWith("/")) return false;
  if (/^[a-z][a-z0-9+.-]*:/i.test(p)) return false; // a URL
  return p.split("/").every((part) => part !== ".." && part !== "." && part !== "");
}

export type ScopeProblem = FieldError & { code: "source_not_allowed" | "source_missing" };

/**
 * Check the job's sources inside `mediaDir/scope` and rewrite them relative to mediaDir.
 * Returns the problems (empty: the job was rewritten in place).
 */
export async function scopeSources(job: ExportJob, mediaDir: string, scope: string): Promise<ScopeProblem[]> {
  if (scope !== "" && !isPlainRelative(scope)) throw new Error(`media scope ${JSON.stringify(scope)} is not a plain relative path`);
  const scopeDir = path.resolve(mediaDir, scope);
  let realScope: string;
  try {
    realScope = await fs.realpath(/* turbopackIgnore: true */ scopeDir);
  } catch {
    realScope = scopeDir; // no folder yet: every source is missing
  }
  const problems: ScopeProblem[] = [];
  const refs = sourceRefs(job);
  for (const ref of refs) {
    if (!isPlainRelative(ref.value)) {
      problems.push({ path: ref.field, code: "source_not_allowed", message: "not a plain relative path inside your media folder" });
      continue;
    }
    const full = path.join(scopeDir, ref.value);
    try {
      const info = await fs.lstat(/* turbopackIgnore: true */ full);
      const real = await fs.realpath(/* turbopackIgnore: true */ full);
      if (!info.isFile() || !real.startsWith(realScope + path.sep)) {
        problems.push({ path: ref.field, code: "source_not_allowed", message: "not a regular file inside your media folder" });
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push(
        code === "ENOENT" || code === "ENOTDIR"
          ? { path: ref.field, code: "source_missing", message: `no file ${ref.value} in your media folder` }
          : { path: ref.field, code: "source_not_allowed", message: `cannot read ${ref.value} (${code ?? "error"})` },
      );
    }
  }
  if (problems.length === 0) {
    for (const ref of refs) ref.set(scope === "" ? ref.value : `${scope}/${ref.value}`);
  }
  return problems;
}
