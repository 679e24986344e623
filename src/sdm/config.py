"""Experiment configuration: typed groups with defaults, YAML files, command-line overrides.

A config is an ``ExperimentConfig`` made of groups (dataset, model, transform, loss, sdm,
optimizer, training, evaluation). YAML files and ``key.sub=value`` overrides are merged onto
the typed defaults with OmegaConf, which rejects unknown keys and wrong types; the errors
raised here name the key and list the valid keys beside it. ``load_config`` returns the
dataclasses themselves (plain Python objects, lists and dicts): the rest of the package
receives those, never an OmegaConf node. Every numeric key declares its
valid ``Range`` beside its default, and a loaded config holds no value outside it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from sdm import constants as C
from sdm.errors import UserInputError

RANGE = "range"  # the dataclass field metadata key of a numeric field's valid Range


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config key: finite numbers from ``low`` (included) up to
    ``high`` (included when ``high_included``, else excluded)."""

    low: float
    high: float = math.inf
    high_included: bool = False

    def __contains__(self, value: float) -> bool:
        below_high = value <= self.high if self.high_included else value < self.high
        return math.isfinite(value) and self.low <= value and below_high

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f">= {_number(self.low)}"
        return f"in [{_number(self.low)}, {_number(self.high)}{']' if self.high_included else ')'}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _ranged(default: Any, valid: Range) -> Any:
    """A dataclass field with the ``Range`` of its valid values (of each item, for a list);
    a callable ``default`` is the field's default factory."""
    if callable(default):
        return field(default_factory=default, metadata={RANGE: valid})
    return field(default=default, metadata={RANGE: valid})


AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
RATE = Range(0, 1)  # a dropout rate: 1 would drop everything
IMAGE_SIZE = Range(C.MIN_IMAGE_SIZE)


@dataclass
class DatasetConfig:
    """Which images, where. ``path`` is the folder or CSV for users' own data.
    ``check_images`` opens every image file's header before training (false skips it)."""

    name: str = C.CUB200
    root: str = C.DEFAULT_DATASET_ROOT
    path: str | None = None
    allow_partial: bool = False
    use_cache: bool = True
    check_images: bool = True


@dataclass
class ModelConfig:
    """Trunk (feature extractor) and embedder layer sizes.

    ``trunk``: a built-in trunk or ``timm/<model name>`` (any timm model, e.g.
    ``timm/vit_small_patch16_224.dino``). Pretrained weights come from ``weights_path`` or the
    trunk's usual local place (a timm trunk's: timm's caches); ``allow_download`` lets a timm
    trunk download them when they are in neither (off: nothing is downloaded).
    """

    trunk: str = "bninception"
    pretrained: bool = True
    weights_path: str | None = None
    allow_download: bool = False
    embedding_sizes: list[int] = _ranged(lambda: [128], AT_LEAST_1)


@dataclass
class TransformConfig:
    """Image geometry in pixels: the shorter side is resized to ``resize``, then a ``crop`` x
    ``crop`` square is cut (random-resized when training, centred when evaluating).

    Unset (null) sizes take the trunk's default when the config is loaded (the paper's
    256 / 227 for the ImageNet trunks; ``small_cnn`` keeps the images' own size unless set).
    """

    resize: int | None = _ranged(None, IMAGE_SIZE)
    crop: int | None = _ranged(None, IMAGE_SIZE)


