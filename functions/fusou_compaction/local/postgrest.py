"""A PostgREST stand-in for ``POST /rest/v1/rpc/<fn>``, over real HTTP, on a real PostgreSQL.

No PostgREST server can be installed here, so the supabase-py transport is tested against this:
it checks the service key the way Supabase's gateway does, runs the same SQL function as the
``service_role`` (as PostgREST would, from the key's role claim) and answers errors in
PostgREST's shape (``{"code","message","details","hint"}``), which supabase-py turns into
``APIError``. It implements only what the catalog uses: RPC calls, and, like Supabase's auth
server, the project's signing keys at ``GET /auth/v1/.well-known/jwks.json`` (empty unless given).
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fusou_compaction.catalog.errors import CatalogError, CatalogUnavailable
from fusou_compaction.catalog.transport import PostgresRpc

_RPC_PATH = re.compile(r"^/rest/v1/rpc/(?P<fn>[a-z_][a-z0-9_]*)/?$")
JWKS_PATH = "/auth/v1/.well-known/jwks.json"


def _unavailable(exc: CatalogUnavailable) -> tuple[int, dict[str, Any]]:
    """What PostgREST answers when the database cannot serve a call.

    A SQLSTATE from the server is forwarded with PostgREST's status for its class (08 and 53: 503;
    40 and 57: 500); without one, PostgREST answers with its own code: PGRST003 (504) when no
    pooled connection came in time, PGRST000 (503) when it cannot connect.
    """
    import psycopg
    from psycopg_pool import PoolTimeout

    cause = exc.__cause__
    body: dict[str, Any] = {"code": exc.code, "message": exc.message, "details": None, "hint": None}
    if isinstance(cause, psycopg.Error) and cause.sqlstate is not None:
        return (503 if cause.sqlstate[:2] in {"08", "53"} else 500), body
    if isinstance(cause, PoolTimeout):
        return 504, {**body, "code": "PGRST003", "message": "Timed out acquiring connection from connection pool."}
    return 503, {**body, "code": "PGRST000", "message": "Could not connect with the database."}


class LocalPostgrest:
    def __init__(
        self,
        database_url: str,
        service_key: str,
        *,
        port: int = 0,
        jwks: dict[str, Any] | None = None,
        pool_timeout: float = 10.0,
    ) -> None:
        self.service_key = service_key
        self.jwks = jwks or {"keys": []}
        self.jwks_hits = 0
        self.rpc = PostgresRpc(database_url, role="service_role", timeout=pool_timeout)
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] != JWKS_PATH:
                    self._send(404, {"code": "PGRST125", "message": f"Invalid path {self.path}"})
                    return
                outer.jwks_hits += 1
                self._send(200, outer.jwks)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                m = _RPC_PATH.match(self.path.split("?")[0])
                if not m:
                    self._send(404, {"code": "PGRST125", "message": f"Invalid path {self.path}"})
                    return
                key = self.headers.get("apikey") or ""
                bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if not (hmac.compare_digest(key, outer.service_key) and hmac.compare_digest(bearer, outer.service_key)):
                    self._send(401, {"code": "PGRST301", "message": "Invalid API key", "details": None, "hint": None})
                    return
                try:
                    params = json.loads(raw or b"{}")
                    if not isinstance(params, dict):
                        raise ValueError("body must be a JSON object")
                except ValueError as exc:
                    self._send(400, {"code": "PGRST102", "message": str(exc), "details": None, "hint": None})
                    return
                outer.calls += 1
                try:
                    result = outer.rpc.call(m["fn"], params)
                except CatalogUnavailable as exc:
                    self._send(*_unavailable(exc))
                    return
                except CatalogError as exc:
                    status = HTTPStatus.NOT_FOUND if exc.code == "PGRST202" else HTTPStatus.BAD_REQUEST
                    details = exc.details if isinstance(exc.details, str | None) else json.dumps(exc.details)
                    self._send(status, {"code": exc.code, "message": exc.message, "details": details, "hint": None})
                    return
                self._send(200, result)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-postgrest", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalPostgrest:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.rpc.close()

    def __enter__(self) -> LocalPostgrest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
