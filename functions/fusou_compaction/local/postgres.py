"""A PostgreSQL server for the local stack and the tests: throwaway, or kept in a directory.

PostgreSQL refuses to run as root, so as root we run ``initdb`` and the server as the
unprivileged ``postgres`` user, in a directory that user owns.

The server is our child process, not a daemon (``pg_ctl start`` would detach it): on Linux it
gets SIGINT, PostgreSQL's fast shutdown, the moment the thread that started it dies, so a
``kill -9`` of the local stack leaves no server behind holding its port and its data directory,
and what was committed is on disk for the next start. (Start it from a thread that lives as long
as the server should: the process's main thread.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGINT) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the thread that started it dies, even by
    SIGKILL. It runs after Popen switched user (a credential change clears the setting), and a
    parent already gone by then makes the child exit at once."""
    parent = os.getpid()

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def reachable_by_server(path: Path, user: str | None = None) -> bool:
    """Whether the user PostgreSQL runs as can reach ``path`` (as root: the ``postgres`` user)."""
    user = user or ("postgres" if os.geteuid() == 0 else None)
    if user is None:
        return True
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-x", str(path)], capture_output=True, check=False, timeout=30
    )
    return probe.returncode == 0


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
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _log: IO[bytes] | None = field(init=False, default=None)

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

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "postgres.log"

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
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",  # TCP only: a socket path under a deep directory can be too long
            "fsync": "off",  # survives the process, not the machine: a development server
            # A kept catalog commits for real (a WAL write, no fsync), so a server killed on its own
            # loses no committed row; a throwaway one need not.
            "synchronous_commit": "off" if self._owned_dir else "on",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        args = [str(self._bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        pw = pwd.getpwnam(self.run_as) if self.run_as else None
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.base_dir,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server: we stop it in order
            preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509 (only prctl and getppid run there)
            user=pw.pw_uid if pw else None,
            group=pw.pw_gid if pw else None,
            extra_groups=[] if pw else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                raise PostgresUnavailable(f"PostgreSQL exited with {self._proc.returncode} at start:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                try:
                    psycopg.connect(self.url, connect_timeout=2).close()  # past "starting up"
                    return
                except psycopg.OperationalError:
                    pass
            time.sleep(0.05)
        raise PostgresUnavailable(f"PostgreSQL did not accept connections on port {self.port}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # Fast shutdown (clients disconnected, a checkpoint written); immediate if it hangs.
            for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
                proc.send_signal(sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owned_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
