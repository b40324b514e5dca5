"""Remote storage on S3 (docs/s3.md): which remote names are allowed (locations, pure), the
boto3 client (client), the loopback source gateway ffmpeg and PyAV read through (gateway),
and the S3 output store (outputs)."""
