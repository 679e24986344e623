"""A throwaway MLflow tracking server for the tests that need one: ``mlflow server`` with a
SQLite backend and a temporary artifact folder, on 127.0.0.1 at a free port.

``running_mlflow`` starts it in its own process group (the server runs uvicorn and a job
runner as child processes), returns once ``/health`` answers (polled until a deadline), and
always stops the whole group. ``mlflow_server`` is the module-scoped pytest fixture around it;
it skips when MLflow is not installed (the ``[mlflow]`` extra), and fails under CI instead.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 180  # a loaded 2-core machine needs ~30 s to import and start the server
STOP_TIMEOUT_S = 30
POLL_S = 0.25
TAIL_CHARS = 3000


class MlflowServerError(RuntimeError):
    """The test server could not start; the message carries the tail of its log."""


@dataclass
class MlflowServer:
    """A running server: its URL (``http://127.0.0.1:<port>``), port and folder."""

    url: str
    port: int
    folder: Path
    process: subprocess.Popen


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mlflow_command() -> list[str]:
    """The ``mlflow`` CLI of this interpreter's environment."""
    beside = Path(sys.executable).parent / "mlflow"
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "mlflow"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _log_tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return text[-TAIL_CHARS:].strip() or "(empty)"


@contextmanager
def running_mlflow(folder: Path, port: int | None = None) -> Iterator[MlflowServer]:
    """Runs ``mlflow server`` with its SQLite database and artifacts below ``folder`` (kept
    across restarts on the same folder and port); stops it on exit, normal or not."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"server-{port}.log"
    command = [*mlflow_command(), "server",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("a") as stream:
        # TMPDIR: the server's database lock file goes below ``folder``, not into /tmp
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=folder,
                                   env={**os.environ, "TMPDIR": str(folder)})
    server = MlflowServer(f"http://127.0.0.1:{port}", port, folder, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(server.url):
            if process.poll() is not None:
                raise MlflowServerError(f"mlflow server exited with {process.returncode}:\n"
                                        f"{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise MlflowServerError(f"mlflow server not healthy after {START_TIMEOUT_S} s:"
                                        f"\n{_log_tail(log)}")
            time.sleep(POLL_S)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stops the server's process group: SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    try:  # children that outlived the leader (uvicorn, the job runner)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def require_mlflow() -> None:
    """Skips the test when MLflow is not installed; fails it under CI, which installs it."""
    if shutil.which("mlflow") is None and not (Path(sys.executable).parent / "mlflow").is_file():
        message = "MLflow not installed (pip install 'sdm-metric-learning[mlflow]')"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI installs the test extra")
        pytest.skip(f"SKIPPING: {message}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A private MLflow server for this test module."""
    require_mlflow()
    with running_mlflow(tmp_path_factory.mktemp("mlflow_server")) as server:
        yield server
