"""API Gateway (REST, proxy integration) on 127.0.0.1, calling the real API handler in-process.

Each HTTP request becomes the v1 proxy event API Gateway would send: headers and query strings
(single and multi-value), a request context with an id, stage and source identity, and the body
base64-encoded for the binary media types the deployed API declares. The handler's proxy response
is written back (base64 bodies decoded). Only the glue differs from AWS, so local and deployed
behaviour cannot drift.

Like one Lambda container, the handler serves one request at a time (Powertools' resolver keeps
the current event on the app object): concurrent HTTP requests queue behind a lock.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fusou_compaction.observability import logger

# Keep in sync with the REST API's binaryMediaTypes (handlers.api.BINARY_MEDIA_TYPES).
BINARY_MEDIA_TYPES = ("application/vnd.apache.parquet", "application/octet-stream", "multipart/form-data")
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # REST API payload limit
LAMBDA_MAX_EVENT = 6 * 1024 * 1024  # synchronous Invoke payload limit (the event, base64 included)
STAGE = "local"


def _is_binary(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in BINARY_MEDIA_TYPES


def _error_body(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    # In AWS the same body comes from the API's gateway responses (REQUEST_TOO_LARGE, DEFAULT_5XX).
    body = json.dumps({"error": code, "message": message, "details": None}).encode()
    return status, {"Content-Type": "application/json"}, body


def build_event(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """The API Gateway REST v1 proxy event for one request."""
    parts = urlsplit(target)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    multi_query = parse_qs(parts.query, keep_blank_values=True)
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    binary = _is_binary(content_type)
    encoded: str | None
    if not body:
        encoded = None
    elif binary:
        encoded = base64.b64encode(body).decode()
    else:
        encoded = body.decode("utf-8", errors="replace")
    now = time.time()
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,  # the router matches the path itself
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{STAGE}{parts.path}",
            "accountId": "000000000000",
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            # userArn/caller stay None: only API Gateway's IAM authorization sets them, never a client.
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": next((v for k, v in headers if k.lower() == "user-agent"), None),
                "user": None,
            },
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": encoded,
        "isBase64Encoded": bool(body) and binary,
    }


def write_response(response: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    status = int(response.get("statusCode", 502))
    headers: dict[str, str] = {k: str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(str(v) for v in values)
    raw = response.get("body") or ""
    body = base64.b64decode(raw) if response.get("isBase64Encoded") else str(raw).encode()
    return status, headers, body


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from API Gateway
    # Headers and body go out in two writes; with Nagle on, the body waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    gateway: LocalApiGateway

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                total += size
                if total > API_GATEWAY_MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > API_GATEWAY_MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True
            status, headers, out = _error_body(413, "payload_too_large", "Request Too Long (API Gateway's 10 MB limit)")
        else:
            status, headers, out = self.gateway.invoke(
                self.command, self.path, list(self.headers.items()), body, source_ip=self.client_address[0]
            )
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the handler (TRACE, CONNECT, anything): the router answers, as API Gateway's ANY.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("local api " + format % args)


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of clients (500 desktop uploads at once)
    # overflowed it and had connections reset. API Gateway takes them all; so does the kernel's
    # accept queue at this size (capped by net.core.somaxconn, 4096 on current kernels).
    request_queue_size = 1024
    daemon_threads = True


class LocalApiGateway:
    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, feed: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.feed = feed  # one line per request answered, for the local stack's console
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local API is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def invoke(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, source_ip: str = "127.0.0.1"
    ) -> tuple[int, dict[str, str], bytes]:
        started = time.monotonic()
        status, out_headers, out = self._invoke(method, target, headers, body, source_ip=source_ip)
        if self.feed is not None:
            path = urlsplit(target).path
            self.feed(f"{method} {path} → {status} ({(time.monotonic() - started) * 1000:.0f} ms)")
        return status, out_headers, out

    def _invoke(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, source_ip: str
    ) -> tuple[int, dict[str, str], bytes]:
        from fusou_compaction.handlers import api
        from fusou_compaction.local.runner import LocalContext

        event = build_event(method, target, headers, body, source_ip=source_ip)
        # The event's size as Lambda counts it, without re-encoding a megabyte of base64 as JSON.
        if len(event["body"] or "") + len(json.dumps({**event, "body": None})) > LAMBDA_MAX_EVENT:
            # What Lambda refuses before our code runs: the event, base64 included, is over 6 MB.
            return _error_body(
                413,
                "payload_too_large",
                "the request is over Lambda's 6 MB event limit: use POST /api/compaction/upload-url",
            )
        with self._lock:
            try:
                response = api.handler(event, LocalContext(function_name="api"))
            except Exception:
                logger.exception("the API handler raised")  # API Gateway answers 502 on a Lambda error
                return _error_body(502, "internal_error", "Internal server error")
        return write_response(response)

    def start(self) -> LocalApiGateway:
        handler = type("Handler", (_RequestHandler,), {"gateway": self})
        self._server = _Server((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalApiGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
