"""A real, private PostgreSQL server for tests.

``PostgresServer`` runs Debian's PostgreSQL (``/usr/lib/postgresql/<version>/bin``,
the newest version installed) from a temporary directory, on /dev/shm when
there is one: ``initdb`` with trust authentication, then ``pg_ctl start``
listening on 127.0.0.1 on a free port, with its unix socket in the same
temporary directory and durability switched off for speed. ``stop()`` shuts it down (``pg_ctl stop -m fast``)
and removes the directory.

PostgreSQL refuses to run as root, so when the tests run as root every
server command runs as the ``postgres`` OS user (``runuser -u postgres --``)
and the temporary directory is handed to that user.

Faults for the tests of the controller's outages (test_store_faults.py),
on a server of its own: ``kill()`` (SIGKILL to the postmaster and every
backend), ``restart()`` (on the same port), ``freeze()`` / ``thaw()``
(SIGSTOP / SIGCONT to all of them).

Fixtures: ``postgres_server`` (one server per test session) and
``postgres_url`` (a fresh database per test, dropped afterwards);
``private_server()`` gives a server of one's own, with the same skipping. Without
PostgreSQL binaries they skip the test, unless ``SWARM_REQUIRE_POSTGRES=1``
is set (as CI does): then they fail it, so a missing PostgreSQL can never
pass silently.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pytest

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
OS_USER = "postgres"
REQUIRE_ENV = "SWARM_REQUIRE_POSTGRES"
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
START_ATTEMPTS = 5

# Written into postgresql.conf: a throwaway server needs no durability.
# A server that tests kill -9 does (``durable=True``): with synchronous_commit
# off it acknowledges commits it loses with the process, and a lost write
# would be the server's, not the controller's.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'16MB'",
    "max_connections": "50",
    "log_min_messages": "warning",
}


class PostgresUnavailable(Exception):
    """PostgreSQL (or psycopg2) is not installed here."""


def find_bindir(root: Path | None = None) -> Path:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql."""
    root = root or PG_ROOT
    versions: list[tuple[tuple[int, ...], Path]] = []
    if root.is_dir():
        for entry in root.iterdir():
            if not re.fullmatch(r"\d+(\.\d+)*", entry.name):
                continue
            if all((entry / "bin" / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
                versions.append((tuple(int(part) for part in entry.name.split(".")), entry / "bin"))
    if not versions:
        raise PostgresUnavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found under {root}/<version>/bin "
            "(on Debian: apt-get install postgresql)"
        )
    return max(versions)[1]


def scratch_root() -> str | None:
    """Where the server's files go: tmpfs when there is one (creating a
    database there is ten times faster than on disk), else the usual temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return str(shm)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One private PostgreSQL server in a temporary directory."""

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        self.bindir = bindir or find_bindir()
        self.durable = durable
        self.base: Path | None = None
        self.port = 0
        self._running = False
        self._as_root = os.geteuid() == 0
        self._owner: pwd.struct_passwd | None = None
        if self._as_root:
            try:
                self._owner = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, but there is no {OS_USER!r} OS user to run PostgreSQL as"
                ) from None

    @property
    def data_dir(self) -> Path:
        assert self.base is not None, "server not started"
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None, "server not started"
        return self.base / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.base,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return result

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed with exit code {result.returncode}:\n{result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        if self.base is None or not self.log_path.exists():
            return ""
        return "\nserver log:\n" + self.log_path.read_text(errors="replace")[-3000:]

    def start(self) -> None:
        if self._running:
            return
        self.base = Path(tempfile.mkdtemp(prefix="swarm-pg-", dir=scratch_root()))
        try:
            if self._owner is not None:
                os.chown(self.base, self._owner.pw_uid, self._owner.pw_gid)
            self._check(
                self._run(
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ),
                "initdb",
            )
            settings = {
                **SETTINGS,
                **(DURABLE if self.durable else {}),
                "unix_socket_directories": f"'{self.base}'",
            }
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("\n# swarm test server\n")
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            self._start_on_free_port()
            atexit.register(self.stop)
        except BaseException:
            self.stop()
            raise

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        return self._run(
            "pg_ctl",
            *("start", "-D", str(self.data_dir), "-l", str(self.log_path)),
            *("-o", f"-p {self.port}", "-w", "-t", str(int(START_TIMEOUT))),
        )

    def _start_on_free_port(self) -> None:
        # The port is free when chosen but could be taken before the server
        # binds it; try again on another one if that happens.
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                self._running = True
                self._wait_accepting()
                return
            if attempt == START_ATTEMPTS or "in use" not in self._log_tail():
                self._check(result, "pg_ctl start")

    def _wait_accepting(self) -> None:
        """Return once a client can connect and run a query."""
        import psycopg2

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                conn = psycopg2.connect(self.url(), connect_timeout=5)
            except psycopg2.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"PostgreSQL is not accepting connections: {exc}{self._log_tail()}"
                    ) from None
                time.sleep(0.05)
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return
            finally:
                conn.close()

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory. Idempotent."""
        atexit.unregister(self.stop)
        self._running = False
        try:
            # By the pid file rather than by _running: a start that timed out
            # may still have left a server behind.
            if self.base is not None and (self.data_dir / "postmaster.pid").exists() and self._alive():
                self.thaw()  # a frozen server would never stop
                self._check(
                    self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w"), "pg_ctl stop"
                )
        finally:
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None

    # -- faults ----------------------------------------------------------------

    def pids(self) -> list[int]:
        """The postmaster's pid and its children's (backends, checkpointer, ...)."""
        try:
            postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def _alive(self) -> bool:
        pids = self.pids()
        return bool(pids) and Path(f"/proc/{pids[0]}").exists()

    def _signal_all(self, sig: int) -> list[int]:
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def kill(self) -> None:
        """kill -9 the whole server, as a crash would, and wait until it is gone."""
        pids = self._signal_all(signal.SIGKILL)
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {pids} survived SIGKILL")
            time.sleep(0.01)
        self._running = False

    def restart(self) -> None:
        """Start the server again on its port, after kill() or a stop."""
        self._check(self._pg_ctl_start(), "pg_ctl start (restart)")
        self._running = True
        self._wait_accepting()

    def freeze(self) -> None:
        """SIGSTOP every server process: connections stay open, nothing answers."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        import psycopg2

        conn = psycopg2.connect(self.url(), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        from psycopg2 import sql

        with self._admin() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop a database, first ending any connection a test left open to it."""
        from psycopg2 import sql

        with self._admin() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = sql.SQL(" WITH (FORCE)" if cur.connection.server_version >= 130000 else "")
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def private_server(*, durable: bool = False) -> PostgresServer:
    """A new, unstarted server; skips (or fails, see REQUIRE_ENV) without PostgreSQL."""
    try:
        import psycopg2  # noqa: F401

        server = PostgresServer(durable=durable)
    except ImportError:
        reason = "psycopg2 is not installed (pip install psycopg2-binary)"
    except PostgresUnavailable as exc:
        reason = str(exc)
    else:
        return server
    _unavailable(reason)  # outside the except block: no chained traceback


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the whole test session."""
    server = private_server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL to a fresh, empty database, dropped after the test."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    name = f"t{next(_database_numbers)}_{slug}"[:63]
    postgres_server.create_database(name)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
