"""Image pipelines: PIL image -> float tensor, per trunk input convention.

Geometry (bninception, imagenet), as in the paper: train = Resize(resize) ->
RandomResizedCrop(crop, scale 0.16-1, ratio 0.75-1.33) -> horizontal flip 0.5;
eval = Resize(resize) -> CenterCrop(crop). Resize scales the shorter side to `resize` pixels.
Then the trunk's own conversion:

- "bninception": BGR channel order, values 0-255 minus the mean (104, 117, 128), std 1.
- "imagenet": RGB in 0-1 normalized with the ImageNet mean and std (EfficientNet, ResNet).
- "glyph": small grayscale images, 1 channel in -1..1 (mean 0.5, std 0.5); train adds a
  mild random affine jitter. Images keep their own size unless `resize` and `crop` are given
  (then Resize(resize) -> CenterCrop(crop) in both pipelines).
- "rgb mean=M0,M1,M2 std=S0,S1,S2 interpolation=I" (``rgb_input``; the timm trunks' own
  convention, from their ``pretrained_cfg``): the paper's geometry with interpolation I
  (bilinear, bicubic or nearest) for the resize and the random-resized crop, then RGB in 0-1
  normalized with that mean and std.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from sdm.constants import (
    BNINCEPTION_INPUT,
    BNINCEPTION_MEAN_BGR_255,
    CROP,
    GLYPH_INPUT,
    IMAGENET_INPUT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_CONVENTIONS,
    RESIZE,
)

CROP_SCALE = (0.16, 1.0)
CROP_RATIO = (0.75, 1.33)
GLYPH_MAX_ROTATION_DEGREES = 5.0
GLYPH_MAX_TRANSLATE_FRACTION = 0.05
GLYPH_SCALE_RANGE = (0.95, 1.05)
RGB_INPUT = "rgb"  # the first word of an rgb_input convention
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR,
                  "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}


def rgb_input(mean: tuple[float, ...], std: tuple[float, ...], interpolation: str) -> str:
    """The input convention "RGB in 0-1 normalized with ``mean`` and ``std``, resized with
    ``interpolation``" as one string (what ``build_transform`` takes and identities record),
    e.g. ``rgb mean=0.5,0.5,0.5 std=0.5,0.5,0.5 interpolation=bicubic``. An interpolation
    other than those of ``INTERPOLATIONS`` (timm's "random") is written as bicubic."""
    if len(mean) != 3 or len(std) != 3 or not all(math.isfinite(v) for v in (*mean, *std)) \
            or min(std) <= 0:
        raise ValueError(f"an RGB input needs 3 finite means and 3 positive stds, got "
                         f"mean={mean}, std={std}")
    mode = interpolation if interpolation in INTERPOLATIONS else "bicubic"
    return (f"{RGB_INPUT} mean={','.join(map(repr, map(float, mean)))} "
            f"std={','.join(map(repr, map(float, std)))} interpolation={mode}")


def parse_rgb_input(convention: str) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """(mean, std, interpolation) of an ``rgb_input`` convention; None for any other string."""
    words = convention.split()
    if len(words) != 4 or words[0] != RGB_INPUT:
        return None
    try:
        fields = dict(word.split("=", 1) for word in words[1:])
        mean = tuple(float(v) for v in fields["mean"].split(","))
        std = tuple(float(v) for v in fields["std"].split(","))
        interpolation = fields["interpolation"]
    except (KeyError, ValueError):
        return None
    if len(mean) != 3 or len(std) != 3 or interpolation not in INTERPOLATIONS:
        return None
    return mean, std, interpolation


class ConvertMode:
    """Convert a PIL image to `mode` ("RGB" or "L"); a no-op when it already is."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"


class ToBNInceptionTensor:
    """RGB PIL image -> float32 tensor (3, H, W): channels B, G, R in 0-255 minus the BGR mean.

    Computed in NumPy: exact, and free of torch's intra-op threads, which slow down a
    loader in the main process on a busy machine.
    """

    def __init__(self, mean_bgr: tuple[float, float, float] = BNINCEPTION_MEAN_BGR_255) -> None:
        self.mean_bgr = np.asarray(mean_bgr, dtype=np.float32)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1] - self.mean_bgr
        return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_transform(
    input_convention: str, train: bool, resize: int | None = None, crop: int | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """Return the train or eval pipeline of `input_convention` (see the module docstring).

    `resize` (shorter side) and `crop` are pixel sizes, given together or not at all; unset,
    the ImageNet conventions use the paper's 256 / 227 and "glyph" keeps the image size.
    """
    if (resize is None) != (crop is None):
        raise ValueError(f"give resize and crop together, got resize={resize}, crop={crop}")
    if input_convention in (BNINCEPTION_INPUT, IMAGENET_INPUT):
        geometry = _geometry(train, resize or RESIZE, crop or CROP)
        if input_convention == BNINCEPTION_INPUT:
            return T.Compose([ConvertMode("RGB"), *geometry, ToBNInceptionTensor()])
        to_tensor = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        return T.Compose([ConvertMode("RGB"), *geometry, *to_tensor])
    rgb = parse_rgb_input(input_convention)
    if rgb is not None:
        mean, std, interpolation = rgb
        geometry = _geometry(train, resize or RESIZE, crop or CROP, INTERPOLATIONS[interpolation])
        return T.Compose([ConvertMode("RGB"), *geometry, T.ToTensor(), T.Normalize(mean, std)])
    if input_convention == GLYPH_INPUT:
        geometry = [T.Resize(resize), T.CenterCrop(crop)] if resize is not None else []
        jitter = [_glyph_jitter()] if train else []
        return T.Compose([ConvertMode("L"), *geometry, *jitter, T.ToTensor(),
                          T.Normalize((0.5,), (0.5,))])
    raise ValueError(
        f"unknown input convention {input_convention!r}; expected one of {INPUT_CONVENTIONS} "
        "or an rgb_input string"
    )


def _geometry(train: bool, resize: int, crop: int,
              interpolation: T.InterpolationMode = T.InterpolationMode.BILINEAR,
              ) -> list[Callable]:
    if train:
        return [
            T.Resize(resize, interpolation),
            T.RandomResizedCrop(crop, scale=CROP_SCALE, ratio=CROP_RATIO,
                                interpolation=interpolation),
            T.RandomHorizontalFlip(0.5),
        ]
    return [T.Resize(resize, interpolation), T.CenterCrop(crop)]


def _glyph_jitter() -> T.RandomAffine:
    translate = (GLYPH_MAX_TRANSLATE_FRACTION, GLYPH_MAX_TRANSLATE_FRACTION)
    return T.RandomAffine(
        degrees=GLYPH_MAX_ROTATION_DEGREES, translate=translate, scale=GLYPH_SCALE_RANGE
    )
