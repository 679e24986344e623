"""Every config in exp_configs/ loads and builds its model, loss and optimizers."""

from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import losses

from sdm.config import load_config
from sdm.engine.build import build_fold_loss, build_model, build_optimizers
from sdm.sdm_loss import SDMLoss

EXP_CONFIGS = Path(__file__).resolve().parents[2] / "exp_configs"
# Layers meant to go on top of a complete config, not experiments of their own.
SHARED = {"cub200.yaml", "cars196.yaml", "sop.yaml", "inshop.yaml", "sdm_paper.yaml", "base.yaml",
          "glyphs_pretrained.yaml", "sdm_cheap.yaml"}
CONFIGS = sorted(p for p in EXP_CONFIGS.rglob("*.yaml")
                 if p.name not in SHARED and p.parent.name not in ("ablation", "studies"))
PAPER = ["cub_contrast", "cub_triplet", "cub_margin", "cub_ms",
         "car_contrast", "car_triplet", "car_margin", "car_ms"]


def test_the_paper_experiments_and_their_baselines_are_all_there():
    names = {p.relative_to(EXP_CONFIGS).with_suffix("").as_posix() for p in CONFIGS}
    assert {*PAPER} <= names
    for dataset in ("cub", "car"):
        for loss in ("contrast", "triplet", "margin", "ms", "ntxent", "proxynca",
                     "margin_per_class", "normalized_softmax", "cosface", "arcface", "fastap",
                     "snr", "ms_miner", "softtriple"):
            assert f"baselines/{dataset}_{loss}" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(EXP_CONFIGS).as_posix())
def test_config_builds_model_loss_and_optimizers(path):
    config = load_config([path], ["model.pretrained=false"])
    model = build_model(config)
    loss = build_fold_loss(config, num_classes=10)
    optimizers = build_optimizers(config, model, loss)
    assert isinstance(loss, SDMLoss) == config.sdm.enabled
    assert isinstance(optimizers["trunk"], torch.optim.RMSprop)
    has_own_parameters = any(p.requires_grad for p in loss.parameters())
    assert ("loss" in optimizers) == has_own_parameters
    if "loss" in optimizers:
        assert optimizers["loss"].param_groups[0]["lr"] == config.optimizer.loss_lr
    if config.dataset.name == "cars196":
        assert (config.training.save_interval, config.training.patience) == (5, 14)
    elif config.dataset.name == "cub200":
        assert (config.training.save_interval, config.training.patience) == (2, 9)


def test_paper_hyperparameters_reach_the_loss():
    config = load_config([EXP_CONFIGS / "car_margin.yaml"], ["model.pretrained=false"])
    loss = build_fold_loss(config, num_classes=10)
    base = loss.base_loss
    assert isinstance(base, losses.MarginLoss)
    assert base.margin == pytest.approx(0.07817191774601229)
    assert float(base.beta.detach()) == pytest.approx(1.3164399965498457)
    assert config.optimizer.loss_lr == pytest.approx(0.00011114005894862011)
    config = load_config([EXP_CONFIGS / "baselines" / "cub_arcface.yaml"])
    arcface = build_fold_loss(config, num_classes=10)
    assert arcface.margin == pytest.approx(23.22 * 3.141592653589793 / 180)


ABLATION_ARMS = {  # arm -> its only differences from the paper setting
    "off": {"sdm.enabled": (True, False)},
    "dropout_only": {"sdm.passes": (8, 1), "sdm.masks": (8, 1),
                     "sdm.embedding_dropout": (0.05, 0.0)},
    "mean": {"sdm.alpha": (32.0, 0.0)},
    "masks_only": {"sdm.passes": (8, 1), "sdm.feature_dropout": (0.1, 0.0)},
    "t2": {"sdm.passes": (8, 2)},
    "t4": {"sdm.passes": (8, 4)},
    "converged": {"sdm.enabled": (True, False), "training.max_epochs": (4, 64),
                  "training.patience": (4, 8)},
}


@pytest.mark.parametrize("loss", ["contrast", "ms", "triplet", "margin"])
@pytest.mark.parametrize("arm", sorted(ABLATION_ARMS))
def test_ablation_arms_change_exactly_what_they_say(loss, arm):
    from sdm.config import config_difference

    files = [EXP_CONFIGS / "icons" / f"{loss}.yaml"]
    paper = load_config([*files, EXP_CONFIGS / "ablation" / "paper.yaml"])
    changed = load_config([*files, EXP_CONFIGS / "ablation" / f"{arm}.yaml"])
    assert paper.sdm.enabled and (paper.sdm.passes, paper.sdm.masks) == (8, 8)
    assert (paper.sdm.embedding_dropout, paper.sdm.feature_dropout, paper.sdm.alpha) == (
        0.05, 0.1, 32.0)
    assert config_difference(paper, changed) == ABLATION_ARMS[arm]
    glyphs = load_config([*files, EXP_CONFIGS / "glyphs_pretrained.yaml",
                          EXP_CONFIGS / "ablation" / f"{arm}.yaml"])
    assert config_difference(changed, glyphs) == {"dataset.name": ("icons", "glyphs")}


def test_the_cheap_sdm_layer_is_the_paper_setting_with_the_dropout_moved_late():
    from sdm.config import config_difference

    files = [EXP_CONFIGS / "icons" / "ms.yaml"]
    paper = load_config([*files, EXP_CONFIGS / "ablation" / "paper.yaml"])
    cheap = load_config([*files, EXP_CONFIGS / "sdm_cheap.yaml"])
    changed = config_difference(paper, cheap)
    assert set(changed) <= {"sdm.perturb_at", "sdm.feature_dropout", "sdm.passes"}
    assert changed["sdm.perturb_at"][0] == "stem" and cheap.sdm.perturb_at != "stem"
    model = build_model(load_config([*files, EXP_CONFIGS / "sdm_cheap.yaml"],
                                    ["model.pretrained=false"]))
    assert model.trunk.perturb_at == cheap.sdm.perturb_at
