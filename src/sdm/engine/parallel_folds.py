"""Folds in parallel: an experiment's folds trained at once, one worker process per device.

The parent checks and prepares the experiment once, as ``ExperimentFolder.run`` does, then keeps one
fold running on every entry of ``devices`` (``cuda:0,cuda:1`` or ``cpu,cpu``); a device takes
the next fold when its fold ends. Each worker is a separate process (multiprocessing "spawn")
that trains one fold through ``FoldTrainer`` with ``training.device`` set to its device, so a
fold resumes from its latest checkpoint exactly as in sequential training; its stdout and
stderr are appended to ``fold_<k>/train.log``. A fold finished before is not started again. A
fold that fails (its training raises, or its process dies) does not stop the others: the
results say which folds failed and why, and the caller decides what that means. Tracking
(``training.loggers``): the parent opens the experiment's run (``ExperimentFolder.prepare``) and
ends it; each worker logs its fold's nested run.
"""

from __future__ import annotations

import copy
import faulthandler
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import torch

from sdm import constants as C
from sdm import storage
from sdm.config import ExperimentConfig
from sdm.engine import build, mlflow_runs
from sdm.engine.experiment import ExperimentFolder
from sdm.engine.fold import FoldTrainer
from sdm.errors import UserInputError

DONE = "done"
FAILED = "failed"
# The end of a worker's error message kept in its result: it must fit in the pipe's buffer
# (64 KiB at least), as the parent reads it only once the worker has ended.
ERROR_CHARS = 4000


@dataclass
class _Job:
    """A fold running in a worker process."""

    fold: int
    device: str
    log: Path
    process: BaseProcess
    results: Connection
    started: float


# ----- devices -----------------------------------------------------------------------------


def parse_devices(text: str) -> list[str]:
    """The devices of ``--devices``: a non-empty comma-separated list of ``cpu``, ``cuda``,
    ``cuda:N`` and ``mps`` (a device may repeat: ``cpu,cpu`` trains two folds at once).
    UserInputError saying what is wrong, see ``check_devices``."""
    devices = [item.strip() for item in text.split(",")]
    if "" in devices:
        raise UserInputError(f"--devices {text!r}: expected a comma-separated list of devices "
                             "without empty items, such as cpu,cpu or cuda:0,cuda:1")
    check_devices(devices)
    return devices


def check_devices(devices: Sequence[str]) -> None:
    """UserInputError unless ``devices`` is non-empty and each is a device of this machine
    (``build.check_device``: the error for a missing CUDA device names the available ones)."""
    if not devices:
        raise UserInputError("--devices: no device given; expected e.g. cpu,cpu or cuda:0,cuda:1")
    for device in devices:
        build.check_device(device, "--devices")


