"""What SDM costs per training step, measured side by side on the same model and batch.

Settings, each timed with the engine's own ``train_step``:
  baseline             the plain loss
  sdm_t1               SDM with one pass (embedding dropout masks only)
  sdm_t2, sdm_t4       the paper's setting with 2 or 4 passes as the engine runs them by
                       default (batched on CUDA, else one after another; shared stem)
  sdm_t8_seq           the paper's setting, 8 whole passes one after another (the paper's code)
  sdm_t8_batched       the same 8 passes as one forward of 8*B images
  sdm_t8_shared_stem   batched, the trunk's stem (before its feature dropout) run once
  sdm_t8_seq_shared    sequential, the stem run once (the engine's choice when
                       sdm.batched_passes=false)

The floor of T passes at linear cost is T x (one pass after the stem) + 1 x (the rest of the
baseline step: the stem, the loss, the optimizer step, Python): the forward and backward of
everything after the stem (trunk from its feature dropout on, embedder) is timed on its own
in the same rounds, and the rest is the baseline step minus it. A batched forward can beat
it where one batch leaves the device idle (small models); SDM's loss over its copies is the
one cost above it.

    python benchmarks/sdm_cost.py                       # small CNN on 32x32 glyph-sized input
    python benchmarks/sdm_cost.py --trunk bninception --batch 8 --steps 3
    python benchmarks/sdm_cost.py --trunk bninception --device cuda --amp --channels-last
    python benchmarks/sdm_cost.py --trunk efficientnet_lite0 --side 64 --loss multi_similarity \
        --settings baseline sdm_t1 sdm_t2 sdm_t4 sdm_t8_batched      # the ablation study's regime

Prints seconds per step and the ratio to the baseline, and images/s (B per step).
``--profile SETTING`` prints where one step's time goes instead, operator by operator, for the
baseline and SETTING side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf

from sdm.config import load_config
from sdm.engine.build import (
    batched_passes,
    build_fold_loss,
    build_model,
    build_optimizers,
    build_precision,
    sdm_passes,
)
from sdm.engine.precision import prepare_images, prepare_model
from sdm.engine.step import train_step
from sdm.models.batchnorm import train_with_frozen_batchnorm
from sdm.models.trunks import build_trunk

SETTINGS = {
    "baseline": {"enabled": False},
    "sdm_t1": {"enabled": True, "passes": 1, "feature_dropout": 0.0},
    "sdm_t2": {"enabled": True, "passes": 2},
    "sdm_t4": {"enabled": True, "passes": 4},
    "sdm_t8_seq": {"enabled": True, "passes": 8, "batched_passes": False, "shared_stem": False},
    "sdm_t8_batched": {"enabled": True, "passes": 8, "batched_passes": True,
                       "shared_stem": False},
    "sdm_t8_shared_stem": {"enabled": True, "passes": 8, "batched_passes": True,
                           "shared_stem": True},
    "sdm_t8_seq_shared": {"enabled": True, "passes": 8, "batched_passes": False,
                          "shared_stem": True},
}
DEFAULT_SETTINGS = ["baseline", "sdm_t1", "sdm_t8_seq", "sdm_t8_batched", "sdm_t8_shared_stem",
                    "sdm_t8_seq_shared"]
FLOOR_PASSES = 8
INPUT_SIDE = {"small_cnn": 32, "bninception": 227, "resnet50": 224, "efficientnet_lite0": 224}


class Setting:
    """One benchmarked setting: its own model, loss and optimizers on the shared batch."""

    def __init__(self, trunk: str, sdm: dict, args: argparse.Namespace):
        config = load_config(overrides=[
            f"model.trunk={trunk}", "model.pretrained=false", f"loss.name={args.loss}",
            f"training.mixed_precision={args.amp}", f"training.channels_last={args.channels_last}",
            f"training.compile={args.compile}"])
        config.sdm = OmegaConf.merge(config.sdm, sdm)
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.precision = build_precision(config, self.device)
        self.model = prepare_model(build_model(config).to(self.device), self.precision)
        train_with_frozen_batchnorm(self.model)
        self.loss = build_fold_loss(config, num_classes=args.batch // 4).to(self.device)
        self.optimizers = build_optimizers(config, self.model, self.loss)
        self.scaler = self.precision.grad_scaler()
        self.config, self.passes, self.sdm = config, sdm_passes(config), config.sdm

    def step_seconds(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return _timed(self.device, lambda: train_step(
            self.model, self.loss, self.optimizers, images, labels, passes=self.passes,
            batched_passes=batched_passes(self.config, self.device),
            shared_stem=self.sdm.shared_stem, precision=self.precision, scaler=self.scaler))

    def after_stem_seconds(self, images: torch.Tensor) -> float:
        """Forward and backward of everything after the trunk's stem (trunk from its feature
        dropout on, and the embedder) for one pass of the batch: what T passes repeat."""
        model = self.model
        with torch.no_grad(), self.precision.autocast():
            stem_output = model.trunk.stem(prepare_images(images, self.precision))

        def one_pass() -> None:
            with self.precision.autocast():
                output = model.embedder(model.trunk.from_stem(stem_output))
            output.float().sum().backward()
        return _timed(self.device, one_pass)


def _timed(device: torch.device, work) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step of each setting, and of one pass after the baseline's stem.
    Steps are interleaved round-robin (one step of each setting per round) so that a change in
    machine load affects all settings alike."""
    settings = {name: Setting(args.trunk, SETTINGS[name], args) for name in args.settings}
    channels = 1 if build_trunk(args.trunk, pretrained=False).input_convention == "glyph" else 3
    side = args.side or INPUT_SIDE[args.trunk]
    images = torch.randn(args.batch, channels, side, side, device=args.device)
    labels = torch.arange(args.batch // 4, device=args.device).repeat_interleave(4)
    times: dict[str, list[float]] = {name: [] for name in [*settings, "after_stem"]}
    baseline = settings.get("baseline")
    for round_index in range(args.warmup + args.steps):
        measured = {name: setting.step_seconds(images, labels)
                    for name, setting in settings.items()}
        if baseline is not None:
            measured["after_stem"] = baseline.after_stem_seconds(images)
        if round_index >= args.warmup:
            for name, seconds in measured.items():
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items() if values}


