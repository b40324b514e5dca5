// node --test: the pure parts (no daemon, no disk): Range, polling, names, paths, schema.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { contentDisposition } from "../src/download.js";
import { HTTP_STATUS, httpStatusFor } from "../src/errors.js";
import { isPlainRelative } from "../src/media.js";
import { pollDelayMs } from "../src/poll.js";
import { ifRangeMatches, parseRange } from "../src/range.js";
import { safeUploadName } from "../src/uploads.js";
import { checkEditorBody, pointerToPath } from "../src/validate.js";

describe("parseRange (size 1000)", () => {
  const cases: [string | null, ReturnType<typeof parseRange>][] = [
    [null, { kind: "full" }],
    ["bytes=0-499", { kind: "partial", start: 0, end: 499 }],
    ["bytes=500-", { kind: "partial", start: 500, end: 999 }],
    ["bytes=-200", { kind: "partial", start: 800, end: 999 }],
    ["bytes=-5000", { kind: "partial", start: 0, end: 999 }], // suffix longer than the file
    ["bytes=900-5000", { kind: "partial", start: 900, end: 999 }], // clamped
    ["bytes=1000-", { kind: "unsatisfiable" }],
    ["bytes=-0", { kind: "unsatisfiable" }],
    ["bytes=0-1,5-9", { kind: "full" }], // several: the whole file
    ["bytes=9-3", { kind: "full" }], // invalid: ignored
    ["items=0-1", { kind: "full" }], // another unit: ignored
    ["bytes=abc", { kind: "full" }],
    [" Bytes = 10-19", { kind: "partial", start: 10, end: 19 }],
  ];
  for (const [header, expected] of cases) {
    test(String(header), () => assert.deepEqual(parseRange(header, 1000), expected));
  }
  test("an empty file has no satisfiable range", () => {
    assert.deepEqual(parseRange("bytes=0-", 0), { kind: "unsatisfiable" });
    assert.deepEqual(parseRange("bytes=-1", 0), { kind: "unsatisfiable" });
  });
  test("If-Range", () => {
    const date = "Mon, 30 Nov 2026 07:49:10 GMT";
    assert.ok(ifRangeMatches(null, '"a"', date));
    assert.ok(ifRangeMatches('"a"', '"a"', date));
    assert.ok(!ifRangeMatches('"b"', '"a"', date));
    assert.ok(!ifRangeMatches('W/"a"', '"a"', date));
    assert.ok(ifRangeMatches(date, '"a"', date));
    assert.ok(!ifRangeMatches("Sun, 29 Nov 2026 07:49:10 GMT", '"a"', date));
  });
});

test("pollDelayMs backs off as the status suggests", () => {
  assert.equal(pollDelayMs({ state: "submitted", jobsAhead: 0 }), 1000);
  assert.equal(pollDelayMs({ state: "queued", jobsAhead: 4 }), 3000);
  assert.equal(pollDelayMs({ state: "queued", jobsAhead: 1000 }), 10_000);
  assert.equal(pollDelayMs({ state: "running", etaSeconds: null }), 1000);
  assert.equal(pollDelayMs({ state: "running", etaSeconds: 1 }), 500);
  assert.equal(pollDelayMs({ state: "running", etaSeconds: 20 }), 2000);
  assert.equal(pollDelayMs({ state: "running", etaSeconds: 3600 }), 5000);
  assert.equal(pollDelayMs({ state: "running", etaSeconds: 3600, cancelRequested: true }), 500);
  for (const state of ["succeeded", "failed", "cancelled", "rejected"]) assert.equal(pollDelayMs({ state }), null);
});

test("HTTP status of codes", () => {
  assert.equal(httpStatusFor("source_too_short"), 422);
  assert.equal(httpStatusFor("something_new"), 500);
  assert.equal(HTTP_STATUS.invalid_request, 400);
});

test("Content-Disposition: an ASCII fallback and the UTF-8 name", () => {
  assert.equal(contentDisposition("attachment", "cut.mp4"), `attachment; filename="cut.mp4"; filename*=UTF-8''cut.mp4`);
  assert.equal(
    contentDisposition("inline", 'Café "final".mp4'),
    `inline; filename="Caf_ _final_.mp4"; filename*=UTF-8''Caf%C3%A9%20%22final%22.mp4`,
  );
});

test("names and paths from users", () => {
  assert.equal(safeUploadName("cam 1.mp4"), "cam 1.mp4");
  assert.equal(safeUploadName("../../etc/passwd"), "passwd");
  assert.equal(safeUploadName("C:\\clips\\a.mov"), "a.mov");
  assert.equal(safeUploadName(".hidden"), null);
  assert.equal(safeUploadName(""), null);
  assert.equal(safeUploadName("x".repeat(201)), null);
  assert.equal(safeUploadName("ça$va.mp4"), "_a_va.mp4");
  for (const ok of ["a.mp4", "users/alice", "a/b/c.mov"]) assert.ok(isPlainRelative(ok), ok);
  for (const bad of ["", "/abs", "../x", "a/../b", "a//b", "./a", "a\\b", "s3://bucket/x", "a\0b"]) {
    assert.ok(!isPlainRelative(bad), bad);
  }
});

test("schema errors name the editor's fields", () => {
  assert.equal(pointerToPath("/switches/3/at"), "switches[3].at");
  assert.equal(pointerToPath("", "angles"), "angles");
  assert.equal(pointerToPath("/output/size", "height"), "output.size.height");
  assert.equal(pointerToPath(""), "(body)");
  const ok = { angles: [{ id: "a", source: "a.mp4" }], switches: [{ at: 0, angle: "a" }], end: 1 };
  assert.deepEqual(checkEditorBody(ok), []);
  assert.deepEqual(checkEditorBody("text").map((e) => e.path), ["(body)"]);
  const errors = checkEditorBody({ ...ok, output: { size: { mode: "height", height: -5 } }, priority: "high" });
  const paths = errors.map((e) => e.path);
  assert.ok(paths.includes("output.size.height"), JSON.stringify(errors));
  assert.ok(paths.includes("priority"), JSON.stringify(errors));
});
