"""What SDM costs per training step, measured side by side on the same model and batch.

Settings, each timed with the engine's own ``train_step``:
  baseline             the plain loss
  sdm_t1               SDM with one pass (embedding dropout masks only)
  sdm_t2, sdm_t4       the paper's setting with 2 or 4 passes as the engine runs them by
                       default (batched on CUDA, else one after another; shared prefix)
  sdm_t8_seq           the paper's setting, 8 whole passes one after another (the paper's code)
  sdm_t8_batched       the same 8 passes as one forward of 8*B images
  sdm_t8_shared_stem   batched, the trunk's prefix (before its feature dropout) run once
  sdm_t8_seq_shared    sequential, the prefix run once (the engine's choice when
                       sdm.batched_passes=false)

``--points`` times instead the baseline and SDM with T passes (``--passes``, 8 by default) at
each perturbation point of the trunk (``sdm list-points TRUNK``), as the engine runs them by
default (one after another on a CPU, batched on CUDA; everything before the point once).

The floor of T passes at linear cost is T x (one pass after the point) + 1 x (the rest of the
baseline step: the prefix, the loss, the optimizer step, Python): the forward and backward of
everything after the point (trunk from its feature dropout on, embedder) is timed on its own
in the same rounds, and the rest is the baseline step minus it. A batched forward can beat
it where one batch leaves the device idle (small models); SDM's loss over its copies is the
one cost above it.

    python benchmarks/sdm_cost.py                       # small CNN on 32x32 glyph-sized input
    python benchmarks/sdm_cost.py --trunk bninception --batch 8 --steps 3
    python benchmarks/sdm_cost.py --trunk bninception --device cuda --amp --channels-last
    python benchmarks/sdm_cost.py --trunk efficientnet_lite0 --side 64 --loss multi_similarity \
        --points --json benchmarks/results/sdm_cost_points.json   # cost at every point

Prints seconds per step and the ratio to the baseline, and images/s (B per step); ``--json``
adds the ratios to a JSON list of records (one per trunk, side, loss, batch and device,
replaced when measured again) that study reports read (``step_costs`` of a study plan).
``--profile SETTING`` prints where one step's time goes instead, operator by operator, for the
baseline and SETTING side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sdm import storage
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
from sdm.models.trunks import build_trunk, perturbation_points

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
INPUT_SIDE = {"small_cnn": 32, "bninception": 227, "resnet50": 224, "efficientnet_lite0": 224}


class Setting:
    """One benchmarked setting: its own model, loss and optimizers on the shared batch."""

    def __init__(self, trunk: str, sdm: dict, args: argparse.Namespace):
        config = load_config(overrides=[
            f"model.trunk={trunk}", "model.pretrained=false", f"loss.name={args.loss}",
            f"training.mixed_precision={args.amp}", f"training.channels_last={args.channels_last}",
            f"training.compile={args.compile}"])
        for key, value in sdm.items():
            setattr(config.sdm, key, value)
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

    def suffix_seconds(self, images: torch.Tensor) -> float:
        """Forward and backward of everything after the trunk's perturbation point (trunk
        from its feature dropout on, and the embedder) for one pass of the batch: what T
        passes repeat."""
        model = self.model
        with torch.no_grad(), self.precision.autocast():
            prefix_output = model.trunk.prefix(prepare_images(images, self.precision))

        def one_pass() -> None:
            with self.precision.autocast():
                output = model.embedder(model.trunk.suffix(prefix_output))
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


def point_settings(trunk: str, passes: list[int], points: list[str]) -> dict[str, dict]:
    """``{"t<T>_at_<point>": sdm settings}``: T passes at each point, the engine's defaults."""
    return {f"t{t}_at_{point}": {"enabled": True, "passes": t, "perturb_at": point}
            for point in points for t in passes}


