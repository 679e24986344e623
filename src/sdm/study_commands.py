"""The ``sdm study`` command group: run a study plan, report it from its ledger, and say
where each of its runs stands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sdm study run``, ``report`` and ``status`` to the main CLI's subparsers."""
    study = subparsers.add_parser(
        "study", help="run a study plan (arms x seeds, resumable, with a committed ledger)")
    commands = study.add_subparsers(dest="study_command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the plan's missing runs in order, then report")
    _add_plan_arguments(run)
    run.add_argument("--steps", type=int, nargs="+", metavar="N",
                     help="only these steps of the plan (1-based)")
    run.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                     help="only these of each step's seeds")
    run.add_argument("--device", default=None,
                     help="training.device for every run (cpu, cuda, cuda:1; default: the "
                          "configs', auto)")
    run.add_argument("--dataset-root", default=None, help="dataset.root for every run")
    run.set_defaults(func=_run)

    report = commands.add_parser("report", help="tables and plots from the plan's ledger")
    _add_plan_arguments(report)
    report.set_defaults(func=_report)

    status = commands.add_parser(
        "status", help="each run of the plan in run order: recorded, started or to run")
    _add_plan_arguments(status)
    status.set_defaults(func=_status)


def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", type=Path, help="a study plan (YAML), e.g. "
                                                "exp_configs/studies/cheap_sdm.yaml")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="where the plan's ledger and experiment paths start (default: .)")


def _run(args: argparse.Namespace) -> int:
    # The report's modules are imported now, not after the first run hours later: a study
    # reports with the code it started with, even if the checkout changes meanwhile.
    import sdm.doc_tables
    import sdm.study_report  # noqa: F401
    from sdm.interrupts import stop_cause, stop_status
    from sdm.studies import run_study
    from sdm.study_plan import load_plan

    plan = load_plan(args.plan, args.root)
    try:
        run_study(plan, dataset_root=args.dataset_root, device=args.device, steps=args.steps,
                  seeds=args.seeds, on_run=lambda name: _write_report(plan, args.root))
    except KeyboardInterrupt as interrupt:
        print(f"sdm study: stopped ({stop_cause(interrupt)}); the finished runs are in the "
              "ledger and the run in progress resumes from its folder: rerun the same command "
              "to continue", file=sys.stderr)
        return stop_status(interrupt)
    finally:
        _write_report(plan, args.root)
    return 0


def _report(args: argparse.Namespace) -> int:
    from sdm.study_plan import load_plan

    print(_write_report(load_plan(args.plan, args.root), args.root))
    return 0


def _status(args: argparse.Namespace) -> int:
    from sdm.studies import run_states, unplanned_entries
    from sdm.study_plan import load_plan

    plan = load_plan(args.plan, args.root)
    states = run_states(plan)
    counts = {state: sum(run.state == state for run in states)
              for state in ("recorded", "trained", "started", "to run")}
    print(f"study {plan.name}: {len(states)} runs; "
          + ", ".join(f"{count} {state}" for state, count in counts.items() if count)
          + f" (ledger {plan.ledger})")
    width = max(len(run.name) for run in states)
    for run in states:
        detail = f": {run.detail}" if run.detail else ""
        print(f"step {run.step:<3} {run.name:<{width}}  {run.state}{detail}")
    unplanned = unplanned_entries(plan)
    if unplanned:
        print(f"{len(unplanned)} ledger entries are no run of this plan (an arm, loss or seed "
              f"renamed or removed?), and the report leaves them out: {', '.join(unplanned)}")
    return 0


def _write_report(plan, root: Path) -> str:
    """The plan's report; in the project's repository (``root`` holds ``docs/generated/``)
    also the documentation's tables made from the ledgers (``sdm.doc_tables``)."""
    from sdm.study_report import write_study_report

    text = write_study_report(plan)
    if (root / "docs" / "generated").is_dir() and (root / "README.md").is_file():
        from sdm.doc_tables import write_files

        write_files(root.resolve())
    return text
