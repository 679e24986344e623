"""Reading one image file, and the error every data problem raises.

The bottom of the data layer: it imports nothing else from sdm.data, so the datasets, their
loaders and the resized-image cache can all use it without importing one another.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from sdm.errors import UserInputError

# Appended to the errors of read_rgb_image: a failed read during training is rarely the only one.
CHECK_HINT = (
    "; find every unreadable image first with `sdm data check <dataset> --verify-images` "
    "(add --path DIR for folder/csv)"
)


class DatasetError(UserInputError):
    """Data on disk is missing, incomplete or unreadable; the message says what to do."""


def read_rgb_image(path: Path) -> Image.Image:
    """Decode the image file at `path` into RGB (grayscale and CMYK included).

    A missing or undecodable file raises DatasetError naming the path, the reason and
    (CHECK_HINT) the command that finds every such file at once.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}{CHECK_HINT}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(f"cannot decode image {path}: {error}{CHECK_HINT}") from error


def image_problem(error: DatasetError) -> str:
    """The message of a read_rgb_image error without CHECK_HINT (for lists of failures)."""
    return str(error).removesuffix(CHECK_HINT)
