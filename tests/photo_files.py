"""Made-up photos on disk for tests of training and restoration (smooth colour fields, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, n: int = 4, size: int = 40, seed: int = 0, grid: int = 6) -> Path:
    """``n`` smooth random colour photos ``p0.png``.. of ``size`` px (a ``grid``^2 field upsampled) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(folder / f"p{i}.png")
    return folder
