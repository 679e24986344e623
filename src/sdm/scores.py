"""Test results: what an evaluation measured, its tables, and its files.

``TestResults`` is what ``sdm evaluate`` computes for one experiment; it is written to
``<experiment>/results/test_results.json`` (everything), ``.csv`` and ``.md`` (the table laid
out like the paper's: percent, two decimals, concatenated columns first) and read back by
``read_results``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import storage

Scores = dict[str, float]  # metric name (sdm.constants.METRIC_NAMES) -> value in 0..1


@dataclass
class SeparatedScores:
    """Each fold model's scores, and their mean and population standard deviation."""

    per_model: list[Scores]
    mean: Scores
    std: Scores


@dataclass
class ModelSetScores:
    """Test scores of one set of fold models; ``dims`` is the embedding size per mode."""

    dims: dict[str, int]
    num_models: int
    separated: SeparatedScores | None = None
    concatenated: Scores | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSetScores:
        separated = data.get(C.SEPARATED)
        return cls(dims=data["dims"], num_models=data["num_models"],
                   separated=SeparatedScores(**separated) if separated else None,
                   concatenated=data.get(C.CONCATENATED))


@dataclass
class TestResults:
    """One experiment's test evaluation: its trained models and, when evaluated, the
    "Pretrained" models (epoch 0: trunk + untrained embedder)."""

    experiment: str
    trained: ModelSetScores
    pretrained: ModelSetScores | None = None
    folds: list[int] | None = None
    split: str = "test"

    def to_json(self) -> dict[str, Any]:
        """Plain data for JSON; fields that are None are left out."""
        return _without_none(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TestResults:
        pretrained = data.get("pretrained")
        return cls(experiment=data["experiment"],
                   trained=ModelSetScores.from_json(data["trained"]),
                   pretrained=ModelSetScores.from_json(pretrained) if pretrained else None,
                   folds=data.get("folds"), split=data.get("split", "test"))


def _without_none(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _without_none(value) for key, value in tree.items() if value is not None}
    if isinstance(tree, list):
        return [_without_none(value) for value in tree]
    return tree


# ----- tables ------------------------------------------------------------------------------


def percent_row(name: str, scores: ModelSetScores) -> dict[str, Any]:
    """One table row: method name and the six numbers in percent (concatenated, separated),
    with the spread over fold models of the separated ones (left out for one model, where
    there is no spread to show)."""
    row: dict[str, Any] = {"method": name}
    if scores.concatenated is not None:
        for metric in C.METRIC_NAMES:
            row[f"{C.CONCATENATED}_{metric}"] = round(100 * scores.concatenated[metric], 2)
    if scores.separated is not None:
        for metric in C.METRIC_NAMES:
            row[f"{C.SEPARATED}_{metric}"] = round(100 * scores.separated.mean[metric], 2)
        if scores.num_models > 1:
            for metric in C.METRIC_NAMES:
                row[f"{C.SEPARATED}_{metric}_std"] = round(100 * scores.separated.std[metric], 2)
    return row


def result_rows(name: str, results: TestResults,
                pretrained_label: str = "Pretrained") -> list[dict[str, Any]]:
    """Table rows of one experiment: its "Pretrained" row, when evaluated, then the trained
    row."""
    rows = [percent_row(name, results.trained)]
    if results.pretrained is not None:
        rows.insert(0, percent_row(pretrained_label, results.pretrained))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of ``percent_row`` as the paper lays out its table."""
    header = ("| | Concatenated P@1 | RP | MAP@R | Separated P@1 | RP | MAP@R |\n"
              "|-|-:|-:|-:|-:|-:|-:|\n")
    lines = []
    for row in rows:
        cells = []
        for mode in C.TABLE_ORDER:
            for metric in C.METRIC_NAMES:
                value = row.get(f"{mode}_{metric}")
                std = row.get(f"{mode}_{metric}_std")
                text = "-" if value is None else f"{value:.2f}"
                if std is not None:
                    text += f" ± {std:.2f}"
                cells.append(text)
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


# ----- files -------------------------------------------------------------------------------


def results_file(folder: str | Path, suffix: str) -> Path:
    """``<folder>/test_results<suffix>`` (suffix ``.json``, ``.csv`` or ``.md``)."""
    return Path(folder) / f"{C.TEST_RESULTS_NAME}{suffix}"


def write_results(folder: str | Path, results: TestResults) -> Path:
    """Writes ``test_results.json``, ``.csv`` and ``.md`` into ``folder`` (atomically);
    returns the folder."""
    rows = result_rows(results.experiment, results)
    storage.write_json(results_file(folder, ".json"), results.to_json())
    storage.write_csv(results_file(folder, ".csv"), rows)
    storage.write_text(results_file(folder, ".md"), markdown_table(rows))
    return Path(folder)


def read_results(folder: str | Path) -> TestResults:
    """The results ``write_results`` wrote into ``folder``; FileNotFoundError when there are
    none, saying how to make them."""
    path = results_file(folder, ".json")
    if not path.is_file():
        raise FileNotFoundError(f"no test results at {path}; run `sdm evaluate` first")
    return TestResults.from_json(storage.read_json(path))
