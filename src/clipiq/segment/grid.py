"""A fixed grid of rows x cols rectangles: the baseline segmenter that ignores the content."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from clipiq.segment.base import Segmenter, check_option

__all__ = ["GridSegmenter", "grid_labels"]


def grid_labels(height: int, width: int, rows: int, cols: int) -> Tensor:
    """Labels (H,W) of a rows x cols grid, row-major (label r * cols + c).

    Row r covers pixels y with floor(y * rows / H) == r, so when H is not a multiple of rows the rows differ
    by at most one pixel; likewise for columns. More rows than pixels leaves some labels unused.
    """
    ry = torch.div(torch.arange(height) * rows, height, rounding_mode="floor")
    cx = torch.div(torch.arange(width) * cols, width, rounding_mode="floor")
    return ry[:, None] * cols + cx[None, :]


class GridSegmenter(Segmenter):
    """``rows`` x ``cols`` near-equal rectangles (default 2x2), labelled row-major."""

    name: ClassVar[str] = "grid"

    def __init__(self, rows: int = 2, cols: int = 2, *, min_area: int | float = 0) -> None:
        super().__init__(min_area=min_area)
        self.rows = check_option(self.name, "rows", rows, kind=int, low=1)
        self.cols = check_option(self.name, "cols", cols, kind=int, low=1)

    def segment_one(self, image: Tensor) -> Tensor:
        return grid_labels(*image.shape[-2:], self.rows, self.cols)
