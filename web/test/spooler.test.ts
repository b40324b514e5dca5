// node --test: the TypeScript module against a REAL daemon (`python -m spooler run`) on a
// temporary spool. The Python interpreter is $SPOOLER_PYTHON, else ../.venv/bin/python,
// else python3 (it must have the spooler package installed).
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  cancelJob,
  editorPath,
  normaliseTimeline,
  isFinal,
  outputFile,
  readStatus,
  removeJob,
  spoolCapabilities,
  SpoolerError,
  spoolPaths,
  submitJob,
  switchesToJob,
  waitForJob,
  type EditorTimeline,
  type JobFile,
  type StatusFile,
} from "../src/spooler.js";
import { pythonBinary, spoolerEnv, waitUntil } from "./daemon.js";

const tiny: JobFile = { kind: "testpattern", durationSeconds: 0.5, width: 32, height: 32 };

describe("without a daemon", () => {
  let spool: string;
  before(async () => {
    spool = await fs.mkdtemp(path.join(os.tmpdir(), "spooler-web-offline-"));
  });
  after(async () => {
    await fs.rm(spool, { recursive: true, force: true });
  });

  test("submit writes the job atomically and leaves no temporary file", async () => {
    const jobId = await submitJob(spool, tiny, { jobId: "offline-1" });
    assert.equal(jobId, "offline-1");
    const inbox = spoolPaths(spool).inbox;
    assert.deepEqual(await fs.readdir(inbox), ["offline-1.json"]);
    assert.deepEqual(JSON.parse(await fs.readFile(path.join(inbox, "offline-1.json"), "utf8")), tiny);
    assert.deepEqual(await readStatus(spool, jobId), {
      jobId,
      state: "submitted",
      cancelRequested: false,
      jobsAhead: 0,
      metadata: {},
    });
  });

  test("a new id is generated, existing and invalid ids are refused", async () => {
    const jobId = await submitJob(spool, tiny);
    assert.match(jobId, /^[0-9a-f-]{36}$/);
    await assert.rejects(submitJob(spool, tiny, { jobId }), (e: SpoolerError) => e.code === "job_exists");
    await assert.rejects(submitJob(spool, tiny, { jobId: "../x" }), (e: SpoolerError) => e.code === "invalid_id");
    await assert.rejects(readStatus(spool, "a.b"), SpoolerError);
  });

  test("unknown jobs read as null; markers land in the inbox", async () => {
    assert.equal(await readStatus(spool, "never-submitted"), null);
    await cancelJob(spool, "offline-1");
    await removeJob(spool, "offline-1");
    const names = (await fs.readdir(spoolPaths(spool).inbox)).sort();
    assert.ok(names.includes("offline-1.cancel") && names.includes("offline-1.delete"));
    assert.ok(!names.some((n) => n.startsWith(".")), `temporary files left: ${names}`);
  });
});

