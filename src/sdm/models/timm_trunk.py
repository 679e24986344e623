"""Trunks from timm: ``model.trunk=timm/<model name>`` for any model of ``timm.list_models()``
(optionally with a pretrained tag, ``timm/vit_small_patch16_224.dino``).

The trunk is ``timm.create_model(name, pretrained=False, num_classes=0)`` wrapped in
``TimmTrunk``: its output is the model's pooled pre-logits features
(``forward_head(..., pre_logits=True)``), its input convention (mean, std, interpolation) and
default image size come from the model's ``pretrained_cfg``. It is a ``StagedTrunk``, split into
named stages by family (exact timm classes; anything else is "generic"):

- ResNet (``timm.models.resnet.ResNet``): ``stem`` (``conv1``, before ``bn1``: the paper's
  place, as for this package's ResNet-50), ``layer1`` (``bn1``, ``act1``, ``maxpool``,
  ``layer1``), ``layer2`` .. ``layer4``, ``pooled``.
- ConvNeXt: ``stem`` (the patchify stem: convolution and its LayerNorm), ``stages.0`` ..
  ``stages.3``, ``pooled`` (``norm_pre`` and the head's pooling and norm).
- EfficientNet (``timm.models.efficientnet.EfficientNet``: EfficientNet, MixNet, MnasNet, ...):
  ``stem`` (``conv_stem``, before ``bn1``), ``blocks.0`` (``bn1`` and the first stage) ..
  ``blocks.<n-1>``, ``head`` (``conv_head``, ``bn2``), ``pooled``.
- ViT (``timm.models.vision_transformer.VisionTransformer``): ``stem`` (patch embedding,
  class/register tokens, position embedding, ``norm_pre``), ``blocks.0`` .. ``blocks.<d-1>``,
  ``pooled`` (``norm``, then the model's pooling and ``fc_norm``). A ViT pooled from its class
  token (DINO's, most of timm's) has no ``blocks.<d-1>`` point: the pooling reads none of the
  last block's patch tokens, so dropping them would change nothing; its last block runs in
  ``pooled`` and its latest block point is ``blocks.<d-2>``. The feature dropout on its
  (B, N, C) token sequences is token dropout (``FeatureDropout``: each patch token zeroed whole,
  all C features together, with probability p, survivors scaled by 1 / (1 - p)); the class and
  register tokens (``num_prefix_tokens``) are never dropped.
- generic: ``features`` (``forward_features``: the final feature map or token sequence) and
  ``pooled``; a model without ``forward_features`` / ``forward_head`` has ``pooled`` only.
  Such a trunk has no ``stem``: with the feature dropout off (SDM off) the default
  ``perturb_at=stem`` puts the (inactive) dropout at ``pooled``.

Weights (``load_pretrained_weights``): a local file (``weights_path``: ``.safetensors`` or a
``torch.save``'d state dict, loaded strictly; an error lists missing, unexpected and misshapen
keys), else the file timm itself keeps in its caches (the Hugging Face hub cache, then the torch
hub cache), found without any network access; only with ``allow_download`` may timm download
them. BatchNorm layers are ``nn.BatchNorm2d`` subclasses, frozen by the engine as for the other
trunks. timm is imported only when a timm trunk is used.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from sdm.data.transforms import rgb_input
from sdm.errors import UserInputError, cause
from sdm.models.stages import POOLED, STEM, FeatureDropout, Stage, StagedTrunk

PREFIX = "timm/"
FEATURES = "features"
GENERIC = "generic"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's names in a hub repository
SHOWN_KEYS = 8  # keys listed by name in an error; the rest are counted
DEFAULT_CROP_PCT = 0.875


def is_timm_trunk(trunk: str) -> bool:
    """Whether ``trunk`` (a ``model.trunk`` value) names a timm model: ``timm/<name>``."""
    return isinstance(trunk, str) and trunk.startswith(PREFIX)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserInputError("timm trunks (model.trunk=timm/<name>) need the timm package: "
                             "pip install timm") from None
    return timm


def model_name(trunk: str) -> str:
    """The timm model name of ``trunk`` (``timm/<name>``, checked: UserInputError for a model
    or pretrained tag timm does not know, with the nearest names)."""
    name = trunk.removeprefix(PREFIX)
    timm = _timm()
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not name or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}" if close else ""
        raise UserInputError(
            f"model.trunk {trunk!r}: timm has no model {arch!r}{hint} (`python -c \"import "
            f"timm; print(timm.list_models('*vit*'))\"` lists timm's models)")
    if tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*")]
            raise UserInputError(
                f"model.trunk {trunk!r}: timm model {arch} has no pretrained tag {tag!r}; its "
                f"tags: {', '.join(tags) or '(none)'}") from None
    return name


def pretrained_cfg(trunk: str) -> Any:
    """timm's ``PretrainedCfg`` of ``trunk`` (its default tag's without one), or None."""
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(model_name(trunk))


def default_image_size(trunk: str) -> tuple[int, int]:
    """(resize, crop) from the model's ``pretrained_cfg``: crop = its input size, resize =
    floor(crop / crop_pct), as timm's own eval transform."""
    cfg = pretrained_cfg(trunk)
    crop = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224
    crop_pct = (cfg.crop_pct if cfg is not None and cfg.crop_pct else None) or DEFAULT_CROP_PCT
    return max(math.floor(crop / crop_pct), crop), crop


