// The presign helper against AWS's documented SigV4 query-signing example, and its refusals.
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseS3Uri, presignOutputUri } from "../src/s3.js";

const example = {
  credentials: {
    accessKeyId: "AKIAIOSFODNN7EXAMPLE",
    secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  },
  region: "us-east-1",
  endpoint: "https://s3.amazonaws.com",
  pathStyle: false,
  expiresSeconds: 86400,
  now: new Date("2013-05-24T00:00:00Z"),
};

test("matches AWS's documented presigned URL example", () => {
  const url = presignOutputUri("s3://examplebucket/test.txt", example);
  assert.equal(
    url,
    "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256" +
      "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" +
      "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host" +
      "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
  );
});

test("path style on a local endpoint; refuses what is not an s3 URI or a sane expiry", () => {
  const url = presignOutputUri("s3://bucket-1/exports/job 1/out.mp4", {
    ...example,
    endpoint: "http://127.0.0.1:9000",
    pathStyle: undefined,
  });
  assert.ok(url.startsWith("http://127.0.0.1:9000/bucket-1/exports/job%201/out.mp4?"));
  assert.throws(() => parseS3Uri("https://example.com/x"));
  assert.throws(() => presignOutputUri("s3://bucket-1/x", { ...example, expiresSeconds: 0 }));
});
