"""Settings: frozen dataclasses filled from ``configs/*.toml``, validated at load, hashed.

Defaults live in ``configs/default.toml`` only: the dataclasses declare each key's type and
allowed range but no value, so the file cannot drift from the code. A preset or ``--config
FILE`` is merged over it, then overrides (dotted keys such as ``optim.iterations``, e.g. from
CLI options) over both. Every value is checked here, so a bad one is a single ConfigError
naming the key (and the file that set it) before any work starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, get_args, get_origin, get_type_hints

from pipeline.errors import ConfigError


def _config_dir() -> Path:
    """configs/ of the source tree (a checkout or an editable install), else the copy the wheel carries."""
    source_tree = Path(__file__).resolve().parent.parent / "configs"
    if (source_tree / "default.toml").is_file():
        return source_tree
    return Path(__file__).resolve().parent / "_configs"


CONFIG_DIR = _config_dir()
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
PRESET_DIRS = (CONFIG_DIR, CONFIG_DIR / "presets")

# TOML integers are 64-bit, but tomllib reads larger ones too; TensorFlow seeds and counters are int64.
INT64 = (-(2**63), 2**63 - 1)


def _f(lo: float | None = None, hi: float | None = None, choices: tuple | None = None,
       positive: bool = False) -> Any:
    """A field with its validation rule and deliberately no default: the value comes from the TOML."""
    return field(metadata={"lo": lo, "hi": hi, "choices": choices, "positive": positive})


CONTENT_NORMS = ("relative", "mean", "half_sum", "four_nhwc")
STYLE_NORMS = ("relative", "mean", "four_n2m2")
LAYER_ALIAS = re.compile(r"^(?:conv|relu)(\d)_(\d)$")
INIT_KEYWORDS = ("content", "noise")

# Memory sizes as tiling.parse_memory reads them, but stricter (ASCII digits and spaces, one decimal
# point, at least a byte), so whatever passes here parses the same there and "1.2.3" fails at load.
MEMORY_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30,
                "T": 2**40, "TB": 2**40}
_MEMORY = re.compile(r"[ \t]*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)[ \t]*([A-Za-z]*)[ \t]*")


def memory_bytes(text: str) -> int | None:
    """'8GB', '512 MB', '2g' or a byte count -> bytes; '' -> no limit. ValueError otherwise."""
    if text == "":
        return None
    match = _MEMORY.fullmatch(text)
    if not match or match.group(2).upper() not in MEMORY_UNITS:
        raise ValueError(f"memory size {text!r}: expected a number with a unit, e.g. 8GB or 512MB")
    value = float(match.group(1)) * MEMORY_UNITS[match.group(2).upper()]
    if not math.isfinite(value):
        raise ValueError(f"memory size {text!r} is too large")
    if value < 1:  # "0.1B" would round to a budget of nothing
        raise ValueError(f"memory size {text!r} must be at least one byte")
    return int(value)

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
    network: str = _f(choices=("vgg19", "vgg16"))
    pooling: str = _f(choices=("max", "avg"))
    content_layers: list[str] = _f()
    content_layer_weights: list[float] = _f()
    style_layers: list[str] = _f()
    style_layer_weights: list[float] = _f()


@dataclass(frozen=True)
class LossConfig:
    content_weight: float = _f(lo=0.0)
    style_weight: float = _f(lo=0.0)
    tv_weight: float = _f(lo=0.0)
    tv_form: str = _f(choices=("mean_sq", "sum_pow125"))
    content_normalization: str = _f(choices=CONTENT_NORMS)
    style_normalization: str = _f(choices=STYLE_NORMS)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = _f(choices=("lbfgs", "adam"))
    iterations: int = _f(lo=1, hi=100000)
    coarse_iterations: int = _f(lo=0, hi=100000)
    learning_rate: float = _f(positive=True)
    adam_beta1: float = _f(lo=0.0, hi=0.999999)
    adam_beta2: float = _f(lo=0.0, hi=0.999999)
    tolerance: float = _f(lo=0.0, hi=1.0)
    init: str = _f()  # "content" | "noise" | a path to an existing image (checked at load)
    noise_ratio: float = _f(lo=0.0, hi=1.0)
    seed: int = _f(lo=0)
    precision: str = _f(choices=("auto", "fp32", "bf16", "fp16"))
    jit_compile: bool = _f()
    block_evaluations: int = _f(lo=1, hi=100000)
    save_every: int = _f(lo=0, hi=100000)  # write the iterate every N final-scale iterations; 0 = never


@dataclass(frozen=True)
class ImageConfig:
    size: int = _f(lo=32, hi=20000)
    scales: list[float] = _f()
    min_scale_size: int = _f(lo=32)
    style_scale: float = _f(lo=0.05, hi=8.0)
    preserve_colors: str = _f(choices=("off", "luminance", "histogram"))  # true/false read as luminance/off
    max_pixels: int = _f(lo=1)
    keep_resolution: bool = _f()
    format: str = _f(choices=("auto", "png", "jpeg", "webp", "tiff", "png16", "tiff16"))
    jpeg_quality: int = _f(lo=1, hi=100)
    max_memory: str = _f()  # "" = no limit, else e.g. "8GB" (checked at load by memory_bytes)
    tile_overlap: int = _f(lo=16)


@dataclass(frozen=True)
class VideoConfig:
    temporal: str = _f(choices=("off", "prev", "flow"))
    temporal_weight: float = _f(lo=0.0)
    first_frame_iterations: int = _f(lo=1)
    later_frame_iterations: int = _f(lo=1)
    # A fresh frame is an optimum without the temporal term, a later frame is not: chained straight
    # from it, the next frames drift away from it. Rolling the chain forward and back first starts
    # it from a frame that is already in the chain's steady state.
    settle_frames: int = _f(lo=0, hi=8)
    # Later key frames of a shot split over workers start from the previous key frame carried by
    # the composite flow, so chains from different key frames meet with the same texture.
    chain_keys: bool = _f()
    # Without preserved colours a frame's painting takes the style's light: frames darker (or
    # brighter) than their shot's usual light, a fade, are taken towards black (or white) to match.
    follow_fades: bool = _f()
    # A frame that repeats the last one painted (animation on twos, a frame rate conversion's
    # duplicates, a freeze) takes its painting: a still picture stays still, and is painted once.
    hold_frames: bool = _f()
    # "keep": black bars (letterbox, pillarbox) stay black and only the picture inside is painted;
    # "paint": the whole frame is painted, bars included.
    bars: str = _f(choices=("keep", "paint"))
    # A dissolve (a cross-fade between two shots) is found and painted as one: the next shot starts
    # fresh at its end and is faded in over it, instead of taking over the first shot's strokes.
    dissolves: bool = _f()
    cut_threshold: float = _f(lo=0.0, hi=1.0)
    min_shot_frames: int = _f(lo=1)
    segment_frames: int = _f(lo=0)  # 0 = automatic split of long shots across workers
    # Frames per worker call: bounds what one call carries, and what a killed worker loses.
    chunk_frames: int = _f(lo=1)
    segment_overlap: int = _f(lo=0)
    save_frames: bool = _f()
    crf: int = _f(lo=0, hi=51)
    codec: str = _f(choices=("h264", "hevc", "prores", "ffv1"))


@dataclass(frozen=True)
class RunConfig:
    workers: int = _f(lo=0)  # 0 = automatic
    gpus_per_worker: float = _f(lo=0.0)
    max_attempts: int = _f(lo=1, hi=100)
    max_in_flight: int = _f(lo=1)


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    image: ImageConfig
    video: VideoConfig
    run: RunConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, *extra: str) -> str:
        """Hash of everything that changes a result; what only schedules or keeps work is left out
        (run.*, how many frames a worker call carries, whether video frames are kept)."""
        payload = {k: v for k, v in self.to_dict().items() if k != "run"}
        payload["video"] = {k: v for k, v in payload["video"].items() if k not in NOT_IN_DIGEST}
        payload["optim"] = {k: v for k, v in payload["optim"].items() if k not in ("save_every", "block_evaluations")}
        blob = json.dumps([payload, list(extra)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **dotted: Any) -> Config:
        return from_dict(_merge(self.to_dict(), _undot(dotted)))


NOT_IN_DIGEST = ("chunk_frames", "save_frames")
_SECTION_TYPES: dict[str, type] = get_type_hints(Config)
SECTIONS = dict(_SECTION_TYPES)
# section -> {key: (type, rule)}: what every TOML layer is checked against.
SCHEMA: dict[str, dict[str, tuple[Any, dict]]] = {
    section: {f.name: (get_type_hints(cls)[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}
    for section, cls in _SECTION_TYPES.items()
}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _shown(name: str) -> str:
    """A key as the user wrote it; quoted when TOML's quoting let odd characters (a newline) in."""
    return name if _PLAIN_NAME.fullmatch(name) else repr(name)


