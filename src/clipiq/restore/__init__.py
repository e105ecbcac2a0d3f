"""Restoration methods; for now the classic dehazers used to make synthetic dehazed-image data."""

from clipiq.restore.dehaze import (
    DEHAZERS,
    contrast_stretch,
    dark_channel_prior,
    dehaze,
    gamma_restore,
    guided_filter,
)

__all__ = [
    "DEHAZERS",
    "contrast_stretch",
    "dark_channel_prior",
    "dehaze",
    "gamma_restore",
    "guided_filter",
]
