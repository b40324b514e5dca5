/**
 * HTTP Range for one file (RFC 9110 §14): pure, so every edge case is a table test.
 *
 * One range → 206; several ranges → the whole file (200): a server may ignore Range, and a
 * `<video>` element asks for one at a time; none satisfiable → 416.
 */
export type RangeAnswer =
  | { kind: "full" }
  | { kind: "partial"; start: number; end: number } // inclusive
  | { kind: "unsatisfiable" };

export function parseRange(header: string | null, size: number): RangeAnswer {
  if (header === null) return { kind: "full" };
  const match = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!match?.[1]) return { kind: "full" }; // another unit, or garbage: ignore it
  const specs = match[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (specs.length !== 1) return { kind: "full" }; // none, or several: the whole file
  const spec = /^(\d*)-(\d*)$/.exec(specs[0] ?? "");
  if (!spec) return { kind: "full" };
  const [, first = "", last = ""] = spec;
  if (first === "" && last === "") return { kind: "full" };
  if (first === "") {
    // suffix: the last N bytes
    const length = Number(last);
    if (length === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "partial", start: Math.max(0, size - length), end: size - 1 };
  }
  const start = Number(first);
  if (start >= size) return { kind: "unsatisfiable" };
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  if (end < start) return { kind: "full" }; // invalid range-spec: ignore the header
  return { kind: "partial", start, end };
}

/**
 * If-Range: serve the range only when the validator still matches (a strong ETag, or the
 * exact Last-Modified date); else the client gets the whole, current file.
 */
export function ifRangeMatches(ifRange: string | null, etag: string, lastModified: string): boolean {
  if (ifRange === null) return true;
  const value = ifRange.trim();
  if (value.startsWith("W/")) return false; // weak validators never match If-Range
  if (value.startsWith('"')) return value === etag;
  return value === lastModified;
}
