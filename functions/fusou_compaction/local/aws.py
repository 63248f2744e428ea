"""moto's server on loopback, standing in for S3, SQS and Step Functions' APIs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from moto.server import ThreadedMotoServer

from fusou_compaction.local.postgres import free_port

LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@dataclass
class LocalAws:
    port: int = 0
    region: str = "us-east-1"
    _server: ThreadedMotoServer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalAws:
        # moto signs nothing, but botocore insists on having credentials to sign with.
        for k, v in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(k, v)
        # moto's werkzeug server logs every request at INFO.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
