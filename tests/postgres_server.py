"""A throwaway PostgreSQL server for the tests that need one, started from Debian's packages.

``running_postgres`` initialises a cluster in a given folder, serves it on a Unix socket only
(nothing listens on the network, so parallel runs cannot collide) and always stops it. The
server refuses to run as root, so under root it runs as the ``postgres`` OS user that Debian's
``postgresql`` package creates. ``postgres_url`` is the pytest fixture around it: it skips
loudly when the binaries are missing, and fails instead under CI, which must never skip it.
"""

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest

SERVER_USER = "postgres"  # the OS user Debian's postgresql package creates
DATABASE = "sdm_test"
TOOLS = ("initdb", "pg_ctl", "createdb")
STEP_TIMEOUT_S = 60
TAIL_CHARS = 2000


class PostgresServerError(RuntimeError):
    """A step of starting or stopping the test server failed; the message says which and why."""


def find_postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and createdb, or None when PostgreSQL is not installed.

    Debian's /usr/lib/postgresql/<version>/bin folders come first, newest version first (they
    are not on PATH); then the folder of a ``pg_ctl`` found on PATH.
    """
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda folder: _version_key(folder.parent.name),
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    candidates = [*debian, *([Path(on_path).parent] if on_path else [])]
    return next((folder for folder in candidates if _has_tools(folder)), None)


def _version_key(name: str) -> tuple[int, ...]:
    """Sort key of a version folder name such as "15" or "9.6"; non-numeric names sort first."""
    parts = name.split(".")
    return tuple(int(part) for part in parts) if all(p.isdigit() for p in parts) else (-1,)


def _has_tools(folder: Path) -> bool:
    """Whether every tool the server needs is an executable file in ``folder``."""
    return all(os.access(folder / tool, os.X_OK) for tool in TOOLS)


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as the postgres OS user when we are root, else as ourselves."""
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _give_to_server_user(*paths: Path) -> None:
    """Hand ``paths`` to the postgres OS user when we are root; a no-op otherwise."""
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, user=SERVER_USER, group=SERVER_USER)


def _tail(text: str) -> str:
    """The last few lines' worth of ``text``, for error messages."""
    return text[-TAIL_CHARS:].strip() or "(empty)"


def _run(command: list[str], cwd: Path, log: Path | None = None) -> None:
    """Run ``command`` as the server user in ``cwd``; raise PostgresServerError if it fails.

    The error names the command and carries its output and, when given, the tail of ``log``.
    """
    full = _as_server_user(command)
    try:
        done = subprocess.run(
            full, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise PostgresServerError(f"timed out after {STEP_TIMEOUT_S} s: {full}") from error
    if done.returncode != 0:
        message = f"exit status {done.returncode}: {full}\n{_tail(done.stdout + done.stderr)}"
        if log is not None:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            message += f"\nserver log {log}:\n{_tail(server_log)}"
        raise PostgresServerError(message)


def _free_port() -> int:
    """A TCP port number nobody uses now; the server only names its socket file after it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_postgres(workdir: Path, bin_dir: Path | None = None) -> Iterator[str]:
    """Run a fresh PostgreSQL server below ``workdir``; yield a SQLAlchemy URL to its database.

    ``workdir`` must exist, be searchable by the postgres OS user when we are root, and have
    no spaces or quotes in its path (pg_ctl hands the server options to a shell). The
    cluster lives in ``workdir/postgres`` (data/, socket/, server.log); its only user is
    ``postgres`` with trust authentication, and it listens on a Unix socket in socket/ only.
    The URL (``postgresql+psycopg2://postgres@/sdm_test?host=...&port=...``) works with
    SQLAlchemy and Optuna's RDB storage. ``bin_dir`` defaults to ``find_postgres_bin()``.
    On exit, normal or by an exception, the server is stopped; the files are left to the caller.
    Raises PostgresServerError, naming the failed command and its output, if a step fails.
    """
    bin_dir = bin_dir or find_postgres_bin()
    if bin_dir is None:
        raise PostgresServerError(f"PostgreSQL binaries ({', '.join(TOOLS)}) not found")
    root, port = workdir / "postgres", _free_port()
    data, sockets, log = root / "data", root / "socket", root / "server.log"
    sockets.mkdir(parents=True)
    _give_to_server_user(root, sockets)
    _run([str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", SERVER_USER,
          "--encoding=UTF8", "--locale=C", "--no-sync"], cwd=root)
    options = f"-k {sockets} -c listen_addresses='' -p {port} -F"
    try:
        _run([str(bin_dir / "pg_ctl"), "start", "-w", "-t", str(STEP_TIMEOUT_S), "-D", str(data),
              "-l", str(log), "-o", options], cwd=root, log=log)
        _run([str(bin_dir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", SERVER_USER,
              DATABASE], cwd=root, log=log)
        yield f"postgresql+psycopg2://{SERVER_USER}@/{DATABASE}?" + urlencode(
            {"host": str(sockets), "port": port}
        )
    finally:
        if (data / "postmaster.pid").exists():
            _run([str(bin_dir / "pg_ctl"), "stop", "-w", "-t", str(STEP_TIMEOUT_S), "-m",
                  "immediate", "-D", str(data)], cwd=root, log=log)


def require_postgres_bin() -> Path:
    """The PostgreSQL binaries' folder; else skip the test, or fail it when CI is set.

    The skip message starts "SKIPPING: PostgreSQL binaries not found"; CI must never skip,
    since .ci/run installs Debian's postgresql package.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        message = "PostgreSQL binaries not found (install Debian's postgresql package)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs it")
        pytest.skip(f"SKIPPING: {message}")
    return bin_dir


@contextmanager
def server_workdir() -> Iterator[Path]:
    """A fresh folder for ``running_postgres``, removed with all its contents on exit.

    It sits under the system temp dir, not pytest's (whose 0700 parents the postgres OS user
    cannot search), and keeps the socket path well under the 107-byte limit.
    """
    workdir = Path(tempfile.mkdtemp(prefix="sdm-pg-"))
    try:
        workdir.chmod(0o755)
        yield workdir
    finally:
        shutil.rmtree(workdir)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL to an empty database on a private PostgreSQL server for this module.

    Skips (or fails under CI) as ``require_postgres_bin`` does when PostgreSQL is missing.
    """
    bin_dir = require_postgres_bin()
    with server_workdir() as workdir, running_postgres(workdir, bin_dir) as url:
        yield url
