"""An ``sdm`` command that trains (``sdm train``, ``sdm study run``), stopped at a chosen moment
of its training so that a test can signal it there.

    python tests/killable_train.py STOP train CONFIG|KEY=VALUE...
    python tests/killable_train.py STOP study run PLAN [OPTIONS]
    python tests/killable_train.py STOP tune CONFIG|KEY=VALUE... [OPTIONS]

STOP is one of
  ``step:E:S``   after training step S (1-based) of epoch E;
  ``saved:E``    once ``latest.pth`` of epoch E is in place;
  ``writing:E``  while ``latest.pth`` of epoch E is being written: half of its bytes are in
                 the temporary file, the rest not yet;
  ``trial:N``    when tuning trial N (``sdm tune``) is about to train its first epoch.
At that moment the process prints ``STOPPED <STOP>`` on stdout and blocks until a signal ends
it (the test sends one). With ``SDM_TEST_WORKERS_STOP=STOP`` in the environment, the worker
processes the command spawns (``sdm train --devices``) stop there too, each announcing it in
its own output (its fold's log). Everything else is the real command: the patches only observe, they
change no computation, so the run's numbers are those of ``python -m sdm ...``.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from sdm import cli, storage
from sdm.constants import LATEST_CHECKPOINT
from sdm.engine import fold
from training_helpers import WORKERS_STOP

LATEST = Path(LATEST_CHECKPOINT).name


def stop_here(stop: str) -> None:
    """Announces the moment on stdout, then blocks until a signal's handler raises (SIGINT,
    SIGTERM under ``sdm``) or the signal kills the process."""
    sys.stdout.write(f"STOPPED {stop}\n")  # one write: worker processes share the stream
    sys.stdout.flush()
    while True:
        signal.pause()


def install(stop: str) -> None:
    """Patches the one place in the child that ``stop`` names."""
    kind, *numbers = stop.split(":")
    if kind == "trial":
        trial_folder = f"trial_{int(numbers[0])}"
        train_one_epoch = fold.FoldTrainer.train_one_epoch

        def held_epoch(self: fold.FoldTrainer, number: int) -> float:
            if self.folder.parent.name == trial_folder:
                stop_here(stop)
            return train_one_epoch(self, number)

        fold.FoldTrainer.train_one_epoch = held_epoch
        return
    epoch = int(numbers[0])
    if kind == "step":
        step_wanted = int(numbers[1])
        train_one_epoch, train_step = fold.FoldTrainer.train_one_epoch, fold.train_step
        current = {"epoch": 0, "step": 0}

        def counting_epoch(self: fold.FoldTrainer, number: int) -> float:
            current.update(epoch=number, step=0)
            return train_one_epoch(self, number)

        def counting_step(*args: Any, **kwargs: Any) -> float:
            value = train_step(*args, **kwargs)
            current["step"] += 1
            if (current["epoch"], current["step"]) == (epoch, step_wanted):
                stop_here(stop)
            return value

        fold.FoldTrainer.train_one_epoch = counting_epoch
        fold.train_step = counting_step
    elif kind == "saved":
        save_checkpoint = storage.save_checkpoint

        def observed_save(path: str | Path, state: dict[str, Any]) -> None:
            save_checkpoint(path, state)
            if Path(path).name == LATEST and state["epoch"] == epoch:
                stop_here(stop)

        storage.save_checkpoint = observed_save
    elif kind == "writing":
        save = torch.save

        def half_save(obj: Any, target: Any, *args: Any, **kwargs: Any) -> None:
            # Only the latest checkpoint holds the optimizers' state.
            if isinstance(obj, dict) and "optimizers" in obj and obj["epoch"] == epoch:
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                target.write(data[:len(data) // 2])
                target.flush()
                stop_here(stop)
            save(obj, target, *args, **kwargs)

        torch.save = half_save
    else:
        raise SystemExit(f"unknown STOP {stop!r}; expected step:E:S, saved:E, writing:E or trial:N")


if __name__ == "__mp_main__" and os.environ.get(WORKERS_STOP):
    install(os.environ[WORKERS_STOP])  # a worker process the command spawned (see WORKERS_STOP)

if __name__ == "__main__":
    # Ctrl-C as at a terminal, even where the tests run in a background job, whose children
    # inherit SIGINT ignored (a shell without job control)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(sys.argv[1])
    sys.exit(cli.main(sys.argv[2:]))