def _cpu_threads(devices: Sequence[str], folds: int) -> int:
    """Torch threads of each CPU worker: the cores shared by the CPU folds running at once."""
    running = min(list(devices).count("cpu"), folds)
    return max(1, (os.cpu_count() or 1) // max(running, 1))


# ----- the parent --------------------------------------------------------------------------


def run_folds_in_parallel(config: ExperimentConfig, devices: Sequence[str],
                          allow_config_change: bool = False) -> list[dict[str, Any]]:
    """Checks and prepares the experiment like ``ExperimentFolder.run``, then trains the folds of
    ``config.training.folds`` in worker processes, one at a time per entry of ``devices``.

    Prints a line as each fold starts and ends, and the ``summary_table`` at the end. Returns
    one result per fold, in ``training.folds`` order: ``fold``, ``device`` (None for a fold
    finished before), ``status`` (``DONE`` or ``FAILED``), ``best_epoch`` and
    ``best_val_map_at_r`` (None when failed), ``seconds`` (wall time of its worker),
    ``error`` (where its exception was raised and its message, or how its process died; None
    when done) and ``log`` (its log file). Raises before anything is written when the devices
    or the experiment are wrong; a failing fold does not raise.
    """
    folds = list(config.training.folds)
    check_devices(devices)
    _check_distinct(folds)
    experiment = ExperimentFolder.of(config)
    experiment.prepare(allow_config_change)
    folder = experiment.path
    try:
        results = {fold: _finished_before(folder, fold) for fold in folds}
        pending = deque(fold for fold in folds if results[fold] is None)
        results.update(_run_workers(config, folder, pending, list(devices)))
    finally:
        experiment.training_lock.release()
    ordered = [results[fold] for fold in folds]
    if experiment.tracking is not None:  # each worker tracks its fold in a nested run
        failed = any(result["status"] == FAILED for result in ordered)
        experiment.tracking.end(mlflow_runs.FAILED if failed else mlflow_runs.FINISHED)
    print(summary_table(ordered), flush=True)
    return ordered


def _check_distinct(folds: list[int]) -> None:
    repeated = sorted({fold for fold in folds if folds.count(fold) > 1})
    if repeated:
        raise UserInputError(f"training.folds lists fold {repeated[0]} more than once: in "
                             "parallel it would be trained twice at once in the same folder")


def _finished_before(folder: Path, fold: int) -> dict[str, Any] | None:
    """The result of a fold whose ``done.json`` exists (it is not trained again), else None."""
    done = ExperimentFolder(folder).fold(fold) / C.FOLD_DONE_FILE
    if not done.is_file():
        return None
    print(f"fold {fold}: finished before ({done}); not trained again", flush=True)
    return _result(fold, None, _log_path(folder, fold), 0.0, summary=storage.read_json(done))


def _run_workers(config: ExperimentConfig, folder: Path, pending: deque[int],
                 devices: list[str]) -> dict[int, dict[str, Any]]:
    """Trains the ``pending`` folds, each free device taking the next one; their results."""
    context = multiprocessing.get_context("spawn")
    threads = _cpu_threads(devices, len(pending))
    free, running, results = list(devices), {}, {}
    try:
        while pending or running:
            while pending and free:
                job = _start(context, config, folder, pending.popleft(), free.pop(0), threads)
                running[job.process.sentinel] = job
            for sentinel in wait(list(running)):
                job = running.pop(sentinel)
                results[job.fold] = _finish(job)
                free.append(job.device)
    except BaseException:
        _stop(list(running.values()))
        raise
    return results


def _start(context: Any, config: ExperimentConfig, folder: Path, fold: int, device: str,
           threads: int) -> _Job:
    log = _log_path(folder, fold)
    log.parent.mkdir(parents=True, exist_ok=True)
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_worker, name=f"sdm-fold-{fold}",
        args=(config, folder, fold, device, threads if device == "cpu" else None, log, sender))
    process.start()
    sender.close()  # the worker holds the only sending end: its death reads as EOF
    print(f"fold {fold}: started on {device} (pid {process.pid}), log {log}", flush=True)
    return _Job(fold, device, log, process, receiver, time.monotonic())


def _finish(job: _Job) -> dict[str, Any]:
    """The result of a job whose process has ended, announced in one line."""
    job.process.join()
    seconds = round(time.monotonic() - job.started, 1)
    message = _receive(job.results)
    if message is not None and message[0] == DONE:
        result = _result(job.fold, job.device, job.log, seconds, summary=message[1])
        print(f"fold {job.fold}: done on {job.device} in {seconds:.1f} s: best epoch "
              f"{result['best_epoch']}, val MAP@R {100 * result['best_val_map_at_r']:.2f}",
              flush=True)
        return result
    error = message[1] if message is not None else _exit_description(job.process.exitcode)
    print(f"fold {job.fold}: FAILED on {job.device} after {seconds:.1f} s: "
          f"{error.splitlines()[-1]} (log {job.log})", flush=True)
    return _result(job.fold, job.device, job.log, seconds, error=error)


