"""Preprocessing bound to a model's config: normalisation, resizing views and patch grids."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clipiq.clip.config import PreprocessConfig
from clipiq.core.image import check_image_batch, pil_to_tensor

ResizeMode = Literal["center_crop", "resize", "shortest", "native"]
RESIZE_MODES: tuple[str, ...] = ("center_crop", "resize", "shortest", "native")


class Preprocess:
    """Turns [0,1] RGB images into normalised model input; built from the weights' PreprocessConfig."""

    def __init__(self, cfg: PreprocessConfig, patch_size: int = 1):
        self.cfg = cfg
        self.patch_size = patch_size
        self.image_size = cfg.image_size
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
        """
        x = check_image_batch(x, check_range=False)
        s = size or self.image_size
        h, w = x.shape[-2:]
        if mode == "resize":
            return self._interp(x, (s, s))
        if mode in ("center_crop", "shortest"):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = self._interp(x, (nh, nw))
            if mode == "shortest":
                return _crop_to_multiple(x, self.patch_size)
            top, left = (nh - s) // 2, (nw - s) // 2
            return x[..., top : top + s, left : left + s]
        if mode == "native":
            return _crop_to_multiple(x, self.patch_size)
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")

    def prepare(self, x: Tensor, mode: ResizeMode = "center_crop", size: int | None = None) -> Tensor:
        """A [0,1] batch -> resized and normalised model input."""
        return self.normalize(self.resize(x, mode, size))

    def patches(self, x: Tensor, size: int | None = None, stride: int | None = None) -> Tensor:
        """Every size x size patch on a stride grid that reaches the borders: (N,3,H,W) -> (N,P,3,s,s)."""
        x = check_image_batch(x, check_range=False)
        s = size or self.image_size
        stride = stride or s
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        h, w = x.shape[-2:]
        if h < s or w < s:
            # Small images are upscaled so one patch covers them, rather than padded with black.
            scale = s / min(h, w)
            x = self._interp(x, (max(s, math.ceil(h * scale)), max(s, math.ceil(w * scale))))
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
    """Resize a [0,1] batch (N,3,H,W) to ``size``, antialiased when shrinking, clamped back to [0,1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
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


__all__ = ["Preprocess", "RESIZE_MODES", "grid_count", "interpolate"]
