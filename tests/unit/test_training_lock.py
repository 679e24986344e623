"""The training lock of an experiment folder: one holder at a time, within a process too."""

import os

import pytest

from sdm import constants as C
from sdm.engine.training_lock import FolderInUseError, TrainingLock
from sdm.errors import UserInputError


def test_a_second_holder_is_refused_with_the_first_ones_pid_until_it_releases(tmp_path):
    folder = tmp_path / "experiments" / "run"
    first, second = TrainingLock(folder), TrainingLock(folder)
    first.acquire()
    first.acquire()  # held: taking it again changes nothing
    assert (folder / C.TRAINING_LOCK_FILE).read_text().startswith(f"pid {os.getpid()}, since ")
    with pytest.raises(FolderInUseError, match=(
            rf"^experiment {folder} is being trained by another process \(pid {os.getpid()}, "
            r"since [-0-9]+ [:0-9]+\): wait for it to end, or stop it and rerun this command "
            r"to resume$")):
        second.acquire()
    assert issubclass(FolderInUseError, UserInputError)  # one line and exit status 2 in the CLI
    assert first.held and not second.held
    first.release()
    second.acquire()
    assert second.held and not first.held
    second.release()
    second.release()  # not held: nothing to do
