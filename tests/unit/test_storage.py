"""Atomic files, checkpoints, CSV and run information."""

import pytest
import torch

from sdm import storage


def test_atomic_text_and_json(tmp_path):
    storage.write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [1, 2]})
    assert storage.read_json(tmp_path / "a" / "x.json") == {"a": [1, 2], "b": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.pth"
    storage.save_checkpoint(path, {"w": torch.arange(3)})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        storage.save_checkpoint(path, {"w": Unpicklable()})
    assert torch.equal(storage.load_checkpoint(path)["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        storage.load_checkpoint(tmp_path / "nothing.pth")


def test_csv_round_trip(tmp_path):
    rows = [{"epoch": -1, "m": 0.5}, {"epoch": 0, "m": 0.25}]
    storage.write_csv(tmp_path / "m.csv", rows)
    assert storage.read_csv(tmp_path / "m.csv") == [{"epoch": "-1", "m": "0.5"},
                                                    {"epoch": "0", "m": "0.25"}]


def test_csv_columns_are_the_union_of_the_rows_keys(tmp_path):
    rows = [{"method": "one fold", "m": 1.5}, {"method": "four folds", "m": 2.0, "m_std": 0.5},
            {"method": "paper"}]
    storage.write_csv(tmp_path / "r.csv", rows)
    assert (tmp_path / "r.csv").read_text().splitlines() == [
        "method,m,m_std", "one fold,1.5,", "four folds,2.0,0.5", "paper,,"]


def test_run_info_has_seed_versions_and_git():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        info = storage.run_info(seed=11)
    finally:
        torch.set_num_threads(threads)
    assert info["seed"] == 11
    assert info["torch_threads"] == 1
    assert info["cpu"]
    assert info["packages"]["torch"].startswith("2.14.1")
    assert info["git"] == "unknown" or len(info["git"].split("+")[0]) == 40
