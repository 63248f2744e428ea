"""The object-store port on S3 (and on moto's server, which speaks the same API).

Every botocore failure leaves this module as an ``ObjectStoreError`` (or a subclass), so logic
and the Step Functions steps catch one family by name and never parse botocore's codes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from fusou_compaction.observability import logger
from fusou_compaction.ports.object_store import ObjectInfo, ObjectNotFound, ObjectStoreError, PreconditionFailed

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, PaginatorConfigTypeDef

MiB: Final = 1024 * 1024
MIN_PART_SIZE: Final = 5 * MiB  # S3's floor for every part but the last
MAX_PARTS: Final = 10_000
DEFAULT_PART_SIZE: Final = 8 * MiB
DEFAULT_MAX_IN_FLIGHT: Final = 4
DELETE_BATCH: Final = 1000  # DeleteObjects' hard limit
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
_NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_CONFLICT_RETRIES: Final = 3


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _translate(err: Exception, key: str | None = None) -> ObjectStoreError:
    # A missing key is 404 only if the caller may s3:ListBucket; without it S3 answers 403.
    message = f"{key}: {err}" if key else str(err)
    if isinstance(err, ClientError):
        code = _code(err)
        if key is not None and (code in _NOT_FOUND_CODES or (_status(err) == 404 and code != "NoSuchBucket")):
            return ObjectNotFound(key)
        if code == "PreconditionFailed" or _status(err) == 412:
            return PreconditionFailed(message)
    return ObjectStoreError(message)


def _is_conflict(err: ClientError) -> bool:
    # 409: another conditional write to the same key is in flight; AWS says retry.
    return _code(err) == "ConditionalRequestConflict" or _status(err) == 409


def _range_header(start: int | None, end: int | None) -> str | None:
    """HTTP Range for ``get_bytes``: ``end`` is inclusive; a negative ``start`` is a suffix."""
    if start is None and end is None:
        return None
    if start is not None and start < 0:
        if end is not None:
            raise ValueError("a suffix read (negative start) takes no end")
        return f"bytes={start}"  # "bytes=-N": the last N bytes
    if end is not None and end < 0:
        raise ValueError("end must be >= 0 (it is inclusive)")
    first = start or 0
    if end is not None and end < first:
        raise ValueError(f"end ({end}) < start ({first})")
    return f"bytes={first}-" if end is None else f"bytes={first}-{end}"


def _endpoint_for_arrow(endpoint_url: str) -> tuple[str, str]:
    parts = urlsplit(endpoint_url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"endpoint_url must look like http://host:port, got {endpoint_url!r}")
    return parts.netloc, parts.scheme


class S3ObjectStore:
    """``ObjectStore`` over one bucket. Thread-safe: boto3 clients are, and writers own their pools."""

    def __init__(
        self,
        bucket: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        client: S3Client | None = None,
        max_pool_connections: int = 32,
        part_size: int = DEFAULT_PART_SIZE,
        max_in_flight_parts: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.max_in_flight_parts = max_in_flight_parts
        self._session = boto3.session.Session(region_name=region)
        if client is None:
            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                max_pool_connections=max_pool_connections,
                # SigV4 everywhere: botocore would presign with SigV2 in us-east-1, which signs
                # no headers (so no Content-Length or checksum binding).
                signature_version="s3v4",
                connect_timeout=5,
                read_timeout=60,
                # Emulators and custom endpoints rarely resolve bucket.host names.
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
            client = self._session.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
        self.client: S3Client = client
        self._fs: pafs.S3FileSystem | None = None  # built on first use: pyarrow is heavy to import

    # -- single requests -------------------------------------------------------------------

    def put(self, key: str, body: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e

    def put_if_absent(self, key: str, body: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*"
                )
                return True
            except ClientError as e:
                if _code(e) == "PreconditionFailed" or _status(e) == 412:
                    return False
                if not _is_conflict(e):
                    raise _translate(e, key) from e
                if attempt == _CONFLICT_RETRIES:
                    # Still racing another writer: keys are content-addressed, so that writer
                    # stores the same bytes; report "not created by us".
                    return False
                time.sleep(0.05 * 2**attempt)
            except BotoCoreError as e:
                raise _translate(e, key) from e
        return False  # unreachable; keeps mypy's return analysis simple

    def get_bytes(self, key: str, *, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes ``[start, end]`` (end inclusive, as HTTP Range): ``data[start:end + 1]``.

        ``start < 0`` reads the last ``-start`` bytes (``data[start:]``). A range that starts
        past the end returns ``b""`` rather than raising, like slicing.
        """
        rng = _range_header(start, end)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if rng is not None:
            kwargs["Range"] = rng
        try:
            resp = self.client.get_object(**kwargs)
            return resp["Body"].read()
        except ClientError as e:
            if _code(e) == "InvalidRange" or _status(e) == 416:
                return b""
            raise _translate(e, key) from e
        except BotoCoreError as e:
            raise _translate(e, key) from e

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            err = _translate(e, key)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from e
        except BotoCoreError as e:
            raise _translate(e, key) from e
        return ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            last_modified=resp["LastModified"],
            etag=resp.get("ETag", "").strip('"') or None,
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    # -- many objects -----------------------------------------------------------------------

    def delete_many(self, keys: list[str]) -> list[str]:
        unique = list(dict.fromkeys(keys))
        failed: list[str] = []
        for i in range(0, len(unique), DELETE_BATCH):
            batch = unique[i : i + DELETE_BATCH]
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as e:
                # The contract is "report what is left", so a failed request fails its batch;
                # the caller keeps those keys and tries again later.
                logger.warning("delete_objects failed", extra={"keys": len(batch), "error": str(e)})
                failed.extend(batch)
                continue
            for err in resp.get("Errors", []):
                logger.warning("delete failed", extra={"key": err.get("Key"), "code": err.get("Code")})
                failed.append(err["Key"])
        return failed

    def list_objects(
        self, prefix: str, *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        config: PaginatorConfigTypeDef = {"PageSize": page_size}
        pages = (
            paginator.paginate(Bucket=self.bucket, Prefix=prefix, StartAfter=start_after, PaginationConfig=config)
            if start_after
            else paginator.paginate(Bucket=self.bucket, Prefix=prefix, PaginationConfig=config)
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        key=obj["Key"],
                        size=obj["Size"],
                        last_modified=obj["LastModified"],
                        etag=obj.get("ETag", "").strip('"') or None,
                    )
        except (ClientError, BotoCoreError) as e:
            raise _translate(e) from e

    # -- streaming writes -------------------------------------------------------------------

    def open_writer(
        self,
        key: str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        part_size: int | None = None,
        max_in_flight: int | None = None,
    ) -> S3MultipartWriter:
        return S3MultipartWriter(
            self.client,
            self.bucket,
            key,
            content_type=content_type,
            part_size=part_size or self.part_size,
            max_in_flight=max_in_flight or self.max_in_flight_parts,
        )

    # -- pyarrow ----------------------------------------------------------------------------

    def filesystem(self) -> pafs.S3FileSystem:
        import pyarrow.fs as pafs

        if self._fs is None:
            kwargs: dict[str, Any] = {"region": self.region}
            if self.endpoint_url:
                kwargs["endpoint_override"], kwargs["scheme"] = _endpoint_for_arrow(self.endpoint_url)
            creds = self._session.get_credentials()
            # Static credentials (env vars: Lambda, moto's test/test) are handed over as they are;
            # refreshable ones would go stale frozen, so pyarrow's own chain resolves those.
            if creds is not None and not isinstance(creds, RefreshableCredentials):
                frozen = creds.get_frozen_credentials()
                kwargs.update(
                    access_key=frozen.access_key,
                    secret_key=frozen.secret_key,
                    session_token=frozen.token,
                )
            self._fs = pafs.S3FileSystem(**kwargs)
        return self._fs

    def path_for(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    # -- presigned uploads ------------------------------------------------------------------

    def presign_put(
        self,
        key: str,
        *,
        max_bytes: int,
        expires_in: int = 900,
        checksum_sha256_b64: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """A presigned PUT whose signature covers Content-Length (and the checksum if given).

        A signed PUT cannot express "at most N bytes": S3 rejects any other length, so
        ``max_bytes`` is the exact size the client declared (already checked against the cap).
        The client must send every header in ``headers`` unchanged.
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentLength": max_bytes}
        if checksum_sha256_b64 is not None:
            params["ChecksumSHA256"] = checksum_sha256_b64
        if content_type is not None:
            params["ContentType"] = content_type
        try:
            url = self.client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_in, HttpMethod="PUT"
            )
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e
        wanted = {
            "content-length": ("Content-Length", str(max_bytes)),
            "x-amz-checksum-sha256": ("x-amz-checksum-sha256", checksum_sha256_b64),
            "content-type": ("Content-Type", content_type),
        }
        signed = parse_qs(urlsplit(url).query).get("X-Amz-SignedHeaders", [""])[0].split(";")
        headers = {wanted[h][0]: str(wanted[h][1]) for h in signed if h in wanted and wanted[h][1] is not None}
        return {"url": url, "method": "PUT", "headers": headers}


class S3MultipartWriter:
    """A file-like sink (pyarrow's ``ParquetWriter`` accepts it) that streams to one S3 key.

    Full parts upload in a small thread pool while the caller keeps writing; at most
    ``max_in_flight`` parts are uploading and one is filling, so memory stays near
    ``(max_in_flight + 1) * part_size``. A write that fits in one part becomes one PutObject.
    Nothing appears under the key unless ``close()`` succeeds.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        part_size: int = DEFAULT_PART_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be >= {MIN_PART_SIZE} bytes (S3's minimum)")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.client = client
        self.bucket = bucket
        self.key = key
        self.content_type = content_type
        self.part_size = part_size
        self.max_in_flight = max_in_flight
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self._pos = 0
        self._upload_id: str | None = None
        self._next_part = 1
        self._pending: list[Future[CompletedPartTypeDef]] = []
        self._done_parts: list[CompletedPartTypeDef] = []
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._failure: BaseException | None = None

    # -- file-like surface ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        # Parts below 5 MiB cannot be uploaded early; durability comes only with close().
        self._raise_if_failed()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._raise_if_failed()
        if self._closed:
            raise ValueError("I/O operation on closed S3 writer")
        view = memoryview(data).cast("B")
        n = view.nbytes
        self._hash.update(view)
        self._pos += n
        offset = 0
        while offset < n:
            # Keep a full part in the buffer until more data arrives: if none does, the
            # object may still fit one PutObject, or this is the (allowed-to-be-small) last part.
            if len(self._buf) == self.part_size:
                self._guarded(self._submit_part)
            room = self.part_size - len(self._buf)
            self._buf += view[offset : offset + room]
            offset += room
        return n

    def close(self) -> None:
        if self._closed:
            if self._failure is not None:
                raise ObjectStoreError(f"upload of {self.key} failed") from self._failure
            return
        try:
            self._guarded(self._finish)
        finally:
            self._shutdown()
        self._closed = True

    def abort(self) -> None:
        """Discard everything; a no-op after a successful ``close()`` (the object stays)."""
        if self._closed:
            return
        self._closed = True
        self._buf = bytearray()
        self._abort_upload()
        self._shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals --------------------------------------------------------------------------

    def _guarded(self, step: Callable[[], None]) -> None:
        # Any failure (a part, the create, the complete) aborts the upload before it surfaces.
        try:
            step()
        except Exception as e:
            self._fail(e)
            raise ObjectStoreError(f"upload of {self.key} failed: {e}") from e
        except BaseException as e:
            self._fail(e)
            raise

    def _finish(self) -> None:
        if self._upload_id is None:
            self._put_whole()
            return
        self._submit_part()  # the last part: never empty, write() keeps at least one byte buffered
        self._wait_all()
        self._complete()

    def _put_whole(self) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buf), ContentType=self.content_type)
        self._buf = bytearray()

    def _submit_part(self) -> None:
        if self._upload_id is None:
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
            self._upload_id = resp["UploadId"]
            self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="s3-part")
        if self._next_part > MAX_PARTS:
            raise ObjectStoreError(f"{self.key}: more than {MAX_PARTS} parts; raise part_size")
        # Bound memory: wait for a slot before handing over another buffer.
        while len(self._pending) >= self.max_in_flight:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            self._collect(done)
        part, self._buf = self._buf, bytearray()
        number = self._next_part
        self._next_part += 1
        assert self._pool is not None
        self._pending.append(self._pool.submit(self._upload_part, self._upload_id, number, part))

    def _upload_part(self, upload_id: str, number: int, body: bytearray) -> CompletedPartTypeDef:
        resp = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,  # type: ignore[arg-type]  # botocore takes bytearray; saves a part-sized copy
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _collect(self, done: set[Future[CompletedPartTypeDef]] | list[Future[CompletedPartTypeDef]]) -> None:
        for fut in done:
            self._pending.remove(fut)
            self._done_parts.append(fut.result())  # re-raises the part's failure

    def _wait_all(self) -> None:
        while self._pending:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            self._collect(done)

    def _complete(self) -> None:
        parts = sorted(self._done_parts, key=lambda p: int(p["PartNumber"]))
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=str(self._upload_id),
            MultipartUpload={"Parts": parts},
        )

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise ObjectStoreError(f"upload of {self.key} failed") from self._failure
        failed = [f for f in self._pending if f.done() and f.exception() is not None]
        if failed:
            err = failed[0].exception()
            assert err is not None
            self._fail(err)
            raise ObjectStoreError(f"upload of {self.key} failed: {err}") from err

    def _fail(self, err: BaseException) -> None:
        self._failure = err
        self._closed = True
        self._abort_upload()
        self._shutdown()

    def _abort_upload(self) -> None:
        for fut in self._pending:
            fut.cancel()
        # S3 may keep parts that finish uploading after an abort: let running ones end first.
        wait(self._pending)
        self._pending.clear()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as e:
            # The bucket's AbortIncompleteMultipartUpload lifecycle rule is the backstop.
            logger.warning(
                "abort_multipart_upload failed",
                extra={"key": self.key, "upload_id": upload_id, "error": str(e)},
            )

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


if TYPE_CHECKING:
    from fusou_compaction.ports.object_store import ObjectStore, WritableObject

    # mypy proves the adapter satisfies the ports.
    _store: type[ObjectStore] = S3ObjectStore
    _writer: type[WritableObject] = S3MultipartWriter
