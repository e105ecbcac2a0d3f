"""Image tensors: the one validator every entry point uses, and the constants they share."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

# Values a hair outside [0,1] come from float round-off upstream (resampling, colour conversion);
# anything beyond this is a real error.
RANGE_TOLERANCE = 1e-3

# Rec. 601 luma weights, as used by PIL and torchvision for grey conversion.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def check_image_batch(x: object, name: str = "images", *, check_range: bool = True) -> Tensor:
    """Validate a float RGB image (3,H,W) or batch (N,3,H,W) in [0,1]; returns the batch (N,3,H,W).

    Errors name the input (``name``) and say what is wrong: type, shape, channels, dtype, emptiness or range.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (3,H,W) or (N,3,H,W), got shape {tuple(x.shape)}")
    if x.shape[-3] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels: shape (3,H,W) or (N,3,H,W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (floating-point dtype) in [0,1], got dtype {x.dtype} "
                         "(divide uint8 images by 255)")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if check_range:
        det = x.detach()
        lo, hi = float(det.min()), float(det.max())
        if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
            raise ValueError(f"{name} contains NaN or infinite values; values must lie in [0,1]")
        if not (lo >= -RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE):
            raise ValueError(f"{name} values must lie in [0,1], got min {lo:.4g} and max {hi:.4g}")
    return x.unsqueeze(0) if x.ndim == 3 else x


def working_batch(image: object, name: str = "image") -> tuple[Tensor, bool]:
    """Validate an image or batch and return it as a float32 (float64 stays float64) batch, and whether it was single.

    Image operations (degradations, dehazers) compute in this working precision and hand the result to
    :func:`finish_batch`, which restores the caller's shape and dtype.
    """
    x = check_image_batch(image, name)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(dtype), image.ndim == 3  # type: ignore[union-attr]


def finish_batch(y: Tensor, like: Tensor, single: bool) -> Tensor:
    """Clamp to [0,1], restore ``like``'s dtype and drop the batch dimension :func:`working_batch` added."""
    y = y.clamp(0.0, 1.0).to(like.dtype)
    return y[0] if single else y


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad (N,C,H,W) at the bottom and right so H and W are multiples of ``multiple`` (reflect, else replicate)."""
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    # Reflection mirrors real content (texture, blur, noise: no flat band a network or CLIP would read as an
    # edge or as blur), but it cannot pad by as much as the side it mirrors; tiny images fall back to replication.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def pil_to_tensor(im: Image.Image) -> Tensor:
    """A PIL image as a float tensor (3,H,W) in [0,1]."""
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


__all__ = [
    "LUMA_WEIGHTS",
    "RANGE_TOLERANCE",
    "check_image_batch",
    "finish_batch",
    "pad_to_multiple",
    "pil_to_tensor",
    "working_batch",
]
