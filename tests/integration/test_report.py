"""`sdm report` and the retrieval picture on two finished fixture experiments, and its
ablation over seeds on experiment folders with written results."""

import pytest

from sdm import constants as C
from sdm import storage
from sdm.cli import main
from sdm.config import load_config, to_yaml
from sdm.engine.experiment import ExperimentFolder
from sdm.report import (
    paired_differences,
    paper_results,
    percent_scores,
    resolve_baseline,
    seed_groups,
    seed_summary,
    write_report,
)
from sdm.scores import ModelSetScores, SeparatedScores, write_results
from sdm.scores import TestResults as Evaluated  # not collected as a test class


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cub_root, tiny_overrides):
    tmp = tmp_path_factory.mktemp("report")
    folders = []
    for name, sdm in (("base", "false"), ("with_sdm", "true")):
        config = load_config(overrides=tiny_overrides(
            cub_root, tmp / "exp", name, "model.embedding_sizes=[128]", "training.max_epochs=2",
            "training.iterations_per_epoch=2", "loss.name=contrastive", f"sdm.enabled={sdm}"))
        experiment = ExperimentFolder.of(config)
        with pytest.warns(UserWarning):
            experiment.run()
        experiment.evaluate()
        folders.append(experiment.path)
    return tmp, folders


def test_report_table_and_plots(finished):
    tmp, folders = finished
    path = write_report(folders, tmp / "out")
    text = path.read_text()
    assert "| base |" in text and "| with_sdm |" in text
    assert "Contrast (paper, cub200) | 68.13 | 37.24 | 26.53 | 59.73 | 31.98 | 21.18 |" in text
    assert "Contrast + Ours (paper, cub200) | 68.96" in text
    rows = storage.read_csv(tmp / "out" / "report.csv")
    measured = [r for r in rows if r["source"] == "measured"]
    result = storage.read_json(folders[0] / "results" / "test_results.json")
    value = 100 * result["trained"]["concatenated"][C.MAP_AT_R]
    assert float(measured[0][f"concatenated_{C.MAP_AT_R}"]) == pytest.approx(value, abs=0.006)
    for picture in ("validation_curves.png", "sdm_vs_baseline.png"):
        assert (tmp / "out" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Ablation" not in text and not (tmp / "out" / "ablation.png").exists()


def test_validation_curves_are_overlaid_on_shared_axes_one_panel_per_fold(
        finished, tmp_path, monkeypatch):
    from sdm import report

    _, folders = finished
    experiments = [ExperimentFolder.open(folder) for folder in folders]
    drawn = []
    monkeypatch.setattr(report.storage, "save_figure", lambda figure, path: drawn.append(figure))
    report.plot_validation_curves(experiments, tmp_path / "curves.png")
    [figure] = drawn
    axes = figure.axes
    folds = sorted(experiments[0].curves())
    assert [axis.get_title() for axis in axes] == [f"fold {fold}" for fold in folds]
    assert len({axis.get_ylim() for axis in axes}) == 1  # one scale for every panel
    for axis, fold in zip(axes, folds, strict=True):
        lines = axis.get_lines()
        assert [line.get_label() for line in lines] == ["base", "with_sdm"]
        for line, folder in zip(lines, folders, strict=True):
            rows = storage.read_csv(folder / f"fold_{fold}" / C.METRICS_CSV)
            assert list(line.get_xdata()) == [int(r["epoch"]) for r in rows]
            assert list(line.get_ydata()) == [100 * float(r[C.MAP_AT_R]) for r in rows]


def test_paper_results_are_the_readme_numbers():
    paper = paper_results()
    assert paper[("cars196", "MS + Ours")][f"separated_{C.MAP_AT_R}"] == 21.28
    assert paper[("cub200", "Pretrained")][f"concatenated_{C.PRECISION_AT_1}"] == 51.05
    assert len(paper) == 38


def test_report_command_with_retrieval_pictures(finished, capsys):
    tmp, folders = finished
    with pytest.warns(UserWarning):
        code = main(["report", *map(str, folders), "--output", str(tmp / "cli"),
                     "--retrieval-picture"])
    assert code == 0
    assert (tmp / "cli" / "retrieval_base.png").is_file()
    assert "report and plots written" in capsys.readouterr().out


def test_report_on_an_unevaluated_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="sdm evaluate"):
        write_report([tmp_path], tmp_path / "out")


