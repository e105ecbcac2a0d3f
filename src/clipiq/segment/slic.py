"""SLIC superpixels (scikit-image), the offline default segmenter.

Achanta et al., *SLIC Superpixels Compared to State-of-the-Art Superpixel Methods*, TPAMI 2012. k-means in
(L, a, b, x, y) from a regular grid of ``n_segments`` seeds; ``compactness`` trades colour fit for regular
shapes (10 suits Lab); ``sigma`` blurs before clustering (default 0, as scikit-image: a blur turns a
sharp edge into a band of mixed colours that can end up in the region across the edge). Needs scikit-image.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from clipiq.segment.base import Segmenter, check_option

__all__ = ["SlicSegmenter"]


class SlicSegmenter(Segmenter):
    """SLIC on the Lab image with ``start_label=0``; about ``n_segments`` compact regions per image."""

    name: ClassVar[str] = "slic"

    def __init__(self, n_segments: int = 24, compactness: float = 10.0, sigma: float = 0.0, *,
                 min_area: int | float = 0) -> None:
        super().__init__(min_area=min_area)
        self.n_segments = check_option(self.name, "n_segments", n_segments, kind=int, low=1)
        self.compactness = float(check_option(self.name, "compactness", compactness, kind=(int, float), low=0,
                                              low_open=True))
        self.sigma = float(check_option(self.name, "sigma", sigma, kind=(int, float), low=0))

    def segment_one(self, image: Tensor) -> Tensor:
        from skimage.segmentation import slic

        rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
        labels = slic(rgb, n_segments=self.n_segments, compactness=self.compactness, sigma=self.sigma,
                      convert2lab=True, start_label=0, channel_axis=-1)
        return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
