// Download links for outputs published to S3 (docs/s3.md). The status lists each remote
// output's `uri` (s3://bucket/key), never a URL: presigned URLs expire and are bearer
// credentials, so the download route presigns one on demand and redirects to it.
//
// SigV4 query signing (AWS "Authenticating Requests: Using Query Parameters") with
// node:crypto only, so the package gains no dependency. Credentials are the web app's own
// (its environment or secret store); pass them in, this module reads no environment.
import { createHash, createHmac } from "node:crypto";

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string; // STS / instance-role credentials
}

export interface PresignOptions {
  credentials: S3Credentials;
  region: string;
  expiresSeconds?: number; // default 300; S3 allows at most 7 days
  // An S3-compatible server (MinIO, a local test server): path-style URLs on it.
  // Default: AWS, virtual-hosted style https://<bucket>.s3.<region>.amazonaws.com/<key>.
  endpoint?: string;
  pathStyle?: boolean;
  downloadName?: string; // sets response-content-disposition: attachment
  now?: Date; // injected for tests
}

const MAX_EXPIRES = 7 * 24 * 3600;

export function parseS3Uri(uri: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.+)$/.exec(uri);
  if (!match || !match[1] || !match[2]) throw new Error(`not an s3://bucket/key URI: ${uri}`);
  return { bucket: match[1], key: match[2] };
}

// RFC 3986 unreserved characters stay; everything else is %XX (S3's canonical form).
function encode(value: string, keepSlash = false): string {
  return Array.from(new TextEncoder().encode(value), (byte) => {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~]/.test(c) || (keepSlash && c === "/")) return c;
    return "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }).join("");
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

function amzDate(now: Date): string {
  return now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** A presigned GET URL for an output's `uri` (s3://bucket/key), valid `expiresSeconds`. */
export function presignOutputUri(uri: string, options: PresignOptions): string {
  const { bucket, key } = parseS3Uri(uri);
  const expires = options.expiresSeconds ?? 300;
  if (!Number.isInteger(expires) || expires < 1 || expires > MAX_EXPIRES) {
    throw new Error(`expiresSeconds must be 1..${MAX_EXPIRES}`);
  }
  const base = new URL(options.endpoint ?? `https://s3.${options.region}.amazonaws.com`);
  const pathStyle = options.pathStyle ?? options.endpoint !== undefined;
  const host = pathStyle ? base.host : `${bucket}.${base.host}`;
  const path = "/" + encode(pathStyle ? `${bucket}/${key}` : key, true);
  const stamp = amzDate(options.now ?? new Date());
  const day = stamp.slice(0, 8);
  const scope = `${day}/${options.region}/s3/aws4_request`;
  const query: Record<string, string> = {
    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    "X-Amz-Credential": `${options.credentials.accessKeyId}/${scope}`,
    "X-Amz-Date": stamp,
    "X-Amz-Expires": String(expires),
    "X-Amz-SignedHeaders": "host",
  };
  if (options.credentials.sessionToken) {
    query["X-Amz-Security-Token"] = options.credentials.sessionToken;
  }
  if (options.downloadName) {
    query["response-content-disposition"] =
      `attachment; filename="${options.downloadName.replace(/["\\\r\n]/g, "_")}"`;
  }
  const canonicalQuery = Object.keys(query)
    .sort()
    .map((name) => `${encode(name)}=${encode(query[name] ?? "")}`)
    .join("&");
  const canonicalRequest = ["GET", path, canonicalQuery, `host:${host}`, "", "host", "UNSIGNED-PAYLOAD"].join("\n");
  const stringToSign = [
    "AWS4-HMAC-SHA256",
    stamp,
    scope,
    createHash("sha256").update(canonicalRequest, "utf8").digest("hex"),
  ].join("\n");
  let signingKey = hmac("AWS4" + options.credentials.secretAccessKey, day);
  for (const part of [options.region, "s3", "aws4_request"]) signingKey = hmac(signingKey, part);
  const signature = createHmac("sha256", signingKey).update(stringToSign, "utf8").digest("hex");
  return `${base.protocol}//${host}${path}?${canonicalQuery}&X-Amz-Signature=${signature}`;
}
