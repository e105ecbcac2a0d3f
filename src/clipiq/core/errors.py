"""Every error clipiq raises on purpose derives from ``ClipIQError``.

The concrete classes also derive from the built-in type a caller would expect (``ValueError`` for bad
input, ``KeyError`` for an unknown name, ``RuntimeError`` for an unavailable resource), so ``except
ValueError`` keeps working while ``except ClipIQError`` catches everything clipiq reports.
"""

from __future__ import annotations

import os


class ClipIQError(Exception):
    """Root of clipiq's errors: the message names the input and what is wrong with it."""


class ConfigError(ClipIQError, ValueError):
    """A config file, override or option is malformed; names the file, key or override."""


class UnknownNameError(ClipIQError, KeyError, ValueError):
    """A name is not in a registry; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(ClipIQError, ValueError):
    """A checkpoint is missing, unreadable, for another method or architecture, or for another backbone."""


class ImageLoadError(ClipIQError, ValueError):
    """An image file could not be decoded; carries the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(ClipIQError, RuntimeError):
    """A pretrained weights file is unavailable or failed its checksum."""


__all__ = ["CheckpointError", "ClipIQError", "ConfigError", "ImageLoadError", "UnknownNameError", "WeightsError"]
