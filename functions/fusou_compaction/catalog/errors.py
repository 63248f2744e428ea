"""Typed catalog errors, mapped from the SQLSTATEs our SQL functions raise (class "FC")."""

from __future__ import annotations

from typing import Any


class CatalogError(Exception):
    """Base of every catalog failure. ``code`` is the SQLSTATE (or transport code)."""

    code = "FC000"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class DatasetForbidden(CatalogError):
    code = "FC403"


class CatalogNotFound(CatalogError):
    """Unknown dataset or run."""

    code = "FC404"


class LeaseNotHeld(CatalogError):
    """The run does not (or no longer) hold the dataset's lease, or is not running."""

    code = "FC409"


class InputsNotLive(CatalogError):
    """An input of the commit was already removed by another run."""

    code = "FC410"


class InvalidCatalogArgument(CatalogError):
    code = "FC422"


class CatalogUnavailable(CatalogError):
    """Connection or transport failure: safe to retry."""

    code = "08000"


_BY_CODE: dict[str, type[CatalogError]] = {
    cls.code: cls for cls in (DatasetForbidden, CatalogNotFound, LeaseNotHeld, InputsNotLive, InvalidCatalogArgument)
}


# PostgREST's own codes for a database it cannot use: PGRST000 (cannot connect), PGRST001 (the
# database client failed), PGRST002 (the schema cache cannot be built), PGRST003 (no pooled
# connection in time); and the gateway's statuses when PostgREST itself does not answer (postgrest-py
# makes the status the code of a body that is not PostgREST's JSON).
_UNAVAILABLE_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003", "502", "503", "504"})


def error_from_code(code: str | None, message: str, details: Any = None) -> CatalogError:
    code = code or ""
    cls = _BY_CODE.get(code)
    if cls is None:
        # Connection exceptions (08), insufficient resources (53), operator intervention (57)
        # and serialization/deadlock (40) are transient, as is PostgREST without its database.
        # Classes only of a SQLSTATE (five characters): an HTTP status "400" is no class 40.
        sqlstate_class = code[:2] if len(code) == 5 else None
        transient = sqlstate_class in {"08", "53", "57", "40"} or code in _UNAVAILABLE_CODES
        cls = CatalogUnavailable if transient else CatalogError
    return cls(message, code=code or None, details=details)