@dataclass
class LossConfig:
    """A loss from ``sdm.loss_registry.LOSS_NAMES`` with its constructor parameters."""

    name: str = "contrastive"
    params: dict[str, Any] = field(default_factory=dict)
    miner: str | None = None
    miner_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SDMConfig:
    """SDM on/off and its perturbation settings (the paper's values by default).

    ``alpha`` multiplies the distances inside the softmax over copies: an inverse
    temperature (larger = closer to the hard max/min over copies). ``batched_passes`` true
    runs the T passes as one forward of T*B images, false one after another (the same in
    distribution, other random draws); unset (null), batched on CUDA, where one big batch
    fills the GPU, and one after another elsewhere, where a T*B batch can cost well over T
    batches (benchmarks/results/sdm_cost_cpu.txt). ``perturb_at`` is the trunk point whose
    output the feature dropout perturbs (``stem``, the paper's place, by default; ``sdm
    list-points TRUNK`` lists a trunk's points); ``shared_stem`` runs the trunk's layers
    before that point once for all T passes (same numbers up to float rounding).
    """

    enabled: bool = False
    passes: int = _ranged(C.SDM_PASSES, AT_LEAST_1)
    masks: int = _ranged(C.SDM_MASKS, AT_LEAST_1)
    embedding_dropout: float = _ranged(C.SDM_EMBEDDING_DROPOUT, RATE)
    feature_dropout: float = _ranged(C.SDM_FEATURE_DROPOUT, RATE)
    alpha: float = _ranged(C.SDM_ALPHA, AT_LEAST_0)
    batched_passes: bool | None = None
    shared_stem: bool = True
    perturb_at: str = "stem"


@dataclass
class OptimizerConfig:
    """RMSprop for trunk, embedder and the loss's own parameters (margin beta, proxies)."""

    trunk_lr: float = _ranged(1e-6, AT_LEAST_0)
    embedder_lr: float = _ranged(1e-6, AT_LEAST_0)
    weight_decay: float = _ranged(1e-4, AT_LEAST_0)
    momentum: float = _ranged(0.9, Range(0, 1))
    loss_lr: float = _ranged(1e-4, AT_LEAST_0)
    loss_weight_decay: float = _ranged(0.0, AT_LEAST_0)


@dataclass
class TrainingConfig:
    """The MLRC loop: sampling, epochs, validation cadence, early stopping, hardware.

    On CUDA only (ignored elsewhere): ``mixed_precision`` autocasts the forward passes to
    ``amp_dtype`` ("auto": bfloat16 where supported, else float16 with a gradient scaler;
    "bfloat16"; "float16"); ``channels_last`` memory format; ``compile`` (torch.compile).

    Tracking (``sdm.engine.tracking``; the main process only): ``loggers`` lists where
    training is recorded besides metrics.csv, any of "tensorboard" (each fold's event files)
    and "mlflow" (the [mlflow] extra; may be empty). ``mlflow_uri`` is the MLflow tracking
    URI (a server's http://host:port, or any store MLflow takes); unset (null), the SQLite store
    ``<experiments_root>/mlflow.db``. ``mlflow_experiment`` names the MLflow experiment whose
    runs the experiments are (one run per experiment, named after it).
    """

    batch_size: int = _ranged(32, Range(2))
    m_per_class: int = _ranged(4, AT_LEAST_1)
    iterations_per_epoch: int = _ranged(100, AT_LEAST_1)
    max_epochs: int = _ranged(1000, AT_LEAST_0)
    save_interval: int = _ranged(2, AT_LEAST_1)
    patience: int = _ranged(9, AT_LEAST_0)
    folds: list[int] = _ranged(lambda: [0, 1, 2, 3], Range(0, C.NUM_FOLDS - 1, True))
    # fold k seeds NumPy with seed + k, which must stay below 2**32
    seed: int = _ranged(0, Range(0, 2**32 - C.NUM_FOLDS, True))
    device: str = "auto"
    mixed_precision: bool = False
    amp_dtype: str = "auto"
    channels_last: bool = True
    compile: bool = False
    num_workers: int = _ranged(2, AT_LEAST_0)
    eval_batch_size: int = _ranged(64, AT_LEAST_1)
    loggers: list[str] = field(default_factory=lambda: [C.TENSORBOARD])
    mlflow_uri: str | None = None
    mlflow_experiment: str = C.MLFLOW_EXPERIMENT


@dataclass
class EvaluationConfig:
    """What ``sdm evaluate`` computes on the test classes unless its options say otherwise:
    per-fold-model ("separated") and concatenated metrics, and the "Pretrained" (epoch 0) row.
    """

    separated: bool = True
    concatenated: bool = True
    pretrained: bool = True


