"""Settings: frozen dataclasses filled from ``configs/*.toml``, validated at load, hashed.

Defaults live in ``configs/default.toml`` only; a preset or ``--config FILE`` is merged over
it, then CLI options (dotted keys such as ``optim.iterations``) override both.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import tomllib

from pipeline.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
PRESET_DIRS = (CONFIG_DIR, CONFIG_DIR / "presets")


def _check(lo: float | None = None, hi: float | None = None, choices: tuple | None = None,
           positive: bool = False) -> dict:
    return {"lo": lo, "hi": hi, "choices": choices, "positive": positive}


def _f(default: Any, **check: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=_check(**check))
    return field(default=default, metadata=_check(**check))


CONTENT_NORMS = ("relative", "mean", "half_sum", "four_nhwc")
STYLE_NORMS = ("relative", "mean", "four_n2m2")
LAYER_ALIAS = re.compile(r"^(?:conv|relu)(\d)_(\d)$")


# Conv layers of each backbone in Keras naming, with (in, out) channels.
_VGG19_BLOCKS = [(3, 64, 2), (64, 128, 2), (128, 256, 4), (256, 512, 4), (512, 512, 4)]
_VGG16_BLOCKS = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]


def conv_layers(network: str) -> list[tuple[str, int, int]]:
    """[(keras_name, in_channels, out_channels)] of a backbone's conv layers, in order."""
    blocks = {"vgg19": _VGG19_BLOCKS, "vgg16": _VGG16_BLOCKS}[network]
    layers = []
    for block, (cin, cout, count) in enumerate(blocks, start=1):
        for conv in range(1, count + 1):
            layers.append((f"block{block}_conv{conv}", cin if conv == 1 else cout, cout))
    return layers


def canonical_layer(name: str) -> str:
    """Accepts Keras names (block4_conv2) and paper names (conv4_2, relu4_2)."""
    match = LAYER_ALIAS.match(name)
    return f"block{match.group(1)}_conv{match.group(2)}" if match else name


@dataclass(frozen=True)
class ModelConfig:
    network: str = _f("vgg19", choices=("vgg19", "vgg16"))
    pooling: str = _f("max", choices=("max", "avg"))
    content_layers: list = _f(["block4_conv2"])
    content_layer_weights: list = _f([1.0])
    style_layers: list = _f(["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"])
    style_layer_weights: list = _f([0.2, 0.2, 0.2, 0.2, 0.2])


@dataclass(frozen=True)
class LossConfig:
    content_weight: float = _f(1.0, lo=0.0)
    style_weight: float = _f(10.0, lo=0.0)
    tv_weight: float = _f(10.0, lo=0.0)
    tv_form: str = _f("mean_sq", choices=("mean_sq", "sum_pow125"))
    content_normalization: str = _f("relative", choices=CONTENT_NORMS)
    style_normalization: str = _f("relative", choices=STYLE_NORMS)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = _f("lbfgs", choices=("lbfgs", "adam"))
    iterations: int = _f(200, lo=1, hi=100000)
    coarse_iterations: int = _f(100, lo=0, hi=100000)
    learning_rate: float = _f(5.0, positive=True)
    adam_beta1: float = _f(0.9, lo=0.0, hi=0.999999)
    adam_beta2: float = _f(0.999, lo=0.0, hi=0.999999)
    tolerance: float = _f(1e-5, lo=0.0, hi=1.0)
    init: str = _f("content")  # "content" | "noise" | a path to an image
    noise_ratio: float = _f(1.0, lo=0.0, hi=1.0)
    seed: int = _f(0, lo=0)
    precision: str = _f("auto", choices=("auto", "fp32", "bf16", "fp16"))
    jit_compile: bool = _f(False)
    block_evaluations: int = _f(10, lo=1, hi=100000)


@dataclass(frozen=True)
class ImageConfig:
    size: int = _f(512, lo=32, hi=20000)
    scales: list = _f([0.5, 1.0])
    min_scale_size: int = _f(96, lo=32)
    style_scale: float = _f(1.0, lo=0.05, hi=8.0)
    preserve_colors: bool = _f(False)
    max_pixels: int = _f(200_000_000, lo=1)
    keep_resolution: bool = _f(False)
    format: str = _f("auto", choices=("auto", "png", "jpeg", "webp", "tiff"))
    jpeg_quality: int = _f(95, lo=1, hi=100)
    max_memory: str = _f("")  # "" = no limit; else e.g. "8GB", "512MB" (checked by tiling.parse_memory)
    tile_overlap: int = _f(128, lo=16)


@dataclass(frozen=True)
class VideoConfig:
    temporal: str = _f("flow", choices=("off", "prev", "flow"))
    temporal_weight: float = _f(50.0, lo=0.0)
    first_frame_iterations: int = _f(200, lo=1)
    later_frame_iterations: int = _f(50, lo=1)
    # A fresh frame is an optimum without the temporal term, a later frame is not: chained straight
    # from it, the next frames drift away from it. Rolling the chain forward and back first starts
    # it from a frame that is already in the chain's steady state.
    settle_frames: int = _f(1, lo=0, hi=8)
    # Later key frames of a shot split over workers start from the previous key frame carried by
    # the composite flow, so chains from different key frames meet with the same texture.
    chain_keys: bool = _f(True)
    cut_threshold: float = _f(0.35, lo=0.0, hi=1.0)
    min_shot_frames: int = _f(4, lo=1)
    segment_frames: int = _f(0, lo=0)  # 0 = automatic split of long shots across workers
    # Frames per worker call: bounds what one call carries, and what a killed worker loses.
    chunk_frames: int = _f(64, lo=1)
    segment_overlap: int = _f(12, lo=0)
    save_frames: bool = _f(False)
    crf: int = _f(18, lo=0, hi=51)


