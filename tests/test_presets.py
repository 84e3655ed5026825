"""Presets: each loads, validates, states what it reproduces, and optimises on a tiny image.

VGG-19 presets run on the real weights (the session `extractor` fixture's arrays, rebuilt with the
preset's own layers and pooling). VGG-16 presets run on random arrays of the right shapes: that
checks the graph and the loss wiring only, nothing about what VGG-16 weights would paint.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline.core.stylizer import Stylizer
from pipeline.core.types import Targets
from pipeline.core.vgg import FeatureExtractor
from tests.test_vgg16 import random_arrays

OURS = {"fast", "quality"}
SEEDS = {  # preset -> seed article it reproduces
    "gatys_adam_dlai": "000_3fa89a013ab5ad70.txt",
    "vgg16_adam_halfsum": "001_eae9e6ad10673e31.txt",
    "gatys_all_layers": "002_88d5752542af779b.txt",
    "gatys_adam_alpha10_beta40": "003_a832898e5d6a378d.txt",
    "vgg16_lbfgs_tv_block2": "004_2e8906a0eac80602.txt",
}
PRESETS = sorted(OURS | set(SEEDS))
STYLE_1 = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]

# The facts each seed preset must carry (dotted config key -> value).
FACTS = {
    "gatys_adam_dlai": {
        "model.network": "vgg19", "model.content_layers": ["block4_conv2"], "model.style_layers": STYLE_1,
        "model.style_layer_weights": [0.2] * 5, "loss.content_normalization": "four_nhwc",
        "loss.style_normalization": "four_n2m2", "loss.tv_weight": 0.0, "optim.optimizer": "adam",
        "optim.init": "noise", "optim.iterations": 200, "image.scales": [1.0]},
    "vgg16_adam_halfsum": {
        "model.network": "vgg16", "model.content_layers": ["block4_conv3"], "model.style_layers": STYLE_1,
        "loss.content_normalization": "half_sum", "loss.style_normalization": "four_n2m2",
        "loss.tv_weight": 0.0, "optim.optimizer": "adam", "optim.learning_rate": 2.55,
        "optim.adam_beta1": 0.99, "optim.init": "noise", "optim.noise_ratio": 1.0, "optim.iterations": 450},
    "gatys_all_layers": {
        "model.network": "vgg19", "model.content_layers": STYLE_1, "model.style_layers": STYLE_1,
        "loss.content_normalization": "half_sum", "loss.style_normalization": "four_n2m2"},
    "gatys_adam_alpha10_beta40": {
        "model.network": "vgg19", "loss.content_weight": 10.0, "loss.style_weight": 40.0,
        "optim.optimizer": "adam", "optim.init": "noise"},
    "vgg16_lbfgs_tv_block2": {
        "model.network": "vgg16", "model.content_layers": ["block2_conv2"],
        "model.style_layers": ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"],
        "loss.content_normalization": "half_sum", "loss.style_normalization": "four_n2m2",
        "loss.tv_weight": 1.0, "loss.tv_form": "sum_pow125",
        "optim.optimizer": "lbfgs", "optim.init": "noise", "image.size": 512},
}


def get(cfg: config_mod.Config, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def test_every_preset_is_listed_with_a_description():
    listed = {name: (path, description) for name, path, description in config_mod.list_presets()}
    assert set(PRESETS) <= set(listed)
    for name in PRESETS:
        path, description = listed[name]
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and first[2:].strip() == description and len(description) > 20


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_preset_cites_its_article_and_carries_its_facts(name):
    text = config_mod.preset_path(name).read_text()
    assert SEEDS[name] in text
    cfg = config_mod.load(preset=name)
    for key, value in FACTS[name].items():
        assert get(cfg, key) == value, key


def test_ours_are_faster_and_slower_than_the_defaults():
    default, fast, quality = (config_mod.load(preset=p) for p in (None, "fast", "quality"))
    assert fast.image.size < default.image.size < quality.image.size
    assert fast.optim.iterations < default.optim.iterations < quality.optim.iterations
    assert quality.image.scales == [0.25, 0.5, 1.0] and quality.image.size >= 768


def test_article_style_weights_reproduce_its_fixed_normalisation():
    """The 004 layer weights turn four_n2m2 into the article's 1/(4 * 3^2 * (H W)^2) for any size."""
    cfg = config_mod.load(preset="vgg16_lbfgs_tv_block2")
    channels = {"block1_conv2": (64, 0), "block2_conv2": (128, 1), "block3_conv3": (256, 2),
                "block4_conv3": (512, 3), "block5_conv3": (512, 4)}
    for layer, weight in zip(cfg.model.style_layers, cfg.model.style_layer_weights):
        n, pools = channels[layer]
        expected = (n / 3) ** 2 / 16 ** pools  # (N/3)^2 (M_l / (H W))^2, M_l = H W / 4^pools
        assert weight == pytest.approx(expected, rel=2e-3), layer


def test_cli_overrides_beat_the_preset():
    cfg = config_mod.load(preset="gatys_adam_dlai",
                          overrides={"optim.iterations": 7, "optim.optimizer": "lbfgs", "image.size": 96,
                                     "loss.tv_weight": None})
    assert (cfg.optim.iterations, cfg.optim.optimizer, cfg.image.size) == (7, "lbfgs", 96)
    # keys not overridden (or given as None, i.e. an unset CLI option) keep the preset's values
    assert cfg.loss.content_normalization == "four_nhwc" and cfg.loss.tv_weight == 0.0


def test_cli_preset_option_is_applied():
    from pipeline.cli.main import build_config

    cfg = build_config(None, "fast", size=64, iterations=None)
    assert cfg.image.size == 64 and cfg.optim.iterations == 100


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_a_few_iterations_and_lowers_the_loss(name, extractor, photo, painting):
    cfg = config_mod.load(preset=name)
    layers = list(cfg.model.content_layers) + list(cfg.model.style_layers)
    if cfg.model.network == "vgg19":
        features = FeatureExtractor("vgg19", cfg.model.pooling, layers, arrays=extractor.arrays)
    else:  # graph check on random arrays: VGG-16's ImageNet weights are not on this machine
        features = FeatureExtractor(cfg.model.network, cfg.model.pooling, layers,
                                    arrays=random_arrays(cfg.model.network))
    stylizer = Stylizer(cfg, features)
    content = photo
    targets = Targets(stylizer.content_targets(content), stylizer.style_grams([painting], [1.0], content.shape[:2]))
    start = stylizer.initial_image(content, None)
    before, terms, _ = stylizer.evaluate(start, targets)
    # L-BFGS-B's first step is a unit-norm probe; a few evaluations let every optimiser move.
    result = stylizer.stylize(content, [painting], iterations=5, multiscale=False)
    after, _, _ = stylizer.evaluate(result.image, targets)
    assert result.image.shape == content.shape and np.isfinite(result.image).all()
    assert math.isfinite(before) and math.isfinite(after) and terms["style"] > 0
    assert result.evaluations <= 5  # the budget is exact (L-BFGS may also stop early when flat)
    assert after < before


def test_presets_command_prints_each_preset_with_its_description():
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    result = CliRunner().invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in result.output.splitlines() if line.strip()}
    for name in PRESETS:
        assert lines[name] == config_mod.preset_path(name).read_text().splitlines()[0][2:].strip()
