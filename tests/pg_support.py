"""A throwaway PostgreSQL server for tests and benchmarks (DESIGN §11): ``initdb`` and ``pg_ctl``.

Debian's ``postgresql`` package puts its server binaries under ``/usr/lib/postgresql/<version>/bin``
(not on PATH). :class:`Cluster` makes a fresh data directory, starts a server on 127.0.0.1 with a
free port and its Unix socket inside that directory (nothing is written to /var/run), and stops
it with ``pg_ctl -m immediate`` (then by the postmaster's pid if that failed). PostgreSQL refuses
to run as root, so as root the binaries run as the package's ``postgres`` user, on a directory it
owns. The cluster never touches the system one the package may have started on port 5432.

Authentication, in the cluster's ``pg_hba.conf``: the superuser :data:`SUPERUSER` connects
without a password; every other role must give its password (``scram-sha-256``), so a test can
check what a wrong one does.

The pytest fixtures: ``pg_cluster`` (one per session, always stopped at the end) and
``pg_database`` (a fresh database per test, dropped after it); a machine without the package
fails them with a message naming it rather than skipping.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "maestro"
PASSWORD_ROLE = "gw_password"
"""A role that must log in with a password (:data:`PASSWORD`): for the authentication tests."""
PASSWORD = "s3cret-pw"
PACKAGE_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin:"
    " install Debian's postgresql package (apt-get install -y --no-install-recommends postgresql)"
)
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0

_HBA = f"""\
local all all trust
host all {SUPERUSER} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


class ClusterError(RuntimeError):
    """The throwaway server could not be made, started or used."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that holds ``initdb`` and ``pg_ctl``."""
    found = [
        Path(d)
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()
    ]

    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in path.parent.name.split("."))
        except ValueError:
            return (0,)

    return max(found, key=version) if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections (nothing listens; it was just free)."""
    return free_port()


class Cluster:
    """One throwaway PostgreSQL server: :meth:`start` it, then :meth:`stop` it (always).

    Args:
        fsync: False (the default for tests) turns off fsync and synchronous commit: nothing
            here outlives the machine, and tests stay quick. A benchmark of commit latency
            passes True.
    """

    def __init__(self, *, fsync: bool = False) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise ClusterError(PACKAGE_HINT)
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.port = 0
        self._root: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)
        self._options = ""

    @property
    def data_dir(self) -> Path:
        """The data directory (also where the Unix socket and the server's log are)."""
        if self._root is None:
            raise ClusterError("the cluster is not started")
        return self._root / "data"

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return "127.0.0.1"

    def dsn(self, database: str, user: str = SUPERUSER, password: str | None = None) -> str:
        """A libpq URL of ``database`` on this server."""
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    # -- the server ----------------------------------------------------------------------

    def start(self) -> None:
        """Make a data directory and start the server on a free port (a few tries on a clash).

        Raises:
            ClusterError: ``initdb`` or the start failed; the message holds the server's log.
        """
        self._root = Path(tempfile.mkdtemp(prefix="maestro-pg-"))
        atexit.register(self.stop)
        self._root.chmod(0o755)
        data = self.data_dir
        data.mkdir(mode=0o700)
        if self._as_postgres:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError(
                    "running as root, and there is no 'postgres' user to run the server as"
                    " (Debian's postgresql package creates it)"
                ) from None
            os.chown(data, entry.pw_uid, entry.pw_gid)
        self._run(
            self.bin_dir / "initdb",
            *("-D", str(data), "-A", "trust", "-U", SUPERUSER),
            *("--no-instructions", "--encoding", "UTF8", "--locale", "C"),
        )
        hba = data / "pg_hba.conf"
        hba.write_text(_HBA)
        if self._as_postgres:
            shutil.chown(hba, "postgres", "postgres")
        last = ""
        for _ in range(3):
            self.port = free_port()
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {data}",
                "-c max_connections=200",
                "-c shared_buffers=64MB",
            ]
            if not self.fsync:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            self._options = " ".join(options)
            try:
                self.start_server()
            except ClusterError as exc:
                last = str(exc)
                self._kill_postmaster()
                continue
            self.execute(
                f"CREATE ROLE {PASSWORD_ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'", "postgres"
            )
            return
        raise ClusterError(f"the PostgreSQL server did not start: {last}\n{self.log_tail()}")

    def start_server(self) -> None:
        """Start the server on its data directory and port (again, after :meth:`stop_server`).

        Raises:
            ClusterError: it did not start within ``START_TIMEOUT``.
        """
        data = self.data_dir
        self._run(
            self.bin_dir / "pg_ctl",
            *("-D", str(data), "-o", self._options, "-l", str(data / "log")),
            *("-w", "-t", str(int(START_TIMEOUT)), "start"),
            timeout=START_TIMEOUT + 10,
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server and keep its data (``fast``: sessions are ended, what is committed
        stays), to test what clients do while it is away.

        Raises:
            ClusterError: it did not stop within 30 s.
        """
        self._run(
            self.bin_dir / "pg_ctl",
            *("-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"),
            timeout=40,
        )

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and delete its directory."""
        root, self._root = self._root, None
        if root is None:
            return
        data = root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(ClusterError, OSError):
                self._run(
                    self.bin_dir / "pg_ctl",
                    *("-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"),
                    timeout=40,
                )
            self._kill_postmaster(data)
        shutil.rmtree(root, ignore_errors=True)

    def _kill_postmaster(self, data: Path | None = None) -> None:
        pid_file = (data or self.data_dir) / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            text = (self.data_dir / "log").read_text(errors="replace")
        except (OSError, ClusterError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- databases -----------------------------------------------------------------------

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` as the superuser; its output (unaligned, tuples only)."""
        return self._run(
            self.bin_dir / "psql",
            *("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
            *("-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", database),
            *("-c", sql),
            as_server_user=False,
        )

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database, owned by :data:`PASSWORD_ROLE` too; its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} OWNER {PASSWORD_ROLE}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any session still connected to it."""
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # -- running the binaries ------------------------------------------------------------

    def _run(
        self,
        program: Path,
        *args: str,
        timeout: float = COMMAND_TIMEOUT,
        as_server_user: bool = True,
    ) -> str:
        argv = [str(program), *args]
        if as_server_user and self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                cwd="/",  # the postgres user may not be able to enter the current directory
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{program.name} did not finish within {timeout:g}s") from exc
        if done.returncode != 0:
            raise ClusterError(
                f"{program.name} exited {done.returncode}: {done.stderr.strip() or done.stdout}"
            )
        return done.stdout


@contextlib.contextmanager
def running_cluster(*, fsync: bool = False) -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped on exit whatever happens."""
    cluster = Cluster(fsync=fsync)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the whole session; fails (not skips) without one."""
    if find_bin_dir() is None:
        pytest.fail(PACKAGE_HINT, pytrace=False)
    try:
        with running_cluster() as cluster:
            yield cluster
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def pg_database(pg_cluster: Cluster) -> Iterator[str]:
    """The name of a fresh, empty database on ``pg_cluster``, dropped after the test."""
    name = pg_cluster.create_database()
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)
