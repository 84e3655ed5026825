"""nst: batch Gatys style transfer for videos and photo archives."""

__version__ = "0.1.0"