class _Origins:
    """Which file (or override) set each key, so an error points at the right place."""

    def __init__(self, origins: dict[str, str | None] | None = None, default: str | None = None) -> None:
        self.origins = origins or {}
        self.default = default

    def fail(self, key: str, problem: str) -> NoReturn:
        where = self.origins.get(key, self.default)
        raise ConfigError(f"{where + ': ' if where else ''}config key {key}: {problem}")


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


def _check_names(data: dict, source: str | None) -> None:
    """Unknown sections and keys, and sections that are not tables, named with their file."""
    prefix = f"{source}: " if source else ""
    for section, values in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{prefix}unknown config section [{_shown(section)}] (known: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{prefix}config section [{section}] must be a table of keys, got {values!r}")
        for name in values:
            if name not in SCHEMA[section]:
                raise ConfigError(f"{prefix}unknown config key {section}.{_shown(name)}")


_EXPECTED = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
_LIST_OF = {bool: "true or false values", int: "integers", float: "finite numbers", str: "strings"}


def _scalar(value: Any, typ: type) -> Any:
    """``value`` as ``typ``, or ValueError; bools are never numbers and numbers never bools."""
    if typ is bool and isinstance(value, bool):
        return value
    if typ is str and isinstance(value, str):
        return value
    if typ is int and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 512.0 in a TOML file means 512
        if isinstance(value, int):
            if INT64[0] <= value <= INT64[1]:
                return value
            raise ValueError("an integer that fits in 64 bits")
    if typ is float and not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range
            number = math.inf
        # NaN passes every range check and poisons the loss; infinity is no weight or rate either.
        if math.isfinite(number):
            return number
    raise ValueError(_EXPECTED[typ])


def _coerce(key: str, value: Any, typ: Any, rule: dict, origins: _Origins) -> Any:
    if key == "image.preserve_colors" and isinstance(value, bool):
        value = "luminance" if value else "off"  # the switch it was before it had modes
    if get_origin(typ) is list:
        (item,) = get_args(typ)
        if not isinstance(value, (list, tuple)):  # tuples from Python callers' overrides
            origins.fail(key, f"expected a list, got {value!r}")
        try:
            return [_scalar(v, item) for v in value]
        except ValueError:
            origins.fail(key, f"expected a list of {_LIST_OF[item]}, got {value!r}")
    try:
        value = _scalar(value, typ)
    except ValueError as exc:
        origins.fail(key, f"expected {exc}, got {value!r}")
    if rule.get("choices") and value not in rule["choices"]:
        origins.fail(key, f"{value!r} is not one of {', '.join(map(str, rule['choices']))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if rule.get("lo") is not None and value < rule["lo"]:
            origins.fail(key, f"{value} is below the minimum {rule['lo']}")
        if rule.get("hi") is not None and value > rule["hi"]:
            origins.fail(key, f"{value} is above the maximum {rule['hi']}")
        if rule.get("positive") and value <= 0:
            origins.fail(key, f"{value} must be positive")
    return value


def from_dict(data: dict, source: str | None = None, origins: dict[str, str | None] | None = None) -> Config:
    """A complete, validated Config from nested TOML-shaped data (defaults already merged in)."""
    where = _Origins(origins, source)
    _check_names(data, source)
    sections = {}
    for section, keys in SCHEMA.items():
        values = data.get(section, {})
        kwargs = {}
        for name, (typ, rule) in keys.items():
            key = f"{section}.{name}"
            if name not in values:
                raise ConfigError(f"config key {key} has no value: {DEFAULT_CONFIG} must set it")
            kwargs[name] = _coerce(key, values[name], typ, rule, where)
        sections[section] = _SECTION_TYPES[section](**kwargs)
    config = Config(**sections)
    _validate(config, where)
    return config


def _validate(config: Config, where: _Origins) -> None:
    """Rules that span keys or need more than a range: layers, scales, memory, init image."""
    model = config.model
    names = {name for name, _, _ in conv_layers(model.network)}
    for key in ("content_layers", "style_layers"):
        layers = getattr(model, key)
        if not layers:
            where.fail(f"model.{key}", "must name at least one layer")
        for layer in layers:
            if canonical_layer(layer) not in names:
                where.fail(f"model.{key}", f"{layer!r} is not a {model.network} conv layer")
    for layers_key, weights_key in (("content_layers", "content_layer_weights"),
                                    ("style_layers", "style_layer_weights")):
        layers, weights = getattr(model, layers_key), getattr(model, weights_key)
        if len(layers) != len(weights):
            where.fail(f"model.{weights_key}", f"has {len(weights)} values for {len(layers)} layers "
                                               f"in model.{layers_key}")
        if any(w < 0 for w in weights):
            where.fail(f"model.{weights_key}", "must hold non-negative numbers")
    scales = config.image.scales
    if not scales or any(not 0 < s <= 1 for s in scales):
        where.fail("image.scales", f"must be fractions in (0, 1], got {scales!r}")
    if scales != sorted(scales) or scales[-1] != 1:
        where.fail("image.scales", f"must ascend and end with 1.0, got {scales!r}")
    try:
        memory_bytes(config.image.max_memory)
    except ValueError as exc:
        where.fail("image.max_memory", str(exc))
    init = config.optim.init
    # Checked here rather than when the image is read: a run must not stop on it after work began.
    if init not in INIT_KEYWORDS and not Path(init).is_file():
        where.fail("optim.init", f"{init!r} is neither \"content\", \"noise\" nor an existing image file")


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a folder, not a config file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def preset_path(name: str) -> Path:
    # A name, not a path: "../x" or "a/b" would reach files that are not presets.
    if not _PLAIN_NAME.fullmatch(name):
        raise ConfigError(f"unknown preset {name!r}; `nst presets` lists them")
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
    """default.toml <- preset <- ``config_file`` <- overrides; errors name the layer that set the key."""
    layers: list[tuple[str | None, dict]] = [(str(DEFAULT_CONFIG), read_toml(DEFAULT_CONFIG))]
    for path in ([preset_path(preset)] if preset else []) + ([Path(config_file)] if config_file else []):
        layers.append((str(path), read_toml(path)))
    if overrides:
        layers.append((None, _undot({k: v for k, v in overrides.items() if v is not None})))
    data: dict = {}
    origins: dict[str, str | None] = {}
    for source, layer in layers:
        _check_names(layer, source)
        data = _merge(data, layer)
        origins.update({f"{section}.{name}": source for section, values in layer.items() for name in values})
    return from_dict(data, origins=origins)
