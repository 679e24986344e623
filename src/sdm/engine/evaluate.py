"""Test evaluation of an experiment: separated (per fold model) and concatenated (all folds).

- separated: each fold's best checkpoint on the test classes; mean and standard deviation
  of each metric over the folds (128-d in the paper).
- concatenated: each fold model's embeddings L2-normalized, concatenated, normalized again,
  evaluated once (512-d in the paper).
- pretrained: the same two with each fold's epoch-0 model (trunk + untrained embedder).

Results go to ``<experiment>/results/`` as JSON, CSV and a Markdown table laid out like the
paper's (percent, two decimals).
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sdm import constants as C
from sdm import records
from sdm.data.datasets import ImageDataset
from sdm.data.transforms import build_transform
from sdm.engine.embeddings import compute_embeddings, concatenated_embeddings
from sdm.engine.fold import build_model, resolve_device
from sdm.engine.model import EmbeddingModel
from sdm.metrics import retrieval_metrics
from sdm.models.trunks import input_convention

SEPARATED = "separated"
CONCATENATED = "concatenated"
EVAL_MODES = (SEPARATED, CONCATENATED)
TABLE_ORDER = (CONCATENATED, SEPARATED)  # the paper's column order


def build_eval_model(config: DictConfig) -> tuple[EmbeddingModel, str]:
    """The config's model with SDM's feature dropout off and no pretrained weights loaded."""
    plain = OmegaConf.merge(config, {"sdm": {"enabled": False}, "model": {"pretrained": False}})
    return build_model(plain)


def load_checkpoint_model(config: DictConfig, path: str | Path) -> EmbeddingModel:
    state = records.load_checkpoint(path)
    model, _ = build_eval_model(config)
    model.trunk.load_state_dict(state["trunk"])
    model.embedder.load_state_dict(state["embedder"])
    return model


def evaluate_models(
    models: list[EmbeddingModel], test_set: ImageDataset, config: DictConfig,
    modes: tuple[str, ...] = EVAL_MODES,
) -> dict[str, Any]:
    """Separated and/or concatenated metrics of ``models`` on ``test_set`` (eval transform set).

    Returns ``{"separated": {"per_model": [...], "mean": {...}, "std": {...}},
    "concatenated": {...metrics}, "dims": {...}}``.
    """
    device = resolve_device(config.training.device)
    per_model = []
    labels = None
    for model in models:
        model.to(device)
        embeddings, labels = compute_embeddings(
            model, test_set, device=device, batch_size=config.training.eval_batch_size,
            num_workers=config.training.num_workers)
        per_model.append(embeddings)
    result: dict[str, Any] = {"dims": {SEPARATED: per_model[0].shape[1],
                                       CONCATENATED: sum(e.shape[1] for e in per_model)},
                              "num_models": len(models)}
    if SEPARATED in modes:
        scores = [retrieval_metrics(e, labels) for e in per_model]
        result[SEPARATED] = {
            "per_model": scores,
            "mean": {m: statistics.fmean(s[m] for s in scores) for m in C.METRIC_NAMES},
            "std": {m: statistics.pstdev(s[m] for s in scores) for m in C.METRIC_NAMES},
        }
    if CONCATENATED in modes:
        result[CONCATENATED] = retrieval_metrics(concatenated_embeddings(per_model), labels)
    return result


def build_test_set(
    config: DictConfig, dataset: ImageDataset, splits: dict[str, Any]
) -> ImageDataset:
    """The test classes of ``dataset`` with the eval transform of the config's trunk."""
    transform = build_transform(input_convention(config.model.trunk), train=False)
    return dataset.subset(splits["test"]).with_transform(transform)


def trained_folds(config: DictConfig, experiment_dir: str | Path) -> list[int]:
    """The configured folds that have a best checkpoint; an error when there is none."""
    folds = [f for f in config.training.folds
             if (records.fold_folder(experiment_dir, f) / records.BEST_CHECKPOINT).is_file()]
    if not folds:
        raise FileNotFoundError(
            f"no trained fold in {experiment_dir} (looked for fold_<k>/{records.BEST_CHECKPOINT});"
            " train the experiment first")
    return folds


