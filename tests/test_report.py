"""`sdm report` and the retrieval picture on two finished fixture experiments."""

import pytest

from sdm import constants as C
from sdm import records
from sdm.cli import main
from sdm.config import load_config
from sdm.engine.build import load_experiment_dataset
from sdm.engine.evaluate import evaluate_experiment
from sdm.engine.experiment import experiment_folder, run_experiment
from sdm.report import paper_results, write_report
from sdm.results import write_results


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cub_root, tiny_overrides):
    tmp = tmp_path_factory.mktemp("report")
    folders = []
    for name, sdm in (("base", "false"), ("with_sdm", "true")):
        config = load_config(overrides=tiny_overrides(
            cub_root, tmp / "exp", name, "model.embedding_sizes=[128]", "training.max_epochs=2",
            "training.iterations_per_epoch=2", "loss.name=contrastive", f"sdm.enabled={sdm}"))
        with pytest.warns(UserWarning):
            run_experiment(config)
            dataset, splits = load_experiment_dataset(config)
        results = evaluate_experiment(config, experiment_folder(config), dataset, splits)
        write_results(experiment_folder(config) / C.RESULTS_FOLDER, results)
        folders.append(experiment_folder(config))
    return tmp, folders


def test_report_table_and_plots(finished):
    tmp, folders = finished
    path = write_report(folders, tmp / "out")
    text = path.read_text()
    assert "| base |" in text and "| with_sdm |" in text
    assert "Contrast (paper, cub200) | 68.13 | 37.24 | 26.53 | 59.73 | 31.98 | 21.18 |" in text
    assert "Contrast + Ours (paper, cub200) | 68.96" in text
    rows = records.read_csv(tmp / "out" / "report.csv")
    measured = [r for r in rows if r["source"] == "measured"]
    result = records.read_json(folders[0] / "results" / "test_results.json")
    value = 100 * result["trained"]["concatenated"][C.MAP_AT_R]
    assert float(measured[0][f"concatenated_{C.MAP_AT_R}"]) == pytest.approx(value, abs=0.006)
    for picture in ("validation_curves.png", "sdm_vs_baseline.png"):
        assert (tmp / "out" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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

    from sdm.retrieval_picture import nearest_neighbours

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
    result = records.read_json(tmp_path / "copy" / C.RESULTS_FOLDER / "test_results.json")
    assert set(result) == {"experiment", "folds", "split", "trained"}
    assert set(result["trained"]) == {"dims", "num_models", "separated"}
    with pytest.warns(UserWarning):
        assert main(["evaluate", saved, f"experiments_root={tmp_path}", "name=copy",
                     "evaluation.concatenated=false", "--mode", "concatenated"]) == 0
    result = records.read_json(tmp_path / "copy" / C.RESULTS_FOLDER / "test_results.json")
    assert set(result["trained"]) == {"dims", "num_models", "concatenated"}
    assert "pretrained" in result
    assert main(["evaluate", saved, "evaluation.concatenated=false",
                 "evaluation.separated=false"]) == 2
