"""Preprocessing bound to a model's config: normalisation, resizing views and patch grids.

Every view is bounded whatever the input: an image more elongated than :data:`MAX_ASPECT_RATIO` is refused
(resizing its shorter side to the model's input would blow the longer side up, a 1x100000 sliver to
224x22400000), and no single resized view may exceed :data:`MAX_RESIZED_PIXELS`. Both are checked before
anything is allocated, with an error that says which limit and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clipiq.clip.config import PreprocessConfig
from clipiq.core.image import check_image_batch, pil_to_tensor

ResizeMode = Literal["center_crop", "resize", "shortest", "native"]
RESIZE_MODES: tuple[str, ...] = ("center_crop", "resize", "shortest", "native")

#: The longest side may be at most this many times the shortest (20 admits 1:20 panoramas and strips).
#: More elongated images are refused by every view: fitting the shorter side to the model's input would
#: multiply the longer side (memory grows with the ratio), and squashing them is no view of the image.
MAX_ASPECT_RATIO = 20.0

#: The most pixels one resized view may have, 4096 x 4096 (about 200 MB as float32), checked before
#: resizing. With MAX_ASPECT_RATIO, a shorter side fitted to a 224 (336) input gives at most 1M (2.3M) pixels,
#: so this binds only views asked for at very large sizes, and the ``native`` view of very large images.
MAX_RESIZED_PIXELS = 4096 * 4096


def check_aspect_ratio(height: int, width: int, limit: float = MAX_ASPECT_RATIO) -> None:
    """Refuse (ValueError, saying why) an image whose longer side is more than ``limit`` times its shorter."""
    long, short = max(height, width), min(height, width)
    if short < 1 or long > limit * short:
        ratio = f"1:{long / short:.1f}".removesuffix(".0") if short >= 1 else "degenerate"
        raise ValueError(f"image is {width}x{height} pixels, aspect ratio {ratio}, beyond the limit of 1:{limit:g} "
                         "(MAX_ASPECT_RATIO): so elongated an image would be blown up or squashed to fit the model")


def check_resized_pixels(height: int, width: int, limit: int = MAX_RESIZED_PIXELS) -> None:
    """Refuse (ValueError) a resized view of more than ``limit`` pixels before it is allocated."""
    if height * width > limit:
        raise ValueError(f"a view of {width}x{height} = {width * height} pixels is above the limit of {limit} "
                         "pixels for one resized view (MAX_RESIZED_PIXELS)")


def shorter_side_to(height: int, width: int, side: int, rounding: Callable[[float], int] = round,
                    max_aspect_ratio: float = MAX_ASPECT_RATIO) -> tuple[int, int]:
    """(H, W) with the shorter side at ``side`` and the aspect ratio kept; refuses images beyond the limits."""
    check_aspect_ratio(height, width, max_aspect_ratio)
    scale = side / min(height, width)
    size = max(side, rounding(height * scale)), max(side, rounding(width * scale))
    check_resized_pixels(*size)
    return size


def longer_side_at_most(height: int, width: int, side: int) -> tuple[int, int]:
    """(H, W) scaled so the longer side is at most ``side`` pixels, the aspect ratio kept (never enlarged)."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_to(x: Tensor, side: int | None, mode: str = "bicubic") -> Tensor:
    """A batch (N,3,H,W) resized by :func:`interpolate` so its longer side is at most ``side`` (None or 0: as is)."""
    return interpolate(x, longer_side_at_most(*x.shape[-2:], side), mode) if side else x


