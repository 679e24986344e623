"""Config loading: defaults, file layering, overrides, and the errors for bad keys/types."""

import math
import re
import typing
from dataclasses import fields, is_dataclass

import pytest

from sdm.config import (
    PACKAGED_CONFIGS,
    ConfigError,
    ExperimentConfig,
    Range,
    SDMConfig,
    config_difference,
    load_config,
    numeric_ranges,
)
from sdm.errors import UserInputError


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


def test_defaults_must_list_files_and_may_not_loop(tmp_path):
    (tmp_path / "base.yaml").write_text("training: {patience: 3}\n")
    (tmp_path / "one.yaml").write_text("defaults: base.yaml\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"config file {tmp_path / 'one.yaml'}: defaults must be a list of config files, "
            "e.g. defaults: [base.yaml], not 'base.yaml'")):
        load_config([tmp_path / "one.yaml"])
    (tmp_path / "empty.yaml").write_text("defaults:\ntraining: {seed: 2}\n")
    assert load_config([tmp_path / "empty.yaml"]).training.seed == 2
    (tmp_path / "loop.yaml").write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="include each other in a loop"):
        load_config([tmp_path / "loop.yaml"])


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


def test_wrong_type_names_the_key_in_one_line():
    with pytest.raises(ConfigError) as raised:
        load_config(overrides=["training.batch_size=many"])
    assert str(raised.value) == ("wrong type for config key 'training.batch_size': Value 'many' "
                                 "of type 'str' could not be converted to Integer")


def test_a_value_in_place_of_a_section_names_the_section_and_its_keys(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(overrides=["sdm=3"])
    keys = sorted(field.name for field in fields(SDMConfig))
    assert str(raised.value) == (f"config key 'sdm' is a section of keys ({', '.join(keys)}), "
                                 f"not 3; set its keys, e.g. sdm.{keys[0]}=VALUE")
    (tmp_path / "bad.yaml").write_text("loss: {name: contrastive, params: 0.5}\n")
    with pytest.raises(ConfigError, match=r"^config key 'loss.params' is a section of keys "
                                          r"\(any names\), not 0.5; set its keys, e.g. "
                                          r"loss.params.NAME=VALUE$"):
        load_config([tmp_path / "bad.yaml"])
    (tmp_path / "empty.yaml").write_text("training:\n  # max_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"^config key 'training' is a section .*, not None;"):
        load_config([tmp_path / "empty.yaml"])
    # a later override of one of its keys makes the section a mapping again
    assert load_config(overrides=["training=3", "training.max_epochs=2"]).training.max_epochs == 2


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


def _numeric_keys(schema: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted keys of the schema's int and float fields (also lists and optionals of them)."""
    keys = []
    hints = typing.get_type_hints(schema)
    for item in fields(schema):
        if is_dataclass(item.default_factory):
            keys += _numeric_keys(item.default_factory, f"{prefix}{item.name}.")
            continue
        kinds = {hints[item.name], *typing.get_args(hints[item.name])}
        if kinds & {int, float, list[int], list[float]}:
            keys.append(f"{prefix}{item.name}")
    return keys


def test_every_numeric_key_declares_its_valid_range():
    assert sorted(numeric_ranges()) == sorted(_numeric_keys())
    assert "training.batch_size" in numeric_ranges() and "sdm.alpha" in numeric_ranges()


@pytest.mark.parametrize(("key", "valid"), list(numeric_ranges().items()))
def test_values_outside_each_keys_range_are_refused_with_key_value_and_range(key, valid):
    is_list = key in ("model.embedding_sizes", "training.folds")
    outside = [valid.low - 1]
    if not math.isinf(valid.high):
        outside.append(valid.high + (1 if valid.high_included else 0))
    for value in outside:
        text = f"[{value}]" if is_list else str(value)
        with pytest.raises(ConfigError) as error:
            load_config(overrides=[f"{key}={text}"])
        shown = re.escape(text).replace(str(value), rf"{value}(\.0)?")  # floats show x.0
        assert re.match(rf"{re.escape(key)}={shown} is out of range: ", str(error.value))
        assert str(error.value).endswith(str(valid))
        assert isinstance(error.value, UserInputError)


def test_a_range_includes_its_low_end_and_refuses_what_is_not_finite():
    rate = Range(0, 1)
    assert 0 in rate and 0.999 in rate and 1 not in rate and -0.001 not in rate
    assert 1 in Range(0, 1, high_included=True)
    assert math.inf not in Range(0) and math.nan not in Range(0)
    assert (str(rate), str(Range(1)), str(Range(0, 3, True))) == ("in [0, 1)", ">= 1",
                                                                    "in [0, 3]")
    with pytest.raises(ConfigError, match=r"sdm.alpha=inf is out of range: valid values are "
                                          r">= 0 and finite"):
        load_config(overrides=["sdm.alpha=.inf"])


@pytest.mark.parametrize("path", sorted(p for p in PACKAGED_CONFIGS.rglob("*.yaml")
                                        if p.parent.name != "studies"),  # study plans
                         ids=lambda p: p.relative_to(PACKAGED_CONFIGS).as_posix())
def test_every_packaged_config_is_within_the_ranges(path):
    # A layer whose perturbation point is EfficientNet-Lite0's goes over a config of that trunk.
    base = [PACKAGED_CONFIGS / "icons" / "ms.yaml"] if path.name == "sdm_cheap.yaml" else []
    load_config([*base, path])


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    (tmp_path / "bad.yaml").write_text("loss: {name: triplet\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: YAML syntax error: while parsing a "
                                          r"flow mapping, did not find expected ',' or '}'"):
        load_config([tmp_path / "bad.yaml"])
    (tmp_path / "binary.yaml").write_bytes(bytes([0xff, 0xfe, 0x00, 0x80]))
    with pytest.raises(ConfigError, match="is not a UTF-8 text"):
        load_config([tmp_path / "binary.yaml"])
    with pytest.raises(ConfigError, match=r"override 'name=\[x': its value is not valid YAML"):
        load_config(overrides=["training.seed=1", "name=[x"])
