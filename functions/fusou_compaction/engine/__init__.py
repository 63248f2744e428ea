"""The compaction engine: plan bins, unify schemas, stream-merge Parquet. No catalog, no AWS."""

from __future__ import annotations

from fusou_compaction.engine import _arrow_env  # noqa: F401  (must run before pyarrow loads)
from fusou_compaction.engine.errors import (
    INPUT_ERRORS,
    CorruptInputError,
    DecodeBudgetError,
    EngineError,
    InputError,
    SchemaCastError,
    UnsupportedInputError,
)
from fusou_compaction.engine.merge import (
    DEFAULT_TUNING,
    BinJob,
    BinResult,
    MergeTuning,
    OpenOutput,
    OutputFile,
    compact_bin,
    compact_bins,
    dictionary_columns,
    use_system_allocator,
)
from fusou_compaction.engine.planner import (
    DEFAULT_TARGET_FILE_SIZE,
    InputFile,
    MiB,
    PlannedBin,
    plan_table,
)
from fusou_compaction.engine.schema import (
    SchemaGroup,
    conform_table,
    merge_schemas,
    merge_types,
    normalize_schema,
    schema_fingerprint,
    schema_from_base64,
    schema_to_base64,
    unify_known,
    unify_schemas,
    unsupported_column,
)
from fusou_compaction.engine.sinks import LocalDirSink, LocalFileWriter, open_local_output

__all__ = [
    "DEFAULT_TARGET_FILE_SIZE",
    "DEFAULT_TUNING",
    "INPUT_ERRORS",
    "BinJob",
    "BinResult",
    "CorruptInputError",
    "DecodeBudgetError",
    "EngineError",
    "InputError",
    "InputFile",
    "LocalDirSink",
    "LocalFileWriter",
    "MergeTuning",
    "MiB",
    "OpenOutput",
    "OutputFile",
    "PlannedBin",
    "SchemaCastError",
    "SchemaGroup",
    "UnsupportedInputError",
    "compact_bin",
    "compact_bins",
    "conform_table",
    "dictionary_columns",
    "merge_schemas",
    "merge_types",
    "normalize_schema",
    "open_local_output",
    "plan_table",
    "schema_fingerprint",
    "schema_from_base64",
    "schema_to_base64",
    "unify_known",
    "unify_schemas",
    "unsupported_column",
    "use_system_allocator",
]