def test_nearest_neighbours_exclude_the_query_and_sort_by_distance():
    import torch

    from sdm.metrics import nearest_neighbours

    points = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    assert nearest_neighbours(points, [2, 0], k=3).tolist() == [[3, 1, 0], [1, 2, 3]]


def test_evaluate_follows_the_config_evaluation_group(finished, tmp_path):
    import shutil

    _, folders = finished
    shutil.copytree(folders[0], tmp_path / "copy")
    saved = str(tmp_path / "copy" / C.CONFIG_FILE)
    with pytest.warns(UserWarning):
        assert main(["evaluate", saved, f"experiments_root={tmp_path}", "name=copy",
                     "evaluation.concatenated=false", "evaluation.pretrained=false"]) == 0
    result = storage.read_json(tmp_path / "copy" / C.RESULTS_FOLDER / "test_results.json")
    assert set(result) == {"experiment", "folds", "split", "trained"}
    assert set(result["trained"]) == {"dims", "num_models", "separated"}
    with pytest.warns(UserWarning):
        assert main(["evaluate", saved, f"experiments_root={tmp_path}", "name=copy",
                     "evaluation.concatenated=false", "--mode", "concatenated"]) == 0
    result = storage.read_json(tmp_path / "copy" / C.RESULTS_FOLDER / "test_results.json")
    assert set(result["trained"]) == {"dims", "num_models", "concatenated"}
    assert "pretrained" in result
    assert main(["evaluate", saved, "evaluation.concatenated=false",
                 "evaluation.separated=false"]) == 2


def fake_experiment(root, name, seed, concatenated, separated):
    """An evaluated experiment folder without training: config, one validation curve and test
    results whose MAP@R is ``concatenated`` / ``separated`` (0..1), RP 0.1 and P@1 0.2 above."""
    folder = root / name
    config = load_config(overrides=[f"name={name}", f"training.seed={seed}",
                                    f"experiments_root={root}"])
    storage.write_text(folder / C.CONFIG_FILE, to_yaml(config))
    storage.write_csv(folder / "fold_0" / C.METRICS_CSV, [{"epoch": 1, C.MAP_AT_R: 0.1}])

    def scores(map_at_r):
        return {C.PRECISION_AT_1: map_at_r + 0.2, C.R_PRECISION: map_at_r + 0.1,
                C.MAP_AT_R: map_at_r}

    zero = {metric: 0.0 for metric in C.METRIC_NAMES}
    trained = ModelSetScores(
        dims={C.SEPARATED: 16, C.CONCATENATED: 32}, num_models=2,
        separated=SeparatedScores([scores(separated)] * 2, scores(separated), zero),
        concatenated=scores(concatenated))
    write_results(folder / C.RESULTS_FOLDER, Evaluated(name, trained, folds=[0, 1]))
    return folder


@pytest.fixture
def seeded(tmp_path):
    """Three seeds of a baseline and of a variant, a suffix-less run (training.seed 1) and a
    group that shares no seed with the baseline: (concatenated, separated) MAP@R per seed."""
    runs = [("icons_ms_off_seed0", 0, 0.10, 0.08), ("icons_ms_off_seed1", 1, 0.12, 0.09),
            ("icons_ms_off_seed2", 2, 0.14, 0.10), ("icons_ms_paper_seed0", 0, 0.13, 0.10),
            ("icons_ms_paper_seed1", 1, 0.16, 0.10), ("icons_ms_paper_seed2", 2, 0.16, 0.13),
            ("lonely", 1, 0.15, 0.11), ("other_seed7", 7, 0.20, 0.20)]
    return [fake_experiment(tmp_path / "exp", *run) for run in runs]


