"""Files in and out: images, video decoding and encoding, cut detection, background threads,
atomic writes. No TensorFlow.
"""
