"""The error of bad input: what the user gave (a config, a file, a device) cannot be used.

Every module that finds bad input raises ``UserInputError`` or a subclass of it, with a message
that names the input, says what is wrong with it and what to do. The ``sdm`` command prints
such an error as one line and exits with status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """The user's input (config value, file, device, option) is wrong; the message says which
    input, what is wrong with it and what to do."""


# What bad input raises (OSError: a file that is missing or cannot be read or written); any
# other exception is a bug and keeps its traceback.
USER_INPUT_ERRORS = (UserInputError, OSError)


def cause(error: BaseException, limit: int = 200) -> str:
    """``<exception name>: <first sentence of its message>`` (at most ``limit`` characters):
    why a library call failed, short enough for a one-line error message."""
    lines = str(error).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(error).__name__}: {first[:limit]}" if first else type(error).__name__
