// The Node producer of the fleet tests (tests/test_fleet.py): reads one JSON command a line
// on stdin, writes one JSON event a line on stdout. Uses the built module (npm run build).
//   {"op":"submit","jobId":"a","job":{...}}   -> {"event":"submitted","jobId":"a","at":ms}
//   {"op":"cancel","jobId":"a"}               -> {"event":"cancel_sent","jobId":"a"}
//   {"op":"status","jobId":"a"}               -> {"event":"status","jobId":"a","view":{...}}
//   {"op":"bulk","jobs":[{"jobId","job"}...]} -> {"event":"bulk_submitted","count":n}
//   {"op":"close"}                            -> exits
// QueueEvents are forwarded as {"event":"active"|"progress"|"completed"|"failed",...,"at":ms}.
import { createInterface } from "node:readline";

import { bullmqExports, jobOptions } from "../dist/src/bullmq.js";

const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
const exportsClient = bullmqExports({ connection, queueName: process.env.QUEUE ?? "exports" });
const events = exportsClient.events();
const say = (obj) => process.stdout.write(JSON.stringify({ ...obj, at: Date.now() }) + "\n");

events.on("active", ({ jobId }) => say({ event: "active", jobId }));
events.on("progress", ({ jobId, data }) => say({ event: "progress", jobId, data }));
events.on("completed", ({ jobId, returnvalue }) => say({ event: "completed", jobId, returnvalue }));
events.on("failed", ({ jobId, failedReason }) => say({ event: "failed", jobId, failedReason }));
events.on("removed", ({ jobId }) => say({ event: "removed", jobId }));
events.on("error", (err) => say({ event: "error", message: String(err) }));
await events.waitUntilReady();
say({ event: "ready" });

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "submit") {
      await exportsClient.submit(cmd.job, cmd.jobId);
      say({ event: "submitted", jobId: cmd.jobId });
    } else if (cmd.op === "bulk") {
      await exportsClient.queue.addBulk(
        cmd.jobs.map(({ jobId, job }) => ({ name: job.kind, data: job, opts: jobOptions(jobId, job) })),
      );
      say({ event: "bulk_submitted", count: cmd.jobs.length });
    } else if (cmd.op === "cancel") {
      await exportsClient.cancel(cmd.jobId);
      say({ event: "cancel_sent", jobId: cmd.jobId });
    } else if (cmd.op === "status") {
      say({ event: "status", jobId: cmd.jobId, view: await exportsClient.status(cmd.jobId) });
    } else if (cmd.op === "close") {
      break;
    }
  } catch (err) {
    say({ event: "command_failed", op: cmd.op, jobId: cmd.jobId, message: String(err) });
  }
}
await events.close();
await exportsClient.close();