def measure(args: argparse.Namespace, settings: dict[str, dict]) -> dict[str, float]:
    """Median seconds per step of each setting, and of one pass after each SDM setting's
    point (``suffix:<setting>``, measured on the baseline's model at that point). Steps are
    interleaved round-robin (one step of each setting per round) so that a change in machine
    load affects all settings alike."""
    built = {name: Setting(args.trunk, sdm, args) for name, sdm in settings.items()}
    suffixes = {}
    if "baseline" in built:
        for name, sdm in settings.items():
            point = sdm.get("perturb_at", "stem")
            if name != "baseline" and point not in suffixes:
                suffixes[point] = Setting(args.trunk, {"enabled": False, "perturb_at": point},
                                          args)
    channels = 1 if build_trunk(args.trunk, pretrained=False).input_convention == "glyph" else 3
    side = args.side or INPUT_SIDE[args.trunk]
    images = torch.randn(args.batch, channels, side, side, device=args.device)
    labels = torch.arange(args.batch // 4, device=args.device).repeat_interleave(4)
    times: dict[str, list[float]] = {}
    for round_index in range(args.warmup + args.steps):
        measured = {name: setting.step_seconds(images, labels) for name, setting in built.items()}
        for point, setting in suffixes.items():
            measured[f"suffix:{point}"] = setting.suffix_seconds(images)
        if round_index >= args.warmup:
            for name, seconds in measured.items():
                times.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def floor_seconds(seconds: dict[str, float], passes: int, point: str) -> float:
    """T x (one pass after the point) + 1 x (the rest of the baseline step)."""
    after = seconds[f"suffix:{point}"]
    return passes * after + (seconds["baseline"] - after)


def save_ratios(path: Path, args: argparse.Namespace, settings: dict[str, dict],
                seconds: dict[str, float]) -> None:
    """Adds this measurement's ratios to its record (trunk, side, loss, batch, device) in the
    JSON list at ``path``; points and passes measured before and not now keep theirs (each
    ratio is against the baseline timed in its own run, side by side)."""
    baseline = seconds["baseline"]
    ratios: dict[str, dict[str, float]] = {}
    floors: dict[str, dict[str, float]] = {}
    for name, sdm in settings.items():
        if name == "baseline" or "perturb_at" not in sdm:
            continue
        point, passes = sdm["perturb_at"], str(sdm["passes"])
        ratios.setdefault(point, {})[passes] = round(seconds[name] / baseline, 3)
        floors.setdefault(point, {})[passes] = round(
            floor_seconds(seconds, sdm["passes"], point) / baseline, 3)
    record = {"trunk": args.trunk, "side": args.side or INPUT_SIDE[args.trunk],
              "loss": args.loss, "batch": args.batch, "device": _device_name(args.device),
              "baseline_seconds": round(baseline, 5), "steps": args.steps,
              "ratios": ratios, "floors": floors}
    key = ("trunk", "side", "loss", "batch", "device")
    records = storage.read_json(path) if path.is_file() else []
    kept = [old for old in records if any(old[k] != record[k] for k in key)]
    for old in records:
        if old not in kept:
            for field in ("ratios", "floors"):
                before, now = old.get(field, {}), record[field]
                record[field] = {point: {**before.get(point, {}), **now.get(point, {})}
                                 for point in [*before, *(p for p in now if p not in before)]}
    storage.write_json(path, [*kept, record])


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


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
    parser.add_argument("--points", nargs="*", metavar="POINT", default=None,
                        help="time T passes at these perturbation points instead of the "
                             "settings (no names: every point of the trunk)")
    parser.add_argument("--passes", type=int, nargs="+", default=[8], metavar="T",
                        help="with --points: the numbers of passes (default 8)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="add the measured ratios to this JSON list (see above)")
    parser.add_argument("--profile", choices=list(SETTINGS), metavar="SETTING",
                        help="instead of timing: the operators of one step of the baseline "
                             "and of SETTING side by side (torch.profiler, self time)")
    args = parser.parse_args()
    if args.profile:
        profile(args)
        return
    side = args.side or INPUT_SIDE[args.trunk]
    if args.points is None:
        settings = {name: SETTINGS[name] for name in args.settings}
    else:
        points = args.points or [point for point, _ in perturbation_points(args.trunk, side)]
        settings = {"baseline": SETTINGS["baseline"],
                    **point_settings(args.trunk, args.passes, points)}
    print(f"trunk {args.trunk}, side {side} px, loss {args.loss}, batch {args.batch}, device "
          f"{_device_name(args.device)}, amp {args.amp}, channels_last {args.channels_last}, "
          f"compile {args.compile}, torch threads {torch.get_num_threads()}, median of "
          f"{args.steps} interleaved rounds")
    print(f"{'setting':22} {'s/step':>9} {'vs baseline':>12} {'images/s':>9} {'floor':>8}")
    seconds = measure(args, settings)
    baseline = seconds.get("baseline")
    for name, sdm in settings.items():
        ratio = f"{seconds[name] / baseline:.2f}x" if baseline else "-"
        floor = ""
        if baseline and name != "baseline" and sdm.get("enabled") and sdm.get("passes", 8) > 1:
            point = sdm.get("perturb_at", "stem")
            floor = f"{floor_seconds(seconds, sdm.get('passes', 8), point) / baseline:.2f}x"
        print(f"{name:22} {seconds[name]:9.4f} {ratio:>12} {args.batch / seconds[name]:9.1f} "
              f"{floor:>8}")
    if baseline and args.json:
        save_ratios(args.json, args, settings, seconds)
        print(f"ratios added to {args.json}")


if __name__ == "__main__":
    main()
