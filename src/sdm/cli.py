"""The ``sdm`` command: train, evaluate, tune, report, demo, data, embed, index, search, export."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from sdm.config import ConfigError, ExperimentConfig, load_config
from sdm.errors import USER_INPUT_ERRORS
from sdm.interrupts import sigterm_interrupts, stop_cause, stop_status

USAGE_ERROR = 2  # the exit status of bad input, as argparse's for a bad command line
READER_GONE = 128 + signal.SIGPIPE  # stdout's reader closed it (sdm ... | head), as a shell reports

DESCRIPTION = """\
Sensitivity-aware Distance Measurement (SDM) for deep metric learning, under the
Metric Learning Reality Check protocol (4 class-disjoint folds, test on unseen classes).

examples:
  sdm demo                                    baseline vs SDM, pretrained trunk, glyphs (CPU)
  sdm train exp_configs/cub_ms.yaml           the paper's CUB multi-similarity + SDM
  sdm train exp_configs/cub_ms.yaml training.seed=1 name=cub_ms_seed1
  sdm evaluate exp_configs/cub_ms.yaml        separated (128-d) and concatenated (512-d)
  sdm report experiments/cub_ms experiments/cub_ms_baseline
  sdm tune exp_configs/glyphs/ms.yaml --space ms_sdm --trials 20
  sdm data check cub200 --dataset-root data   what is on disk, and the split sizes
  sdm embed experiments/my_photos gallery_photos/ --out gallery   embeddings of a gallery
  sdm index gallery && sdm search gallery query.jpg --k 10         nearest neighbours
  sdm export experiments/my_photos --format onnx --out model.onnx  ship the model
"""


def _split_configs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional arguments: YAML files, then ``key.sub=value`` overrides."""
    files = [item for item in items if "=" not in item]
    overrides = [item for item in items if "=" in item]
    return files, overrides


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="+", metavar="CONFIG|KEY=VALUE",
                        help="YAML config files (merged in order), then overrides such as "
                             "training.seed=1 or sdm.enabled=false")


def _train(args: argparse.Namespace) -> int:
    from sdm.engine.experiment import ExperimentFolder

    if args.devices is not None:
        return _train_in_parallel(args)
    experiment = ExperimentFolder.of(load_config(*_split_configs(args.config)))
    for summary in experiment.run(allow_config_change=args.allow_config_change):
        print(f"fold {summary['fold']}: best epoch {summary['best_epoch']}, "
              f"val MAP@R {100 * summary['best_val_map_at_r']:.2f}")
    return 0


def _train_in_parallel(args: argparse.Namespace) -> int:
    """``sdm train --devices``: 1 when a fold failed (after the summary), else 0."""
    from sdm.engine.parallel_folds import FAILED, parse_devices, run_folds_in_parallel

    devices = parse_devices(args.devices)
    config = load_config(*_split_configs(args.config))
    results = run_folds_in_parallel(config, devices, args.allow_config_change)
    return 1 if any(result["status"] == FAILED for result in results) else 0


def _evaluate(args: argparse.Namespace) -> int:
    from sdm import constants as C
    from sdm import scores
    from sdm.engine.experiment import ExperimentFolder

    config = load_config(*_split_configs(args.config))
    modes = evaluation_modes(config, args.mode)
    experiment = ExperimentFolder.of(config)
    if args.released_models:
        measured = experiment.evaluate_released_models(args.released_models, modes)
        output = experiment.path / C.RELEASED_RESULTS_FOLDER
    else:
        pretrained = config.evaluation.pretrained and not args.no_pretrained
        measured = experiment.evaluate(modes, pretrained)
        output = experiment.path / C.RESULTS_FOLDER
    print(scores.markdown_table(scores.result_rows(config.name, measured)))
    if args.retrieval_picture:
        from sdm.inference.picture import draw_test_set_picture

        picture = draw_test_set_picture(experiment, output / "retrieval.png")
        print(f"retrieval picture: {picture}")
    print(f"results written to {output}/")
    return 0


