// node --test: createExportRoutes and createUploadRoutes called with real Requests, against a
// REAL daemon on a temporary spool and small clips made by the daemon's ffmpeg. Users are
// "alice" and "bob" (header x-user); each has a media folder users/<name>/.
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { HTTP_STATUS, type AnyErrorCode } from "../src/errors.js";
import { createExportRoutes, type ExportRoutes } from "../src/routes.js";
import { submitJob } from "../src/spooler.js";
import { createUploadRoutes } from "../src/uploads.js";
import { makeClip, startDaemon, waitUntil, type Daemon } from "./daemon.js";

const BASE = "http://127.0.0.1:3000/api/export";

function userOf(request: Request): string | null {
  const user = request.headers.get("x-user");
  return user && /^[a-z]+$/.test(user) ? user : null;
}

function makeRoutes(spoolDir: string, mediaDir: string, extra: Partial<Parameters<typeof createExportRoutes>[0]> = {}) {
  return createExportRoutes({
    spoolDir,
    mediaDir,
    verdictWaitMs: 4000, // a shared 2-core machine: the documented default is 1000
    authorize: (request, target) => {
      const user = userOf(request);
      if (!user) return new Response(JSON.stringify({ error: { code: "unauthorized", message: "log in" } }), { status: 401 });
      if (target.action === "submit" || !target.job) return true;
      return target.job.metadata?.owner === user;
    },
    mediaScope: (request) => `users/${userOf(request)}`,
    jobMetadata: (request) => ({ owner: userOf(request) }),
    ...extra,
  });
}

type Call = { user?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> };

async function call(routes: ExportRoutes, method: "GET" | "HEAD" | "POST" | "DELETE", suffix: string, options: Call = {}) {
  const headers = new Headers(options.headers);
  if (options.user !== null) headers.set("x-user", options.user ?? "alice");
  let body: string | undefined;
  if (options.raw !== undefined) body = options.raw;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers.set("content-type", "application/json");
  return routes[method](new Request(`${BASE}${suffix}`, { method, headers, body }));
}

async function errorOf(response: Response) {
  const body = (await response.json()) as { error: { code: string; message: string; details?: { errors?: { path: string; code: string }[] } } };
  return body.error;
}

const angles = [
  { id: "wide", source: "clip.mp4" },
  { id: "close", source: "clip.mp4", syncOffset: 0.5 },
];

// Unordered on purpose: the route normalises, error paths stay the editor's.
const good = {
  angles,
  switches: [
    { at: 0.8, angle: "close" },
    { at: 0, angle: "wide" },
  ],
  end: 1.2,
  output: { size: { mode: "height", height: 36 }, fileName: "my_cut" },
  metadata: { projectId: "p-1" },
};

async function waitState(routes: ExportRoutes, jobId: string, states: string[], timeoutMs = 30_000) {
  let last: Record<string, unknown> = {};
  await waitUntil(`${jobId} in ${states}`, async () => {
    const response = await call(routes, "GET", `/${jobId}/status`);
    last = (await response.json()) as Record<string, unknown>;
    return states.includes(String(last.state));
  }, timeoutMs);
  return last;
}