def input_convention(trunk: str) -> str:
    """The model's mean, std and interpolation as an ``rgb_input`` convention."""
    cfg = pretrained_cfg(trunk)
    if cfg is None:
        return rgb_input((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    return rgb_input(tuple(cfg.mean), tuple(cfg.std), str(cfg.interpolation or "bicubic"))


class TimmTrunk(StagedTrunk, nn.Module):
    """A timm model (``self.model``, built with ``num_classes=0``) as a staged trunk: images
    (B, 3, H, W) -> pooled pre-logits features (B, ``output_dim``).

    ``image_size``: the square input side; a model built for one input size
    (``fixed_input_size``: ViTs) is built for it (timm resamples its position embedding when
    weights of another size load). State-dict keys are timm's under ``model.``.
    """

    def __init__(self, trunk: str, feature_dropout: float = 0.0, perturb_at: str = STEM,
                 image_size: int | None = None):
        super().__init__()
        name = model_name(trunk)
        cfg = pretrained_cfg(trunk)
        kwargs: dict[str, Any] = {}
        fixed_side = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else None
        if image_size and cfg is not None and cfg.fixed_input_size and image_size != fixed_side:
            kwargs["img_size"] = int(image_size)
        try:
            self.model = _timm().create_model(name, pretrained=False, num_classes=0, **kwargs)
        except TypeError as error:
            if not kwargs:
                raise
            raise UserInputError(
                f"timm model {name} takes {fixed_side} px inputs only ({cause(error)}); set "
                f"transform.crop={fixed_side}") from None
        self.trunk_name = trunk
        self.family = family(self.model)
        self.prefix_tokens = (int(getattr(self.model, "num_prefix_tokens", 0))
                              if self.family == "vit" else 0)
        self.output_dim = int(getattr(self.model, "head_hidden_size", None)
                              or self.model.num_features)
        self.feature_dropout = FeatureDropout(feature_dropout)
        points = self.points()
        if perturb_at == STEM and STEM not in points and feature_dropout == 0.0:
            perturb_at = POOLED  # no stem to perturb, and nothing is perturbed anyway
        self.perturb_at = perturb_at

    def stages(self) -> list[Stage]:
        return _FAMILY_STAGES[self.family](self.model)

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """Token dropout of the patch tokens only: the class / register tokens stay."""
        dropout = self.feature_dropout
        kept = self.prefix_tokens
        if x.dim() != 3 or not kept or not dropout.training or dropout.p == 0.0:
            return dropout(x)
        return torch.cat([x[:, :kept], dropout(x[:, kept:])], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(images))


# ----- stages by family ----------------------------------------------------------------------


def family(model: nn.Module) -> str:
    """``resnet``, ``convnext``, ``efficientnet``, ``vit`` (exact timm classes) or ``generic``."""
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet
    from timm.models.vision_transformer import VisionTransformer

    families = {ResNet: "resnet", ConvNeXt: "convnext", EfficientNet: "efficientnet",
                VisionTransformer: "vit"}
    found = families.get(type(model), GENERIC)
    if found == "vit" and getattr(model, "dynamic_img_size", False):
        return GENERIC
    return found


def _pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(x, pre_logits=True)


def _resnet_stages(model: nn.Module) -> list[Stage]:
    def layer1(x: torch.Tensor) -> torch.Tensor:
        return model.layer1(model.maxpool(model.act1(model.bn1(x))))

    return [Stage(STEM, model.conv1), Stage("layer1", layer1),
            Stage("layer2", model.layer2), Stage("layer3", model.layer3),
            Stage("layer4", model.layer4), Stage(POOLED, partial(_pre_logits, model))]


def _convnext_stages(model: nn.Module) -> list[Stage]:
    def pooled(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.norm_pre(x), pre_logits=True)

    return [Stage(STEM, model.stem),
            *(Stage(f"stages.{i}", stage) for i, stage in enumerate(model.stages)),
            Stage(POOLED, pooled)]


def _efficientnet_stages(model: nn.Module) -> list[Stage]:
    def first(x: torch.Tensor) -> torch.Tensor:
        return model.blocks[0](model.bn1(x))

    def head(x: torch.Tensor) -> torch.Tensor:
        return model.bn2(model.conv_head(x))

    return [Stage(STEM, model.conv_stem), Stage("blocks.0", first),
            *(Stage(f"blocks.{i}", model.blocks[i]) for i in range(1, len(model.blocks))),
            Stage("head", head), Stage(POOLED, partial(_pre_logits, model))]


def _vit_stages(model: nn.Module) -> list[Stage]:
    blocks = list(model.blocks)
    # Pooled from the class token alone, the pooling reads none of the last block's patch
    # tokens: token dropout after it would change nothing, so that block runs in ``pooled``.
    last_in_pooled = model.global_pool == "token" and model.attn_pool is None and len(blocks) > 1
    tail = blocks[-1:] if last_in_pooled else []
    points = blocks[:-1] if last_in_pooled else blocks

    def stem(x: torch.Tensor) -> torch.Tensor:
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))

    def pooled(x: torch.Tensor) -> torch.Tensor:
        for block in tail:
            x = block(x)
        return model.forward_head(model.norm(x), pre_logits=True)

    return [Stage(STEM, stem),
            *(Stage(f"blocks.{i}", block) for i, block in enumerate(points)),
            Stage(POOLED, pooled)]