def evaluation_modes(config: ExperimentConfig, mode: str | None) -> tuple[str, ...]:
    """The test evaluations to run: ``--mode`` when given, else the config's ``evaluation``."""
    from sdm import constants as C

    if mode is not None:
        return C.EVAL_MODES if mode == "both" else (mode,)
    modes = tuple(m for m in C.EVAL_MODES if getattr(config.evaluation, m))
    if not modes:
        raise ConfigError("evaluation.separated and evaluation.concatenated are both false: "
                          "nothing to evaluate; set one to true or pass --mode")
    return modes


def _report(args: argparse.Namespace) -> int:
    from sdm.report import write_report

    path = write_report(args.experiments, args.output, args.baseline)
    print(path.read_text())
    if args.retrieval_picture:
        from sdm.engine.experiment import ExperimentFolder
        from sdm.inference.picture import draw_test_set_picture

        for folder in args.experiments:
            experiment = ExperimentFolder.open(folder)
            picture = draw_test_set_picture(
                experiment, path.parent / f"retrieval_{experiment.config.name}.png")
            print(f"retrieval picture: {picture}")
    print(f"report and plots written to {path.parent}/")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from sdm.tune.study import TuneRequest, run_tune

    files, overrides = _split_configs(args.config)
    request = TuneRequest(
        config_files=files, overrides=overrides, spaces=args.space, trials=args.trials,
        workers=args.workers, storage=args.storage, study_name=args.study_name,
        prune=args.prune, sampler=args.sampler, seed=args.seed,
        heartbeat_seconds=args.heartbeat, startup_trials=args.startup_trials)
    try:
        summary = run_tune(request)
    except KeyboardInterrupt as interrupt:
        print(f"sdm tune: stopped ({stop_cause(interrupt)}); the finished trials are kept; "
              "rerun the same command to continue", file=sys.stderr)
        return stop_status(interrupt)
    print(f"study {summary['study']}: {summary['finished_trials']} finished trials")
    if "best_trial" in summary:
        print(f"best trial {summary['best_trial']}: mean best validation MAP@R "
              f"{100 * summary['best_value']:.2f}, parameters {summary['best_params']}")
        print(f"best config: {summary['best_config']}")
    return 0


