"""Typed errors. Each carries a one-line, user-facing message naming the file and the reason."""
from __future__ import annotations

from pathlib import Path


class NstError(Exception):
    """Base class: the CLI prints it as one line ("Error: ...") and exits with code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TransientError(Exception):
    """A failure that is no property of the input or the settings (a helper process killed from
    outside, for instance): another attempt may well succeed."""


class ConfigError(NstError):
    """A config key is unknown, or a value is out of range: a bad option, as a usage error is."""

    exit_code = 2


class WeightsError(NstError):
    """The VGG weights are missing, truncated or corrupt."""


class InputError(NstError):
    """An input file cannot be used; names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class VideoError(InputError):
    """A video cannot be opened, has no frames, or an unusable frame rate."""