@dataclass(frozen=True)
class RunConfig:
    workers: int = _f(0, lo=0)  # 0 = automatic
    gpus_per_worker: float = _f(1.0, lo=0.0)
    max_attempts: int = _f(3, lo=1, hi=100)
    max_in_flight: int = _f(2, lo=1)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, *extra: str) -> str:
        """Hash of everything that changes a result; what only schedules or keeps work is left out
        (run.*, how many frames a worker call carries, whether video frames are kept)."""
        payload = {k: v for k, v in self.to_dict().items() if k != "run"}
        payload["video"] = {k: v for k, v in payload["video"].items() if k not in NOT_IN_DIGEST}
        blob = json.dumps([payload, list(extra)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **dotted: Any) -> Config:
        return from_dict(_merge(self.to_dict(), _undot(dotted)), source="override")


NOT_IN_DIGEST = ("chunk_frames", "save_frames")
SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_TYPES = get_type_hints(Config)


def _undot(dotted: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"config key {key!r} needs a section, e.g. optim.iterations")
        nested.setdefault(section, {})[name] = value
    return nested


def _merge(base: dict, update: dict) -> dict:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _coerce(section: str, name: str, value: Any, typ: Any, meta: dict) -> Any:
    key = f"{section}.{name}"
    if typ is bool or typ == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key}: expected true or false, got {value!r}")
    elif typ is int or typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
    elif typ is float or typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key}: expected a number, got {value!r}")
        value = float(value)
    elif typ is str or typ == "str":
        if not isinstance(value, str):
            raise ConfigError(f"config key {key}: expected a string, got {value!r}")
    elif typ is list or typ == "list" or get_origin(typ) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        value = list(value)
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("lo") is not None and value < meta["lo"]:
            raise ConfigError(f"config key {key}: {value} is below the minimum {meta['lo']}")
        if meta.get("hi") is not None and value > meta["hi"]:
            raise ConfigError(f"config key {key}: {value} is above the maximum {meta['hi']}")
        if meta.get("positive") and value <= 0:
            raise ConfigError(f"config key {key}: {value} must be positive")
    return value


def from_dict(data: dict, source: str = "config") -> Config:
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown config section {min(unknown)!r} "
                          f"(known: {', '.join(SECTIONS)})")
    sections = {}
    for section, cls in _SECTION_TYPES.items():
        values = data.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        hints = get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls)}
        for name in values:
            if name not in known:
                raise ConfigError(f"{source}: unknown config key {section}.{name}")
        kwargs = {name: _coerce(section, name, value, hints[name], dict(known[name].metadata))
                  for name, value in values.items()}
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    _validate(config, source)
    return config


def _validate(config: Config, source: str) -> None:
    model = config.model
    names = {name for name, _, _ in conv_layers(model.network)}
    for key in ("content_layers", "style_layers"):
        layers = getattr(model, key)
        if not layers:
            raise ConfigError(f"{source}: config key model.{key} must name at least one layer")
        for layer in layers:
            if canonical_layer(layer) not in names:
                raise ConfigError(f"{source}: config key model.{key}: {layer!r} is not a "
                                  f"{model.network} conv layer")
    for layers_key, weights_key in (("content_layers", "content_layer_weights"),
                                    ("style_layers", "style_layer_weights")):
        layers, weights = getattr(model, layers_key), getattr(model, weights_key)
        if len(layers) != len(weights):
            raise ConfigError(f"{source}: config key model.{weights_key} has {len(weights)} "
                              f"values for {len(layers)} layers in model.{layers_key}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights):
            raise ConfigError(f"{source}: config key model.{weights_key} must hold non-negative numbers")
    scales = config.image.scales
    if not scales or any(not isinstance(s, (int, float)) or not 0 < s <= 1 for s in scales):
        raise ConfigError(f"{source}: config key image.scales must be fractions in (0, 1]")
    if list(scales) != sorted(scales) or scales[-1] != 1:
        raise ConfigError(f"{source}: config key image.scales must ascend and end with 1.0")


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def preset_path(name: str) -> Path:
    for folder in PRESET_DIRS:
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"unknown preset {name!r}; `nst presets` lists them")


def list_presets() -> list[tuple[str, Path, str]]:
    """(name, path, one-line description from the file's first comment)."""
    found = []
    for folder in PRESET_DIRS:
        for path in sorted(folder.glob("*.toml")):
            if path.stem == "default":
                continue
            first = next((line[1:].strip() for line in path.read_text().splitlines()
                          if line.startswith("#")), "")
            found.append((path.stem, path, first))
    return found


def load(config_file: Path | None = None, preset: str | None = None,
         overrides: dict[str, Any] | None = None) -> Config:
    data = read_toml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG)
    for extra in ([preset_path(preset)] if preset else []) + ([Path(config_file)] if config_file else []):
        data = _merge(data, read_toml(extra))
        source = str(extra)
    if overrides:
        data = _merge(data, _undot({k: v for k, v in overrides.items() if v is not None}))
    return from_dict(data, source=source)
