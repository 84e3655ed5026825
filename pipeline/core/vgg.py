"""VGG feature extractor: Keras 3 application graph filled with ImageNet weights.

Input is RGB in [0, 255]; the "caffe" preprocessing of these weights (RGB to BGR, minus the
ImageNet mean) happens inside the graph, so callers never see preprocessed pixels. The graph
stops at the deepest layer a loss needs: nothing past conv5_1 is computed for the defaults.
"""
from __future__ import annotations

import logging

import keras
import numpy as np

from pipeline.config import canonical_layer
from pipeline.core.tfsetup import tf
from pipeline.core.weights import WeightsSource, conv_layers, load_arrays

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
PRECISION_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def resolve_precision(precision: str) -> str:
    """"auto": bf16 where the hardware computes it natively, else fp32.

    bf16 convolutions are 1.6-2x faster than fp32 on CPUs with AVX-512 BF16 or AMX and on GPUs of
    compute capability 8.0+, with style and content distances within a few percent; elsewhere
    they are emulated and slower, so fp32 stays.
    """
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return "bf16" if tuple(details.get("compute_capability", (0, 0))) >= (8, 0) else "fp32"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return "fp32"
    return "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "fp32"


def build_application(network: str) -> keras.Model:
    """The stock Keras application (no top, no weights) whose layers receive the ImageNet weights."""
    app = {"vgg19": keras.applications.VGG19, "vgg16": keras.applications.VGG16}[network]
    return app(include_top=False, weights=None, input_shape=(None, None, 3))


def fill_weights(model: keras.Model, arrays: dict[str, np.ndarray], network: str) -> None:
    for name, _, _ in conv_layers(network):
        model.get_layer(name).set_weights([arrays[f"{name}/kernel"], arrays[f"{name}/bias"]])


class FeatureExtractor:
    """Maps an RGB [0, 255] batch to the activations of the requested conv layers (after ReLU)."""

    def __init__(self, network: str = "vgg19", pooling: str = "max", layers: list[str] | None = None,
                 precision: str = "fp32", arrays: dict[str, np.ndarray] | None = None,
                 allow_download: bool = True) -> None:
        self.network, self.pooling, self.precision = network, pooling, resolve_precision(precision)
        self.source: WeightsSource | None = None
        if arrays is None:
            arrays, self.source = load_arrays(network, allow_download)
        self.arrays = arrays
        all_names = [name for name, _, _ in conv_layers(network)]
        wanted = [canonical_layer(n) for n in (layers or all_names)]
        self.layers = list(dict.fromkeys(wanted))
        self.model = self._build(all_names, max(all_names.index(n) for n in self.layers))

    def _build(self, all_names: list[str], deepest: int) -> keras.Model:
        app = build_application(self.network)
        fill_weights(app, self.arrays, self.network)
        policy = keras.mixed_precision.DTypePolicy(PRECISION_POLICIES[self.precision])
        inputs = keras.Input(shape=(None, None, 3), dtype="float32")
        mean = tf.constant(IMAGENET_MEAN_BGR, tf.float32)
        x = keras.layers.Lambda(lambda t: tf.reverse(t, axis=[-1]) - mean, name="caffe_preprocess")(inputs)
        outputs = {}
        for layer in app.layers[1:]:
            if isinstance(layer, keras.layers.Conv2D):
                if all_names.index(layer.name) > deepest:
                    break
                conv = keras.layers.Conv2D(layer.filters, 3, padding="same", activation="relu",
                                           name=layer.name, dtype=policy)
                x = conv(x)
                conv.set_weights(layer.get_weights())
                if layer.name in self.layers:
                    outputs[layer.name] = keras.layers.Activation("linear", dtype="float32",
                                                                  name=f"{layer.name}_f32")(x)
            elif isinstance(layer, keras.layers.MaxPooling2D):
                pool = keras.layers.MaxPooling2D if self.pooling == "max" else keras.layers.AveragePooling2D
                x = pool(2, 2, name=layer.name, dtype=policy)(x)
        return keras.Model(inputs, outputs, name=f"{self.network}_features")

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.model(images, training=False)
