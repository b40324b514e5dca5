"""Outputs published to S3: multipart uploads with SHA-256 checksums, behind OutputStore.

The publish rule (docs/s3.md), the S3 form of storage.py's crash rules:
1. every output is verified locally first, as a temporary file in the job folder;
2. CreateMultipartUpload, then the UploadId is journalled in the status (pendingPublish:
   temp, path, uri, uploadId) durably, before the first part;
3. the parts go up with their SHA-256s (the server checks each); CompleteMultipartUpload is
   the publish step: the object appears whole, once, or not at all; the composite checksum
   S3 reports (in the completion's answer, else by a HeadObject) must equal the one computed
   from the local file, else the object is deleted and the attempt fails (verify_failed);
4. after kill -9, recovery finds the journalled UploadId (off the daemon's loop thread:
   spooler/recovery.py): if the job can finish (every planned output listed) and the
   verified temporary file is still in the job folder, the upload is finished (parts sent
   again, completed, checked as in 3; the entry gains its etag and checksum); otherwise it
   is aborted and the job runs again. A failure, a cancel or a lost lease aborts the upload
   at once. No orphaned multipart upload is left; the bucket's
   AbortIncompleteMultipartUpload lifecycle rule is the safety net for a host that never
   comes back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from spooler.config import S3Settings
from spooler.errors import ErrorCode, JobError
from spooler.fsutil import TEMP_PREFIX
from spooler.s3.locations import S3Object, parse_s3
from spooler.s3.upstream import retrying
from spooler.status import JobStatus, OutputInfo, PendingPublish
from spooler.storage import JobFolderOutputs, RolledForward

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

UPLOAD_WORKERS = 4


@dataclass(frozen=True)
class Uploaded:
    etag: str
    checksum: str  # composite: base64 sha256 of the parts' sha256s, "-<parts>"
    size: int


@dataclass(frozen=True)
class Stored:
    """An object as HeadObject (ChecksumMode ENABLED) reports it."""

    size: int
    etag: str
    checksum: str | None  # None: stored without a SHA-256


def same_checksum(a: str, b: str) -> bool:
    """Composite checksums compared without the "-<parts>" some servers leave out (pure)."""
    return a.split("-")[0] == b.split("-")[0]


def composite_sha256(part_digests: list[bytes]) -> str:
    """The checksum S3 reports for a multipart upload with SHA256 parts (pure)."""
    whole = hashlib.sha256(b"".join(part_digests)).digest()
    return f"{base64.b64encode(whole).decode()}-{len(part_digests)}"


def part_ranges(size: int, part_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of each part; an empty file is one empty part (pure)."""
    if size == 0:
        return [(0, 0)]
    return [(offset, min(part_bytes, size - offset)) for offset in range(0, size, part_bytes)]


