"""The paper's ``run.py`` command line, translated to this project's config and commands.

The paper's README passes values unquoted, so the shell splits them:
``--config_dataset [default, with_cars196]`` arrives as ``['[default,', 'with_cars196]']``.
Every token up to the next ``--flag`` is joined back and read as YAML. Only what those
commands use is understood; any other flag must be a key of this project's config
(``--training.seed 3``) or it is an error that names it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sdm.config import ConfigError, ExperimentConfig, config_file, load_config, override
from sdm.constants import CONFIG_FILE

SWITCHES = ("merge_argparse_when_resuming", "evaluate", "evaluate_ensemble")
VALUED = ("reproduce_results", "experiment_name", "split_manager~SWAP~1", "config_dataset",
          "config_general", "splits_to_eval", "dataset_root", "root_experiment_folder")
CARS_DATASET = {"dataset.name": "cars196"}
CARS_GENERAL = {"training.save_interval": 5, "training.patience": 14}


@dataclass
class PaperCommand:
    """What a paper command asks for, in this project's terms."""

    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    action: str = "train"
    eval_mode: str = "both"
    allow_config_change: bool = False


def _group_tokens(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """``[(flag, joined value or None)]`` for ``--flag value tokens...`` sequences."""
    groups: list[tuple[str, list[str]]] = []
    for token in argv:
        if token.startswith("--"):
            groups.append((token[2:], []))
        elif not groups:
            raise ConfigError(f"unexpected argument '{token}' before any --flag")
        else:
            groups[-1][1].append(token)
    return [(flag, " ".join(values) if values else None) for flag, values in groups]


def _yaml(flag: str, text: str | None) -> Any:
    if text is None:
        raise ConfigError(f"--{flag} needs a value")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--{flag}: cannot read '{text}' as YAML: {error}") from None


def _config_file(reference: str) -> str:
    path = Path(reference)
    candidates = [path, path.with_suffix(".yaml"), path / CONFIG_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    try:
        return str(config_file(reference))
    except ConfigError:
        raise ConfigError(f"--reproduce_results {reference}: no config found; looked for "
                          + ", ".join(str(c) for c in candidates)
                          + ", and a packaged config of that name") from None


def _names(flag: str, value: Any) -> list[str]:
    names = value if isinstance(value, list) else [value]
    known = {"default", "with_cars196"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"--{flag}: unknown entries {unknown}; this project knows {sorted(known)}")
    return names


def translate(argv: Sequence[str]) -> PaperCommand:
    """The paper's flags -> config files, overrides and the action to run."""
    command = PaperCommand()
    extra: dict[str, Any] = {}
    for flag, text in _group_tokens(argv):
        if flag in SWITCHES:
            if text is not None:
                raise ConfigError(f"--{flag} takes no value (got '{text}')")
            if flag == "merge_argparse_when_resuming":
                command.allow_config_change = True
            else:
                command.action = "evaluate"
                command.eval_mode = "separated" if flag == "evaluate" else "concatenated"
            continue
        value = _yaml(flag, text)
        if flag == "reproduce_results":
            command.config_files.insert(0, _config_file(str(value)))
        elif flag == "experiment_name":
            extra["name"] = str(value)
        elif flag == "split_manager~SWAP~1":
            if value != {"MLRCSplitManager": {}}:
                raise ConfigError(f"--split_manager~SWAP~1: only {{MLRCSplitManager: {{}}}} "
                                  f"(the 4-fold MLRC splits) is supported, got {text}")
        elif flag == "config_dataset":
            if "with_cars196" in _names(flag, value):
                extra.update(CARS_DATASET)
        elif flag == "config_general":
            if "with_cars196" in _names(flag, value):
                extra.update(CARS_GENERAL)
        elif flag == "splits_to_eval":
            if value not in (["test"], "test"):
                raise ConfigError(f"--splits_to_eval: only [test] is supported, got {text}")
        elif flag == "dataset_root":
            extra["dataset.root"] = str(value)
        elif flag == "root_experiment_folder":
            extra["experiments_root"] = str(value)
        else:
            extra[flag] = value
    if not command.config_files:
        raise ConfigError("--reproduce_results exp_configs/<name> is required")
    command.overrides = [override(key, value) for key, value in extra.items()]
    return command


def load_paper_config(command: PaperCommand) -> ExperimentConfig:
    """The resolved config; an override that is not a config key names the flag."""
    try:
        return load_config(command.config_files, command.overrides)
    except ConfigError as error:
        message = str(error).replace("unknown config key '", "unknown flag '--")
        raise ConfigError(message) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python run.py <the paper's flags>``."""
    from sdm import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = translate(argv)
        load_paper_config(command)
    except ConfigError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    args = [command.action, *command.config_files, *command.overrides]
    if command.action == "evaluate":
        args += ["--mode", command.eval_mode]
    elif command.allow_config_change:
        args.append("--allow-config-change")
    print("run.py -> sdm " + " ".join(args))
    return cli.main(args)
