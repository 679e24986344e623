"""Search spaces: config keys mapped to Optuna distributions, read from YAML.

A space file maps config keys to a distribution::

    loss.params.alpha: {low: 0.01, high: 100.0, log: true}   # float (low/high not both ints)
    sdm.masks: {low: 1, high: 16}                             # int (low and high both ints)
    sdm.passes: {choices: [1, 2, 4, 8]}                       # categorical

and may build on others with ``defaults: [other.yaml, ...]`` (paths relative to the file).
Every key and both ends of every range are checked against the experiment's config before
anything runs (unknown keys list the valid ones, as ``load_config`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sdm.config import ConfigError, load_config, override

PACKAGED_SPACES = Path(__file__).resolve().parent / "spaces"
RANGE_KEYS = {"low", "high", "log"}


def space_file(reference: str | Path) -> Path:
    """The space file ``reference`` names: the path itself, or a packaged space of that name
    (``ms_sdm`` or ``ms_sdm.yaml`` -> ``sdm/tune/spaces/ms_sdm.yaml``)."""
    path = Path(reference)
    if path.is_file():
        return path
    packaged = PACKAGED_SPACES / path.name
    for candidate in (packaged, packaged.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(p.stem for p in PACKAGED_SPACES.glob("*.yaml")))
    raise ConfigError(f"search space not found: {path} (packaged spaces: {names})")


def load_space(references: list[str | Path], config_files: list[str | Path],
               overrides: list[str]) -> dict[str, BaseDistribution]:
    """The distributions of the space files ``references`` (later files win), each key and
    range end checked by loading the experiment's config with it."""
    entries: dict[str, Any] = {}
    for reference in references:
        entries.update(_read(space_file(reference), ()))
    if not entries:
        raise ConfigError("the search space is empty: give at least one key")
    space = {key: distribution(key, entry) for key, entry in entries.items()}
    for key, dist in space.items():
        for value in _ends(dist):
            try:
                load_config(config_files, [*overrides, override(key, value)])
            except ConfigError as error:
                raise ConfigError(
                    f"search space key '{key}' with value {value!r}: {error}") from None
    return space


def distribution(key: str, entry: Any) -> BaseDistribution:
    """One space entry as an Optuna distribution; ConfigError on a malformed or empty range."""
    if isinstance(entry, dict) and set(entry) == {"choices"}:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search space key '{key}': choices must be a non-empty list")
        return CategoricalDistribution(choices)
    if not isinstance(entry, dict) or not {"low", "high"} <= set(entry) <= RANGE_KEYS:
        raise ConfigError(f"search space key '{key}': expected {{low, high[, log]}} or "
                          f"{{choices: [...]}}, got {entry!r}")
    low, high, log = entry["low"], entry["high"], bool(entry.get("log", False))
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"search space key '{key}': low and high must be numbers")
    if low > high:
        raise ConfigError(f"search space key '{key}': low {low} is above high {high}")
    if log and low <= 0:
        raise ConfigError(f"search space key '{key}': a log range needs low > 0, got {low}")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _ends(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]  # type: ignore[attr-defined]


def _read(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"search space files include each other in a loop: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"search space file {path} must hold a mapping of config keys")
    entries: dict[str, Any] = {}
    for parent in data.pop("defaults", []):
        entries.update(_read(path.parent / str(parent), (*seen, path.resolve())))
    entries.update(data)
    return entries
