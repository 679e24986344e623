"""Mixed precision, memory format and compilation: the plan chosen for each device, and the
parts of it that also run on a CPU (channels-last, the compiled model's checkpoint keys)."""

import pytest
import torch

from sdm.config import ConfigError
from sdm.engine.build import build_fold_loss, build_model, build_optimizers
from sdm.engine.precision import (
    TrainingPrecision,
    prepare_images,
    prepare_model,
    training_precision,
)
from sdm.engine.step import train_step

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _plan(device, bf16=True, **options):
    options.setdefault("mixed_precision", True)
    return training_precision(device, bf16_supported=lambda: bf16, **options)


def test_everything_is_off_on_a_cpu_whatever_the_config():
    plan = _plan(CPU, amp_dtype="float16", channels_last=True, compile=True)
    assert plan == TrainingPrecision("cpu")
    assert plan.grad_scaler().is_enabled() is False


def test_auto_takes_bfloat16_where_the_gpu_has_it_else_float16_with_a_scaler():
    assert _plan(CUDA, bf16=True) == TrainingPrecision("cuda", torch.bfloat16, False, True)
    assert _plan(CUDA, bf16=False) == TrainingPrecision("cuda", torch.float16, True, True)


def test_an_explicit_dtype_is_used_and_float16_gets_the_scaler():
    assert _plan(CUDA, amp_dtype="float16").autocast_dtype == torch.float16
    assert _plan(CUDA, amp_dtype="float16").grad_scaling
    assert _plan(CUDA, bf16=True, amp_dtype="bfloat16").grad_scaling is False


def test_no_mixed_precision_keeps_float32_and_the_other_options():
    plan = _plan(CUDA, mixed_precision=False, channels_last=False, compile=True)
    assert plan == TrainingPrecision("cuda", None, False, False, True)


def test_bad_dtypes_are_clear_errors():
    with pytest.raises(ValueError, match="does not support bfloat16"):
        _plan(CUDA, bf16=False, amp_dtype="bfloat16")
    with pytest.raises(ValueError, match="amp_dtype must be 'auto' or one of bfloat16, float16"):
        _plan(CPU, amp_dtype="fp8")


def test_preflight_refuses_an_unknown_dtype(tiny_config):
    from sdm.engine.build import load_experiment_dataset
    from sdm.engine.preflight import check_experiment

    config = tiny_config("precision", "training.amp_dtype=half")
    dataset, splits = load_experiment_dataset(config)
    with pytest.raises(ConfigError, match="amp_dtype"):
        check_experiment(config, dataset, splits)


def test_channels_last_trains_like_contiguous(one_thread, tiny_config):
    """The channels-last plan is real on a CPU too: same loss and gradients in a step."""
    config = tiny_config("memory_format", "sdm.enabled=true")
    images, labels = torch.randn(8, 1, 32, 32), torch.arange(4).repeat_interleave(2)
    results = []
    for plan in (TrainingPrecision("cpu"), TrainingPrecision("cpu", channels_last=True)):
        torch.manual_seed(0)
        model = prepare_model(build_model(config).train(), plan)
        loss = build_fold_loss(config, 4)
        optimizers = build_optimizers(config, model, loss)
        torch.manual_seed(1)
        value = train_step(model, loss, optimizers, images, labels, passes=2, precision=plan)
        results.append((value, torch.cat([p.grad.flatten() for p in model.parameters()])))
        if plan.channels_last:
            conv = model.trunk.convs[1].weight
            assert conv.is_contiguous(memory_format=torch.channels_last)
            assert prepare_images(images, plan).is_contiguous(memory_format=torch.channels_last)
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    scale = float(results[0][1].abs().max())
    assert float((results[0][1] - results[1][1]).abs().max()) <= 1e-5 * scale


def test_compiling_keeps_checkpoint_keys(tiny_config):
    model = build_model(tiny_config("compiled"))
    keys = {part: list(getattr(model, part).state_dict()) for part in ("trunk", "embedder")}
    prepare_model(model, TrainingPrecision("cuda", compile=True))
    assert {part: list(getattr(model, part).state_dict()) for part in keys} == keys
