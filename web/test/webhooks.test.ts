// node --test: verifyWebhook against the Standard Webhooks spec's example and against a
// REAL sender: `python -m spooler webhook test URL` posting to a Node receiver on 127.0.0.1
// that uses verifyWebhook the way a Next.js route handler does.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { verifySignature, verifyWebhook, WebhookVerificationError } from "../src/spooler.js";

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

function pythonBinary(): string {
  if (process.env.SPOOLER_PYTHON) return process.env.SPOOLER_PYTHON;
  const venv = path.join(repoDir, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

const SPEC = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  headers: {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  },
  body: '{"test": 2432232314}',
  now: () => 1614265330 * 1000,
};

test("the spec's example verifies; tampering, a wrong secret or an old timestamp do not", () => {
  const opts = { secrets: SPEC.secret, now: SPEC.now };
  assert.deepEqual(verifySignature(SPEC.body, SPEC.headers, opts), { test: 2432232314 });
  // rotation: the right secret among others
  assert.ok(verifySignature(SPEC.body, SPEC.headers, { ...opts, secrets: ["whsec_QUJD", SPEC.secret] }));
  assert.throws(
    () => verifySignature('{"test": 2432232315}', SPEC.headers, opts),
    WebhookVerificationError,
  );
  assert.throws(
    () => verifySignature(SPEC.body, SPEC.headers, { ...opts, secrets: "whsec_QUJDREVGR0g=" }),
    WebhookVerificationError,
  );
  assert.throws(
    () => verifySignature(SPEC.body, SPEC.headers, { ...opts, now: () => (1614265330 + 600) * 1000 }),
    /tolerance/,
  );
  assert.throws(
    () => verifySignature(SPEC.body, { ...SPEC.headers, "webhook-id": "" }, opts),
    /missing/,
  );
});

test("a Node receiver verifies what `spooler webhook test` sends, and refuses a tampered copy", async () => {
  const secret = "whsec_" + Buffer.from("node-receiver-secret-0123456789").toString("base64");
  const seen: Array<{ status: number; type?: string; id?: string }> = [];
  let lastBody = "";
  let lastHeaders: Record<string, string> = {};
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const headers = Object.fromEntries(
      Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(",") : (v ?? "")]),
    );
    // What Next.js hands a route handler: a Fetch API Request.
    const request = new Request(`http://127.0.0.1${req.url}`, { method: "POST", headers, body });
    try {
      const event = await verifyWebhook(request, { secrets: secret });
      lastBody = body.toString("utf8");
      lastHeaders = headers;
      seen.push({ status: 204, type: event.type, id: headers["webhook-id"] });
      res.writeHead(204).end();
    } catch (err) {
      assert.ok(err instanceof WebhookVerificationError);
      seen.push({ status: 400 });
      res.writeHead(400).end(String(err.message));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SPOOLER_") && v) env[k] = v;
    Object.assign(env, {
      SPOOLER_WEBHOOKS__SECRETS: JSON.stringify([secret]),
      SPOOLER_WEBHOOKS__ALLOWED_HOSTS: '["127.0.0.1"]',
      SPOOLER_WEBHOOKS__ALLOW_PRIVATE: '["127.0.0.1"]',
    });
    const sent = await new Promise<{ status: number | null; stdout: string; stderr: string }>(
      (resolve) => {
        // Not spawnSync: that would block the event loop the receiver runs on.
        const url = `http://127.0.0.1:${port}/api/hook`;
        const child = spawn(pythonBinary(), ["-m", "spooler", "webhook", "test", url], { env });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        child.on("close", (status) => resolve({ status, stdout, stderr }));
      },
    );
    assert.equal(sent.status, 0, sent.stdout + sent.stderr);
    assert.match(sent.stdout, /HTTP 204/);
    assert.deepEqual(seen.map((s) => [s.status, s.type]), [[204, "spooler.test"]]);
    // The same headers with a changed body are refused.
    const tampered = lastBody.replace("webhook-test", "webhook-tost");
    const response = await fetch(`http://127.0.0.1:${port}/api/hook`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "webhook-id": lastHeaders["webhook-id"] ?? "",
        "webhook-timestamp": lastHeaders["webhook-timestamp"] ?? "",
        "webhook-signature": lastHeaders["webhook-signature"] ?? "",
      },
      body: tampered,
    });
    assert.equal(response.status, 400);
    assert.equal(seen.length, 2);
  } finally {
    server.close();
  }
});