def _generic_stages(model: nn.Module) -> list[Stage]:
    if callable(getattr(model, "forward_features", None)) and \
            callable(getattr(model, "forward_head", None)):
        return [Stage(FEATURES, model.forward_features), Stage(POOLED, partial(_pre_logits, model))]
    return [Stage(POOLED, model)]


_FAMILY_STAGES: dict[str, Callable[[nn.Module], list[Stage]]] = {
    "resnet": _resnet_stages, "convnext": _convnext_stages,
    "efficientnet": _efficientnet_stages, "vit": _vit_stages, GENERIC: _generic_stages,
}


# ----- weights -------------------------------------------------------------------------------


def cached_weights(trunk: str) -> tuple[Path | None, list[str]]:
    """(timm's cached weights file of ``trunk`` or None, the places looked at), without any
    network access: the Hugging Face hub cache (``hf_hub_id``: model.safetensors, then
    pytorch_model.bin), then the torch hub cache (the file of ``url``)."""
    cfg = pretrained_cfg(trunk)
    looked: list[str] = []
    if cfg is None:
        return None, looked
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(HF_FILES)
        try:
            from huggingface_hub import constants, try_to_load_from_cache
        except ImportError:
            looked.append(f"the Hugging Face hub cache (huggingface_hub is not installed) for "
                          f"{repo}")
        else:
            folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
            for file in files:
                found = try_to_load_from_cache(repo, file, revision=revision or None)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found), looked
                looked.append(str(folder / "snapshots" / (revision or "*") / file))
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


def find_weights(trunk: str, weights_path: str | None = None,
                 allow_download: bool = False) -> Path | None:
    """The weights file to load into ``trunk``: ``weights_path`` when given, else timm's
    cached file; None when neither exists and ``allow_download`` lets timm download them.
    FileNotFoundError naming every place looked at and how to get the weights otherwise."""
    name = model_name(trunk)
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"weights of {trunk} not found: model.weights_path={weights_path} is not a "
                f"file. Save the timm model's state dict there ({_save_hint(name)}), or unset "
                "model.weights_path to use timm's cache, or set model.pretrained=false")
        return path
    cfg = pretrained_cfg(trunk)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise FileNotFoundError(
            f"timm has no pretrained weights for {name}: set model.weights_path to a state-dict "
            "file of it, or model.pretrained=false")
    found, looked = cached_weights(trunk)
    if found is not None or allow_download:
        return found
    source = f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
    raise FileNotFoundError(
        f"pretrained weights of {trunk} not found (nothing is downloaded unless "
        f"model.allow_download=true): looked at {'; '.join(looked)}. Get them once with "
        f"internet: `python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` "
        f"fills timm's cache (source: {source}); or save a .safetensors / .pth state dict and "
        "set model.weights_path=FILE; or set model.allow_download=true to let timm download "
        "them; or model.pretrained=false for random weights")


