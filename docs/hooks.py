"""MkDocs hook: the study plots live beside their ledgers in ``benchmarks/results/``; the
result pages show them as ``results/<name>.png`` without a second copy in ``docs/``."""

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def on_files(files, config):
    for plot in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{plot.name}", abs_src_path=str(plot)))
    return files
