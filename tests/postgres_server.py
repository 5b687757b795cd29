"""A real, throw-away PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temp folder.

No system service, no Docker: the Debian ``postgresql`` package's binaries (scripts/setup.sh
installs them) run a private cluster on a free loopback port with Unix sockets off. PostgreSQL
refuses to run as root, so under root the cluster belongs to the ``postgres`` system user and
every command runs through ``runuser``. The tests stop it (to play a database that goes away)
and start it again on the same port and data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from service.core.loopback import free_port

#: The cluster's superuser (trust authentication: loopback only, a throw-away cluster).
USER = "pulmoseg"
_RUN_AS = "postgres"


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


class PostgresServer:
    """One private cluster: :meth:`start`, :meth:`stop`, :meth:`create_database`, :meth:`url`."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        # Not under pytest's tmp_path: its parents are root-only, and the server runs as
        # ``postgres`` when the tests run as root.
        self.root = Path(tempfile.mkdtemp(prefix="pulmoseg-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(_RUN_AS)  # KeyError: no postgres user, the caller skips
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", _RUN_AS, "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [*self._prefix, str(self.binaries / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}"
            )
        return result

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def start(self) -> None:
        """Start (again) on the same port and data; returns once it accepts connections."""
        options = f"-p {self.port} -h 127.0.0.1 -k '' -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
            "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no clean shutdown of clients)."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL with the psycopg (3) driver."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_until_accepting(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on port {self.port} did not come up in {timeout_s} s")

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