def _save_hint(name: str) -> str:
    return (f"e.g. `torch.save(timm.create_model('{name}', pretrained=True).state_dict(), "
            "FILE)` or safetensors.torch.save_file")


def load_pretrained_weights(module: TimmTrunk, path: Path | None) -> None:
    """Loads the weights file ``path`` into ``module`` (see ``load_weights``), or, with None,
    lets timm fetch the model's pretrained weights (its cache, else a download)."""
    if path is not None:
        if path.suffix == ".npz" and module.model.pretrained_cfg.get("custom_load"):
            module.model.load_pretrained(str(path))  # timm's loader of JAX .npz checkpoints
            return
        load_weights(module, path)
        return
    from timm.models import load_pretrained

    try:
        load_pretrained(module.model, num_classes=0, filter_fn=_filter_fn(module.model),
                        strict=True)
    except (OSError, RuntimeError) as error:
        raise UserInputError(f"downloading the pretrained weights of {module.trunk_name} "
                             f"failed ({cause(error)}); get them as `sdm` said without "
                             "model.allow_download, or check the network") from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a ``.safetensors`` file, or a ``torch.save``'d mapping
    (also one under a ``state_dict`` or ``model`` key, or saved from ``nn.DataParallel``).
    UserInputError naming the file when it cannot be read or holds no state dict."""
    path = Path(path)
    expected = ("model.weights_path must name a .safetensors file or a file written by "
                "torch.save(model.state_dict(), path)")
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise UserInputError(f"weights file {path}: reading .safetensors files needs "
                                     "the safetensors package (pip install safetensors)") from None
            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except UserInputError:
        raise
    except Exception as error:  # a damaged or foreign file fails in many ways
        raise UserInputError(
            f"weights file {path} cannot be read ({cause(error)}); {expected}") from error
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserInputError(f"weights file {path} holds a {type(state).__name__}, not a state "
                             f"dict; {expected}")
    state = dict(state)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def load_weights(module: TimmTrunk, path: str | Path) -> None:
    """Loads the state dict in ``path`` into ``module.model`` strictly.

    Accepted: timm's keys (``timm_model.state_dict()``, a hub ``model.safetensors``) or this
    trunk's own (``model.`` before each); the classifier of a file trained with one is left out
    (``num_classes=0``); a file in another layout that the model's timm checkpoint filter
    converts (original ConvNeXt / DINO / JAX ViT releases, a position embedding of another
    size) is converted. BatchNorm ``num_batches_tracked`` buffers may be missing. Anything
    else that does not fit is a UserInputError listing the missing, unexpected and misshapen
    keys.
    """
    model = module.model
    state = read_state_dict(path)
    expected = model.state_dict()
    if state and all(k.startswith("model.") for k in state) and \
            not any(k.startswith("model.") for k in expected):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    fitted = _drop_classifier(model, state, expected)
    problems = _mismatch(fitted, expected)
    if problems:
        filter_fn = _filter_fn(model)
        if filter_fn is not None:
            try:
                converted = _drop_classifier(model, dict(filter_fn(dict(state), model)), expected)
            except Exception:  # the filter did not understand the file: report its own keys
                converted = None
            if converted is not None and not _mismatch(converted, expected):
                fitted, problems = converted, []
    if problems:
        raise UserInputError(f"weights in {path} do not fit timm model {module.trunk_name} "
                             f"(strict load): {'; '.join(problems)}")
    model.load_state_dict(fitted, strict=False)  # every key checked above


def _filter_fn(model: nn.Module) -> Callable | None:
    """The ``checkpoint_filter_fn`` of the model's timm module, when it has one."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _drop_classifier(model: nn.Module, state: dict[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    classifiers = model.pretrained_cfg.get("classifier") or ()
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    dropped = {f"{c}.{p}" for c in classifiers for p in ("weight", "bias")} - set(expected)
    return {k: v for k, v in state.items() if k not in dropped}


def _mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading strictly: missing, unexpected, misshapen keys."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the "
                 "model" for k in expected if k in state and state[k].shape != expected[k].shape]
    return [f"{what} ({len(keys)}): {_listed(keys)}"
            for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                               ("size mismatches", misshapen)) if keys]


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
