"""Typed engine errors: the state machine retries or catches them by class name."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class CorruptInputError(EngineError):
    """An input cannot be read as Parquet: missing, truncated, corrupt or not Parquet at all.

    Retrying will not help; the pipeline fails the run and names the input.
    """

    def __init__(self, input_id: str, path: str, reason: str) -> None:
        super().__init__(f"input {input_id} ({path}) is not readable Parquet: {reason}")
        self.input_id = input_id
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[CorruptInputError], tuple[str, str, str]]:
        # Keeps the error picklable (process pools, Step Functions error payloads).
        return (CorruptInputError, (self.input_id, self.path, self.reason))


class SchemaCastError(EngineError):
    """An input's rows could not be cast to its group's unified schema (e.g. a timestamp overflow)."""

    def __init__(self, input_id: str, path: str, reason: str) -> None:
        super().__init__(f"input {input_id} ({path}) cannot be cast to the unified schema: {reason}")
        self.input_id = input_id
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[SchemaCastError], tuple[str, str, str]]:
        return (SchemaCastError, (self.input_id, self.path, self.reason))


class UnsupportedInputError(EngineError):
    """An input is readable Parquet, but one of its columns is something no output should carry
    (a name that is not UTF-8 text, nesting deeper than pyarrow reads by default).

    Retrying will not help, and the other inputs are fine: the pipeline can quarantine this one.
    """

    def __init__(self, input_id: str, path: str, column: str, reason: str) -> None:
        super().__init__(f'input {input_id} ({path}) cannot be compacted: column "{column}" {reason}')
        self.input_id = input_id
        self.path = path
        self.column = column
        self.reason = reason

    def __reduce__(self) -> tuple[type[UnsupportedInputError], tuple[str, str, str, str]]:
        return (UnsupportedInputError, (self.input_id, self.path, self.column, self.reason))


class DecodeBudgetError(EngineError):
    """An input holds a value (or a row, or a dictionary) too big to decode within the memory one
    decode may take (engine/read.py), however it is sliced: e.g. one string of 2 GB.

    Its footer says so before anything is decoded, or a batch of one row measured past the limit.
    Retrying will not help, and the other inputs are fine: the pipeline can quarantine this one.
    """

    def __init__(self, input_id: str, path: str, column: str, reason: str) -> None:
        super().__init__(f'input {input_id} ({path}) is too big to decode: column "{column}" {reason}')
        self.input_id = input_id
        self.path = path
        self.column = column
        self.reason = reason

    def __reduce__(self) -> tuple[type[DecodeBudgetError], tuple[str, str, str, str]]:
        return (DecodeBudgetError, (self.input_id, self.path, self.column, self.reason))


# Errors that name one input which cannot be compacted for a reason of its own: retrying will not
# help and the other inputs are fine, so the pipeline quarantines that input (``.input_id``) and
# compacts the rest. Anything else (I/O, the catalog, a bug) fails the bin and is retried or caught.
InputError = CorruptInputError | SchemaCastError | UnsupportedInputError | DecodeBudgetError
INPUT_ERRORS = (
    CorruptInputError,
    SchemaCastError,
    UnsupportedInputError,
    DecodeBudgetError,
)
