"""The error of the inference layer: a request that cannot be served as asked."""

from __future__ import annotations

from sdm.errors import UserInputError


class InferenceError(UserInputError):
    """An experiment, gallery, index, image set or exported file that does not fit what was
    asked of it; the message says what was found, what was expected and what to do."""
