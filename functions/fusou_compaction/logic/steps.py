"""The four steps of a compaction run, and its failure path, over the catalog and object-store ports.

Every step is safe to run again: Validate finds its run by id, GetMetadata rewrites the same
plan, Compact overwrites only its run's own keys, Update's commit is idempotent on the run id.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import TypeAdapter

from fusou_compaction import engine, keys
from fusou_compaction.catalog.client import Catalog
from fusou_compaction.catalog.errors import CatalogNotFound, LeaseNotHeld
from fusou_compaction.catalog.models import CompactedOutput
from fusou_compaction.observability import logger
from fusou_compaction.pipeline.models import (
    BinInput,
    BinManifest,
    BinRef,
    CompactItem,
    CompactResult,
    DlqEnvelope,
    ExecutionInput,
    FailureInput,
    MapRunOutput,
    OutputRecord,
    PlanResult,
    QuarantinedInput,
    SchemaSource,
    StepError,
    UpdateResult,
    ValidateResult,
)
from fusou_compaction.ports.object_store import ObjectNotFound, ObjectStore, ObjectStoreError, WritableObject
from fusou_compaction.settings import Settings

_bin_inputs = TypeAdapter(list[BinInput])
_bin_refs = TypeAdapter(list[BinRef])
TERMINAL = {"succeeded", "skipped", "failed"}
COMPACT_STEP = "Compact"  # the state's name: what a quarantine records as its step
# S3 requests of one step in flight at once (plan files written, manifests read): ~30 ms each in
# AWS, so thousands of them one by one would outlast the step's timeout.
IO_CONCURRENCY = 32


class DatasetNotFound(Exception):
    """The message names a dataset the catalog does not know: never retried."""


class LeaseLost(Exception):
    """Another run took the dataset's lease (ours expired): this run must not write the catalog."""


class PlanMismatch(Exception):
    """Update got results that do not match the plan (a bin missing or doubled, or a Map Run whose
    export lists failed or pending children)."""


@dataclass(frozen=True)
class StepConfig:
    lease_seconds: int = 900
    target_file_size: int = 128 * 1024 * 1024
    grace_period_seconds: int = 24 * 3600
    # A bin's inputs up to this size (JSON) travel in its Map item; larger ones go to their own S3
    # object. An item is a child execution's input, capped at 256 KB; small ones spare a PUT and a GET.
    inline_bin_bytes: int = 4 * 1024
    # No longer a state-size bound (the plan is in S3, the Map distributed): this bounds one commit
    # (one catalog transaction) and Update's manifest reads. What does not fit waits for the next run.
    max_bins_per_run: int = 10_000

    @classmethod
    def from_settings(cls, s: Settings) -> StepConfig:
        return cls(
            lease_seconds=s.lease_seconds,
            target_file_size=s.target_file_size,
            grace_period_seconds=s.grace_period_seconds,
        )


def _error_text(error: str, cause: str | None) -> str:
    # Lambda errors arrive as a JSON cause {"errorMessage", "errorType", "stackTrace"}.
    message = cause
    if cause:
        try:
            parsed = json.loads(cause)
            if isinstance(parsed, dict):
                message = parsed.get("errorMessage") or cause
        except ValueError:
            pass
    return f"{error}: {message}" if message else error


