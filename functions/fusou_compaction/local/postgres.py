"""A throwaway PostgreSQL server for the local stack and the tests.

PostgreSQL refuses to run as root, so as root we run ``initdb`` and ``pg_ctl`` as the
unprivileged ``postgres`` user, in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
    "`apt-get install -y postgresql` (Debian/Ubuntu) or put their directory on PATH."
)


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return candidates[-1].parent
    raise PostgresUnavailable(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """initdb + pg_ctl in ``base_dir``; ``url`` is ready once :meth:`start` returns."""

    base_dir: Path | None = None
    port: int = 0
    run_as: str | None = None
    _bin: Path = field(init=False)
    _owned_dir: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._bin = find_pg_bin()
        if self.run_as is None and os.geteuid() == 0:
            self.run_as = "postgres"
        if self.base_dir is None:
            # Not under a 0700 pytest tmp dir: the postgres user must be able to reach it.
            self.base_dir = Path(tempfile.mkdtemp(prefix="fusou-pg-"))
            self._owned_dir = True
        self.base_dir = Path(self.base_dir).resolve()
        if not self.port:
            self.port = free_port()

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)

    def _chown(self, path: Path) -> None:
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self) -> PostgresServer:
        assert self.base_dir is not None
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.base_dir)
        if self.run_as and not self._owned_dir:
            probe = self._run("test", "-w", str(self.base_dir))
            if probe.returncode != 0:
                raise PostgresUnavailable(
                    f"{self.base_dir} is not reachable by the '{self.run_as}' user that PostgreSQL runs as; "
                    "use a directory under /tmp"
                )
        if not (self.data_dir / "PG_VERSION").exists():
            res = self._run(
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
            if res.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        opts = (
            f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        res = self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.base_dir / "postgres.log"),
            "-o",
            opts,
            "start",
        )
        if res.returncode != 0:
            log = self.base_dir / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {res.stderr.strip()}\n{tail}")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise PostgresUnavailable(f"PostgreSQL did not accept connections on port {self.port}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            res = self._run(str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "20", "stop")
            if res.returncode != 0:  # a client that will not let go must not keep the server alive
                self._run(str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        if self._owned_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
