"""The segmenter interface: an RGB image in, a partition of its pixels into K regions out.

A :class:`Segmenter` takes a [0,1] float tensor (3,H,W) or batch (N,3,H,W) and returns int64 label maps (H,W)
or (N,H,W). Every pixel carries a label, the labels of each image are exactly 0..K-1 (consecutive, no gaps),
and with ``min_area`` no region is smaller than that many pixels (unless the image itself is). Subclasses
implement :meth:`Segmenter.segment_one` on one image; the base validates the input, applies ``min_area`` and
relabels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from clipiq.core.errors import ConfigError
from clipiq.core.image import check_image_batch
from clipiq.segment.regions import merge_small_regions, relabel_consecutive

__all__ = ["Segmenter", "check_option", "resolve_min_area"]


def check_option(segmenter: str, option: str, value: Any, *, kind: type | tuple[type, ...],
                 low: float | None = None, high: float | None = None, low_open: bool = False) -> Any:
    """Check one option's type and range; raise ConfigError naming the segmenter, the option and the value."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"segmenter {segmenter}: option {option} must be {names}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"segmenter {segmenter}: option {option} must be {'>' if low_open else '>='} {low}, "
                          f"got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"segmenter {segmenter}: option {option} must be <= {high}, got {value!r}")
    return value


def resolve_min_area(min_area: int | float, height: int, width: int) -> int:
    """``min_area`` in pixels: an int is pixels, a float in (0,1) a fraction of the image area."""
    if isinstance(min_area, float) and 0.0 < min_area < 1.0:
        return max(1, round(min_area * height * width))
    return int(min_area)


class Segmenter:
    """Base of the region segmenters: ``segmenter(image)`` -> int64 labels 0..K-1 covering every pixel.

    ``min_area``: regions smaller than this are merged into the neighbour they share the longest border with
    (an int is pixels, a float in (0,1) a fraction of the image area; 0 keeps every region).
    """

    #: The registry name, set by :func:`clipiq.segment.create_segmenter`.
    name: ClassVar[str] = "segmenter"

    def __init__(self, *, min_area: int | float = 0) -> None:
        check_option(self.name, "min_area", min_area, kind=(int, float), low=0)
        if isinstance(min_area, float) and min_area >= 1.0 and not min_area.is_integer():
            raise ConfigError(f"segmenter {self.name}: option min_area must be an int (pixels) or a float in "
                              f"(0,1) (fraction of the image), got {min_area!r}")
        self.min_area = min_area

    def segment_one(self, image: Tensor) -> Tensor:
        """Labels (H,W) for one float32 image (3,H,W) in [0,1]: any integers, every pixel labelled."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, image: Tensor) -> Tensor:
        """Label maps for an image (3,H,W) -> (H,W) or a batch (N,3,H,W) -> (N,H,W), int64 0..K-1 per image."""
        batch = check_image_batch(image, "image")
        out = torch.empty((batch.shape[0], *batch.shape[-2:]), dtype=torch.int64)
        for i, one in enumerate(batch.detach().to("cpu", torch.float32).clamp(0.0, 1.0)):
            labels = self.segment_one(one)
            if labels.shape != one.shape[-2:]:
                raise RuntimeError(f"segmenter {self.name} returned labels of shape {tuple(labels.shape)} for an "
                                   f"image of size {tuple(one.shape[-2:])}")
            labels = relabel_consecutive(labels.to("cpu", torch.int64))
            area = resolve_min_area(self.min_area, *one.shape[-2:])
            if area > 1:
                labels = merge_small_regions(labels, area)
            out[i] = labels
        return out[0] if image.ndim == 3 else out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"
