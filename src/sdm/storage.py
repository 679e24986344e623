"""Everything a run leaves on disk: atomic files, checkpoints, per-epoch CSV, run information.

Every file is written to a temporary name in its destination folder and then renamed, so an
interrupted run never leaves a half-written checkpoint or table behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sdm.errors import UserInputError, cause

PACKAGES = ("torch", "torchvision", "pytorch-metric-learning", "faiss-cpu", "numpy", "omegaconf")


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Deletes the temporary files ``atomic_write`` left below ``folder`` when its process was
    killed mid-write (the real files are intact); returns them. Only for a folder no other
    process is writing to."""
    partial = sorted(Path(folder).rglob(".*.tmp")) if Path(folder).is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def atomic_write(path: str | Path, write: Callable[[Any], object], mode: str = "wb") -> None:
    """Calls ``write(stream)`` on a temporary file beside ``path``, then renames it into place
    (readable by all, like a normally created file). The old file survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    atomic_write(Path(path), lambda stream: stream.write(text), "w")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename."""
    atomic_write(Path(path), lambda stream: torch.save(state, stream), "wb")


class CheckpointError(UserInputError):
    """A checkpoint file that is there but cannot be used: damaged, or not a checkpoint."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict ``save_checkpoint`` wrote to ``path``, on the CPU. FileNotFoundError when there
    is no file; CheckpointError naming the file when it cannot be read as a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged file fails in torch.load in many different ways
        raise CheckpointError(f"checkpoint {path} cannot be read: it is damaged or not a "
                              f"checkpoint ({cause(error)})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not the "
                              "dict of a checkpoint")
    return state


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """All ``rows`` as one CSV, atomically; the columns are every key of any row in the order
    they first appear, and a row without a column leaves its cell empty."""
    buffer = io.StringIO()
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def git_revision(folder: str | Path = ".") -> str:
    """``<commit>[+dirty]`` of the repository holding ``folder``, or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_info(seed: int) -> dict[str, Any]:
    """Seed, package versions, Python, platform, CPU and PyTorch's thread count (another count
    rounds differently, so the same seed can end elsewhere), CUDA and git state, for the
    record of the run's latest invocation."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "seed": seed,
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git": git_revision(Path(__file__).parent),
        "command": sys.argv,
    }


def save_figure(figure: Any, path: str | Path, dpi: int = 110) -> Path:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=dpi), "wb")
    plt.close(figure)
    return path