class Preprocess:
    """Turns [0,1] RGB images into normalised model input; built from the weights' PreprocessConfig."""

    def __init__(self, cfg: PreprocessConfig, patch_size: int = 1):
        self.cfg = cfg
        self.patch_size = patch_size
        self.image_size = cfg.image_size
        #: Per-instance limit (default :data:`MAX_ASPECT_RATIO`): set it to score more elongated images.
        self.max_aspect_ratio = MAX_ASPECT_RATIO
        self._mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.std).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        c = self.cfg
        return f"Preprocess(size={c.image_size}, interpolation={c.interpolation}, mean={c.mean}, std={c.std})"

    def normalize(self, x: Tensor) -> Tensor:
        """(N,3,H,W) in [0,1] -> normalised with the model's mean and std (same device and dtype)."""
        x = check_image_batch(x, check_range=False)
        return (x - self._mean.to(x.device, x.dtype)) / self._std.to(x.device, x.dtype)

    def _interp(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return interpolate(x, size, self.cfg.interpolation)

    def resize(self, x: Tensor, mode: ResizeMode = "center_crop", size: int | None = None) -> Tensor:
        """Produce one view of a [0,1] batch.

        ``center_crop``: shortest side to ``size`` then a centre crop (CLIP's own preprocessing);
        ``resize``: the whole image squashed to size x size (no content lost, aspect changed);
        ``shortest``: shortest side to ``size``, aspect kept (position embeddings get interpolated);
        ``native``: no resizing, cropped down to a multiple of the patch size.

        Every mode refuses images beyond ``max_aspect_ratio`` and views above :data:`MAX_RESIZED_PIXELS`.
        """
        x = check_image_batch(x, check_range=False)
        s = size or self.image_size
        h, w = x.shape[-2:]
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")
        check_aspect_ratio(h, w, self.max_aspect_ratio)
        if mode == "resize":
            return self._interp(x, (s, s))
        if mode == "native":
            check_resized_pixels(h, w)
            return _crop_to_multiple(x, self.patch_size)
        nh, nw = shorter_side_to(h, w, s, max_aspect_ratio=self.max_aspect_ratio)
        x = self._interp(x, (nh, nw))
        if mode == "shortest":
            return _crop_to_multiple(x, self.patch_size)
        top, left = (nh - s) // 2, (nw - s) // 2
        return x[..., top : top + s, left : left + s]

    def prepare(self, x: Tensor, mode: ResizeMode = "center_crop", size: int | None = None) -> Tensor:
        """A [0,1] batch -> resized and normalised model input."""
        return self.normalize(self.resize(x, mode, size))

    def patch_canvas(self, height: int, width: int, size: int | None = None) -> tuple[int, int]:
        """The (H, W) that :meth:`patches` cuts: the image's own, or upscaled so one patch covers its shorter side.

        Refuses images beyond ``max_aspect_ratio``, so the upscaled canvas stays bounded.
        """
        s = size or self.image_size
        check_aspect_ratio(height, width, self.max_aspect_ratio)
        if height >= s and width >= s:
            return height, width
        # Small images are upscaled so one patch covers them, rather than padded with black.
        return shorter_side_to(height, width, s, math.ceil, self.max_aspect_ratio)

    def patches(self, x: Tensor, size: int | None = None, stride: int | None = None) -> Tensor:
        """Every size x size patch on a stride grid that reaches the borders: (N,3,H,W) -> (N,P,3,s,s)."""
        x = check_image_batch(x, check_range=False)
        s = size or self.image_size
        stride = stride or s
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        x = self._interp(x, self.patch_canvas(*x.shape[-2:], s))
        h, w = x.shape[-2:]
        ys = _grid_positions(h, s, stride)
        xs = _grid_positions(w, s, stride)
        tiles = [x[:, :, y : y + s, xx : xx + s] for y in ys for xx in xs]
        return torch.stack(tiles, dim=1)

    def __call__(self, image: Image.Image | Tensor) -> Tensor:
        """CLIP's standard transform on one PIL image or (3,H,W) tensor: resize, centre crop, normalise."""
        x = pil_to_tensor(image) if isinstance(image, Image.Image) else image
        return self.prepare(x, "center_crop")[0]


def interpolate(x: Tensor, size: tuple[int, int], mode: str = "bicubic") -> Tensor:
    """Resize a [0,1] batch (N,3,H,W) to ``size``, antialiased when shrinking, clamped back to [0,1].

    Refuses (ValueError) a ``size`` above :data:`MAX_RESIZED_PIXELS` before allocating it.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    check_resized_pixels(*size)
    aa = mode in ("bilinear", "bicubic") and (size[0] < x.shape[-2] or size[1] < x.shape[-1])
    out = F.interpolate(x, size=size, mode=mode, align_corners=False if mode != "nearest" else None, antialias=aa)
    return out.clamp_(0, 1)


def _crop_to_multiple(x: Tensor, p: int) -> Tensor:
    h, w = x.shape[-2:]
    hh, ww = max(p, h - h % p), max(p, w - w % p)
    top, left = (h - hh) // 2, (w - ww) // 2
    return x[..., top : top + hh, left : left + ww]


def _grid_positions(length: int, size: int, stride: int) -> list[int]:
    pos = list(range(0, length - size + 1, stride))
    if pos[-1] != length - size:
        pos.append(length - size)
    return pos


def grid_count(length: int, size: int, stride: int) -> int:
    """How many patch positions ``Preprocess.patches`` takes along one side."""
    return len(_grid_positions(length, size, stride)) if length >= size else 1


__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_RESIZED_PIXELS",
    "Preprocess",
    "RESIZE_MODES",
    "check_aspect_ratio",
    "check_resized_pixels",
    "grid_count",
    "interpolate",
    "longer_side_at_most",
    "shorter_side_to",
    "shrink_to",
]
