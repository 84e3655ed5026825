"""Speed features that change no result: bf16 compute, XLA, one trace per image size."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline.core.stylizer import Stylizer
from pipeline.core.types import Targets


@pytest.fixture(scope="module")
def bf16_extractor(extractor):
    from pipeline.core.vgg import FeatureExtractor

    return FeatureExtractor(layers=extractor.layers, precision="bf16", arrays=extractor.arrays)


def make(extractor, precision="fp32", jit=None, **overrides):
    base = {"image.scales": [1.0], "optim.tolerance": 0.0, "optim.precision": precision}
    base.update(overrides)
    return Stylizer(config_mod.load(overrides=base), extractor=extractor, jit_compile=jit)


def test_bf16_convs_really_run_in_bf16(bf16_extractor):
    conv = bf16_extractor.model.get_layer("block1_conv2")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    out = bf16_extractor(np.zeros((1, 32, 32, 3), np.float32))
    assert all(v.dtype == "float32" for v in out.values())  # losses are summed in float32


def test_bf16_loss_and_gradient_match_fp32_on_a_tiny_image(extractor, bf16_extractor, photo, painting):
    # bf16 keeps 8 bits of mantissa (~0.4% per value); over the layers and sums the loss terms of a
    # half-stylized image stay within 3% of fp32 and the gradient points the same way.
    image = np.clip(photo + np.random.default_rng(0).normal(0, 20, photo.shape), 0, 255).astype(np.float32)
    terms, grads = {}, {}
    for name, ex in (("fp32", extractor), ("bf16", bf16_extractor)):
        stylizer = make(ex, name)
        targets = Targets(stylizer.content_targets(photo), stylizer.style_grams([painting], [1.0], photo.shape[:2]))
        _, terms[name], grads[name] = stylizer.evaluate(image, targets)
    for key in ("content", "style"):
        assert np.isfinite(terms["bf16"][key])
        assert abs(terms["bf16"][key] - terms["fp32"][key]) <= 0.03 * terms["fp32"][key], (key, terms)
    a, b = grads["fp32"].ravel(), grads["bf16"].ravel()
    assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.98


def test_bf16_stylize_reaches_the_fp32_loss(extractor, bf16_extractor, photo, painting):
    fp32 = make(extractor, "fp32", **{"optim.iterations": 30}).stylize(photo, [painting])
    bf16 = make(bf16_extractor, "bf16", **{"optim.iterations": 30}).stylize(photo, [painting])
    assert np.isfinite(bf16.image).all()
    assert bf16.final_loss <= 1.10 * fp32.final_loss, (bf16.final_loss, fp32.final_loss)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_second_image_of_the_same_size_reuses_the_trace(extractor, photo, painting, jit, optimizer):
    stylizer = make(extractor, jit=jit, **{"optim.iterations": 3, "optim.optimizer": optimizer})
    first = stylizer.stylize(photo, [painting])
    traces = stylizer.trace_count
    assert traces >= 1
    other = np.ascontiguousarray(photo[::-1, ::-1])  # a different frame, same size, new Gram/content targets
    second = stylizer.stylize(other, [painting[::-1]])
    assert stylizer.trace_count == traces
    assert np.isfinite(first.final_loss) and np.isfinite(second.final_loss)


def test_auto_precision_follows_the_hardware():
    from pipeline.core.vgg import resolve_precision

    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        native_bf16 = any(flag in handle.read() for flag in ("avx512_bf16", "amx_bf16"))
    assert resolve_precision("auto") == ("bf16" if native_bf16 else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