def profile(args: argparse.Namespace) -> None:
    """Self CPU milliseconds per operator in one step of the baseline and of ``args.profile``,
    and their ratio: where a setting's extra time goes."""
    from torch.profiler import profile as torch_profile

    channels = 1 if build_trunk(args.trunk, pretrained=False).input_convention == "glyph" else 3
    side = args.side or INPUT_SIDE[args.trunk]
    images = torch.randn(args.batch, channels, side, side, device=args.device)
    labels = torch.arange(args.batch // 4, device=args.device).repeat_interleave(4)
    per_operator = {}
    for name in ("baseline", args.profile):
        setting = Setting(args.trunk, SETTINGS[name], args)
        for _ in range(args.warmup):
            setting.step_seconds(images, labels)
        with torch_profile() as profiler:
            setting.step_seconds(images, labels)
        per_operator[name] = {event.key: event.self_cpu_time_total / 1000
                              for event in profiler.key_averages()}
    base, other = per_operator["baseline"], per_operator[args.profile]
    print(f"{'operator':36} {'baseline ms':>12} {args.profile + ' ms':>22} {'ratio':>7}")
    for key in sorted(other, key=other.get, reverse=True)[:12]:
        ratio = f"{other[key] / base[key]:.1f}x" if base.get(key) else "-"
        print(f"{key[:36]:36} {base.get(key, 0.0):12.1f} {other[key]:22.1f} {ratio:>7}")
    print(f"{'total':36} {sum(base.values()):12.1f} {sum(other.values()):22.1f} "
          f"{sum(other.values()) / sum(base.values()):6.1f}x")


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
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision, bfloat16 where supported (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="(CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=DEFAULT_SETTINGS)
    parser.add_argument("--profile", choices=list(SETTINGS), metavar="SETTING",
                        help="instead of timing: the operators of one step of the baseline "
                             "and of SETTING side by side (torch.profiler, self time)")
    args = parser.parse_args()
    if args.profile:
        profile(args)
        return
    print(f"trunk {args.trunk}, side {args.side or INPUT_SIDE[args.trunk]} px, loss {args.loss}, "
          f"batch {args.batch}, device {args.device}, amp {args.amp}, channels_last "
          f"{args.channels_last}, compile {args.compile}, torch threads "
          f"{torch.get_num_threads()}, median of {args.steps} interleaved rounds")
    print(f"{'setting':20} {'s/step':>9} {'vs baseline':>12} {'images/s':>9}")
    seconds = measure(args)
    baseline = seconds.get("baseline")
    for name in args.settings:
        ratio = f"{seconds[name] / baseline:.2f}x" if baseline else "-"
        print(f"{name:20} {seconds[name]:9.4f} {ratio:>12} {args.batch / seconds[name]:9.1f}")
    if baseline:
        after = seconds["after_stem"]
        floor = FLOOR_PASSES * after + (baseline - after)
        print(f"{'floor T=8':20} {floor:9.4f} {floor / baseline:11.2f}x {'':>9}  "
              f"(8 x {after:.4f} s after the stem + {baseline - after:.4f} s of the rest once)")

if __name__ == "__main__":
    main()
