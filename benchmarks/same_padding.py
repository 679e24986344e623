"""EfficientNet-Lite0's TensorFlow-"SAME" convolutions: letting the convolution pad symmetric
cases itself (the model's way) against copying every input into an explicitly padded tensor
first (the model's way before), side by side on the same (ImageNet) weights and batch.

    python benchmarks/same_padding.py                   # 64 px, batch 128, evaluation forward
    python benchmarks/same_padding.py --side 227 --batch 16

Prints the largest difference of the outputs (0 when the two agree bit for bit), seconds per
forward for each way, alternating over rounds, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sdm.models import efficientnet_lite
from sdm.models.trunks import build_trunk

CONVOLUTION_PADS = efficientnet_lite._SamePadConv2d.forward


def explicitly_padded(self: efficientnet_lite._SamePadConv2d, x: torch.Tensor) -> torch.Tensor:
    """The convolution of ``x`` zero-padded by F.pad as TensorFlow's SAME does, every time."""
    return torch.nn.Conv2d.forward(self, F.pad(x, self.same_pads(x)))


def forward_with(way, model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    efficientnet_lite._SamePadConv2d.forward = way
    try:
        start = time.perf_counter()
        with torch.no_grad():
            output = model(images)
        return output, time.perf_counter() - start
    finally:
        efficientnet_lite._SamePadConv2d.forward = CONVOLUTION_PADS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_trunk("efficientnet_lite0").module.eval()  # the shipped ImageNet weights
    images = torch.randn(args.batch, 3, args.side, args.side)
    reference, _ = forward_with(explicitly_padded, model, images)
    output, _ = forward_with(CONVOLUTION_PADS, model, images)
    print(f"largest output difference: {(output - reference).abs().max().item():.3g} "
          f"(outputs up to {reference.abs().max().item():.3g})")
    times: dict[str, list[float]] = {"explicit F.pad": [], "convolution pads": []}
    for _ in range(args.rounds):
        times["explicit F.pad"].append(forward_with(explicitly_padded, model, images)[1])
        times["convolution pads"].append(forward_with(CONVOLUTION_PADS, model, images)[1])
    medians = {way: statistics.median(seconds) for way, seconds in times.items()}
    for way, seconds in medians.items():
        print(f"{way:>17}: {seconds:.3f} s per forward of {args.batch} images at "
              f"{args.side} px ({torch.get_num_threads()} threads)")
    ratio = medians["explicit F.pad"] / medians["convolution pads"]
    print(f"explicit / convolution pads: {ratio:.2f}x")


if __name__ == "__main__":
    main()
