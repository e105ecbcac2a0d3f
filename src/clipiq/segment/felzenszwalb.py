"""Felzenszwalb-Huttenlocher graph segmentation (scikit-image).

Felzenszwalb and Huttenlocher, *Efficient Graph-Based Image Segmentation*, IJCV 2004. Regions grow along the
pixel graph while the edge between them is weak relative to their internal variation plus ``scale`` / size;
components under ``min_size`` pixels are merged.

scikit-image's defaults (scale 1, min_size 20) give thousands of regions on a photo. Here ``scale`` and
``min_size`` are given for a 500x500 image (defaults 500 and 1500 pixels: tens of regions on a photo) and
scale with the pixel count, so a 1000x1000 image gets 4x both and a similar region count.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from clipiq.segment.base import Segmenter, check_option

__all__ = ["REFERENCE_AREA", "FelzenszwalbSegmenter"]

#: The image area (500x500) that ``scale`` and ``min_size`` are given for.
REFERENCE_AREA = 500 * 500


class FelzenszwalbSegmenter(Segmenter):
    """Felzenszwalb-Huttenlocher on the RGB image; ``scale`` and ``min_size`` are per 500x500 pixels."""

    name: ClassVar[str] = "felzenszwalb"

    def __init__(self, scale: float = 500.0, sigma: float = 0.8, min_size: int = 1500, *,
                 min_area: int | float = 0) -> None:
        super().__init__(min_area=min_area)
        self.scale = float(check_option(self.name, "scale", scale, kind=(int, float), low=0, low_open=True))
        self.sigma = float(check_option(self.name, "sigma", sigma, kind=(int, float), low=0))
        self.min_size = check_option(self.name, "min_size", min_size, kind=int, low=0)

    def segment_one(self, image: Tensor) -> Tensor:
        from skimage.segmentation import felzenszwalb

        h, w = image.shape[-2:]
        factor = h * w / REFERENCE_AREA
        rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
        labels = felzenszwalb(rgb, scale=self.scale * factor, sigma=self.sigma,
                              min_size=max(1, round(self.min_size * factor)), channel_axis=-1)
        return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
