"""`sdm demo --quick` end to end on a glyph dataset built from matplotlib's DejaVu fonts."""

import json
from pathlib import Path

import matplotlib

from sdm import constants as C
from sdm.cli import main
from sdm.data.glyphs import build_glyph_dataset

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def test_quick_demo_trains_evaluates_and_prints_the_table(tmp_path, capsys):
    build_glyph_dataset(tmp_path / "data", font_dirs=[FONTS], workers=1)
    code = main(["demo", "--quick", "--dataset-root", str(tmp_path / "data"),
                 "--experiments-root", str(tmp_path / "exp")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| Pretrained (epoch 0) |" in out and "| quick_baseline |" in out
    assert "| quick_sdm |" in out and "demo wall time:" in out
    for name in ("quick_baseline", "quick_sdm"):
        folder = tmp_path / "exp" / name
        assert (folder / "results" / "test_results.md").is_file()
        assert sorted(p.name for p in folder.glob("fold_*")) == ["fold_0", "fold_1"]
    sdm_config = (tmp_path / "exp" / "quick_sdm" / "config.yaml").read_text()
    assert "enabled: true" in sdm_config
    results = json.loads((tmp_path / "exp" / "quick_sdm" / "results" /
                          "test_results.json").read_text())
    assert 0 <= results["trained"]["concatenated"][C.MAP_AT_R] <= 1

