"""The console transcripts of the README and the documentation pages: each command runs and
prints what the page shows (see ``tests/docs_examples.py`` for the rules)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from docs_examples import blocks, output_matches, page_id, pages, transcript
from fixtures import class_pattern, make_cub_tree

BLOCKS = [(page, index, block) for page in pages()
          for index, block in enumerate(blocks(page, "console"))]


def make_photo_folder(root: Path, classes: int = 8, per_class: int = 4) -> Path:
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(class_pattern(label, k, (40, 40))).save(folder / f"{k}.jpg")
    return root


def test_the_docs_have_console_transcripts():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS,
                         ids=[f"{page_id(p)}-{i}" for p, i, _ in BLOCKS])
def test_console_transcript(page, index, block, tmp_path):
    make_photo_folder(tmp_path / "my_photos")
    make_cub_tree(tmp_path / "data", num_classes=16, per_class=4)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
    for command in transcript(block):
        done = subprocess.run(["bash", "-c", command.line], cwd=tmp_path, env=environment,
                              capture_output=True, text=True, timeout=300)
        actual = (done.stdout + done.stderr).splitlines()
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        assert output_matches(command.expected, actual), (
            f"{page_id(page)} console block {index}: `{command.line}` printed\n"
            + "\n".join(actual))