def evaluate_experiment(
    config: DictConfig, experiment_dir: str | Path, dataset: ImageDataset,
    splits: dict[str, Any], modes: tuple[str, ...] = EVAL_MODES, pretrained: bool = True,
) -> dict[str, Any]:
    """Evaluates the best checkpoint of every finished fold (and epoch 0 when ``pretrained``)
    on the test classes and writes ``results/test_results.{json,csv,md}``."""
    experiment_dir = Path(experiment_dir)
    folds = trained_folds(config, experiment_dir)
    test_set = build_test_set(config, dataset, splits)
    rows = {}
    kinds = {"trained": records.BEST_CHECKPOINT}
    if pretrained:
        kinds["pretrained"] = records.PRETRAINED_CHECKPOINT
    for kind, checkpoint in kinds.items():
        models = [load_checkpoint_model(config, records.fold_folder(experiment_dir, f) / checkpoint)
                  for f in folds]
        rows[kind] = evaluate_models(models, test_set, config, modes)
    results = {"experiment": config.name, "folds": folds, "split": "test", **rows}
    write_results(experiment_dir / records.RESULTS_FOLDER, config.name, results)
    return results


def find_released_models(folder: str | Path) -> list[tuple[Path, Path]]:
    """(trunk, embedder) file pairs of the paper's released models below ``folder``.

    Each subfolder holding ``trunk_best<E>.pth`` and ``embedder_best<E>.pth`` is one fold
    model (sorted by path); when a folder holds several epochs the highest E is taken.
    """
    folder = Path(folder)
    pairs = []
    for trunk_dir in sorted({p.parent for p in folder.rglob("trunk_best*.pth")}):
        epochs = sorted(int(m.group(1)) for p in trunk_dir.glob("trunk_best*.pth")
                        if (m := re.fullmatch(r"trunk_best(\d+)\.pth", p.name)))
        if not epochs:
            continue
        embedder = trunk_dir / f"embedder_best{epochs[-1]}.pth"
        if not embedder.is_file():
            raise FileNotFoundError(
                f"{trunk_dir} has trunk_best{epochs[-1]}.pth but no {embedder.name}")
        pairs.append((trunk_dir / f"trunk_best{epochs[-1]}.pth", embedder))
    if not pairs:
        raise FileNotFoundError(
            f"no released models under {folder}: expected one folder per fold holding "
            "trunk_best<E>.pth and embedder_best<E>.pth")
    return pairs


def load_released_model(
    config: DictConfig, trunk_file: Path, embedder_file: Path
) -> EmbeddingModel:
    """A model from the paper's ``trunk_best<E>.pth`` and ``embedder_best<E>.pth``."""
    model, _ = build_eval_model(config)
    trunk_state = torch.load(trunk_file, map_location="cpu", weights_only=True)
    trunk_state = {k: v for k, v in trunk_state.items() if not k.startswith("last_linear.")}
    model.trunk.load_state_dict(trunk_state)
    model.embedder.load_state_dict(torch.load(embedder_file, map_location="cpu", weights_only=True))
    return model


def percent_row(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """One table row: method name and the six numbers in percent (concatenated, separated)."""
    row: dict[str, Any] = {"method": name}
    for mode in EVAL_MODES:
        scores = result.get(mode)
        if scores is None:
            continue
        values = scores["mean"] if mode == SEPARATED else scores
        for metric in C.METRIC_NAMES:
            row[f"{mode}_{metric}"] = round(100 * values[metric], 2)
        if mode == SEPARATED:
            for metric in C.METRIC_NAMES:
                row[f"{mode}_{metric}_std"] = round(100 * scores["std"][metric], 2)
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of ``percent_row`` as the paper lays out its table."""
    header = ("| | Concatenated P@1 | RP | MAP@R | Separated P@1 | RP | MAP@R |\n"
              "|-|-:|-:|-:|-:|-:|-:|\n")
    lines = []
    for row in rows:
        cells = []
        for mode in TABLE_ORDER:
            for metric in C.METRIC_NAMES:
                value = row.get(f"{mode}_{metric}")
                std = row.get(f"{mode}_{metric}_std")
                text = "-" if value is None else f"{value:.2f}"
                if std is not None:
                    text += f" ± {std:.2f}"
                cells.append(text)
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def result_rows(name: str, results: dict[str, Any],
                pretrained_label: str = "Pretrained") -> list[dict[str, Any]]:
    """Table rows of one experiment's results: its "Pretrained" row, when evaluated, then
    the trained row."""
    rows = [percent_row(name, results["trained"])]
    if "pretrained" in results:
        rows.insert(0, percent_row(pretrained_label, results["pretrained"]))
    return rows


def write_results(folder: Path, name: str, results: dict[str, Any]) -> None:
    """``test_results.json`` (everything), ``.csv`` and ``.md`` (percent table)."""
    rows = result_rows(name, results)
    records.write_json(folder / "test_results.json", results)
    records.write_csv(folder / "test_results.csv", rows)
    records.write_text(folder / "test_results.md", markdown_table(rows))
