"""Loss terms, pure TensorFlow. Images are RGB in [0, 255]; features come from vgg.FeatureExtractor.

Normalisations (``loss.content_normalization`` / ``loss.style_normalization``):
- ``relative`` (default): squared error divided by the target's squared norm. Free of image size,
  layer width and activation scale, so one set of weights behaves alike at 256 px and 1024 px
  and across layers. This departs from Gatys et al., whose sums grow with the image.
- ``mean``: mean squared error (Grams divided by the number of positions).
- ``half_sum``: 1/2 sum (F - P)^2, content only (Gatys et al. 2015, eq. 1).
- ``four_nhwc``: 1/(4 nH nW nC) sum (a_C - a_G)^2, content only (deeplearning.ai formulation).
- ``four_n2m2``: 1/(4 N^2 M^2) sum (G - A)^2, style only (Gatys et al. eq. 4). Both Grams are taken
  per position first (G/M), which equals the paper's raw-Gram form when the style and the generated
  image have the same number of positions M, and stays right when they do not (another aspect
  ratio, or ``image.style_scale`` != 1), where raw Grams would be off by M_style / M_generated.

Total variation (``loss.tv_form``):
- ``mean_sq`` (default): mean squared neighbour difference in [0, 1] units, size-independent.
- ``sum_pow125``: sum ((dx^2 + dy^2) ^ 1.25) in [0, 255] units, the Keras example's form
  (used by the Harish Narayanan article), which grows with the image.
"""
from __future__ import annotations

from pipeline.core.tfsetup import tf

EPS = 1e-8


def gram(features: tf.Tensor, normalization: str = "relative") -> tf.Tensor:
    """Gram matrices [B, C, C] divided by the number of positions (see four_n2m2 above)."""
    shape = tf.shape(features)
    flat = tf.reshape(features, [shape[0], shape[1] * shape[2], shape[3]])
    raw = tf.matmul(flat, flat, transpose_a=True)
    if normalization == "raw":
        return raw
    return raw / tf.cast(shape[1] * shape[2], features.dtype)


def _gram_distance(current: tf.Tensor, target: tf.Tensor, channels: tf.Tensor, normalization: str,
                   axis: list[int] | None = None) -> tf.Tensor:
    """Squared distance between Gram matrices (over ``axis``, else all), normalised as configured."""
    diff = tf.reduce_sum(tf.square(current - target), axis=axis)
    if normalization == "relative":
        return diff / (tf.reduce_sum(tf.square(target), axis=axis) + EPS)
    n = tf.cast(channels, diff.dtype)
    if normalization == "mean":
        return diff / (n * n)  # the number of entries of one C x C Gram
    if normalization == "four_n2m2":
        # sum((G/M - A/M)^2) / (4 N^2) == sum((G - A)^2) / (4 N^2 M^2) for matching M.
        return diff / (4.0 * n * n)
    raise ValueError(f"unknown style normalization {normalization!r}")


def style_layer_loss(features: tf.Tensor, target_gram: tf.Tensor, normalization: str) -> tf.Tensor:
    return _gram_distance(gram(features, normalization), target_gram, tf.shape(features)[3], normalization)


def masked_gram(features: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """Per-mask Gram matrices [S, C, C] of one image's features [1, H, W, C] under masks [S, H, W, 1].

    sum_p m(p) F_p F_p^T / sum_p m(p): the mean outer product over the masked positions, so it
    compares with a whole style's Gram (divided by its positions) whatever the mask's area. The
    mask weighs each position once (not m^2, as multiplying the features by the mask before a
    plain Gram would), so a soft edge blends the two neighbouring styles linearly.
    """
    shape = tf.shape(features)
    masks = tf.cast(masks, features.dtype)
    flat = tf.reshape(features, [1, shape[1] * shape[2], shape[3]])
    weighted = tf.reshape(features * masks, [-1, shape[1] * shape[2], shape[3]])
    raw = tf.matmul(weighted, flat, transpose_a=True)
    area = tf.reduce_sum(masks, axis=[1, 2, 3])
    return raw / (area[:, None, None] + EPS)


def masked_style_layer_loss(features: tf.Tensor, masks: tf.Tensor, target_grams: tf.Tensor, shares: tf.Tensor,
                            normalization: str) -> tf.Tensor:
    """sum_s shares[s] * distance(masked Gram s, target s): each style judged only where its mask is.

    Targets [S, C, C] are each style's own Gram (not a blend): under a mask the generated texture
    has to match that one style, so two styles meet at the mask's edge instead of mixing.
    """
    per_style = _gram_distance(masked_gram(features, masks), target_grams, tf.shape(features)[3], normalization,
                               axis=[1, 2])
    return tf.reduce_sum(tf.cast(shares, per_style.dtype) * per_style)


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


def total_variation(image: tf.Tensor, form: str = "mean_sq") -> tf.Tensor:
    """Mean squared difference of neighbouring pixels in [0, 1] units, or the Keras example's form."""
    if form == "sum_pow125":
        dy = image[:, :-1, :-1, :] - image[:, 1:, :-1, :]
        dx = image[:, :-1, :-1, :] - image[:, :-1, 1:, :]
        return tf.reduce_sum(tf.pow(tf.square(dx) + tf.square(dy) + 1e-12, 1.25))
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
