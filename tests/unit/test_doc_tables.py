"""Every generated table is current with its ledger, and the generator itself is right."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdm import doc_tables
from sdm.report import paper_results

REPOSITORY = Path(__file__).resolve().parents[2]


def test_no_generated_file_is_out_of_date():
    """`make docs-tables` has been run since the last change to a ledger or a generator."""
    assert doc_tables.stale_files(REPOSITORY) == []


def test_the_tuned_comparison_page_matches_its_json(tmp_path):
    results = REPOSITORY / "benchmarks" / "results"
    (tmp_path / "tuned_comparison.json").write_text((results / "tuned_comparison.json").read_text())
    subprocess.run([sys.executable, str(REPOSITORY / "benchmarks" / "tuned_comparison.py"),
                    "--markdown-only", "--output", str(tmp_path)], check=True, timeout=120)
    assert (tmp_path / "tuned_comparison.md").read_text() == \
        (results / "tuned_comparison.md").read_text()


def test_the_paper_tables_hold_every_row_of_the_csv_once():
    tables = doc_tables.paper_tables()
    rows = [line for line in tables.splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == len(paper_results()) == 38
    # One row checked by hand against the paper's README: CUB, MS + Ours.
    assert "| **MS + Ours** | 67.08 | 36.23 | 25.61 | 59.22 | 31.82 | 21.24 |" in rows
    cub, cars = tables.split("### Cars196")
    assert "| Pretrained | 51.05 |" in cub and "| Pretrained | 46.89 |" in cars


def copy_generated_inputs(root: Path) -> None:
    """The README, the ledgers with their reports, and the generated fragments, into root."""
    for part in ("README.md", "benchmarks/results", "docs/generated"):
        source, target = REPOSITORY / part, root / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            target.mkdir()
            for path in source.iterdir():
                if path.suffix in (".json", ".md"):
                    (target / path.name).write_text(path.read_text())
        else:
            target.write_text(source.read_text())


def test_a_changed_ledger_makes_its_report_and_the_summary_stale(tmp_path):
    """A copy of the repository's generated inputs, one ledger number changed: the study's
    report, the summary and the README are named stale, and writing makes them current."""
    copy_generated_inputs(tmp_path)
    assert doc_tables.stale_files(tmp_path) == []
    ledger = tmp_path / "benchmarks/results/cheap_sdm.json"
    runs = json.loads(ledger.read_text())
    runs["icons_ms_at_stage7_seed0"]["scores"]["separated_mean_average_precision_at_r"] += 5
    ledger.write_text(json.dumps(runs))
    assert sorted(map(str, doc_tables.stale_files(tmp_path))) == [
        "README.md", "benchmarks/results/cheap_sdm.md", "docs/generated/summary.md"]
    doc_tables.write_files(tmp_path)
    assert doc_tables.stale_files(tmp_path) == []


def test_summary_signs_and_spreads():
    assert doc_tables._points((1.2345, 0.5)) == "+1.23 ± 0.50"
    assert doc_tables._points((-2.5, None)) == "−2.50"
    assert doc_tables._points(None) == "-"


def test_a_readme_without_markers_is_an_error():
    with pytest.raises(ValueError, match="summary"):
        doc_tables._with_readme_summary("# no markers\n", "| table |\n")


def test_step_costs_round_half_up_from_their_stored_digits():
    from sdm.study_report import format_step_cost

    assert format_step_cost(1.265) == "1.27x"  # 1.265 is 1.26499.. in binary
    assert format_step_cost(7.649) == "7.65x"
    assert format_step_cost(1.0) == "1.00x"
    assert format_step_cost(None) == "-"


def test_the_study_report_command_refreshes_the_docs_tables(tmp_path):
    """`sdm study report` in the repository also rewrites the tables made from the ledgers."""
    from sdm.cli import main

    copy_generated_inputs(tmp_path)
    ledger = tmp_path / "benchmarks/results/cheap_sdm.json"
    runs = json.loads(ledger.read_text())
    runs["icons_ms_at_stage6_seed1"]["scores"]["concatenated_mean_average_precision_at_r"] -= 3
    ledger.write_text(json.dumps(runs))
    assert len(doc_tables.stale_files(tmp_path)) == 3
    plan = doc_tables.STUDIES / "cheap_sdm.yaml"
    assert main(["study", "report", str(plan), "--root", str(tmp_path)]) == 0
    assert doc_tables.stale_files(tmp_path) == []


def test_a_study_without_its_sdm_arms_says_how_far_it_is(tmp_path):
    copy_generated_inputs(tmp_path)
    ledger = tmp_path / "benchmarks/results/convergence_study.json"
    ledger.write_text(json.dumps({"icons_ms_off_seed0": {"scores": {}}}))
    row = "| convergence_study (pretrained, to convergence) | "
    assert row + "running: the baseline alone so far |" in doc_tables.summary_table(tmp_path)
    ledger.unlink()
    assert row + "not run yet |" in doc_tables.summary_table(tmp_path)
