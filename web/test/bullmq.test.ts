// node --test: the pure parts of the BullMQ transport (no Redis here; tests/test_fleet.py
// runs it against a real redis-server and real workers).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { bullmqPriority, jobOptions, parseFailure } from "../src/bullmq.js";
import type { JobFile } from "../src/types.js";

describe("bullmqPriority: higher job priority -> lower BullMQ number, never 0", () => {
  test("mapping and clamping", () => {
    assert.equal(bullmqPriority(1000), 1);
    assert.equal(bullmqPriority(0), 1001);
    assert.equal(bullmqPriority(undefined), 1001);
    assert.equal(bullmqPriority(-1000), 2001);
    assert.equal(bullmqPriority(5000), 1);
    assert.ok(bullmqPriority(3) < bullmqPriority(2));
  });
});

test("jobOptions takes priority and attempts from the job itself", () => {
  const job = { kind: "testpattern", priority: 7, maxAttempts: 5 } as unknown as JobFile;
  const opts = jobOptions("abc", job);
  assert.equal(opts.jobId, "abc");
  assert.equal(opts.priority, 994);
  assert.equal(opts.attempts, 5);
  const plain = jobOptions("d", { kind: "testpattern" } as unknown as JobFile);
  assert.equal(plain.attempts, 3);
  assert.equal(plain.priority, 1001);
});

test("parseFailure reads spooler's JSON reason and wraps BullMQ's own", () => {
  assert.deepEqual(parseFailure('{"code":"timeout","message":"m","details":{"a":1}}'), {
    code: "timeout",
    message: "m",
    details: { a: 1 },
  });
  assert.deepEqual(parseFailure("job stalled more than allowable limit"), {
    code: "internal_error",
    message: "job stalled more than allowable limit",
    details: {},
  });
  assert.equal(parseFailure(undefined), null);
});