def test_seed_groups_and_paired_differences_by_hand(seeded, tmp_path):
    groups = seed_groups([ExperimentFolder.open(folder) for folder in seeded])
    assert {group: list(seeds) for group, seeds in groups.items()} == {
        "icons_ms_off": [0, 1, 2], "icons_ms_paper": [0, 1, 2], "lonely": [1], "other": [7]}
    assert resolve_baseline(groups, "icons_ms_off_seed1") == "icons_ms_off"
    scores = {group: {seed: percent_scores(e) for seed, e in seeds.items()}
              for group, seeds in groups.items()}
    concat, separated = f"concatenated_{C.MAP_AT_R}", f"separated_{C.MAP_AT_R}"
    # Baseline concatenated MAP@R 10, 12, 14 %: mean 12, stdev sqrt((4 + 0 + 4) / 2) = 2.
    assert seed_summary(scores["icons_ms_off"])[concat] == pytest.approx((12.0, 2.0))
    # Variant 13, 16, 16 %: mean 15, stdev sqrt((4 + 1 + 1) / 2) = sqrt(3).
    assert seed_summary(scores["icons_ms_paper"])[concat] == pytest.approx((15.0, 3 ** 0.5))
    differences = paired_differences(scores["icons_ms_paper"], scores["icons_ms_off"])
    assert {s: d[concat] for s, d in differences.items()} == pytest.approx({0: 3, 1: 4, 2: 2})
    assert {s: d[separated] for s, d in differences.items()} == pytest.approx({0: 2, 1: 1, 2: 3})
    assert seed_summary(differences)[concat] == pytest.approx((3.0, 1.0))
    lonely = seed_summary(paired_differences(scores["lonely"], scores["icons_ms_off"]))
    assert lonely[concat] == pytest.approx((3.0, None)) and lonely[separated][1] is None
    assert paired_differences(scores["other"], scores["icons_ms_off"]) == {}
    twin = fake_experiment(tmp_path / "twin", "icons_ms_off", 0, 0.1, 0.1)
    with pytest.raises(ValueError, match="both seed 0 of group icons_ms_off"):
        seed_groups([ExperimentFolder.open(seeded[0]), ExperimentFolder.open(twin)])


def test_report_with_a_baseline_adds_the_ablation_over_seeds(seeded, tmp_path):
    output = tmp_path / "out"
    assert main(["report", *map(str, seeded), "--output", str(output),
                 "--baseline", "icons_ms_off"]) == 0
    text = (output / "report.md").read_text()
    assert "## Ablation over seeds (baseline: icons_ms_off)" in text
    assert ("| icons_ms_off | 3 | 32.00 ± 2.00 | 22.00 ± 2.00 | 12.00 ± 2.00 | 29.00 ± 1.00 "
            "| 19.00 ± 1.00 | 9.00 ± 1.00 |") in text
    assert ("| icons_ms_paper | 3 | 35.00 ± 1.73 | 25.00 ± 1.73 | 15.00 ± 1.73 | 31.00 ± 1.73 "
            "| 21.00 ± 1.73 | 11.00 ± 1.73 |") in text
    assert "| lonely | 1 | 35.00 | 25.00 | 15.00 | 31.00 | 21.00 | 11.00 |" in text
    assert "| group − icons_ms_off | seeds |" in text
    assert ("| icons_ms_paper | 3 | 3.00 ± 1.00 | 3.00 ± 1.00 | 3.00 ± 1.00 "
            "| 2.00 ± 1.00 | 2.00 ± 1.00 | 2.00 ± 1.00 |") in text
    assert "| lonely | 1 | 3.00 | 3.00 | 3.00 | 2.00 | 2.00 | 2.00 |" in text
    assert "No seed in common with the baseline, not compared: other (seeds 7)." in text
    assert "![group minus baseline, MAP@R](ablation.png)" in text
    assert (output / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| icons_ms_off_seed0 |" in text  # the per-experiment table is still there


def test_report_with_an_unknown_baseline_lists_the_groups(seeded, tmp_path, capsys):
    assert main(["report", *map(str, seeded), "--output", str(tmp_path / "out"),
                 "--baseline", "icons_ms"]) == 2
    assert ("unknown baseline 'icons_ms'; the groups found are: icons_ms_off, icons_ms_paper, "
            "lonely, other") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
