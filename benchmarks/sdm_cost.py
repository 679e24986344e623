"""What SDM costs per training step, measured side by side on the same model and batch.

Settings, each timed with the engine's own ``train_step`` (the first four by default):
  baseline         the plain loss
  sdm_t1           SDM with one pass (embedding dropout masks only)
  sdm_t2, sdm_t4   the paper's setting with 2 or 4 passes (batched), on request
  sdm_t8_seq       the paper's setting, 8 passes run one after another (as the paper's code)
  sdm_t8_batched   the same 8 passes as one forward of 8*B images

    python benchmarks/sdm_cost.py                       # small CNN on 32x32 glyph-sized input
    python benchmarks/sdm_cost.py --trunk bninception --batch 8 --steps 3
    python benchmarks/sdm_cost.py --trunk bninception --device cuda --amp --batch 32
    python benchmarks/sdm_cost.py --trunk efficientnet_lite0 --side 64 --loss multi_similarity \
        --settings baseline sdm_t1 sdm_t2 sdm_t4 sdm_t8_batched      # the ablation study's regime

Prints seconds per step and the ratio to the baseline, and images/s (B per step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf

from sdm.config import load_config
from sdm.engine.build import build_fold_loss, build_model, build_optimizers, sdm_passes
from sdm.engine.step import train_step
from sdm.models.trunks import build_trunk

SETTINGS = {
    "baseline": {"enabled": False},
    "sdm_t1": {"enabled": True, "passes": 1, "feature_dropout": 0.0},
    "sdm_t2": {"enabled": True, "passes": 2},
    "sdm_t4": {"enabled": True, "passes": 4},
    "sdm_t8_seq": {"enabled": True, "passes": 8, "batched_passes": False},
    "sdm_t8_batched": {"enabled": True, "passes": 8, "batched_passes": True},
}
INPUT_SIDE = {"small_cnn": 32, "bninception": 227, "resnet50": 224, "efficientnet_lite0": 224}


class Setting:
    """One benchmarked setting: its own model, loss and optimizers on the shared batch."""

    def __init__(self, trunk: str, sdm: dict, args: argparse.Namespace):
        config = load_config(overrides=[f"model.trunk={trunk}", "model.pretrained=false",
                                        f"loss.name={args.loss}"])
        config.sdm = OmegaConf.merge(config.sdm, sdm)
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.model = build_model(config).to(self.device).train()
        self.loss = build_fold_loss(config, num_classes=args.batch // 4).to(self.device)
        self.optimizers = build_optimizers(config, self.model, self.loss)
        self.scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
        self.passes, self.batched = sdm_passes(config), config.sdm.batched_passes

    def step_seconds(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(self.model, self.loss, self.optimizers, images, labels, passes=self.passes,
                   batched_passes=self.batched, scaler=self.scaler)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step of each setting. Steps are interleaved round-robin (one step of
    each setting per round) so that a change in machine load affects all settings alike."""
    settings = {name: Setting(args.trunk, SETTINGS[name], args) for name in args.settings}
    channels = 1 if build_trunk(args.trunk, pretrained=False).input_convention == "glyph" else 3
    side = args.side or INPUT_SIDE[args.trunk]
    images = torch.randn(args.batch, channels, side, side, device=args.device)
    labels = torch.arange(args.batch // 4, device=args.device).repeat_interleave(4)
    times: dict[str, list[float]] = {name: [] for name in settings}
    for round_index in range(args.warmup + args.steps):
        for name, setting in settings.items():
            seconds = setting.step_seconds(images, labels)
            if round_index >= args.warmup:
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trunk", default="small_cnn", choices=sorted(INPUT_SIDE))
    parser.add_argument("--loss", default="contrastive")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--side", type=int, help="input image side in pixels (default: the "
                                                 "trunk's usual size)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS),
                        default=["baseline", "sdm_t1", "sdm_t8_seq", "sdm_t8_batched"])
    args = parser.parse_args()
    print(f"trunk {args.trunk}, side {args.side or INPUT_SIDE[args.trunk]} px, loss {args.loss}, "
          f"batch {args.batch}, device {args.device}, "
          f"amp {args.amp}, torch threads {torch.get_num_threads()}, "
          f"median of {args.steps} interleaved rounds")
    print(f"{'setting':16} {'s/step':>9} {'vs baseline':>12} {'images/s':>9}")
    seconds = measure(args)
    baseline = seconds.get("baseline")
    for name, value in seconds.items():
        ratio = f"{value / baseline:.2f}x" if baseline else "-"
        print(f"{name:16} {value:9.4f} {ratio:>12} {args.batch / value:9.1f}")


if __name__ == "__main__":
    main()