describe("export routes against a real daemon", () => {
  let base: string;
  let spool: string;
  let media: string;
  let daemon: Daemon;
  let routes: ExportRoutes;
  let doneJob: string;

  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), "spooler-routes-"));
    spool = path.join(base, "spool");
    media = path.join(base, "media");
    await fs.mkdir(path.join(media, "users", "alice"), { recursive: true });
    await fs.mkdir(path.join(media, "users", "bob"), { recursive: true });
    makeClip(path.join(media, "users", "alice", "clip.mp4"), 2);
    await fs.copyFile(path.join(media, "users", "alice", "clip.mp4"), path.join(media, "users", "bob", "other.mp4"));
    await fs.symlink(path.join(media, "users", "bob", "other.mp4"), path.join(media, "users", "alice", "link.mp4"));
    daemon = await startDaemon(base, spool, media);
    routes = makeRoutes(spool, media);
  });

  after(async () => {
    await daemon?.stop();
    await fs.rm(base, { recursive: true, force: true });
  });

  test("every error code has an HTTP status in the 4xx/5xx range", () => {
    for (const [code, status] of Object.entries(HTTP_STATUS) as [AnyErrorCode, number][]) {
      assert.ok(status >= 400 && status < 600, `${code} → ${status}`);
    }
  });

  test("submit: a valid timeline is accepted and runs to succeeded", async () => {
    const response = await call(routes, "POST", "", { body: good });
    assert.equal(response.status, 202, JSON.stringify(await response.clone().json()));
    const body = (await response.json()) as { jobId: string; statusUrl: string };
    assert.equal(response.headers.get("location"), `/api/export/${body.jobId}/status`);
    const final = await waitState(routes, body.jobId, ["succeeded", "failed", "rejected"]);
    assert.equal(final.state, "succeeded", JSON.stringify(final) + daemon.log().slice(-3000));
    assert.equal(final.progress, 1);
    assert.equal(final.step, "done");
    assert.equal(final.cancelRequested, false);
    assert.equal(final.pollAfterMs, null);
    assert.deepEqual(final.metadata, { projectId: "p-1", owner: "alice" });
    const outputs = final.outputs as { role: string; url: string; name: string }[];
    assert.equal(outputs[0]?.url, `/api/export/${body.jobId}/download`);
    assert.equal(outputs[0]?.name, "my_cut.mp4");
    doneJob = body.jobId;
  });

  test("submit: request errors → 400/401/413 with the editor's paths", async () => {
    let r = await call(routes, "POST", "", { body: good, user: null });
    assert.equal(r.status, 401);

    r = await call(routes, "POST", "", { raw: "{not json" });
    assert.equal(r.status, 400);
    assert.equal((await errorOf(r)).code, "invalid_json");

    r = await call(routes, "POST", "", { body: { switches: [], end: 1 } });
    assert.equal(r.status, 400);
    let error = await errorOf(r);
    assert.equal(error.code, "invalid_request");
    assert.ok(error.details?.errors?.some((e) => e.path === "angles" && e.code === "required"), JSON.stringify(error));

    r = await call(routes, "POST", "", {
      body: { ...good, switches: [{ at: 0, angle: "wide" }, { at: "soon", angle: "close" }], bogus: 1 },
    });
    error = await errorOf(r);
    assert.equal(r.status, 400);
    const paths = error.details?.errors?.map((e) => e.path) ?? [];
    assert.ok(paths.includes("switches[1].at"), JSON.stringify(error));
    assert.ok(paths.includes("bogus"), JSON.stringify(error));

    r = await call(routes, "POST", "", { body: { ...good, switches: [{ at: 0, angle: "wide" }, { at: 1, angle: "drone" }] } });
    error = await errorOf(r);
    assert.equal(r.status, 400);
    assert.equal(error.code, "invalid_edit");
    assert.deepEqual(error.details?.errors?.map((e) => e.path), ["switches[1].angle"]);

    r = await call(routes, "POST", "", { raw: JSON.stringify({ ...good, metadata: { pad: "x".repeat(300_000) } }) });
    assert.equal(r.status, 413);
    assert.equal((await errorOf(r)).code, "too_large");
  });

  test("submit: sources outside the user's scope → 403, missing → 422; nothing submitted", async () => {
    const cases: [string, number, string][] = [
      ["../bob/other.mp4", 403, "source_not_allowed"],
      ["/etc/passwd", 403, "source_not_allowed"],
      ["link.mp4", 403, "source_not_allowed"], // a symlink into bob's folder
      ["nope.mp4", 422, "source_missing"],
    ];
    for (const [source, status, code] of cases) {
      const r = await call(routes, "POST", "", { body: { ...good, angles: [angles[0], { id: "close", source }] } });
      const error = await errorOf(r);
      assert.equal(r.status, status, `${source}: ${JSON.stringify(error)}`);
      assert.equal(error.code, code);
      assert.deepEqual(error.details?.errors?.map((e) => e.path), ["angles[1].source"]);
    }
    // bob cannot name alice's clip: his scope has no clip.mp4
    const r = await call(routes, "POST", "", { body: good, user: "bob" });
    assert.equal(r.status, 422);
    assert.equal((await errorOf(r)).code, "source_missing");
    const inbox = await fs.readdir(path.join(spool, "inbox")).catch(() => []);
    assert.deepEqual(inbox.filter((n) => n.endsWith(".json")), []);
  });

  test("submit: the daemon's verdict comes back as 422 with its code (end past the source)", async () => {
    const r = await call(routes, "POST", "", { body: { ...good, end: 5 } });
    const error = await errorOf(r);
    assert.equal(r.status, 422, JSON.stringify(error));
    assert.equal(error.code, "source_too_short");
  });

  test("submit: a cross-field error from the daemon's model → 422 invalid_job", async () => {
    const r = await call(routes, "POST", "", { body: { ...good, range: { start: 1, end: 0.5 } } });
    const error = await errorOf(r);
    assert.equal(r.status, 422, JSON.stringify(error));
    assert.equal(error.code, "invalid_job");
  });

  test("status: unknown → 404, bad id → 400, another user's → 403, wrong method → 405", async () => {
    assert.equal((await call(routes, "GET", "/no-such-job/status")).status, 404);
    assert.equal((await call(routes, "GET", "/no-such-job/status", { user: null })).status, 401);
    assert.equal((await call(routes, "GET", `/${doneJob}/download`, { user: null })).status, 401);
    assert.equal((await call(routes, "GET", "/bad.id/status")).status, 400);
    const r = await call(routes, "GET", `/${doneJob}/status`, { user: "bob" });
    assert.equal(r.status, 403);
    assert.equal((await errorOf(r)).code, "forbidden");
    assert.equal((await call(routes, "GET", `/${doneJob}/download`, { user: "bob" })).status, 403);
    assert.equal((await call(routes, "POST", `/${doneJob}/cancel`, { user: "bob" })).status, 403);
    assert.equal((await call(routes, "DELETE", `/${doneJob}`, { user: "bob" })).status, 403);
    assert.equal((await call(routes, "DELETE", `/${doneJob}/status`)).status, 405);
    assert.equal((await call(routes, "GET", `/${doneJob}/status/extra`)).status, 404);
  });

  test("download: whole file, HEAD, name and type", async () => {
    const file = path.join(spool, "jobs", doneJob, "my_cut.mp4");
    const bytes = await fs.readFile(file);
    const r = await call(routes, "GET", `/${doneJob}/download?attachment`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "video/mp4");
    assert.equal(r.headers.get("accept-ranges"), "bytes");
    assert.equal(r.headers.get("content-length"), String(bytes.length));
    assert.match(r.headers.get("content-disposition") ?? "", /^attachment; filename="my_cut.mp4"; filename\*=UTF-8''my_cut.mp4$/);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(bytes));
    const head = await call(routes, "HEAD", `/${doneJob}/download`);
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(bytes.length));
    assert.match(head.headers.get("content-disposition") ?? "", /^inline;/);
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  test("download: Range edge cases", async () => {
    const bytes = await fs.readFile(path.join(spool, "jobs", doneJob, "my_cut.mp4"));
    const size = bytes.length;
    const get = (range: string, extra: Record<string, string> = {}) =>
      call(routes, "GET", `/${doneJob}/download`, { headers: { range, ...extra } });

    let r = await get("bytes=0-99");
    assert.equal(r.status, 206);
    assert.equal(r.headers.get("content-range"), `bytes 0-99/${size}`);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(bytes.subarray(0, 100)));

    r = await get("bytes=-100"); // suffix
    assert.equal(r.status, 206);
    assert.equal(r.headers.get("content-range"), `bytes ${size - 100}-${size - 1}/${size}`);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(bytes.subarray(size - 100)));

    r = await get("bytes=100-"); // open-ended
    assert.equal(r.status, 206);
    assert.equal(r.headers.get("content-length"), String(size - 100));
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(bytes.subarray(100)));

    r = await get(`bytes=10-${size + 1000}`); // end past the file: clamped
    assert.equal(r.status, 206);
    assert.equal(r.headers.get("content-range"), `bytes 10-${size - 1}/${size}`);
    await r.arrayBuffer();

    r = await get(`bytes=${size}-`); // out of range
    assert.equal(r.status, 416);
    assert.equal(r.headers.get("content-range"), `bytes */${size}`);
    assert.equal((await errorOf(r)).code, "range_not_satisfiable");

    r = await get("bytes=0-9,20-29"); // multi-range: the whole file
    assert.equal(r.status, 200);
    assert.equal((await r.arrayBuffer()).byteLength, size);

    const etag = r.headers.get("etag") ?? "";
    r = await get("bytes=0-9", { "if-range": etag });
    assert.equal(r.status, 206);
    await r.arrayBuffer();
    r = await get("bytes=0-9", { "if-range": '"stale"' });
    assert.equal(r.status, 200);
    assert.equal((await r.arrayBuffer()).byteLength, size);
  });

  test("download: an S3 output redirects to a URL presigned on demand", async () => {
    const s3 = makeRoutes(spool, media, {
      outputLocation: async (status, output) => `https://bucket.example/${status.jobId}/${output.path}?X-Amz-Signature=test`,
    });
    const r = await call(s3, "GET", `/${doneJob}/download`);
    assert.equal(r.status, 302);
    assert.equal(r.headers.get("location"), `https://bucket.example/${doneJob}/my_cut.mp4?X-Amz-Signature=test`);
  });

  test("download: not ready → 409; a running job's cancel → 202 then cancelled", async () => {
    const jobId = await submitJob(spool, {
      kind: "testpattern", durationSeconds: 60, width: 32, height: 32, realtime: true, metadata: { owner: "alice" },
    });
    await waitState(routes, jobId, ["running"]);
    const early = await call(routes, "GET", `/${jobId}/download`);
    assert.equal(early.status, 409);
    assert.equal((await errorOf(early)).code, "not_ready");
    const r = await call(routes, "POST", `/${jobId}/cancel`);
    assert.equal(r.status, 202);
    assert.equal(((await r.json()) as { cancelRequested: boolean }).cancelRequested, true);
    // The daemon says so before the end, and in the final status.
    await waitUntil("cancelRequested", async () => {
      const body = (await (await call(routes, "GET", `/${jobId}/status`)).json()) as Record<string, unknown>;
      return body.cancelRequested === true;
    });
    const final = await waitState(routes, jobId, ["cancelled"], 15_000);
    assert.equal((final.error as { code: string }).code, "cancelled");
    assert.equal(final.cancelRequested, true);
    const again = await call(routes, "POST", `/${jobId}/cancel`); // final: nothing to do
    assert.equal(again.status, 200);
  });

  test("DELETE during a download: the answer completes; then the job is 404", async () => {
    // A lossless 640x360 output: some 300 KB, so most of it is still unread at the delete.
    const big = { ...good, output: { size: { mode: "exact", width: 640, height: 360 }, crf: 0, preset: "ultrafast", fileName: "big" } };
    const submitted = await call(routes, "POST", "", { body: big });
    assert.equal(submitted.status, 202);
    const { jobId } = (await submitted.json()) as { jobId: string };
    assert.equal((await waitState(routes, jobId, ["succeeded", "failed"])).state, "succeeded");
    const bytes = await fs.readFile(path.join(spool, "jobs", jobId, "big.mp4"));
    assert.ok(bytes.length > 250_000, `output of ${bytes.length} bytes is too small for this test`);

    const r = await call(routes, "GET", `/${jobId}/download`);
    assert.equal(r.status, 200);
    const reader = r.body!.getReader();
    const chunks: Uint8Array[] = [];
    const first = await reader.read();
    if (first.value) chunks.push(first.value);
    const del = await call(routes, "DELETE", `/${jobId}`);
    assert.equal(del.status, 202);
    await waitUntil("the job folder to go", async () => {
      try {
        await fs.stat(path.join(spool, "jobs", jobId));
        return false;
      } catch {
        return true;
      }
    });
    const before = Buffer.concat(chunks).length;
    assert.ok(before < bytes.length / 2, `most of the file is read after the delete (${before} before)`);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    assert.ok(Buffer.concat(chunks).equals(bytes), "the whole file, as it was");
    assert.equal((await call(routes, "GET", `/${jobId}/status`)).status, 404);
    assert.equal((await call(routes, "GET", `/${jobId}/download`)).status, 404);
    assert.equal((await call(routes, "DELETE", `/${jobId}`)).status, 404);
  });
});