describe("switchesToJob", () => {
  const angles = [
    { id: "wide", source: "shoot/wide.mp4" },
    { id: "close", source: "shoot/close.mp4", syncOffset: 1.25 },
    { id: "side", source: "shoot/side.mp4", syncOffset: -0.5 },
  ];

  test("sorts, merges same-instant points and drops no-op switches", () => {
    const job = switchesToJob({
      angles,
      end: 12,
      switches: [
        { at: 6, angle: "side" },
        { at: 0, angle: "wide" },
        { at: 3, angle: "close" },
        { at: 4, angle: "close" }, // already on screen
        { at: 6, angle: "wide" }, // same instant as "side": placed later, wins
        { at: 9, angle: "close" },
        { at: 12, angle: "side" }, // at the end: nothing to show
      ],
      metadata: { projectId: "p-1" },
    });
    assert.deepEqual(job.switches, [
      { at: 0, angle: "wide" },
      { at: 3, angle: "close" },
      { at: 6, angle: "wide" },
      { at: 9, angle: "close" },
    ]);
    assert.equal(job.kind, "export");
    assert.equal(job.end, 12);
    assert.deepEqual(job.metadata, { projectId: "p-1" });
    assert.equal(job.angles[1]?.syncOffset, 1.25);
  });

  test("carries every field the daemon accepts and maps error paths back", () => {
    const { job, switchIndex } = normaliseTimeline({
      angles,
      end: 10,
      switches: [
        { at: 5, angle: "side", transition: { type: "crossfade", duration: 0.5 } },
        { at: 0, angle: "wide" },
        { at: 2, angle: "close" },
      ],
      mode: "smart",
      poster: { at: 1, format: "webp" },
      transition: { type: "fadeblack", duration: 0.2 },
      storyboard: { interval: 2 },
      renditions: [{ name: "small", size: { mode: "height", height: 240 } }],
      watermark: { text: "draft", position: "top-left" },
    });
    assert.equal(job.mode, "smart");
    assert.deepEqual(job.poster, { at: 1, format: "webp" });
    assert.deepEqual(job.transition, { type: "fadeblack", duration: 0.2 });
    assert.deepEqual(job.storyboard, { interval: 2 });
    assert.equal(job.renditions?.[0]?.name, "small");
    assert.equal(job.watermark?.text, "draft");
    assert.deepEqual(job.switches?.[2], { at: 5, angle: "side", transition: { type: "crossfade", duration: 0.5 } });
    assert.deepEqual(switchIndex, [1, 2, 0]);
    assert.equal(editorPath("switches[2].transition.duration", switchIndex), "switches[0].transition.duration");
    assert.equal(editorPath("switches.0.at", switchIndex), "switches.1.at");
    assert.equal(editorPath("/switches/1/angle", switchIndex), "/switches/2/angle");
    assert.equal(editorPath("angles[2].source", switchIndex), "angles[2].source");
  });

  test("refuses what it cannot repair", () => {
    const bad: EditorTimeline[] = [
      { angles: [], switches: [{ at: 0, angle: "wide" }], end: 1 },
      { angles, switches: [{ at: 0, angle: "nope" }], end: 1 },
      { angles, switches: [{ at: 5, angle: "wide" }], end: 5 },
      { angles, switches: [{ at: Number.NaN, angle: "wide" }], end: 5 },
      { angles, switches: [{ at: 0, angle: "wide" }], end: 0 },
    ];
    for (const timeline of bad) {
      assert.throws(() => switchesToJob(timeline), (e: SpoolerError) => e.code === "invalid_edit" && e.errors.length > 0);
    }
    // Paths in the editor's terms: the index it sent, not the sorted one.
    assert.throws(
      () => switchesToJob({ angles, switches: [{ at: 3, angle: "wide" }, { at: 0, angle: "nope" }], end: 5 }),
      (e: SpoolerError) => e.errors[0]?.path === "switches[1].angle",
    );
  });

  test("the daemon's own validator accepts the job (spooler validate)", async () => {
    const job = switchesToJob({
      angles,
      end: 20.5,
      switches: [
        { at: 0, angle: "wide" },
        { at: 4.2, angle: "close" },
        { at: 9.8, angle: "side" },
        { at: 15, angle: "wide" },
      ],
      audio: { mode: "external", source: "shoot/mic.wav", offset: 0.75 },
      output: { container: "mp4", size: { mode: "height", height: 720 }, fileName: "final cut" },
      priority: 2,
    });
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "spooler-web-validate-"));
    try {
      const file = path.join(dir, "job.json");
      await fs.writeFile(file, JSON.stringify(job));
      const result = spawnSync(pythonBinary(), ["-m", "spooler", "validate", file], {
        encoding: "utf8",
        cwd: dir,
      });
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      assert.deepEqual(JSON.parse(result.stdout), { valid: true, kind: "export" });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe("against a running daemon", () => {
  let spool: string;
  let daemon: ChildProcess;
  let log = "";

  before(async () => {
    const base = await fs.mkdtemp(path.join(os.tmpdir(), "spooler-web-live-"));
    spool = path.join(base, "spool");
    const media = path.join(base, "media");
    await fs.mkdir(media);
    daemon = spawn(pythonBinary(), ["-m", "spooler", "run"], {
      cwd: base,
      env: spoolerEnv(spool, media),
      stdio: ["ignore", "pipe", "pipe"],
    });
    daemon.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
    daemon.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
    // Ready once its first heartbeat is on the spool.
    await waitUntil("the daemon's heartbeat", async () => {
      if (daemon.exitCode !== null) throw new Error(`daemon exited:\n${log}`);
      try {
        return (await fs.readdir(path.join(spool, "workers"))).some((n) => n.endsWith(".json"));
      } catch {
        return false;
      }
    });
  });

  after(async () => {
    if (daemon.exitCode === null) {
      const exited = new Promise((resolve) => daemon.once("exit", resolve));
      daemon.kill("SIGTERM");
      const timer = setTimeout(() => daemon.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    await fs.rm(path.dirname(spool), { recursive: true, force: true });
  });

  test("the daemon's heartbeat says what it accepts; an old or foreign one narrows it", async () => {
    const caps = await spoolCapabilities(spool);
    assert.equal(caps.daemons, 1);
    assert.deepEqual(caps.kinds, ["export", "proxy", "sync", "testpattern"]);
    assert.ok(caps.features.includes("status.cancelRequested"), caps.features.join(","));
    const workers = spoolPaths(spool).workers;
    const old = path.join(workers, "old-1-abcdef.json");
    await fs.writeFile(old, JSON.stringify({ workerId: "old-1-abcdef", state: "running" }));
    await fs.writeFile(path.join(workers, "junk.json"), "not json");
    try {
      assert.deepEqual(await spoolCapabilities(spool), { daemons: 2, kinds: [], features: [] });
    } finally {
      await fs.rm(old);
      await fs.rm(path.join(workers, "junk.json"));
    }
  });

  test("a testpattern job runs to succeeded and its output can be served", async () => {
    const jobId = await submitJob(spool, tiny);
    const seen = new Set<string>();
    const final = await waitForJob(spool, jobId, {
      timeoutMs: 30_000,
      onStatus: (s) => seen.add(s.state),
    });
    assert.equal(final.state, "succeeded", JSON.stringify(final));
    const status = final as StatusFile;
    assert.equal(status.jobId, jobId);
    assert.equal(status.kind, "testpattern");
    assert.equal(status.progress, 1);
    const main = outputFile(spool, status);
    assert.ok(main, "a main output");
    assert.equal(main.mimeType, "video/mp4");
    assert.equal((await fs.stat(main.path)).size, main.sizeBytes);
    assert.ok(isFinal(final.state));

    await removeJob(spool, jobId);
    await waitUntil("the job to be removed", async () => (await readStatus(spool, jobId)) === null, 15_000);
  });

  test("a running realtime job is cancelled", async () => {
    const jobId = await submitJob(spool, {
      kind: "testpattern",
      durationSeconds: 60,
      width: 32,
      height: 32,
      realtime: true,
    });
    await waitForJob(spool, jobId, {
      timeoutMs: 20_000,
      until: (s) => s.state === "running" && ((s as StatusFile).progress ?? 0) > 0,
    });
    const asked = Date.now();
    await cancelJob(spool, jobId);
    const final = await waitForJob(spool, jobId, { timeoutMs: 15_000 });
    assert.equal(final.state, "cancelled");
    assert.equal((final as StatusFile).error?.code, "cancelled");
    assert.ok(Date.now() - asked < 10_000, "cancelled within seconds");
  });

  test("an invalid job is rejected with a machine-readable error", async () => {
    const jobId = await submitJob(spool, { kind: "testpattern", durationSeconds: -1 } as JobFile);
    const final = (await waitForJob(spool, jobId, { timeoutMs: 20_000 })) as StatusFile;
    assert.equal(final.state, "rejected");
    assert.equal(final.error?.code, "invalid_job");
  });
});