def _list_points(args: argparse.Namespace) -> int:
    from sdm.models.trunks import check_trunk_name, describe_points

    try:
        check_trunk_name(args.trunk)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(describe_points(args.trunk, args.side))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sdm.demo import run_demo

    run_demo(dataset_root=args.dataset_root, experiments_root=args.experiments_root,
             quick=args.quick, dataset=args.dataset)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sdm.data.commands import register as register_data
    from sdm.data.commands import whole_number_at_least
    from sdm.inference.commands import register as register_inference
    from sdm.study_commands import register as register_study
    from sdm.tracking_commands import register as register_track

    parser = argparse.ArgumentParser(
        prog="sdm", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train the folds of an experiment (resumes)")
    _add_config_arguments(train)
    train.add_argument("--allow-config-change", action="store_true",
                       help="resume even though the config differs from the saved one "
                            "(the difference is recorded)")
    train.add_argument("--devices", metavar="DEVICE,DEVICE,...",
                       help="train the folds at once, one process per device (cpu, cuda, "
                            "cuda:N, mps; e.g. cuda:0,cuda:1,cuda:2,cuda:3 or cpu,cpu); a device "
                            "takes the next fold when its fold ends; output of fold k in "
                            "fold_<k>/train.log; exit status 1 when a fold failed")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="test-set results of a trained experiment")
    _add_config_arguments(evaluate)
    evaluate.add_argument("--mode", choices=["separated", "concatenated", "both"],
                          help="per-fold-model (128-d) or concatenated (512-d); default: the "
                               "config's evaluation.separated / evaluation.concatenated")
    evaluate.add_argument("--no-pretrained", action="store_true",
                          help="skip the 'Pretrained' row (epoch 0, untrained embedder); "
                               "also evaluation.pretrained=false")
    evaluate.add_argument("--released-models", metavar="DIR",
                          help="evaluate the paper's released trunk_best<E>.pth / "
                               "embedder_best<E>.pth files found below DIR instead")
    evaluate.add_argument("--retrieval-picture", action="store_true",
                          help="also draw test queries with their top-5 neighbours "
                               "(results/retrieval.png)")
    evaluate.set_defaults(func=_evaluate)

    report = commands.add_parser(
        "report", help="finished experiments in one table beside the paper's numbers, and plots")
    report.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="experiment folders evaluated with `sdm evaluate`")
    report.add_argument("--output", default="experiments/report", help="where to write")
    report.add_argument("--retrieval-picture", action="store_true",
                        help="also draw test queries and their top-5 neighbours per experiment")
    report.add_argument("--baseline", metavar="NAME",
                        help="also an ablation over seeds: experiments named <group>_seed<k> "
                             "form a group; each group's mean ± std over seeds, its difference "
                             "from group NAME (or the group of experiment NAME) paired by seed, "
                             "and ablation.png")
    report.set_defaults(func=_report)

    tune = commands.add_parser(
        "tune", help="hyperparameter search with Optuna (objective: mean best validation MAP@R)")
    _add_config_arguments(tune)
    tune.add_argument("--space", action="append", required=True, metavar="SPACE.yaml",
                      help="search space: config keys -> {low, high[, log]} or {choices}; a "
                           "packaged name such as ms_sdm also works; repeat to combine")
    tune.add_argument("--trials", type=whole_number_at_least(1), required=True,
                      help="finished trials the study should have (a rerun adds what is missing)")
    tune.add_argument("--workers", type=whole_number_at_least(1), default=1,
                      help="worker processes on this machine")
    tune.add_argument("--storage", help="Optuna storage URL (default: SQLite file in the study "
                                        "folder; postgresql://... for several machines)")
    tune.add_argument("--study-name", help="default: <config name>_tune")
    tune.add_argument("--prune", action="store_true",
                      help="stop hopeless trials early (median pruner on validation MAP@R)")
    tune.add_argument("--sampler", choices=["tpe", "gp"], default="tpe")
    tune.add_argument("--seed", type=int, default=0, help="sampler seed (worker k: seed + k)")
    tune.add_argument("--startup-trials", type=whole_number_at_least(1), default=10, metavar="N",
                      help="random trials before the sampler models the results (Optuna's "
                           "n_startup_trials; default 10)")
    tune.add_argument("--heartbeat", type=whole_number_at_least(1), default=60, metavar="SECONDS",
                      help="trial heartbeat; a trial silent for twice this is failed and retried")
    tune.set_defaults(func=_tune)

    demo = commands.add_parser(
        "demo", help="baseline vs SDM with a pretrained trunk on an embedded dataset (~6 min)")
    demo.add_argument("--dataset-root", default="data")
    demo.add_argument("--experiments-root", default="experiments/demo")
    demo.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    demo.add_argument("--dataset", choices=["glyphs", "icons"], default="glyphs",
                      help="the glyph set (default; built from Debian fonts) or the icon set "
                           "(built from Debian icon themes: bash scripts/install_icons.sh)")
    demo.set_defaults(func=_demo)

    points = commands.add_parser(
        "list-points", help="where sdm.perturb_at can put SDM's feature dropout in a trunk")
    points.add_argument("trunk", help="a model.trunk name")
    points.add_argument("--side", type=int, default=None, metavar="PIXELS",
                        help="square input side for the feature shapes (default: the trunk's "
                             "crop, 227; 32 for small_cnn)")
    points.set_defaults(func=_list_points)

    register_data(commands)
    register_inference(commands)
    register_study(commands)
    register_track(commands)
    return parser


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line. The ``key=value`` overrides of a command that takes a config
    may also come after its options (``sdm train CFG --devices cpu name=x``); they keep their
    order. An unknown option or a stray argument exits with argparse's usage error (status 2).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra
             if not hasattr(args, "config") or item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.config = [*args.config, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; bad input (``USER_INPUT_ERRORS``) is reported on stderr as one line,
    ``sdm <command>: error: <message>``, with exit status 2; Ctrl-C and SIGTERM as one line too,
    with exit status 130 and 143 (what is written is written atomically, so a rerun resumes); a
    reader of stdout that stops reading (``sdm ... | head``) ends it quietly, with exit status
    141."""
    args = parse_arguments(argv)
    try:
        with sigterm_interrupts():
            status = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return READER_GONE
    except USER_INPUT_ERRORS as error:
        print(f"sdm {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt as interrupt:
        print(f"sdm {args.command}: stopped ({stop_cause(interrupt)}); what was saved is kept: "
              "rerun the same command to resume", file=sys.stderr)
        return stop_status(interrupt)


if __name__ == "__main__":
    sys.exit(main())
