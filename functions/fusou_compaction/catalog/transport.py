"""Two thin transports for the catalog's SQL functions.

Both call ``fn(**params)`` with a JSON object of named arguments and return the decoded JSON
result, exactly like PostgREST's ``POST /rest/v1/rpc/fn``; neither contains catalog logic.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fusou_compaction.catalog.errors import CatalogError, CatalogUnavailable, InvalidCatalogArgument, error_from_code
from fusou_compaction.settings import ConfigurationError

if TYPE_CHECKING:
    import psycopg

_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class RpcTransport(Protocol):
    def call(self, function: str, params: Mapping[str, Any]) -> Any: ...
    def close(self) -> None: ...


class PostgresRpc:
    """Direct PostgreSQL (local stack, tests, Supabase's pooler).

    Arguments are bound the way PostgREST binds them: the JSON object goes through
    ``json_to_record`` with the function's own argument types, so a JSON array becomes a
    ``uuid[]`` and an object a ``jsonb`` without per-call casts.
    """

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        schema: str = "public",
        role: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        # ``timeout``: seconds a call waits for a pooled connection before the catalog is taken
        # as unavailable (psycopg_pool's default, 30 s, is most of a short Lambda's time).
        # psycopg is imported here: the deployed (supabase) transport never needs it, and the
        # Lambda assets leave it out (infra/fusou_infra/assets.py).
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            # A set-up error, not an outage: CatalogUnavailable would be retried.
            raise RuntimeError(
                "the postgres catalog transport needs psycopg and psycopg-pool, which are not installed "
                "(the Lambda assets leave them out): set FUSOU_CATALOG_TRANSPORT=supabase, or install them"
            ) from exc

        # PostgREST runs every call as the JWT's role; the local stand-in does the same, so the
        # grants (only service_role may execute) are exercised, not bypassed. Checked before the
        # pool opens: a refused role leaves no pool behind.
        if role is not None and not _IDENT_RE.fullmatch(role):
            raise ValueError(f"bad role name {role!r}")
        self._pool = ConnectionPool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            open=True,
            timeout=timeout,
            name="fusou-catalog",
            kwargs={"application_name": "fusou-compaction"},
        )
        self._schema = schema
        self._role = role
        self._signatures: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def _signature(self, conn: psycopg.Connection[Any], function: str) -> dict[str, str]:
        with self._lock:
            cached = self._signatures.get(function)
        if cached is not None:
            return cached
        rows = conn.execute(
            "SELECT p.proargnames, ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s AND p.proname = %s",
            (self._schema, function),
        ).fetchall()
        if len(rows) != 1:
            raise InvalidCatalogArgument(f"no single catalog function named {function!r}", code="PGRST202")
        names, types = rows[0]
        sig = dict(zip(names or [], types, strict=False))
        with self._lock:
            self._signatures[function] = sig
        return sig

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        import psycopg
        from psycopg_pool import PoolClosed

        if not _IDENT_RE.fullmatch(function):
            raise InvalidCatalogArgument(f"bad function name {function!r}")
        try:
            with self._pool.connection() as conn:
                sig = self._signature(conn, function)
                if self._role:
                    conn.execute(f"SET LOCAL ROLE {self._role}".encode())  # type: ignore[call-overload]
                unknown = set(params) - set(sig)
                if unknown:
                    raise InvalidCatalogArgument(f"{function}() has no argument(s) {sorted(unknown)}", code="PGRST202")
                names = [n for n in sig if n in params]
                if names:
                    args = ", ".join(f"{n} := _.{n}" for n in names)
                    cols = ", ".join(f"{n} {sig[n]}" for n in names)
                    sql = f"SELECT {self._schema}.{function}({args}) FROM json_to_record(%s::json) AS _({cols})"
                    row = conn.execute(sql.encode(), (json.dumps(dict(params), default=str),)).fetchone()  # type: ignore[call-overload]
                else:
                    row = conn.execute(f"SELECT {self._schema}.{function}()".encode()).fetchone()  # type: ignore[call-overload]
                return None if row is None else row[0]
        except psycopg.Error as exc:
            if exc.sqlstate is None and isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolClosed):
                # No answer from the server: it cannot be reached, the connection dropped, or no
                # pooled connection came in time (psycopg_pool's PoolTimeout is an
                # OperationalError too). An outage, so retried; not a catalog error. A closed pool
                # is our own mistake, which no retry mends.
                raise CatalogUnavailable(f"catalog unreachable: {exc}") from exc
            diag = exc.diag
            message = diag.message_primary or str(exc)
            raise error_from_code(exc.sqlstate, message, diag.message_detail) from exc
        except CatalogError:
            raise
        except Exception as exc:  # anything else between us and the server (an OSError, say)
            raise CatalogUnavailable(f"catalog unreachable: {exc}") from exc

    def close(self) -> None:
        self._pool.close()


class SupabaseRpc:
    """supabase-py ``rpc()`` over PostgREST: the deployed default.

    ``credentials`` (instead of a fixed URL and key) is asked before every call: deployed, it reads
    the catalog secret through a cache of at most five minutes, and a changed key (a rotation)
    gets a new client.
    """

    def __init__(
        self,
        url: str | None = None,
        service_key: str | None = None,
        *,
        credentials: Callable[[], tuple[str, str]] | None = None,
        timeout: float = 30.0,
    ) -> None:
        # Imported here: the supabase client pulls in httpx, gotrue, realtime; only this path needs it.
        import httpx

        if credentials is None:
            if url is None or service_key is None:
                raise ValueError("SupabaseRpc needs a URL and a service key, or credentials")
            fixed = (url, service_key)

            def credentials() -> tuple[str, str]:
                return fixed

        self._credentials: Callable[[], tuple[str, str]] = credentials
        self._http = httpx.Client(timeout=timeout)
        self._lock = threading.Lock()
        self._current: tuple[str, str] | None = None
        self._client: Any = None

    def _client_now(self) -> Any:
        from supabase.lib.client_options import SyncClientOptions

        from supabase import create_client

        creds = self._credentials()
        with self._lock:
            if creds != self._current:
                self._client = create_client(creds[0], creds[1], options=SyncClientOptions(httpx_client=self._http))
                self._current = creds
            return self._client

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        from postgrest.exceptions import APIError

        try:
            client = self._client_now()
        except (CatalogError, ConfigurationError):
            raise
        except Exception as exc:  # Secrets Manager unreachable: transient, like the catalog itself
            raise CatalogUnavailable(f"catalog credentials unavailable: {exc}") from exc
        try:
            payload = json.loads(json.dumps(dict(params), default=str))
            return client.rpc(function, payload).execute().data
        except APIError as exc:
            raise error_from_code(exc.code, exc.message or str(exc), exc.details) from exc
        except CatalogError:
            raise
        except Exception as exc:  # httpx transport errors
            raise CatalogUnavailable(f"Supabase unreachable: {exc}") from exc

    def close(self) -> None:
        self._http.close()