describe("a job still in the inbox (no daemon)", () => {
  let base: string;
  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), "spooler-routes-inbox-"));
  });
  after(async () => {
    await fs.rm(base, { recursive: true, force: true });
  });

  test("jobs ahead are counted from the inbox; cancel shows cancelRequested", async () => {
    const spool = path.join(base, "spool");
    const routes = makeRoutes(spool, base, { verdictWaitMs: 0 });
    const tiny = { kind: "testpattern" as const, durationSeconds: 1, metadata: { owner: "alice" } };
    await submitJob(spool, tiny, { jobId: "first" });
    await submitJob(spool, tiny, { jobId: "second" });
    await new Promise((resolve) => setTimeout(resolve, 20)); // distinct mtimes
    await submitJob(spool, tiny, { jobId: "third" });
    let body = (await (await call(routes, "GET", "/third/status")).json()) as Record<string, unknown>;
    assert.equal(body.state, "submitted");
    assert.equal(body.jobsAhead, 2);
    assert.equal(body.cancelRequested, false);
    assert.equal(body.pollAfterMs, 2000);
    assert.equal((await call(routes, "POST", "/third/cancel")).status, 202);
    body = (await (await call(routes, "GET", "/third/status")).json()) as Record<string, unknown>;
    assert.equal(body.cancelRequested, true);
    assert.equal((await call(routes, "GET", "/third/status", { user: "bob" })).status, 403);
  });
});

