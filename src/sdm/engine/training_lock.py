"""One trainer per experiment folder at a time.

``TrainingLock`` holds an exclusive advisory lock (``flock``) on ``<folder>/training.lock``
while a process trains the experiment, and writes the holder's pid into the file. A second
process that would train the same folder (``sdm train``, ``sdm study run``, a tuning trial) is
refused with one line naming the holder, instead of both writing the same checkpoints. The
kernel drops the lock when its process ends, however it ends (SIGKILL included), so a killed
run never leaves a stale lock: the rerun resumes at once. The file itself stays; it means
nothing unless a process holds it.
"""

from __future__ import annotations

import fcntl
import os
import time
import warnings
from pathlib import Path
from typing import IO

from sdm import constants as C
from sdm.errors import UserInputError


class FolderInUseError(UserInputError):
    """Another process is training the experiment folder."""


class TrainingLock:
    """The training lock of experiment folder ``folder``: ``acquire`` takes it (creating the
    folder) or raises ``FolderInUseError``; ``release`` (or the process's end) drops it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / C.TRAINING_LOCK_FILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Takes the lock (again a no-op while held). A file system without ``flock`` gets a
        warning and no lock."""
        if self.held:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        lock_file = self.path.open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "pid unknown"
            lock_file.close()
            raise FolderInUseError(
                f"experiment {self.folder} is being trained by another process ({holder}): "
                "wait for it to end, or stop it and rerun this command to resume") from None
        except OSError as error:
            lock_file.close()
            warnings.warn(f"cannot lock {self.path} ({error.strerror}): nothing stops a second "
                          "process from training this experiment at the same time",
                          stacklevel=2)
            return
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        """Drops the lock if held."""
        if self._file is not None:
            self._file.close()
            self._file = None
