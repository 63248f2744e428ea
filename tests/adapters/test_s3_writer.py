"""S3MultipartWriter: streaming writes that are all-or-nothing, against moto's server."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from fusou_compaction.adapters.s3 import MiB, ObjectNotFound, ObjectStoreError, S3ObjectStore
from fusou_compaction.local.aws import LocalAws
from fusou_compaction.ports.object_store import WritableObject

PART = 5 * MiB


@pytest.fixture
def store(local_aws: LocalAws, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(bucket, region=local_aws.region, endpoint_url=local_aws.endpoint_url)


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def pending_uploads(store: S3ObjectStore) -> list[Any]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


class PartHook:
    """Forwards to a real client, running ``hook(part_number)`` around each upload_part."""

    def __init__(self, real: Any, before: Any = None, after: Any = None) -> None:
        self._real, self._before, self._after = real, before, after
        self.part_numbers: list[int] = []

    def upload_part(self, **kwargs: Any) -> Any:
        self.part_numbers.append(kwargs["PartNumber"])
        if self._before:
            self._before(kwargs["PartNumber"])
        resp = self._real.upload_part(**kwargs)
        if self._after:
            self._after(kwargs["PartNumber"])
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        pytest.param(0, 0, id="empty"),
        pytest.param(1, 0, id="one-byte"),
        pytest.param(PART, 0, id="exactly-one-part-is-a-single-put"),
        pytest.param(PART + 1, 2, id="one-part-plus-one-byte"),
        pytest.param(17 * MiB, 4, id="17MiB"),
    ],
)
def test_writer_stores_identical_bytes_with_matching_sha256_and_tell(
    store: S3ObjectStore, size: int, parts: int
) -> None:
    # Given data of a size around S3's 5 MiB part boundary, written in uneven chunks
    data = payload(size)
    chunk = 777_777
    # When it streams through the writer with 5 MiB parts
    with store.open_writer("out/blob.bin", part_size=PART) as writer:
        for i in range(0, size, chunk):
            assert writer.write(data[i : i + chunk]) == len(data[i : i + chunk])
        assert writer.tell() == size
    # Then S3 holds exactly those bytes, and sha256 covers everything written
    assert writer.closed
    assert store.get_bytes("out/blob.bin") == data
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    # And objects that fit one part cost one PutObject; larger ones are N-part uploads
    info = store.head("out/blob.bin")
    assert info is not None and info.etag is not None
    assert info.size == size
    assert info.etag.endswith(f"-{parts}") if parts else "-" not in info.etag
    assert pending_uploads(store) == []


def test_writer_accepts_memoryview_and_bytearray(store: S3ObjectStore) -> None:
    # Given the three buffer types the port allows
    # When each is written
    with store.open_writer("k", content_type="text/plain") as writer:
        writer.write(b"ab")
        writer.write(bytearray(b"cd"))
        writer.write(memoryview(b"xxefxx")[2:4])
    # Then their bytes land in order
    assert store.get_bytes("k") == b"abcdef"
    assert store.client.head_object(Bucket=store.bucket, Key="k")["ContentType"] == "text/plain"
    assert isinstance(writer, WritableObject)


def test_abort_leaves_no_object_and_no_pending_multipart_upload(store: S3ObjectStore) -> None:
    # Given a writer that already uploaded parts
    writer = store.open_writer("out/aborted.bin", part_size=PART)
    writer.write(payload(12 * MiB))
    assert len(pending_uploads(store)) == 1
    # When it is aborted
    writer.abort()
    # Then nothing is visible under the key and S3 holds no parts for it
    assert writer.closed
    assert not store.exists("out/aborted.bin")
    assert pending_uploads(store) == []
    # And a later close() does not resurrect it
    writer.close()
    assert not store.exists("out/aborted.bin")


def test_an_exception_inside_the_with_block_aborts(store: S3ObjectStore) -> None:
    # Given a with-block that fails half way through a multipart write
    writer = store.open_writer("out/half.bin", part_size=PART)

    def engine_fails_midway() -> None:
        with writer:
            writer.write(payload(11 * MiB))
            raise RuntimeError("engine failed")

    # When the exception leaves the block
    with pytest.raises(RuntimeError, match="engine failed"):
        engine_fails_midway()
    # Then the upload was aborted: no object, no parts, the writer is closed
    assert writer.closed
    with pytest.raises(ObjectNotFound):
        store.get_bytes("out/half.bin")
    assert pending_uploads(store) == []


def test_an_exception_before_any_part_leaves_nothing(store: S3ObjectStore) -> None:
    # Given a small write that never reached S3
    def fails_early() -> None:
        with store.open_writer("out/small.bin") as writer:
            writer.write(b"partial")
            raise ValueError("bad row")

    # When the block fails
    with pytest.raises(ValueError, match="bad row"):
        fails_early()
    # Then nothing was ever written
    assert not store.exists("out/small.bin")


def boom(part: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": "InternalError", "Message": f"part {part} lost"}, "ResponseMetadata": {}},
        "UploadPart",
    )


def test_a_failed_part_makes_close_raise_and_leaves_no_object(store: S3ObjectStore) -> None:
    # Given a client whose second part upload fails
    def fail_part_2(n: int) -> None:
        if n == 2:
            raise boom(n)

    hooked = PartHook(store.client, before=fail_part_2)
    flaky = S3ObjectStore(store.bucket, client=hooked)
    writer = flaky.open_writer("out/broken.bin", part_size=PART)
    # When 17 MiB are written in one call (parts 1-3 go out in the background) and we close
    writer.write(payload(17 * MiB))
    with pytest.raises(ObjectStoreError, match="part 2 lost"):
        writer.close()
    # Then the upload is aborted: nothing under the key, nothing pending, and close stays failed
    assert 2 in hooked.part_numbers
    assert not store.exists("out/broken.bin")
    assert pending_uploads(store) == []
    assert writer.closed
    with pytest.raises(ObjectStoreError):
        writer.close()


def test_a_failed_part_surfaces_on_a_later_write(store: S3ObjectStore) -> None:
    # Given one part in flight at a time and a failing first part
    def fail_part_1(n: int) -> None:
        if n == 1:
            raise boom(n)

    flaky = S3ObjectStore(store.bucket, client=PartHook(store.client, before=fail_part_1))
    writer = flaky.open_writer("out/broken2.bin", part_size=PART, max_in_flight=1)

    def write_20_mib() -> None:
        with writer:
            for _ in range(20):
                writer.write(payload(MiB))

    # When the writer keeps writing 1 MiB chunks inside a with-block
    with pytest.raises(ObjectStoreError, match="part 1 lost"):
        write_20_mib()
    # Then a write raised (the caller stops early) and no object or upload is left behind
    assert writer.tell() < 20 * MiB
    assert not store.exists("out/broken2.bin")
    assert pending_uploads(store) == []


def test_parts_upload_in_parallel_but_memory_stays_bounded(store: S3ObjectStore) -> None:
    # Given slow part uploads, and a writer allowing 2 parts in flight
    lock = threading.Lock()
    state = {"running": 0, "max_running": 0, "done_bytes": 0, "max_unsent": 0}
    writer_box: dict[str, Any] = {}

    def before(_: int) -> None:
        with lock:
            state["running"] += 1
            state["max_running"] = max(state["max_running"], state["running"])
        time.sleep(0.3)

    def after(_: int) -> None:
        with lock:
            state["running"] -= 1
            # bytes the writer has accepted but S3 has not yet acknowledged = what it holds in memory
            state["max_unsent"] = max(state["max_unsent"], writer_box["w"].tell() - state["done_bytes"])
            state["done_bytes"] += PART

    slow = S3ObjectStore(store.bucket, client=PartHook(store.client, before=before, after=after))
    data = payload(30 * MiB + 1)
    # When 30 MiB stream through in 1 MiB writes
    with slow.open_writer("out/bounded.bin", part_size=PART, max_in_flight=2) as writer:
        writer_box["w"] = writer
        for i in range(0, len(data), MiB):
            writer.write(data[i : i + MiB])
    # Then two parts overlapped, never more, and the writer never held more than 3 parts' worth
    assert state["max_running"] == 2
    assert state["max_unsent"] <= 3 * PART + MiB
    assert store.get_bytes("out/bounded.bin") == data


def test_write_after_close_is_refused_and_close_is_idempotent(store: S3ObjectStore) -> None:
    # Given a closed writer
    writer = store.open_writer("k2")
    writer.write(b"data")
    writer.close()
    # When it is closed again, aborted, or written to
    writer.close()
    writer.abort()
    # Then the object stays and writes fail like on a closed file
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    assert store.get_bytes("k2") == b"data"


def test_part_size_below_s3_minimum_is_rejected(store: S3ObjectStore) -> None:
    # Given / When / Then a part size S3 would refuse at completion time is refused up front
    with pytest.raises(ValueError, match="part_size"):
        store.open_writer("k", part_size=PART - 1)


def test_parquet_writer_streams_a_multipart_file_readable_over_s3(store: S3ObjectStore) -> None:
    # Given a table of ~20 MiB of random (incompressible) binary values
    rng = random.Random(3)
    n = 20 * 1024
    table = pa.table({"id": pa.array(range(n), pa.int64()), "blob": pa.array([rng.randbytes(1024) for _ in range(n)])})
    key = "datasets/d/t/compacted/run/part-00000.parquet"
    # When pyarrow's ParquetWriter writes it straight into the S3 writer, in several row groups
    with store.open_writer(key, content_type="application/vnd.apache.parquet", part_size=PART, max_in_flight=2) as sink:
        with pq.ParquetWriter(sink, table.schema, compression="zstd") as pw:
            for batch in table.to_batches(max_chunksize=4096):
                pw.write_batch(batch)
        size = sink.tell()
    # Then it went up as a multipart upload of the size and hash the writer reported
    info = store.head(key)
    assert info is not None and info.etag is not None
    assert size > 20 * MiB
    assert info.size == size
    assert "-" in info.etag
    assert store.client.head_object(Bucket=store.bucket, Key=key)["ContentType"] == "application/vnd.apache.parquet"
    assert hashlib.sha256(store.get_bytes(key)).hexdigest() == sink.sha256
    # And pyarrow reads the same table back through the store's filesystem
    back = pq.read_table(store.path_for(key), filesystem=store.filesystem())
    assert back.equals(table)
    assert pq.ParquetFile(store.filesystem().open_input_file(store.path_for(key))).num_row_groups == 5
