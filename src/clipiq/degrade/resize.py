"""MATLAB-compatible bicubic ``imresize`` for torch tensors and numpy arrays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

# MATLAB's bicubic kernel is Keys' cubic convolution with a = -0.5, support [-2, 2].
_CUBIC_A = -0.5
_CUBIC_WIDTH = 4.0
# Guards ceil(scale * size) against round-off, e.g. (1/3) * 255 = 85.00000000000001.
_SIZE_EPS = 1e-9


def _cubic(x: np.ndarray) -> np.ndarray:
    a = _CUBIC_A
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _contributions(
    in_len: int, out_len: int, scale: float, antialias: bool, border: str
) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (0-based) and float64 weights, both (out_len, taps), for one axis as MATLAB computes
    them (its contributions() subfunction)."""
    shrink_aa = scale < 1 and antialias
    width = _CUBIC_WIDTH / scale if shrink_aa else _CUBIC_WIDTH
    out = np.arange(1, out_len + 1, dtype=np.float64)
    # 1-based input coordinate of every output sample centre
    u = out / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    # when shrinking, the kernel is stretched by 1/scale so that it also low-pass filters
    w = scale * _cubic(scale * dist) if shrink_aa else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    idx0 = idx.astype(np.int64) - 1
    if border == "replicate":
        # MATLAB clamps out-of-range indices, which replicates the edge pixels
        cols = np.clip(idx0, 0, in_len - 1)
    else:
        # half-sample symmetric: the sequence 1..n, n..1 repeated
        mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
        cols = mirror[np.mod(idx0, 2 * in_len)]
    keep = np.any(w != 0, axis=0)  # taps that are zero for every output sample do no work
    return np.ascontiguousarray(cols[:, keep]), np.ascontiguousarray(w[:, keep])


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, Sequence) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ValueError(f"{name} must be a number or a pair (height, width), got {value!r}")


def _plan(
    h: int, w: int, scale: float | Sequence[float] | None, size: int | Sequence[int] | None
) -> tuple[tuple[int, float], tuple[int, float]]:
    """Output length and scale factor per axis, as MATLAB derives them."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if scale is not None:
        sh, sw = _pair(scale, "scale")
        if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        oh, ow = math.ceil(sh * h - _SIZE_EPS), math.ceil(sw * w - _SIZE_EPS)
    else:
        oh_f, ow_f = _pair(size, "size")
        oh, ow = int(oh_f), int(ow_f)
        if oh != oh_f or ow != ow_f or oh < 1 or ow < 1:
            raise ValueError(f"size must be positive integers (height, width), got {size!r}")
        sh, sw = oh / h, ow / w
    if oh < 1 or ow < 1:
        raise ValueError(f"scale {scale!r} gives an empty output for input size {h}x{w}")
    return (oh, sh), (ow, sw)


Array = Tensor | np.ndarray


def _round_uint8(x: Array) -> Array:
    # MATLAB rounds half away from zero and saturates when it writes uint8
    if isinstance(x, np.ndarray):
        return np.clip(np.floor(x + 0.5), 0, 255)
    return torch.floor(x + 0.5).clamp_(0, 255)


def _swap_hw(x: Array) -> Array:
    """Contiguous copy with the last two dims swapped."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.swapaxes(x, -1, -2))
    return x.transpose(-1, -2).contiguous()


def _resize_rows(y: Array, cols: np.ndarray, wts: np.ndarray) -> Array:
    """Weighted sum of gathered rows (dim -2), one tap at a time, in MATLAB's summation order.

    Gathering along dim -2 copies whole contiguous rows, far faster than gathering columns.
    """
    if isinstance(y, np.ndarray):
        acc = np.take(y, cols[:, 0], axis=-2) * wts[:, 0:1]
        for k in range(1, cols.shape[1]):
            acc += np.take(y, cols[:, k], axis=-2) * wts[:, k : k + 1]
        return acc
    idx = torch.from_numpy(cols).to(y.device)
    wt = torch.from_numpy(wts).to(device=y.device, dtype=y.dtype)
    acc = y.index_select(-2, idx[:, 0]) * wt[:, 0:1]
    for k in range(1, idx.shape[1]):
        acc = acc.addcmul(y.index_select(-2, idx[:, k]), wt[:, k : k + 1])
    return acc


def _resize(
    x: Array,
    scale: float | Sequence[float] | None,
    size: int | Sequence[int] | None,
    antialias: bool,
    border: str,
    integer: bool,
) -> Array:
    """Resize the last two dims of a (..., H, W) tensor or array in float64 (float32 on MPS).

    Numpy input is processed with numpy (no torch thread pool for these many small passes). With
    `integer`, the values are uint8 levels and every pass is rounded and saturated to uint8 as MATLAB
    does for uint8 images (its intermediate image between the two passes is uint8 too).
    """
    if border not in ("replicate", "symmetric"):
        raise ValueError(f"border must be 'replicate' or 'symmetric', got {border!r}")
    h, w = x.shape[-2:]
    (oh, sh), (ow, sw) = _plan(h, w, scale, size)
    if isinstance(x, np.ndarray):
        y: Array = x.astype(np.float64)
    else:
        y = x.to(torch.float32 if x.device.type == "mps" else torch.float64)
    axes = {-2: _contributions(h, oh, sh, antialias, border), -1: _contributions(w, ow, sw, antialias, border)}
    # MATLAB resizes the axis with the smaller scale first (height on ties); for floats the order does
    # not matter (the two passes are linear and commute), for uint8 it does because of the rounding.
    for dim in (-2, -1) if sh <= sw else (-1, -2):
        y = _swap_hw(_resize_rows(_swap_hw(y), *axes[dim])) if dim == -1 else _resize_rows(y, *axes[dim])
        if integer:
            y = _round_uint8(y)
    return y


def imresize(
    image: Tensor | np.ndarray,
    scale: float | Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    antialias: bool = True,
    border: str = "replicate",
) -> Tensor | np.ndarray:
    """Bicubic resize matching MATLAB ``imresize(I, scale)`` / ``imresize(I, [h w])``.

    Accepts tensors (C,H,W) or (N,C,H,W) and numpy arrays (H,W) or (H,W,C), float or uint8. Floats are
    resized in float64 and returned in the input dtype without clamping (bicubic overshoots, as MATLAB does
    for double images). uint8 input gives uint8 output rounded after each pass, exactly as MATLAB does for
    uint8 images. `border="symmetric"` mirrors instead of replicating edges (BasicSR's port does this).
    """
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"image (numpy) must have shape (H,W) or (H,W,C), got {image.shape}")
        integer = image.dtype == np.uint8
        if not (integer or np.issubdtype(image.dtype, np.floating)):
            raise TypeError(f"image (numpy) must be a float or uint8 array, got dtype {image.dtype}")
        if 0 in image.shape[:2]:
            raise ValueError(f"image (numpy) has an empty spatial size {image.shape}")
        chw = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        out = _resize(chw, scale, size, antialias, border, integer)
        out = out[0] if image.ndim == 2 else np.moveaxis(out, 0, -1)
        return np.ascontiguousarray(out).astype(image.dtype, copy=False)
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}")
    if image.ndim not in (3, 4):
        raise ValueError(f"image must have shape (C,H,W) or (N,C,H,W), got {tuple(image.shape)}")
    integer = image.dtype == torch.uint8
    if not (integer or image.is_floating_point()):
        raise TypeError(f"image must be a floating-point or uint8 tensor, got dtype {image.dtype}")
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"image has an empty spatial size {tuple(image.shape)}")
    return _resize(image, scale, size, antialias, border, integer).to(image.dtype)
