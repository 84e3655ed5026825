"""Loss terms, pure TensorFlow. Images are RGB in [0, 255]; features come from vgg.FeatureExtractor.

Normalisations (``loss.content_normalization`` / ``loss.style_normalization``):
- ``relative`` (default): squared error divided by the target's squared norm. Free of image size,
  layer width and activation scale, so one set of weights behaves alike at 256 px and 1024 px
  and across layers. This departs from Gatys et al., whose sums grow with the image.
- ``mean``: mean squared error (Grams divided by the number of positions).
- ``half_sum``: 1/2 sum (F - P)^2, content only (Gatys et al. 2015, eq. 1).
- ``four_nhwc``: 1/(4 nH nW nC) sum (a_C - a_G)^2, content only (deeplearning.ai formulation).
- ``four_n2m2``: 1/(4 N^2 M^2) sum (G - A)^2 with raw Grams, style only (Gatys et al. eq. 4).
"""
from __future__ import annotations

from pipeline.tfsetup import tf

EPS = 1e-8


def gram(features: tf.Tensor, normalization: str = "relative") -> tf.Tensor:
    """Gram matrices [B, C, C]; divided by the number of positions except for four_n2m2."""
    shape = tf.shape(features)
    flat = tf.reshape(features, [shape[0], shape[1] * shape[2], shape[3]])
    raw = tf.matmul(flat, flat, transpose_a=True)
    if normalization == "four_n2m2":
        return raw
    return raw / tf.cast(shape[1] * shape[2], features.dtype)


def style_layer_loss(features: tf.Tensor, target_gram: tf.Tensor, normalization: str) -> tf.Tensor:
    current = gram(features, normalization)
    diff = tf.reduce_sum(tf.square(current - target_gram))
    if normalization == "relative":
        return diff / (tf.reduce_sum(tf.square(target_gram)) + EPS)
    if normalization == "mean":
        return diff / tf.cast(tf.size(target_gram), diff.dtype)
    if normalization == "four_n2m2":
        shape = tf.shape(features)
        n = tf.cast(shape[3], diff.dtype)
        m = tf.cast(shape[1] * shape[2], diff.dtype)
        return diff / (4.0 * n * n * m * m)
    raise ValueError(f"unknown style normalization {normalization!r}")


def content_layer_loss(features: tf.Tensor, target: tf.Tensor, normalization: str) -> tf.Tensor:
    diff = tf.reduce_sum(tf.square(features - target))
    if normalization == "relative":
        return diff / (tf.reduce_sum(tf.square(target)) + EPS)
    if normalization == "mean":
        return diff / tf.cast(tf.size(target), diff.dtype)
    if normalization == "half_sum":
        return 0.5 * diff
    if normalization == "four_nhwc":
        return diff / (4.0 * tf.cast(tf.size(target), diff.dtype))
    raise ValueError(f"unknown content normalization {normalization!r}")


def total_variation(image: tf.Tensor) -> tf.Tensor:
    """Mean squared difference of neighbouring pixels, in [0, 1] units (size-independent)."""
    scaled = image / 255.0
    dy = scaled[:, 1:, :, :] - scaled[:, :-1, :, :]
    dx = scaled[:, :, 1:, :] - scaled[:, :, :-1, :]
    return tf.reduce_mean(tf.square(dy)) + tf.reduce_mean(tf.square(dx))


def temporal_loss(image: tf.Tensor, warped_previous: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """(1/D) sum c (x - warped_prev)^2 in [0, 1] units (Ruder et al. 2016, eq. 7).

    Computed on the live image tensor so its gradient flows into the pixels being optimised.
    """
    diff = (image - warped_previous) / 255.0
    return tf.reduce_mean(mask * tf.square(diff))