@dataclass
class ExperimentConfig:
    """A whole experiment: its name, where its folder goes (``experiments_root/name``) and
    the eight groups. ``load_config`` returns one, checked."""

    name: str = "experiment"
    experiments_root: str = C.DEFAULT_EXPERIMENTS_ROOT
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sdm: SDMConfig = field(default_factory=SDMConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


class ConfigError(UserInputError):
    """A config file or override that does not fit the schema."""


def _valid_keys(node: Any) -> list[str]:
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _explain(error: Exception, schema: DictConfig) -> ConfigError:
    key = getattr(error, "full_key", None) or "?"
    parent = schema
    for part in str(key).split(".")[:-1]:
        parent = parent.get(part) if isinstance(parent, DictConfig) else None
    valid = _valid_keys(parent)
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        return ConfigError(f"unknown config key '{key}'; valid keys here: {', '.join(valid)}")
    # OmegaConf appends the key and the schema's types on lines of their own: the first says it.
    return ConfigError(f"wrong type for config key '{key}': {str(error.msg).splitlines()[0]}")


def _merge(base: DictConfig, layer: DictConfig) -> DictConfig:
    """``layer`` merged onto ``base``; a layer that switches to another loss starts that
    loss's parameters afresh instead of inheriting the previous loss's."""
    new_loss = OmegaConf.select(layer, "loss.name", default=None)
    if new_loss is not None and new_loss != base.loss.name:
        base = base.copy()
        base.loss.params = {}
        base.loss.miner_params = {}
    _check_sections(base, layer)
    try:
        return OmegaConf.merge(base, layer)
    except (ConfigKeyError, ConfigAttributeError, ValidationError) as error:
        raise _explain(error, base) from None


def _check_sections(base: DictConfig, layer: Any, prefix: str = "") -> None:
    """ConfigError for a value in ``layer`` that is not a mapping where ``base`` has a section
    of keys (``training: 3``, ``training=3``), which the merge would only call a wrong type."""
    if not isinstance(layer, DictConfig):
        return
    for key, value in layer.items_ex(resolve=False):
        section = base.get(key) if isinstance(base, DictConfig) and key in base else None
        name = f"{prefix}{key}"
        if isinstance(section, DictConfig) and not isinstance(value, DictConfig):
            keys = sorted(section.keys())
            raise ConfigError(f"config key '{name}' is a section of keys "
                              f"({', '.join(keys) or 'any names'}), not {value!r}; set its "
                              f"keys, e.g. {name}.{keys[0] if keys else 'NAME'}=VALUE")
        _check_sections(section, value, f"{name}.")


def load_config(
    files: list[str | Path] | tuple[str | Path, ...] = (), overrides: list[str] | None = None
) -> ExperimentConfig:
    """Defaults, then each YAML file in order, then ``a.b=value`` overrides (YAML values);
    the checked result as an ``ExperimentConfig``.

    A YAML file may list others to build on under ``defaults: [other.yaml, ...]`` (paths
    relative to the file); they are merged first.
    """
    config = OmegaConf.structured(ExperimentConfig)
    for path in files:
        for layer in _file_layers(Path(path)):
            config = _merge(config, layer)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        config = _merge(config, _override_layer(list(overrides)))
    validate(config)
    resolve_image_size(config)
    return OmegaConf.to_object(config)  # type: ignore[return-value]


def resolve_image_size(config: DictConfig) -> None:
    """Fills unset ``transform.resize`` / ``transform.crop`` from the trunk's default and checks
    crop <= resize (``validate`` has checked that a set size is at least MIN_IMAGE_SIZE).

    An unset resize takes the trunk's default resize (or the crop when the trunk has none); an
    unset crop takes the trunk's default crop when it fits in the resize, else the resize.
    """
    from sdm.models.trunks import default_image_size

    default = default_image_size(config.model.trunk)
    resize, crop = config.transform.resize, config.transform.crop
    if resize is None and crop is None:
        resize, crop = default if default is not None else (None, None)
    elif resize is None:
        resize = default[0] if default is not None else crop
    elif crop is None:
        crop = default[1] if default is not None and default[1] <= resize else resize
    if resize is not None and crop > resize:
        raise ConfigError(
            f"transform.crop ({crop}) must not exceed transform.resize ({resize}): the crop "
            "is cut from the resized image; raise transform.resize or lower transform.crop")
    config.transform.resize, config.transform.crop = resize, crop


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
REPOSITORY_CONFIGS = "exp_configs"  # the repository's link to PACKAGED_CONFIGS


def config_file(reference: str | Path) -> Path:
    """The YAML file ``reference`` names: the path itself when it exists, else the config of
    that name shipped with the package (``exp_configs/cub_ms.yaml``, ``cub_ms.yaml`` and
    ``cub_ms`` all name ``sdm/configs/cub_ms.yaml``), so the repository's commands also work
    from an installed package."""
    path = Path(reference)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.parts[:1] == (REPOSITORY_CONFIGS,) else path.parts
    packaged = PACKAGED_CONFIGS.joinpath(*parts) if parts else PACKAGED_CONFIGS
    for candidate in (packaged, packaged.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {path} (nor a packaged config {packaged}; "
                      f"packaged configs: {', '.join(packaged_config_names()[:8])}, ...)")


def packaged_config_names() -> list[str]:
    """Names of the configs shipped with the package, e.g. ``cub_ms``, ``glyphs/contrast``."""
    return sorted(str(p.relative_to(PACKAGED_CONFIGS).with_suffix(""))
                  for p in PACKAGED_CONFIGS.rglob("*.yaml"))


def _file_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[DictConfig]:
    path = config_file(path)
    if path.resolve() in seen:
        raise ConfigError(f"config files include each other in a loop: {path}")
    layer = _read_yaml(path)
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping, not a list")
    layers: list[DictConfig] = []
    parents = layer.pop("defaults", None) or []
    if not isinstance(parents, ListConfig | list):
        raise ConfigError(f"config file {path}: defaults must be a list of config files, e.g. "
                          f"defaults: [base.yaml], not {parents!r}")
    for parent in parents:
        layers += _file_layers(path.parent / str(parent), (*seen, path.resolve()))
    return [*layers, layer]


def _read_yaml(path: Path) -> Any:
    """The YAML file ``path``; ConfigError with the file, line and column of a syntax error."""
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as error:
        raise yaml_error(path, error) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a UTF-8 text (YAML) file") from None


def yaml_error(path: str | Path, error: yaml.YAMLError) -> ConfigError:
    """The ConfigError for a YAML syntax error in the file ``path``:
    ``<path>:<line>:<column>: YAML syntax error: <what the parser found>``."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    return ConfigError(f"{where}: YAML syntax error: {_yaml_problem(error)}")


def _override_layer(overrides: list[str]) -> DictConfig:
    """The ``key=value`` overrides as one layer; ConfigError naming an override whose value is
    not valid YAML."""
    try:
        return OmegaConf.from_dotlist(overrides)
    except yaml.YAMLError:
        for item in overrides:
            try:
                OmegaConf.from_dotlist([item])
            except yaml.YAMLError as error:
                raise ConfigError(f"override '{item}': its value is not valid YAML: "
                                  f"{_yaml_problem(error)}") from None
        raise


def _yaml_problem(error: yaml.YAMLError) -> str:
    parts = [getattr(error, "context", None), getattr(error, "problem", None)]
    return ", ".join(part for part in parts if part) or str(error)


def numeric_ranges(schema: type = ExperimentConfig, prefix: str = "") -> dict[str, Range]:
    """``{dotted key: Range}`` of every numeric key of the schema (a list's applies to each
    of its items)."""
    ranges = {}
    for item in fields(schema):
        if is_dataclass(item.default_factory):
            ranges.update(numeric_ranges(item.default_factory, f"{prefix}{item.name}."))
        elif RANGE in item.metadata:
            ranges[f"{prefix}{item.name}"] = item.metadata[RANGE]
    return ranges


def check_ranges(config: DictConfig) -> None:
    """ConfigError naming the key, its value and the valid range for the first numeric value
    of ``config`` outside its ``Range`` (unset values are not checked)."""
    for key, valid in numeric_ranges().items():
        value = OmegaConf.select(config, key)
        is_list = isinstance(value, ListConfig)
        for item in value if is_list else [value]:
            if item is not None and item not in valid:
                shown = list(value) if is_list else value
                what = "each item must be" if is_list else "valid values are"
                finite = "" if math.isfinite(item) else " and finite"
                raise ConfigError(f"{key}={shown} is out of range: {what} {valid}{finite}")


def validate(config: DictConfig) -> None:
    """Checks that need more than a type: names, ranges, protocol consistency."""
    from sdm.loss_registry import LOSS_NAMES, LOSSES, MINER_NAMES, MINERS
    from sdm.models.trunks import TRUNK_NAMES, is_trunk_name

    check_ranges(config)  # first: the checks below divide by some of these values
    checks = [
        (config.dataset.name in C.DATASET_NAMES,
         f"dataset.name '{config.dataset.name}' is not one of {', '.join(C.DATASET_NAMES)}"),
        (is_trunk_name(config.model.trunk),
         f"model.trunk '{config.model.trunk}' is not one of {', '.join(TRUNK_NAMES)} or "
         "timm/<model name>"),
        (config.loss.name in LOSS_NAMES,
         f"loss.name '{config.loss.name}' is not one of {', '.join(LOSS_NAMES)}"),
        (config.loss.miner is None or config.loss.miner in MINER_NAMES,
         f"loss.miner '{config.loss.miner}' is not one of {', '.join(MINER_NAMES)}"),
        (config.training.batch_size % config.training.m_per_class == 0,
         "training.batch_size must be a multiple of training.m_per_class"),
        (set(config.training.loggers) <= set(C.LOGGER_NAMES),
         f"training.loggers {list(config.training.loggers)}: each must be one of "
         f"{', '.join(C.LOGGER_NAMES)}"),
        (len(config.model.embedding_sizes) >= 1, "model.embedding_sizes must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_perturbation_point(config.model.trunk, config.sdm.perturb_at, config.sdm.enabled)
    _check_parameter_names("loss.params", config.loss.params, config.loss.name,
                           LOSSES[config.loss.name].params)
    if config.loss.miner is not None:
        _check_parameter_names("loss.miner_params", config.loss.miner_params, config.loss.miner,
                               MINERS[config.loss.miner][1])


def _check_perturbation_point(trunk: str, point: str, sdm_enabled: bool = True) -> None:
    """ConfigError unless ``point`` is one of ``trunk``'s perturbation points (a timm trunk's
    model name is checked first, on the meta device: no weights are built). A trunk without
    a ``stem`` (a timm model of no known family) accepts the default ``stem`` with SDM off."""
    from sdm.models.trunks import perturbation_point_names

    try:
        points = perturbation_point_names(trunk)
    except UserInputError as error:  # a timm model name timm does not know, or no timm
        raise ConfigError(str(error)) from None
    if point == "stem" and not sdm_enabled and "stem" not in points:
        return
    if point not in points:
        raise ConfigError(f"sdm.perturb_at '{point}' is not a point of trunk {trunk}; its "
                          f"points, first to last: {', '.join(points)} (`sdm list-points "
                          f"{trunk}` gives their feature shapes)")


def _check_parameter_names(key: str, params: Any, owner: str, accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{key}: '{owner}' does not take {', '.join(unknown)}; valid keys here: "
            f"{', '.join(accepted) or '(none)'}")


def override(key: str, value: Any) -> str:
    """``key=value`` with the value written as YAML (flow style), ready for ``load_config``."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def to_yaml(config: ExperimentConfig) -> str:
    """The config as YAML, every group and key written out (``load_config`` reads it back)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def without_pretrained_weights(config: ExperimentConfig) -> ExperimentConfig:
    """A copy of ``config`` whose model loads no pretrained weights (they come from a
    checkpoint, or do not matter)."""
    copied = copy.deepcopy(config)
    copied.model.pretrained = False
    return copied


def config_difference(old: ExperimentConfig, new: ExperimentConfig,
                      ) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every leaf that differs."""
    flat_old = _flatten(asdict(old))
    flat_new = _flatten(asdict(new))
    keys = sorted(set(flat_old) | set(flat_new))
    return {k: (flat_old.get(k), flat_new.get(k))
            for k in keys if flat_old.get(k) != flat_new.get(k)}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}
