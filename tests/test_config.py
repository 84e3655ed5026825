"""Settings: one source of defaults (configs/default.toml), every value checked at load, and
each error one line naming the key and the file that set it."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "user.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides=overrides or None)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- one source of defaults

def test_the_dataclasses_hold_no_default_values():
    """A value written in the code could drift from default.toml; there is none to drift."""
    for cls in (config.Config, *config.SECTIONS.values()):
        for field in dataclasses.fields(cls):
            assert field.default is dataclasses.MISSING, f"{cls.__name__}.{field.name}"
            assert field.default_factory is dataclasses.MISSING, f"{cls.__name__}.{field.name}"


def test_default_toml_sets_every_key_and_only_known_keys():
    data = config.read_toml(config.DEFAULT_CONFIG)
    assert set(data) == set(config.SCHEMA)
    for section, keys in config.SCHEMA.items():
        assert set(data[section]) == set(keys), section


def test_loaded_defaults_are_the_toml_values_key_by_key():
    data = config.read_toml(config.DEFAULT_CONFIG)
    loaded = config.load().to_dict()
    for section, values in data.items():
        for name, value in values.items():
            assert loaded[section][name] == value and type(loaded[section][name]) is type(value), (section, name)


def test_a_key_missing_from_the_defaults_is_named(tmp_path, monkeypatch):
    text = config.DEFAULT_CONFIG.read_text().replace('tv_form = "mean_sq"', "")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", write(tmp_path, text, "default.toml"))
    message = load_error()
    assert "loss.tv_form" in message and "default.toml" in message


def test_every_preset_loads():
    for name, _path, _description in config.list_presets():
        config.load(preset=name)


# ---------------------------------------------------------------- errors name the key and its file

def test_an_error_names_the_file_that_set_the_key(tmp_path):
    path = write(tmp_path, "[image]\nsize = 5\n")
    message = load_error(path)
    assert str(path) in message and "image.size" in message and "minimum 32" in message


def test_an_override_error_names_the_key_not_a_file(tmp_path):
    message = load_error(**{"image.size": 5})
    assert message.startswith("config key image.size:")
    # A cross-key rule blames the layer that set the key, not default.toml.
    message = load_error(**{"image.scales": [0.5]})
    assert message.startswith("config key image.scales:") and "default.toml" not in message


@pytest.mark.parametrize(("text", "named"), [
    ("[optim]\nitertions = 5\n", "optim.itertions"),
    ("[optimiser]\niterations = 5\n", "[optimiser]"),
    ('[optim]\n"bad\\nkey" = 5\n', "optim.'bad\\nkey'"),
    ("model = 5\n", "[model]"),
    ("[[optim]]\niterations = 5\n", "[optim]"),
    ("[optim.iterations]\nx = 1\n", "optim.iterations"),
])
def test_unknown_or_misshapen_names(tmp_path, text, named):
    path = write(tmp_path, text)
    message = load_error(path)
    assert named in message and str(path) in message


@pytest.mark.parametrize(("text", "key"), [
    ("[loss]\ntv_weight = nan\n", "loss.tv_weight"),
    ("[loss]\nstyle_weight = inf\n", "loss.style_weight"),
    ("[optim]\nlearning_rate = -inf\n", "optim.learning_rate"),
    ("[optim]\nseed = 99999999999999999999\n", "optim.seed"),
    ("[run]\nworkers = -1\n", "run.workers"),
    ("[image]\nsize = true\n", "image.size"),
    ("[image]\nsize = 512.5\n", "image.size"),
    ('[image]\nsize = "512"\n', "image.size"),
    ("[image]\npreserve_colors = 1\n", "image.preserve_colors"),
    ("[image]\nscales = [true]\n", "image.scales"),
    ("[image]\nscales = 1.0\n", "image.scales"),
    ("[image]\nscales = [0.5, nan, 1.0]\n", "image.scales"),
    ("[image]\nscales = [1.0, 0.5]\n", "image.scales"),
    ("[image]\nscales = []\n", "image.scales"),
    ("[model]\ncontent_layers = [1]\n", "model.content_layers"),
    ("[model]\ncontent_layers = []\ncontent_layer_weights = []\n", "model.content_layers"),
    ('[model]\nstyle_layer_weights = [0.2, 0.2, 0.2, 0.2, "x"]\n', "model.style_layer_weights"),
    ("[model]\nstyle_layer_weights = [0.2, 0.2, 0.2, 0.2, -0.2]\n", "model.style_layer_weights"),
    ('[model]\nnetwork = "vgg16"\ncontent_layers = ["conv5_4"]\n', "model.content_layers"),
    ('[optim]\noptimizer = "sgd"\n', "optim.optimizer"),
    ("[optim]\nadam_beta1 = 1\n", "optim.adam_beta1"),
    ("[optim]\nlearning_rate = 0\n", "optim.learning_rate"),
    ("[video]\ncrf = 52\n", "video.crf"),
    ("[optim]\ninit = 2024-01-01\n", "optim.init"),
])
def test_bad_values_name_their_key(tmp_path, text, key):
    path = write(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert key in message


def test_huge_integers_for_float_keys_are_not_numbers(tmp_path):
    path = write(tmp_path, "[loss]\ncontent_weight = " + "9" * 400 + "\n")
    assert "loss.content_weight" in load_error(path)


def test_whole_floats_are_integers_and_integers_are_floats(tmp_path):
    cfg = config.load(write(tmp_path, "[image]\nsize = 256.0\nstyle_scale = 2\nscales = [0.5, 1]\n"))
    assert cfg.image.size == 256 and type(cfg.image.size) is int
    assert cfg.image.style_scale == 2.0 and type(cfg.image.style_scale) is float
    assert cfg.image.scales == [0.5, 1.0] and all(type(s) is float for s in cfg.image.scales)


# ---------------------------------------------------------------- free-form values

@pytest.mark.parametrize("text", ["", "8GB", "512 MB", "2g", "1.5T", "4096", " 64kb "])
def test_memory_sizes_that_load(tmp_path, text):
    cfg = config.load(write(tmp_path, f'[image]\nmax_memory = "{text}"\n'))
    assert cfg.image.max_memory == text


@pytest.mark.parametrize("text", ["8 parsecs", "0GB", "-1GB", ".", "GB", "1.2.3MB", "nan", "inf", " ", "1e3MB",
                                  "9" * 400 + "TB"])
def test_memory_sizes_that_do_not(tmp_path, text):
    path = write(tmp_path, f'[image]\nmax_memory = "{text}"\n')
    message = load_error(path)
    assert "image.max_memory" in message and str(path) in message


def test_memory_bytes_values():
    assert config.memory_bytes("") is None
    assert config.memory_bytes("8GB") == 8 * 2**30
    assert config.memory_bytes(" 512 mb ") == 512 * 2**20
    assert config.memory_bytes("1.5k") == 1536


def test_init_may_be_content_noise_or_an_existing_image(tmp_path):
    image = tmp_path / "start.png"
    image.write_bytes(b"\x89PNG")
    for value in ("content", "noise", str(image)):
        assert config.load(overrides={"optim.init": value}).optim.init == value


@pytest.mark.parametrize("value", ["missing.png", "", "Content", "."])
def test_init_that_is_no_image_file_is_refused_at_load(tmp_path, value):
    path = write(tmp_path, f'[optim]\ninit = "{value}"\n')
    message = load_error(path)
    assert "optim.init" in message and str(path) in message


def test_replace_validates_too():
    cfg = config.load()
    with pytest.raises(ConfigError, match="video.crf"):
        cfg.replace(**{"video.crf": 99})
    with pytest.raises(ConfigError, match="optim.nope"):
        cfg.replace(**{"optim.nope": 1})
    assert cfg.replace(**{"video.crf": 20}).video.crf == 20


@pytest.mark.parametrize("name", ["../default", "presets/fast", ".hidden", "fast.toml", "nope"])
def test_a_preset_is_a_name_not_a_path(name):
    with pytest.raises(ConfigError, match="unknown preset"):
        config.load(preset=name)


def test_unreadable_config_files_are_one_line(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[optim]\n")
    for path, reason in ((binary, "not valid TOML"), (tmp_path, "is a folder"),
                         (tmp_path / "absent.toml", "not found"), (write(tmp_path, "[optim\n"), "not valid TOML")):
        message = load_error(path)
        assert str(path) in message and reason in message
