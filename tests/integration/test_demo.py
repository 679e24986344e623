"""`sdm demo --quick` end to end on a glyph dataset built from matplotlib's DejaVu fonts, with
the pretrained EfficientNet-Lite0 of the real demo."""

import json
import math
import re
from pathlib import Path

import matplotlib
import pytest

from sdm import constants as C
from sdm.builders.glyphs import build_glyph_dataset
from sdm.cli import main
from sdm.config import load_config

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def test_quick_demo_trains_evaluates_and_prints_the_table(tmp_path, capsys):
    build_glyph_dataset(tmp_path / "data", font_dirs=[FONTS], workers=1)
    code = main(["demo", "--quick", "--dataset-root", str(tmp_path / "data"),
                 "--experiments-root", str(tmp_path / "exp")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| Pretrained (epoch 0) |" in out and "| quick_baseline |" in out
    assert "| quick_sdm |" in out and "demo wall time:" in out
    maps = {}
    for name in ("quick_baseline", "quick_sdm"):
        folder = tmp_path / "exp" / name
        assert (folder / "results" / "test_results.md").is_file()
        assert sorted(p.name for p in folder.glob("fold_*")) == ["fold_0"]
        results = json.loads((folder / "results" / "test_results.json").read_text())
        maps[name] = 100 * results["trained"]["separated"]["mean"][C.MAP_AT_R]
    sdm_config = load_config([tmp_path / "exp" / "quick_sdm" / "config.yaml"])
    assert sdm_config.sdm.enabled and sdm_config.sdm.passes == 8
    configs = Path(__file__).parents[2] / "exp_configs"
    cheap = load_config([configs / "icons" / "ms.yaml", configs / "sdm_cheap.yaml"])
    assert sdm_config.sdm.perturb_at == cheap.sdm.perturb_at != "stem"
    # Equal compute: the baseline's iterations are SDM's 3 times the measured step cost.
    ratio = json.loads((tmp_path / "exp" / "quick_step_cost.json").read_text())["ratio"]
    baseline_config = load_config([tmp_path / "exp" / "quick_baseline" / "config.yaml"])
    assert baseline_config.training.iterations_per_epoch == math.ceil(3 * ratio)
    assert f"costs {ratio:.2f} baseline steps" in out
    assert sdm_config.model.trunk == "efficientnet_lite0" and sdm_config.model.pretrained
    assert (sdm_config.transform.resize, sdm_config.transform.crop) == (72, 64)
    difference = maps["quick_sdm"] - maps["quick_baseline"]
    assert f"SDM minus baseline at equal compute, test MAP@R: {difference:+.2f} points" in out
    assert ("did not beat the baseline" in out) == (difference <= 0)
    times = re.search(r"SDM trained for (\d+) s, the baseline for (\d+) s \((\d+\.\d)x", out)
    assert times is not None
    sdm_seconds, baseline_seconds = int(times[1]), int(times[2])
    assert float(times[3]) == pytest.approx(sdm_seconds / max(baseline_seconds, 1), abs=0.6)