class S3Uploads:
    """Multipart uploads of verified local files, each part retried on network faults."""

    def __init__(self, client: S3Client, settings: S3Settings) -> None:
        self.client, self.settings = client, settings

    def begin(self, obj: S3Object) -> str:
        def call() -> str:
            started = self.client.create_multipart_upload(
                Bucket=obj.bucket, Key=obj.key, ChecksumAlgorithm="SHA256"
            )
            return started["UploadId"]

        return str(self._call(obj, call))

    def upload(
        self,
        obj: S3Object,
        upload_id: str,
        temp: Path,
        check: Callable[[], None] | None = None,
        *,
        keep_if_transient: bool = False,
    ) -> Uploaded:
        """Send every part, then complete (the publish step). Aborts the upload on any
        failure, cancel (`check` raises) included, and re-raises; with `keep_if_transient`
        (recovery, whose journal names it) a storage failure leaves it open to try again."""
        try:
            size = os.stat(temp).st_size
            ranges = part_ranges(size, self.settings.part_bytes)
            parts = self._send_parts(obj, upload_id, temp, ranges, check)
            if check is not None:
                check()  # the last moment a cancel stops the publish
            return self._complete(obj, upload_id, parts, size)
        except BaseException as exc:
            if not (keep_if_transient and isinstance(exc, JobError) and exc.transient):
                self.abort(obj, upload_id)
            raise

    def _send_parts(
        self,
        obj: S3Object,
        upload_id: str,
        temp: Path,
        ranges: list[tuple[int, int]],
        check: Callable[[], None] | None,
    ) -> list[tuple[int, str, bytes]]:
        stop = threading.Event()
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

        def send(number: int, offset: int, length: int) -> tuple[int, str, bytes]:
            if stop.is_set():
                raise JobError(ErrorCode.CANCELLED, "upload stopped")
            data = os.pread(fd, length, offset)
            digest = hashlib.sha256(data).digest()
            checksum = base64.b64encode(digest).decode()

            def call() -> str:
                sent = self.client.upload_part(
                    Bucket=obj.bucket,
                    Key=obj.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumSHA256=checksum,
                )
                return sent["ETag"]

            return number, self._call(obj, call), digest

        try:
            with ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="s3-part") as pool:
                futures: list[Future[tuple[int, str, bytes]]] = []
                for number, (offset, length) in enumerate(ranges, start=1):
                    if check is not None:
                        try:
                            check()
                        except BaseException:
                            stop.set()
                            raise
                    # At most a few parts in flight: memory stays at workers x part size.
                    while sum(not f.done() for f in futures) >= UPLOAD_WORKERS:
                        wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
                    futures.append(pool.submit(send, number, offset, length))
                    failed = [f for f in futures if f.done() and f.exception() is not None]
                    if failed:
                        stop.set()
                        failed[0].result()
                return [f.result() for f in futures]
        finally:
            os.close(fd)

    def _complete(
        self, obj: S3Object, upload_id: str, parts: list[tuple[int, str, bytes]], size: int
    ) -> Uploaded:
        listed: list[Any] = [
            {
                "PartNumber": number,
                "ETag": etag,
                "ChecksumSHA256": base64.b64encode(digest).decode(),
            }
            for number, etag, digest in parts
        ]

        def call() -> Any:
            return self.client.complete_multipart_upload(
                Bucket=obj.bucket,
                Key=obj.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )

        done = self._call(obj, call)
        expected = composite_sha256([digest for _, _, digest in parts])
        reported = done.get("ChecksumSHA256")
        if not reported:  # some servers leave it out of the answer: ask for it
            stored = self.stored(obj)
            reported = stored.checksum if stored is not None else None
        # A server that keeps no SHA-256 reports none: nothing to compare (each part was
        # sent with its own).
        if reported and not same_checksum(reported, expected):
            # Published but not what was verified: withdrawn, never left at the final key.
            self.delete(obj)
            raise JobError(
                ErrorCode.VERIFY_FAILED,
                f"{obj.uri}: the stored checksum differs from the local file's",
                {"uri": obj.uri, "expected": expected, "reported": reported},
            )
        return Uploaded(str(done["ETag"]), expected, size)

    def abort(self, obj: S3Object, upload_id: str) -> None:
        """Abort, tolerating an upload that is already gone (completed or aborted)."""
        with contextlib.suppress(ClientError, JobError):
            self._call(
                obj,
                lambda: self.client.abort_multipart_upload(
                    Bucket=obj.bucket, Key=obj.key, UploadId=upload_id
                ),
            )

    def is_open(self, obj: S3Object, upload_id: str) -> bool:
        def call() -> bool:
            try:
                self.client.list_parts(Bucket=obj.bucket, Key=obj.key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                    return False
                raise
            return True

        return bool(self._call(obj, call))

    def stored(self, obj: S3Object) -> Stored | None:
        """Size, ETag and SHA-256 of the object; None when there is none."""

        def call() -> Any:
            try:
                return self.client.head_object(
                    Bucket=obj.bucket, Key=obj.key, ChecksumMode="ENABLED"
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if int(status) == 404:
                    return None
                raise

        head = self._call(obj, call)
        if head is None:
            return None
        return Stored(int(head["ContentLength"]), str(head["ETag"]), head.get("ChecksumSHA256"))

    def delete(self, obj: S3Object) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.delete_object(Bucket=obj.bucket, Key=obj.key)

    def _call(self, obj: S3Object, call: Callable[[], Any]) -> Any:
        def mapped() -> Any:
            try:
                return call()
            except ClientError as exc:
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                # Any other refusal (NoSuchBucket, an expired token) is the storage's
                # answer too: a job error, never a stray exception in the job's thread.
                transient = status == 429 or status >= 500
                code = ErrorCode.STORAGE_FAILED if transient else ErrorCode.SOURCE_FORBIDDEN
                raise JobError(
                    code, f"{obj.uri}: {exc.response.get('Error', {}).get('Code')}"
                ) from exc

        return retrying(self.settings.attempts, obj.uri, mapped)


class RoutedOutputs:
    """The OutputStore of a daemon with S3: an output whose info names a `uri` is uploaded
    there, any other stays a file in the job folder (the default, unchanged)."""

    def __init__(self, local: JobFolderOutputs, uploads: S3Uploads) -> None:
        self.local, self.uploads = local, uploads
        self._open: dict[tuple[str, str], tuple[S3Object, str]] = {}
        self._published: dict[tuple[str, str], S3Object] = {}
        self._lock = threading.Lock()

    def _object(self, uri: str) -> S3Object:
        return parse_s3(uri, self.uploads.settings)

    def make_durable(self, temp: Path) -> None:
        self.local.make_durable(temp)

    def begin(self, job_id: str, temp: Path, info: OutputInfo) -> str | None:
        """Step 2's data: the UploadId to journal before the first part (None: local)."""
        if info.uri is None:
            return None
        obj = self._object(info.uri)
        upload_id = self.uploads.begin(obj)
        with self._lock:
            self._open[(job_id, info.path)] = (obj, upload_id)
        return upload_id

    def commit(
        self, job_id: str, temp: Path, name: str, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Step 3; returns the fields the output's status entry gains (uri, etag, checksum)."""
        with self._lock:
            started = self._open.pop((job_id, name), None)
        if started is None:
            self.local.commit(job_id, temp, name)
            return {}
        obj, upload_id = started
        uploaded = self.uploads.upload(obj, upload_id, temp, check)
        with self._lock:
            self._published[(job_id, name)] = obj
        # The local copy has done its job (verified, uploaded): the job folder keeps no media.
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        return {"uri": obj.uri, "etag": uploaded.etag, "checksum": uploaded.checksum}

    def remote_roll_forward(self, status: JobStatus) -> bool:
        pending = status.pending_publish
        remote_pending = pending is not None and pending.uri is not None
        return remote_pending or any(output.uri for output in status.outputs)

    def roll_forward(self, job_id: str, status: JobStatus) -> RolledForward:
        """Finish (or abort) the journalled upload, then look at every planned output:
        local ones by the job folder's rules, remote ones by a HeadObject (size; the
        checksum when both sides have one). Network calls: recovery runs this off the
        loop thread (`remote_roll_forward`)."""
        pending = status.pending_publish
        listed = {output.path: output for output in status.outputs}
        planned = status.planned_outputs
        complete = bool(planned) and not set(planned) - set(listed)
        learned: dict[str, dict[str, Any]] = {}
        if pending is not None and pending.uri is not None and pending.upload_id is not None:
            uploaded = self._finish(job_id, pending, complete=complete)
            if uploaded is not None and pending.path in listed:
                fields = {"uri": pending.uri, "etag": uploaded.etag}
                learned[pending.path] = {**fields, "checksum": uploaded.checksum}
        if not complete:
            return RolledForward(False)
        in_place = all(
            self._in_place(listed[name], learned) for name in planned if listed[name].uri
        )
        outputs = [o.model_copy(update=learned.get(o.path, {})) for o in status.outputs]
        local = [name for name in planned if listed[name].uri is None]
        if local and in_place:
            only_local = status.model_copy(
                update={
                    "planned_outputs": local,
                    "outputs": [listed[n] for n in local],
                    "pending_publish": None if pending and pending.uri else pending,
                }
            )
            in_place = self.local.roll_forward(job_id, only_local).published
        return RolledForward(in_place, outputs if learned else None)

    def _in_place(self, output: OutputInfo, learned: dict[str, dict[str, Any]]) -> bool:
        """Is this remote output stored with its listed size (and checksum, when both sides
        know one)? Fills `learned` with the etag and checksum the entry lacks."""
        stored = self.uploads.stored(self._object(str(output.uri)))
        if stored is None or stored.size != output.size_bytes:
            return False
        known = learned.get(output.path, {}).get("checksum") or output.checksum
        if known and stored.checksum and not same_checksum(known, stored.checksum):
            return False  # replaced by another writer since it was published
        if output.path not in learned and (output.etag is None or output.checksum is None):
            # Published before the crash, the status written without its answer: read back.
            learned[output.path] = {
                "etag": stored.etag,
                "checksum": output.checksum or stored.checksum,
            }
        return True

    def _finish(self, job_id: str, pending: PendingPublish, *, complete: bool) -> Uploaded | None:
        """Complete a journalled upload from its verified temporary file when the job can
        finish; abort it when it cannot (the job runs again and starts a new one)."""
        assert pending.uri is not None and pending.upload_id is not None
        obj, upload_id = self._object(pending.uri), pending.upload_id
        if not self.uploads.is_open(obj, upload_id):
            return None  # completed (the object is checked next) or already aborted
        path = self.local.layout.job_dir(job_id) / pending.temp
        try:
            regular = pending.temp.startswith(TEMP_PREFIX) and stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            regular = False
        if not (regular and complete):
            self.uploads.abort(obj, upload_id)
            return None
        uploaded = self.uploads.upload(obj, upload_id, path, keep_if_transient=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return uploaded

    def abort_open(self, job_id: str) -> None:
        """Abort this job's uploads still in flight (a failed or cancelled attempt)."""
        with self._lock:
            mine = [key for key in self._open if key[0] == job_id]
            started = [self._open.pop(key) for key in mine]
        for obj, upload_id in started:
            self.uploads.abort(obj, upload_id)

    def remove(self, job_id: str, names: list[str]) -> None:
        self.abort_open(job_id)
        with self._lock:
            objects = [self._published.pop((job_id, n), None) for n in names]
        for obj in objects:
            if obj is not None:
                self.uploads.delete(obj)
        self.local.remove(job_id, names)