class CompactionSteps:
    def __init__(self, catalog: Catalog, store: ObjectStore, config: StepConfig) -> None:
        self.catalog = catalog
        self.store = store
        self.config = config

    # Validate ------------------------------------------------------------------------------
    def validate(self, ex: ExecutionInput) -> ValidateResult:
        started = time.monotonic()
        dataset_id = ex.message.dataset_id
        try:
            run = self.catalog.begin_run(
                run_id=ex.run_id,
                dataset_id=dataset_id,
                trigger=ex.message.priority,
                execution_id=ex.execution_name,
                message=ex.message.to_json_dict(),
            )
        except CatalogNotFound as exc:
            raise DatasetNotFound(f"unknown dataset {dataset_id}") from exc
        if run.status in TERMINAL:
            return ValidateResult(action="skip", reason=f"run {ex.run_id} already {run.status}")

        dataset = self.catalog.get_dataset(dataset_id)
        if not dataset.compaction_needed:
            return self._skip(ex, "nothing to compact", started)
        lease = self.catalog.acquire_lease(
            dataset_id=dataset_id, run_id=ex.run_id, lease_seconds=self.config.lease_seconds
        )
        if not lease.acquired:
            return self._skip(ex, f"lease held by run {lease.dataset.lease_owner}", started)
        self.catalog.record_run_status(
            ex.run_id, "running", {"step_timings": {"Validate": round(time.monotonic() - started, 4)}}
        )
        return ValidateResult(action="compact", lease_expires_at=lease.dataset.lease_expires_at)

    def _skip(self, ex: ExecutionInput, reason: str, started: float) -> ValidateResult:
        self.catalog.record_run_status(
            ex.run_id,
            "skipped",
            {"status_reason": reason, "step_timings": {"Validate": round(time.monotonic() - started, 4)}},
        )
        return ValidateResult(action="skip", reason=reason)

    # GetMetadata ---------------------------------------------------------------------------
    def get_metadata(self, ex: ExecutionInput) -> PlanResult:
        started = time.monotonic()
        files = self.catalog.list_live_files(ex.message.dataset_id)
        by_table: dict[str, list[engine.InputFile]] = defaultdict(list)
        catalog_files = {str(f.id): f for f in files}
        for f in files:
            by_table[f.table_name].append(
                engine.InputFile(
                    id=str(f.id),
                    path=f.object_key,
                    size_bytes=f.size_bytes,
                    row_count=f.row_count,
                    seq=f.seq,
                    kind=f.kind,
                )
            )
        bins: list[tuple[str, engine.PlannedBin]] = []
        for table in sorted(by_table):
            for b in engine.plan_table(by_table[table], target_file_size=self.config.target_file_size):
                bins.append((table, b))
        # A bounded run: what does not fit stays live (and compaction_needed) for the next run.
        bins = bins[: self.config.max_bins_per_run]

        refs: list[BinRef] = []
        for table, b in bins:
            inputs = [
                BinInput(
                    id=UUID(i.id),
                    key=i.path,
                    size_bytes=i.size_bytes,
                    row_count=i.row_count or 0,
                    seq=i.seq,
                    kind=i.kind,
                    schema_fingerprint=catalog_files[i.id].schema_fingerprint,
                )
                for i in b.inputs
            ]
            refs.append(BinRef(table=table, index=b.index, input_count=len(inputs), inputs=inputs))
        planned = [catalog_files[str(i.id)] for r in refs for i in (r.inputs or [])]
        refs = self._write_plan(ex.run_id, refs)
        plan = PlanResult(
            plan_key=keys.plan_prefix(ex.run_id),
            items_key=keys.plan_items_key(ex.run_id),
            results_prefix=keys.map_results_prefix(ex.run_id),
            bin_count=len(refs),
            files_planned=len(planned),
            bytes_planned=sum(f.size_bytes for f in planned),
            rows_planned=sum(f.row_count for f in planned),
            bins=refs,
        )
        self.catalog.record_run_status(
            ex.run_id,
            "running",
            {
                "step_timings": {"GetMetadata": round(time.monotonic() - started, 4)},
                "files_in": plan.files_planned,
                "bytes_in": plan.bytes_planned,
                "rows_in": plan.rows_planned,
            },
        )
        return plan

    def _write_plan(self, run_id: UUID, refs: list[BinRef]) -> list[BinRef]:
        """The plan, to S3: a large bin's inputs to an object of its own, then every bin (small ones
        with their inputs) as the one JSON array the Compact Map reads its items from. Rewriting a
        retried run's plan writes the same bytes to the same keys."""
        large = [
            r for r in refs if len(_bin_inputs.dump_json(r.inputs or [], by_alias=True)) > self.config.inline_bin_bytes
        ]

        def put_inputs(ref: BinRef) -> None:
            body = _bin_inputs.dump_json(ref.inputs or [], by_alias=True)
            self.store.put(keys.plan_bin_key(run_id, ref.table, ref.index), body, content_type="application/json")

        _in_parallel(put_inputs, large)
        by_reference = {(r.table, r.index) for r in large}
        items = [r.model_copy(update={"inputs": None}) if (r.table, r.index) in by_reference else r for r in refs]
        self.store.put(
            keys.plan_items_key(run_id), _bin_refs.dump_json(items, by_alias=True), content_type="application/json"
        )
        return items

    # Compact (one bin) ---------------------------------------------------------------------
    def compact(self, item: CompactItem) -> CompactResult:
        """Compact one bin. An input the engine names as bad for a reason of its own (corrupt,
        counts that disagree with its data, a cast or a column no output can carry, a decode over
        budget) is quarantined in the catalog and the bin is compacted again without it, in this
        invocation: the rest of the dataset still compacts in this run, and Update only ever sees
        the inputs that made it into outputs. A retried invocation (or a redelivered run) leaves
        out what the catalog already quarantined, so it never decodes a bad input twice."""
        started = time.monotonic()
        # Renewing the lease is our heartbeat: if another run took over, stop before writing.
        lease = self.catalog.acquire_lease(
            dataset_id=item.dataset_id, run_id=item.run_id, lease_seconds=self.config.lease_seconds
        )
        if not lease.acquired:
            raise LeaseLost(f"run {item.run_id} lost the lease on {item.dataset_id} to {lease.dataset.lease_owner}")
        inputs = item.bin.inputs
        if inputs is None:
            raw = self.store.get_bytes(keys.plan_bin_key(item.run_id, item.bin.table, item.bin.index))
            inputs = _bin_inputs.validate_json(raw)
        ours = {i.id: i for i in inputs}
        quarantined = [
            QuarantinedInput(id=f.id, key=f.object_key, rows=f.row_count, reason=f.quarantine_reason or "")
            for f in self.catalog.list_quarantined(item.dataset_id)
            if f.id in ours
        ]
        remaining = [i for i in inputs if i.id not in {q.id for q in quarantined}]
        prefix = keys.compacted_prefix(item.dataset_id, item.bin.table, item.run_id)
        while True:
            try:
                result, source = self._compact_inputs(item, remaining, prefix)
                break
            except engine.INPUT_ERRORS as exc:
                bad = next((i for i in remaining if str(i.id) == exc.input_id), None)
                if bad is None:  # not one of this bin's inputs: a bug, not the input's fault
                    raise
                verdict = self._confirm(bad, exc) if isinstance(exc, engine.CorruptInputError) else exc
                quarantined.append(self._quarantine(item, bad, verdict))
                remaining.remove(bad)
        # Outputs become inputs of later runs (small compacted files are merged again).
        self.catalog.register_schemas(
            {o.schema_fingerprint: engine.schema_to_base64(o.schema) for o in result.outputs if o.schema is not None}
        )
        manifest = BinManifest(
            run_id=item.run_id,
            table=item.bin.table,
            index=item.bin.index,
            input_ids=[i.id for i in remaining],
            outputs=[
                OutputRecord(
                    table=item.bin.table,
                    key=prefix + o.name,
                    rows=o.rows,
                    bytes=o.bytes,
                    sha256=o.sha256,
                    schema_fingerprint=o.schema_fingerprint,
                    input_ids=[UUID(i) for i in o.input_ids],
                )
                for o in result.outputs
            ],
            rows_in=result.rows_in,
            bytes_in=result.bytes_in,
            seconds=round(time.monotonic() - started, 4),
            schema_source=source,
            quarantined=quarantined,
        )
        manifest_key = keys.manifest_key(item.run_id, item.bin.table, item.bin.index)
        self.store.put(manifest_key, manifest.model_dump_json(by_alias=True).encode(), content_type="application/json")
        return CompactResult(
            table=item.bin.table,
            index=item.bin.index,
            manifest_key=manifest_key,
            rows_in=result.rows_in,
            rows_out=result.rows_out,
            files_out=len(result.outputs),
            bytes_out=result.bytes_out,
            quarantined=len(quarantined),
        )

    def _compact_inputs(
        self, item: CompactItem, inputs: list[BinInput], prefix: str
    ) -> tuple[engine.BinResult, SchemaSource]:
        if not inputs:  # every input of the bin was quarantined
            return engine.BinResult(outputs=[], rows_in=0, bytes_in=0, files_in=0), "footers"
        planned = engine.PlannedBin(
            index=item.bin.index,
            inputs=[
                engine.InputFile(
                    id=str(i.id),
                    path=self.store.path_for(i.key),
                    size_bytes=i.size_bytes,
                    row_count=i.row_count,
                    seq=i.seq,
                    kind=i.kind,
                )
                for i in inputs
            ],
        )

        def open_output(name: str) -> WritableObject:
            return self.store.open_writer(prefix + name, content_type="application/vnd.apache.parquet")

        known = self._known_schema(inputs)
        result = engine.compact_bin(
            planned,
            source_fs=self.store.filesystem(),
            open_output=open_output,
            target_file_size=self.config.target_file_size,
            name_prefix=f"part-{item.bin.index:05d}",
            schema=known,
        )
        if result.known_schema_missed:
            logger.warning(
                "an input did not fit the catalog's schema; the bin was compacted again from its footers",
                extra={"runId": str(item.run_id), "table": item.bin.table, "bin": item.bin.index},
            )
        source: SchemaSource = (
            "footers" if known is None else ("catalog-missed" if result.known_schema_missed else "catalog")
        )
        return result, source

    def _confirm(self, bad: BinInput, exc: engine.CorruptInputError) -> engine.InputError:
        """The verdict on an input the engine found unreadable, from its bytes alone.

        pyarrow reports an object store that failed mid-read (throttling, a reset connection) the
        way it reports a corrupt file, and a transient error must never quarantine. So the object
        is fetched again through the store (whose failures are ObjectStoreError: the state machine
        retries the bin) and judged on a local copy: only an error the bytes themselves give is a
        verdict. Bytes that read fine mean the first failure was the store's: ObjectStoreError."""
        try:
            data = self.store.get_bytes(bad.key)
        except ObjectNotFound:  # the catalog's object is gone: nothing will ever read it
            return engine.CorruptInputError(str(bad.id), bad.key, "its object is missing from the store")
        with tempfile.TemporaryDirectory(prefix="fusou-check-") as tmp:
            path = Path(tmp) / "input.parquet"
            path.write_bytes(data)
            del data
            alone = engine.InputFile(
                id=str(bad.id), path=str(path), size_bytes=bad.size_bytes, row_count=bad.row_count, seq=bad.seq
            )
            try:
                engine.compact_bin([alone], source_fs=pafs.LocalFileSystem(), open_output=lambda _: _Discard())
            except engine.INPUT_ERRORS as local:
                local.path = bad.key  # the local copy's path means nothing to anyone
                return local
        raise ObjectStoreError(f"reading {bad.key} failed ({exc.reason}), but its bytes read fine: retry")

    def _quarantine(self, item: CompactItem, bad: BinInput, exc: engine.InputError) -> QuarantinedInput:
        column = getattr(exc, "column", None)
        reason = f"{type(exc).__name__}: " + (f'column "{column}" {exc.reason}' if column else exc.reason)
        try:
            done = self.catalog.quarantine_file(
                run_id=item.run_id, dataset_id=item.dataset_id, file_id=bad.id, step=COMPACT_STEP, reason=reason
            )
        except LeaseNotHeld as lost:
            raise LeaseLost(f"run {item.run_id} cannot quarantine {bad.id}: {lost}") from exc
        logger.warning(
            "input quarantined: it cannot be compacted; the rest of its bin is compacted without it",
            extra={
                "runId": str(item.run_id),
                "datasetId": str(item.dataset_id),
                "table": item.bin.table,
                "key": bad.key,
                "reason": done.file.quarantine_reason,
            },
        )
        return QuarantinedInput(
            id=bad.id, key=bad.key, rows=bad.row_count, reason=done.file.quarantine_reason or reason
        )

    def _known_schema(self, inputs: list[BinInput]) -> pa.Schema | None:
        """The bin's unified schema from the catalog's record of each input's schema, or None (the
        engine then reads every footer first, as it always can)."""
        fingerprints = [i.schema_fingerprint for i in inputs if i.row_count > 0]
        if not fingerprints or any(fp is None for fp in fingerprints):
            return None
        wanted = [fp for fp in fingerprints if fp is not None]
        try:
            known = {fp: engine.schema_from_base64(b64) for fp, b64 in self.catalog.get_schemas(wanted).items()}
        except (ValueError, pa.ArrowInvalid) as exc:  # a damaged record: costs time, not correctness
            logger.warning("unreadable schema in the catalog; reading footers", extra={"error": str(exc)})
            return None
        return engine.unify_known(wanted, known)

    # Update --------------------------------------------------------------------------------
    def compact_results(self, map_output: MapRunOutput) -> list[CompactResult]:
        """Every bin's result, from the Compact Map's export (its ResultWriter's manifest and the
        SUCCEEDED files it lists: each child execution's Output, as a JSON string)."""
        details = map_output.result_writer_details
        if details.bucket != self.store.bucket:
            raise PlanMismatch(f"the Map Run wrote its results to {details.bucket}, not to {self.store.bucket}")
        manifest = json.loads(self.store.get_bytes(details.key))
        files = manifest.get("ResultFiles") or {}
        if files.get("FAILED") or files.get("PENDING"):
            raise PlanMismatch(f"Map Run {map_output.map_run_arn} has failed or pending children")
        results: list[CompactResult] = []
        for f in files.get("SUCCEEDED") or []:
            for entry in json.loads(self.store.get_bytes(f["Key"])):
                output = entry["Output"]
                results.append(
                    CompactResult.model_validate_json(output)
                    if isinstance(output, str)
                    else CompactResult.model_validate(output)
                )
        return results

    def update(self, ex: ExecutionInput, plan: PlanResult, results: list[CompactResult]) -> UpdateResult:
        started = time.monotonic()
        # Every planned bin once: the results are distinct and as many as the plan's bins (each
        # comes from one of the plan's items: the Map read them from the plan's own file).
        got = sorted((r.table, r.index) for r in results)
        if len(set(got)) != len(got) or len(got) != plan.bin_count:
            raise PlanMismatch(
                f"planned {plan.bin_count} bins but got results for {got[:20]}{'...' if len(got) > 20 else ''}"
            )
        manifests = _in_parallel(
            lambda r: BinManifest.model_validate_json(self.store.get_bytes(r.manifest_key)), results
        )
        removed = [i for m in manifests for i in m.input_ids]
        outputs = [
            CompactedOutput(
                table_name=o.table,
                object_key=o.key,
                size_bytes=o.bytes,
                row_count=o.rows,
                sha256=o.sha256,
                schema_fingerprint=o.schema_fingerprint,
                input_ids=o.input_ids,
            )
            for m in manifests
            for o in m.outputs
        ]
        compact_seconds = round(sum(m.seconds for m in manifests), 4)
        commit = self.catalog.commit_compaction(
            run_id=ex.run_id,
            dataset_id=ex.message.dataset_id,
            removed=removed,
            outputs=outputs,
            metrics={"step_timings": {"Compact": compact_seconds, "Update": round(time.monotonic() - started, 4)}},
            grace_seconds=self.config.grace_period_seconds,
        )
        run = commit.run
        return UpdateResult(
            committed=commit.committed,
            already_committed=commit.already_committed,
            compaction_needed=commit.compaction_needed,
            files_in=run.files_in or 0,
            files_out=run.files_out or 0,
            rows_in=run.rows_in or 0,
            rows_out=run.rows_out or 0,
            bytes_in=run.bytes_in or 0,
            bytes_out=run.bytes_out or 0,
        )

    # RecordFailure -------------------------------------------------------------------------
    def record_failure(self, fi: FailureInput) -> DlqEnvelope:
        # Exactly one step failed; its name is the key Step Functions' Catch wrote the error under.
        step, err = next(iter(fi.failure.items()))
        ex = fi.execution
        if step == COMPACT_STEP and fi.plan is not None:
            # The Map's own error only says a child failed: the child's is in its export.
            err = self._failed_bin(fi.plan.results_prefix) or err
        text = _error_text(err.error, err.cause)
        # The run may never have been created (unknown dataset): the DLQ record carries it then.
        with contextlib.suppress(CatalogNotFound):
            self.catalog.record_run_status(ex.run_id, "failed", {"error_step": step, "error": text})
        return DlqEnvelope(
            message=ex.message.to_json_dict(),
            body=ex.body,
            message_id=ex.message_id,
            dataset_id=ex.message.dataset_id,
            run_id=ex.run_id,
            error_step=step,
            error=text,
            cause=err.cause,
        )

    def _failed_bin(self, results_prefix: str) -> StepError | None:
        """The first failed child's error and cause, from the Compact Map's export (None when there
        is none to read: the failure path must not fail for want of a better message)."""
        try:
            for info in self.store.list_objects(results_prefix.rstrip("/") + "/"):
                if not info.key.endswith("/manifest.json"):
                    continue
                manifest = json.loads(self.store.get_bytes(info.key))
                for f in (manifest.get("ResultFiles") or {}).get("FAILED") or []:
                    for entry in json.loads(self.store.get_bytes(f["Key"])):
                        if entry.get("Error"):
                            return StepError(error=entry["Error"], cause=entry.get("Cause"))
        except (ObjectStoreError, ValueError, KeyError, TypeError) as exc:
            logger.warning("could not read the failed Map Run's export", extra={"error": str(exc)})
        return None


def _in_parallel(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """fn over items, IO_CONCURRENCY at a time, results in order (the first error is raised)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(IO_CONCURRENCY, len(items)), thread_name_prefix="step-io") as pool:
        return list(pool.map(fn, items))


class _Discard:
    """A WritableObject that keeps nothing: _confirm only wants the engine's verdict."""

    def __init__(self) -> None:
        self._written = 0
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True

    def abort(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sha256(self) -> str:
        return ""


def state_input(event: dict[str, Any]) -> ExecutionInput:
    return ExecutionInput.model_validate(event["execution"])
