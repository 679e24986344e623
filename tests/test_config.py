"""Config loading: defaults, file layering, overrides, and the errors for bad keys/types."""

import pytest

from sdm.config import ConfigError, config_difference, load_config


def test_defaults_are_the_mlrc_protocol():
    config = load_config()
    assert config.training.batch_size == 32 and config.training.m_per_class == 4
    assert config.training.iterations_per_epoch == 100 and config.training.max_epochs == 1000
    assert (config.optimizer.trunk_lr, config.optimizer.weight_decay) == (1e-6, 1e-4)
    assert list(config.model.embedding_sizes) == [128]
    assert (config.sdm.passes, config.sdm.masks, config.sdm.alpha) == (8, 8, 32.0)
    assert (config.sdm.embedding_dropout, config.sdm.feature_dropout) == (0.05, 0.1)


def test_files_layer_in_order_with_defaults_and_overrides_last(tmp_path):
    (tmp_path / "base.yaml").write_text("training: {patience: 3, seed: 5}\nloss: {name: triplet}\n")
    (tmp_path / "child.yaml").write_text("defaults: [base.yaml]\ntraining: {patience: 4}\n")
    config = load_config([tmp_path / "child.yaml"], ["training.seed=7", "sdm.enabled=true"])
    assert config.training.patience == 4
    assert config.training.seed == 7
    assert config.loss.name == "triplet"
    assert config.sdm.enabled is True


def test_unknown_key_lists_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=["training.pateince=3"])
    message = str(error.value)
    assert "training.pateince" in message
    assert "patience" in message and "save_interval" in message


def test_unknown_key_in_a_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("sdm: {enabeld: true}\n")
    with pytest.raises(ConfigError, match=r"sdm\.enabeld.*enabled"):
        load_config([tmp_path / "bad.yaml"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"training\.batch_size"):
        load_config(overrides=["training.batch_size=many"])


def test_semantic_checks():
    with pytest.raises(ConfigError, match="loss.name 'nope'"):
        load_config(overrides=["loss.name=nope"])
    with pytest.raises(ConfigError, match="multiple of"):
        load_config(overrides=["training.batch_size=30"])
    with pytest.raises(ConfigError, match="sdm.embedding_dropout"):
        load_config(overrides=["sdm.embedding_dropout=1.0"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(overrides=["training.seed"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(["/nonexistent/config.yaml"])


def test_config_difference_lists_changed_leaves():
    old = load_config()
    new = load_config(overrides=["training.seed=3", "loss.params={neg_margin: 0.1}"])
    assert config_difference(old, new) == {
        "training.seed": (0, 3),
        "loss.params": ({}, None),
        "loss.params.neg_margin": (None, 0.1),
    }


def test_switching_loss_drops_the_previous_loss_parameters(tmp_path):
    (tmp_path / "a.yaml").write_text("loss: {name: contrastive, params: {neg_margin: 0.5}}\n")
    config = load_config([tmp_path / "a.yaml"], ["loss.name=triplet", "loss.params={margin: 0.2}"])
    assert dict(config.loss.params) == {"margin": 0.2}
    same = load_config([tmp_path / "a.yaml"], ["loss.params={pos_margin: 0.1}"])
    assert dict(same.loss.params) == {"neg_margin": 0.5, "pos_margin": 0.1}
