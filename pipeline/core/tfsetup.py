"""Imports TensorFlow once, quietly: its C++ start-up lines (oneDNN notice, CUDA probing on
machines without a GPU) go to file descriptor 2 before any Python logging exists, and they
would bury nst's own one-line messages. NST_TF_VERBOSE=1 keeps them."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextmanager
def _silenced_fd2() -> Iterator[None]:
    if os.environ.get("NST_TF_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _silenced_fd2():
    import tensorflow as tf

    tf.config.list_physical_devices()  # CUDA probing happens here, once
    try:  # GPUs: grow memory as needed instead of taking it all (several workers may share a node)
        for _gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(_gpu, True)
    except RuntimeError:  # already initialised by the caller
        pass

__all__ = ["tf"]
