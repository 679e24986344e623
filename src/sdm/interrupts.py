"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM (what ``kill``, a batch
scheduler at a job's time limit or on preemption, and container runtimes send).

Both end the command through ``KeyboardInterrupt``, SIGTERM as its subclass ``Terminated``,
so that every clean-up written for Ctrl-C runs for both: the training lock is released, an
MLflow run is marked killed, worker processes are stopped, a study keeps the seconds of its run
in progress. The exit status is the one a shell reports for a death by that signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised in the main thread wherever it was."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread; the previous handler
    is restored on leaving it. Outside the main thread (where Python cannot set handlers) it
    changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_cause(interrupt: KeyboardInterrupt) -> str:
    """``SIGTERM`` or ``Ctrl-C``: what stopped the command, for its one-line message."""
    return "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"


def stop_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status after ``interrupt``: 143 for SIGTERM, 130 for Ctrl-C (128 + signal)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
