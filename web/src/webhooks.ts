/**
 * Verify spooler's webhooks (Standard Webhooks signatures) in a Next.js route handler.
 *
 *   // app/api/spooler-webhook/route.ts
 *   import { verifyWebhook, WebhookVerificationError } from "@spooler/client";
 *   export async function POST(request: Request): Promise<Response> {
 *     let event;
 *     try { event = await verifyWebhook(request); }           // secret: $SPOOLER_WEBHOOK_SECRET
 *     catch (err) { if (err instanceof WebhookVerificationError) return new Response(err.message, { status: 400 }); throw err; }
 *     // deduplicate on request.headers.get("webhook-id"); order by event.data.sequence
 *     return new Response(null, { status: 204 });
 *   }
 *
 * Signature: `webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`,
 * several space-separated entries while the operator rotates secrets. The secret is the
 * operator's `whsec_...` (webhooks.secrets in the daemon's settings); a job never carries one.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

import type { WebhookPayload } from "./types.js";

export type { WebhookPayload } from "./types.js";

export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

export interface VerifyOptions {
  /** `whsec_...` secrets, any of which may have signed; default: $SPOOLER_WEBHOOK_SECRET
   * (several separated by spaces or commas). */
  secrets?: string | readonly string[];
  /** Reject timestamps further than this from now (replays); default 300 s. */
  toleranceSeconds?: number;
  /** Largest body accepted; default 1 MiB. */
  maxBodyBytes?: number;
  /** Current time in ms (tests). */
  now?: () => number;
}

type HeaderSource = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderSource, name: string): string | null {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name);
  const value = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? (value[0] ?? null) : (value ?? null);
}

function secretKeys(secrets: VerifyOptions["secrets"]): Buffer[] {
  const list =
    secrets === undefined
      ? (process.env.SPOOLER_WEBHOOK_SECRET ?? "").split(/[\s,]+/)
      : typeof secrets === "string"
        ? [secrets]
        : [...secrets];
  const keys = list
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => Buffer.from(s.startsWith("whsec_") ? s.slice(6) : s, "base64"))
    .filter((k) => k.length > 0);
  if (keys.length === 0) throw new Error("no webhook secret configured (SPOOLER_WEBHOOK_SECRET)");
  return keys;
}

/** Check the signature of `body` (the raw text, exactly as received) against its headers;
 * returns the parsed payload or throws WebhookVerificationError. */
export function verifySignature(
  body: string,
  headers: HeaderSource,
  options: VerifyOptions = {},
): WebhookPayload {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^\d{1,15}$/.test(timestamp)) throw new WebhookVerificationError("bad webhook-timestamp");
  const now = (options.now ?? Date.now)() / 1000;
  const tolerance = options.toleranceSeconds ?? 300;
  if (Math.abs(now - Number(timestamp)) > tolerance) {
    throw new WebhookVerificationError("webhook-timestamp outside the tolerance (replay?)");
  }
  const signed = Buffer.from(`${id}.${timestamp}.${body}`, "utf8");
  const expected = secretKeys(options.secrets).map((key) =>
    createHmac("sha256", key).update(signed).digest(),
  );
  for (const entry of signatures.split(" ")) {
    const [version, value] = entry.split(",", 2);
    if (version !== "v1" || !value) continue;
    const given = Buffer.from(value, "base64");
    if (expected.some((e) => e.length === given.length && timingSafeEqual(e, given))) {
      try {
        return JSON.parse(body) as WebhookPayload;
      } catch {
        throw new WebhookVerificationError("signed body is not JSON");
      }
    }
  }
  throw new WebhookVerificationError("no matching signature");
}

/** Verify a Fetch API Request (Next.js App Router); reads its body once. */
export async function verifyWebhook(
  request: Request,
  options: VerifyOptions = {},
): Promise<WebhookPayload> {
  const limit = options.maxBodyBytes ?? 1_048_576;
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) throw new WebhookVerificationError(`body over ${limit} bytes`);
  const body = await request.text();
  if (Buffer.byteLength(body, "utf8") > limit) {
    throw new WebhookVerificationError(`body over ${limit} bytes`);
  }
  return verifySignature(body, request.headers, options);
}
