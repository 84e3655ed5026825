"""Shared fixtures: real VGG-19 weights loaded once, tiny real images, tmp folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def shared_image(name: str) -> Path:
    path = SHARED_IMAGES / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def extractor():
    from pipeline.core.vgg import FeatureExtractor

    return FeatureExtractor(layers=["block1_conv1", "block2_conv1", "block2_conv2", "block3_conv1",
                                    "block4_conv1", "block4_conv2", "block5_conv1"])


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (scikit-image's coffee), 64 px on the long side."""
    import skimage.data

    from pipeline.core.arrays import fit_longest, resize

    image = skimage.data.coffee().astype(np.float32)
    return resize(image, fit_longest(image, 64))


@pytest.fixture(scope="session")
def painting() -> np.ndarray:
    from pipeline.batch.demo import swirl_painting

    return swirl_painting(128)


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)
    return path