def _receive(connection: Connection) -> tuple[str, Any] | None:
    """What the worker sent, or None when it died before sending anything."""
    try:
        return connection.recv() if connection.poll() else None
    except EOFError:
        return None
    finally:
        connection.close()


def _exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"worker process killed by signal {signal.Signals(-exitcode).name}"
    return f"worker process exited with code {exitcode} before reporting a result"


def _stop(jobs: list[_Job]) -> None:
    """Ends the running workers and waits for them (checkpoints are written atomically, so
    each fold resumes from its last one on rerun)."""
    for job in jobs:
        job.process.terminate()
    for job in jobs:
        job.process.join()


def _log_path(folder: Path, fold: int) -> Path:
    return ExperimentFolder(folder).fold(fold) / C.FOLD_LOG


def _result(fold: int, device: str | None, log: Path, seconds: float,
            summary: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    summary = summary or {}
    return {"fold": fold, "device": device, "status": DONE if error is None else FAILED,
            "best_epoch": summary.get("best_epoch"),
            "best_val_map_at_r": summary.get("best_val_map_at_r"),
            "seconds": seconds, "error": error, "log": str(log)}


def summary_table(results: list[dict[str, Any]]) -> str:
    """``results`` of ``run_folds_in_parallel`` as a text table (fold, device, status, best
    epoch, best val MAP@R in percent, seconds), then each failed fold's error and log."""
    header = ("fold", "device", "status", "best epoch", "best val MAP@R", "seconds")
    rows = [(str(r["fold"]), r["device"] or "-", r["status"],
             "-" if r["best_epoch"] is None else str(r["best_epoch"]),
             "-" if r["best_val_map_at_r"] is None else f"{100 * r['best_val_map_at_r']:.2f}",
             f"{r['seconds']:.1f}") for r in results]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]
    for r in results:
        if r["status"] == FAILED:
            lines += [f"fold {r['fold']} failed (log {r['log']}):",
                      *(f"  {line}" for line in r["error"].splitlines())]
    return "\n".join(lines)


# ----- a worker ----------------------------------------------------------------------------


def _worker(config: ExperimentConfig, folder: Path, fold: int, device: str, threads: int | None,
            log: Path, results: Connection) -> None:
    """A worker process: trains ``fold`` on ``device`` with its output in ``log``; sends
    ``(DONE, fold summary)``, or ``(FAILED, _error_text)`` and exits 1 (the whole traceback
    is in the log)."""
    _redirect_output(log)
    print(f"=== sdm train --devices: fold {fold} on {device}, pid {os.getpid()}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===", flush=True)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        summary = _train_fold(config, folder, fold, device)
    except Exception as error:
        traceback.print_exc()
        results.send((FAILED, _error_text(error)))
        sys.exit(1)
    results.send((DONE, summary))


def _error_text(error: BaseException) -> str:
    """Where ``error`` was raised (its innermost frame) and its message, at most
    ``ERROR_CHARS`` characters (the end kept)."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    return f'File "{frame.filename}", line {frame.lineno}, in {frame.name}\n{message}'[
        -ERROR_CHARS:]


def _redirect_output(log: Path) -> None:
    """Appends this process's stdout and stderr to ``log``, line by line: the file
    descriptors, so that the interpreter's and C libraries' messages go there too."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "a") as stream:
        os.dup2(stream.fileno(), sys.stdout.fileno())
        os.dup2(stream.fileno(), sys.stderr.fileno())
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    faulthandler.enable()


def _train_fold(config: ExperimentConfig, folder: Path, fold: int, device: str) -> dict[str, Any]:
    """Trains (or resumes) ``fold`` of the prepared experiment on ``device``: its summary."""
    config = copy.deepcopy(config)
    config.training.device = device
    experiment = ExperimentFolder(folder, config)
    return FoldTrainer(config, fold, experiment.fold(fold), *experiment.data()).run()
