#!/usr/bin/env node
// Drive the example app in a real headless Chromium (Debian's, through playwright-core; no
// downloaded browser) against a real daemon: upload two angles, a bad config shows its error,
// a queued export is cancelled, an export runs with progress, downloads, plays and seeks.
//
// Environment (tests/test_web_app.py sets it): BASE_URL, CLIPS (two paths, ":"-separated),
// SPOOL_DIR (the daemon runs with max_jobs 1: a job written here holds its only slot so an
// export waits in the inbox), CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line of figures; exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL ?? "http://127.0.0.1:3000";
const CLIPS = (process.env.CLIPS ?? "").split(":").filter(Boolean);
const SPOOL = process.env.SPOOL_DIR ?? "";

/** Drop a file into the spool's inbox the documented way: a dot-file, then a rename. */
async function spoolWrite(name, text) {
  const tmp = path.join(SPOOL, "inbox", `.${name}.tmp`);
  await writeFile(tmp, text);
  await rename(tmp, path.join(SPOOL, "inbox", name));
}

async function spoolState(jobId) {
  try {
    return JSON.parse(await readFile(path.join(SPOOL, "jobs", jobId, "status.json"), "utf8")).state;
  } catch {
    return null;
  }
}
const BOUND_MS = 90_000;

const bound = setTimeout(() => {
  console.error(`browser test: over ${BOUND_MS} ms`);
  process.exit(2);
}, BOUND_MS);

const started = Date.now();
const figures = {};
const mark = (name) => (figures[name] = Date.now() - started);

const profile = await mkdtemp(path.join(os.tmpdir(), "spooler-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  acceptDownloads: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  const ranges = [];
  page.on("response", (response) => {
    if (response.url().includes("/download")) ranges.push(response.status());
  });
  const log = [];
  page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));

  await page.goto(BASE);
  mark("loaded");

  // 1. Upload two angles through tus; each lands in users/demo/uploads/ when complete.
  await page.setInputFiles('[data-testid="files"]', CLIPS);
  for (const clip of CLIPS) {
    await page.waitForSelector(`li[data-name="${path.basename(clip)}"][data-source^="uploads/"]`);
  }
  mark("uploaded");

  // 2. A bad config: an unknown angle comes back as 400 with the editor's path.
  const good = await page.inputValue('[data-testid="timeline"]');
  const bad = JSON.parse(good);
  bad.switches.push({ at: 0.5, angle: "drone" });
  await page.fill('[data-testid="timeline"]', JSON.stringify(bad));
  await page.click('[data-spooler="start"]');
  await page.waitForSelector('[data-spooler="error"][data-code="invalid_edit"]');
  await page.waitForSelector(`[data-spooler="error"] li[data-path="switches[${bad.switches.length - 1}].angle"]`);
  // An end past the sources: the daemon's verdict, 422 with its code.
  await page.fill('[data-testid="timeline"]', JSON.stringify({ ...JSON.parse(good), end: 30 }));
  await page.click('[data-spooler="start"]');
  await page.waitForSelector('[data-spooler="error"][data-code="source_too_short"]');
  mark("errors_shown");

  // 3. The daemon's slot is taken: the export waits in the inbox; cancel it.
  const blocker = `blocker-${Date.now()}`;
  await spoolWrite(`${blocker}.json`, JSON.stringify({ kind: "testpattern", durationSeconds: 60, width: 32, height: 32, realtime: true }));
  while ((await spoolState(blocker)) !== "running") await page.waitForTimeout(50);
  await page.fill('[data-testid="timeline"]', good);
  await page.click('[data-spooler="start"]');
  await page.waitForSelector('[data-spooler="job"][data-state="submitted"]');
  await page.click('[data-spooler="cancel"]');
  await page.waitForSelector('[data-spooler="job"][data-state="cancelled"]');
  mark("cancelled");

  // Free the slot: cancel the blocker through the spool, as any client may.
  await spoolWrite(`${blocker}.cancel`, "");

  // 4. Export for real: progress shown until succeeded.
  const cancelledId = await page.getAttribute('[data-spooler="job"]', "data-job-id");
  await page.click('[data-spooler="start"]');
  await page.waitForSelector(`[data-spooler="job"]:not([data-job-id="${cancelledId}"])`);
  const seen = new Set();
  const deadline = Date.now() + 45_000;
  for (;;) {
    const state = await page.getAttribute('[data-spooler="job"]', "data-state");
    const progress = await page.getAttribute('[data-spooler="progress"]', "value");
    seen.add(`${state}:${progress}`);
    if (state === "succeeded") break;
    assert.ok(!["failed", "rejected", "cancelled"].includes(state), `export ended ${state}: ${[...seen]}`);
    assert.ok(Date.now() < deadline, `no success within 45 s: ${[...seen]}`);
    await page.waitForTimeout(100);
  }
  assert.equal(await page.getAttribute('[data-spooler="progress"]', "value"), "1");
  figures.states = [...seen];
  mark("succeeded");

  // 5. Download: the real file name, every byte.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click('[data-spooler="download"]')]);
  assert.equal(download.suggestedFilename(), "my-export.mp4");
  const saved = path.join(profile, "saved.mp4");
  await download.saveAs(saved);
  const href = await page.getAttribute('[data-spooler="download"]', "href");
  const head = await page.request.head(new URL(href, BASE).href);
  assert.equal(head.status(), 200);
  // Next.js drops Content-Length from a HEAD answer; a one-byte range names the total size.
  const probe = await page.request.get(new URL(href, BASE).href, { headers: { Range: "bytes=0-0" } });
  assert.equal(probe.status(), 206, JSON.stringify(probe.headers()));
  const total = Number(/\/(\d+)$/.exec(probe.headers()["content-range"] ?? "")?.[1]);
  assert.equal((await stat(saved)).size, total);
  figures.headHeaders = head.headers();
  figures.outputBytes = (await stat(saved)).size;
  mark("downloaded");

  // 6. Play and seek in a <video>: the route answers Range requests with 206.
  await page.waitForSelector('video[data-testid="player"]');
  const played = await page.evaluate(async () => {
    const video = document.querySelector('video[data-testid="player"]');
    const once = (name) =>
      new Promise((resolve, reject) => {
        video.addEventListener(name, () => resolve(true), { once: true });
        video.addEventListener("error", () => reject(new Error(`video error ${video.error?.code}`)), { once: true });
      });
    if (video.readyState < 1) await once("loadedmetadata");
    const duration = video.duration;
    video.currentTime = duration / 2;
    await once("seeked");
    return { duration, currentTime: video.currentTime };
  });
  assert.ok(played.duration > 1, JSON.stringify(played));
  assert.ok(Math.abs(played.currentTime - played.duration / 2) < 0.5, JSON.stringify(played));
  assert.ok(ranges.includes(206), `no 206 among the download answers: ${ranges}`);
  figures.downloadStatuses = ranges;
  mark("seeked");
  console.log(JSON.stringify(figures));
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
  clearTimeout(bound);
}
