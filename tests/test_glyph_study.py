"""The glyph study's ledger and tables (benchmarks/glyph_study.py) on a hand-made ledger."""

import importlib.util
import sys
from pathlib import Path

from sdm import records
from sdm.report import COLUMNS

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "glyph_study.py"
spec = importlib.util.spec_from_file_location("glyph_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def scores(value: float) -> dict[str, float]:
    return dict.fromkeys(COLUMNS, value)


LEDGER = {"ms|paper": {"1": scores(60.0), "0": scores(57.0)},
          "ms|off": {"0": scores(55.0), "1": scores(56.0), "2": scores(50.0)},
          "contrast|t1": {"2": scores(40.0)},
          "contrast|off": {"2": scores(45.0)}}


def test_the_tables_come_from_the_ledger_in_paper_order_paired_by_seed():
    found = study.collect(LEDGER)
    assert list(found) == [("contrast", "off"), ("contrast", "t1"), ("ms", "off"),
                           ("ms", "paper")]
    assert list(found[("ms", "paper")]) == [0, 1]
    text = study.summary_table(found)
    # ms off over seeds 0-2: 55, 56, 50 -> mean 53.67, stdev 3.21
    assert "| ms off | 3 | " + " | ".join(["53.67 ± 3.21"] * 6) + " |" in text
    # ms paper - off, seeds 0 and 1 only: 2 and 4 -> 3.00 ± 1.41; seed 2 has no pair
    assert "| ms paper − off | 2 | " + " | ".join(["3.00 ± 1.41"] * 6) + " |" in text
    # one seed: the difference alone, without a spread
    assert "| contrast t1 − off | 1 | " + " | ".join(["-5.00"] * 6) + " |" in text


def test_summary_only_keeps_the_ledger_and_a_ledgered_run_is_not_run_again(tmp_path,
                                                                           monkeypatch):
    """A fresh checkout has no experiment folders: the summary must come from the committed
    ledger and leave it as it was, and the study must not retrain what the ledger holds."""
    records.write_json(tmp_path / study.LEDGER, LEDGER)
    before = (tmp_path / study.LEDGER).read_bytes()
    monkeypatch.setattr(sys, "argv", ["glyph_study.py", "--summary-only",
                                      "--output", str(tmp_path)])
    study.main()
    assert (tmp_path / study.LEDGER).read_bytes() == before
    assert "| ms paper − off | 2 |" in (tmp_path / "glyph_study.md").read_text()
    assert (tmp_path / "glyph_study.png").is_file()

    def no_training(config):
        raise AssertionError(f"{config.name} is in the ledger and must not be trained again")

    monkeypatch.setattr(study, "run_experiment", no_training)
    monkeypatch.setattr(sys, "argv", ["glyph_study.py", "--seeds", "0", "1", "--losses", "ms",
                                      "--t1-losses", "--output", str(tmp_path),
                                      "--experiments-root", str(tmp_path / "runs")])
    study.main()
    assert not (tmp_path / "runs").exists()