describe("tus uploads", () => {
  let base: string;
  let media: string;
  let uploads: ReturnType<typeof createUploadRoutes>;

  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), "spooler-uploads-"));
    media = path.join(base, "media");
    uploads = createUploadRoutes({
      mediaDir: media,
      authorize: (request) => (userOf(request) ? true : new Response("log in", { status: 401 })),
      mediaScope: (request) => `users/${userOf(request)}`,
    });
  });
  after(async () => {
    await fs.rm(base, { recursive: true, force: true });
  });

  const UP = "http://127.0.0.1:3000/api/upload";
  const tus = (user: string | null, extra: Record<string, string> = {}) => ({
    "Tus-Resumable": "1.0.0",
    ...(user ? { "x-user": user } : {}),
    ...extra,
  });
  const create = (user: string | null, name: string, length: number) =>
    uploads.POST(
      new Request(UP, {
        method: "POST",
        headers: tus(user, {
          "Upload-Length": String(length),
          "Upload-Metadata": `filename ${Buffer.from(name).toString("base64")}`,
        }),
      }),
    );
  const patch = (url: string, user: string, offset: number, data: Buffer) =>
    uploads.PATCH(
      new Request(url, {
        method: "PATCH",
        headers: tus(user, { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" }),
        body: data,
        duplex: "half",
      } as RequestInit),
    );

  test("a file appears in the user's folder only when complete", async () => {
    const data = Buffer.from("x".repeat(50_000) + "y".repeat(50_000));
    const created = await create("alice", "cam 1.mp4", data.length);
    assert.equal(created.status, 201, await created.clone().text());
    const url = new URL(created.headers.get("location") ?? "", UP).href;
    const target = path.join(media, "users", "alice", "uploads", "cam 1.mp4");

    let r = await patch(url, "alice", 0, data.subarray(0, 50_000));
    assert.equal(r.status, 204);
    await assert.rejects(fs.stat(target), "not visible while incomplete");

    r = await patch(url, "bob", 50_000, data.subarray(50_000)); // not bob's upload
    assert.equal(r.status, 403);

    r = await patch(url, "alice", 50_000, data.subarray(50_000));
    assert.equal(r.status, 204, await r.clone().text());
    assert.equal(r.headers.get("spooler-source"), "uploads/cam 1.mp4");
    assert.ok((await fs.readFile(target)).equals(data));
    const staged = await fs.readdir(path.join(media, ".uploads"));
    assert.deepEqual(staged, [], "nothing left in staging");
  });

  test("refusals: no user → 401, existing name → 409, a path in the name is flattened", async () => {
    assert.equal((await create(null, "a.mp4", 10)).status, 401);
    const r = await create("alice", "cam 1.mp4", 10);
    assert.equal(r.status, 409);
    const sneaky = await create("alice", "../../bob/evil.mp4", 4);
    assert.equal(sneaky.status, 201);
    const url = new URL(sneaky.headers.get("location") ?? "", UP).href;
    assert.equal((await patch(url, "alice", 0, Buffer.from("evil"))).status, 204);
    await fs.stat(path.join(media, "users", "alice", "uploads", "evil.mp4"));
    await assert.rejects(fs.stat(path.join(media, "users", "bob", "evil.mp4")));
  });
});
