"""Full-reference metrics (PSNR, SSIM) with the conventions of image-restoration papers.

Conventions (as in BasicSR and the MATLAB evaluation scripts used by SR papers):

* Inputs are float tensors (C,H,W) or (N,C,H,W) with values in [0, ``data_range``]; nothing is clamped
  or rounded. Quantise outputs to 8-bit levels yourself before measuring if you want to reproduce
  published tables (``x.mul(255).round().div(255)``), as those are computed on saved uint8 images.
* ``crop_border`` pixels are removed from every side before measuring (papers crop by the SR scale).
* ``y_channel=True`` converts RGB to the luma channel of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` does
  (studio swing, Y in [16/255, 235/255] for [0,1] input) and measures on Y only. Y is kept as float
  (BasicSR's convention); ``quantize_y=True`` rounds it to 8-bit levels, as MATLAB does when
  ``rgb2ycbcr`` is given a uint8 image. The two differ by about 0.01 dB on Set5.
* PSNR is computed per image over all channels and pixels: 10 log10(data_range^2 / MSE); identical
  images give +inf.
* SSIM follows Wang et al. (2004): 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
  'valid' filtering (no padding, so the map is 10 pixels smaller in each dimension), population
  (not sample) statistics, and the mean over the map and over channels for colour images. Unlike
  Wang's original MATLAB code there is no automatic downsampling of large images. This matches
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

All functions are differentiable (except through ``quantize_y``) and keep the input's device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "rgb2ycbcr", "ssim"]

# MATLAB rgb2ycbcr for [0,1] RGB, giving values on the 0..255 scale (ITU-R BT.601 studio swing).
_YCBCR_MATRIX = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_YCBCR_OFFSET = (16.0, 128.0, 128.0)

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_float(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [0, data_range], got dtype {x.dtype}")


def rgb2ycbcr(img: torch.Tensor, y_only: bool = False) -> torch.Tensor:
    """Convert RGB in [0,1], shape (...,3,H,W), to YCbCr in [0,1] exactly as MATLAB's ``rgb2ycbcr``.

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, Cb = (128 - 37.797 R - 74.203 G + 112 B) / 255,
    Cr = (128 + 112 R - 93.786 G - 18.214 B) / 255. Returns (...,3,H,W), or (...,1,H,W) if ``y_only``.
    No rounding is applied.
    """
    _check_float(img, "img")
    if img.ndim < 3 or img.shape[-3] != 3:
        raise ValueError(f"img must have shape (...,3,H,W) with 3 RGB channels, got {tuple(img.shape)}")
    rows = _YCBCR_MATRIX[:1] if y_only else _YCBCR_MATRIX
    offs = _YCBCR_OFFSET[:1] if y_only else _YCBCR_OFFSET
    weight = torch.tensor(rows, dtype=img.dtype, device=img.device) / 255.0
    offset = torch.tensor(offs, dtype=img.dtype, device=img.device) / 255.0
    out = torch.einsum("oc,...chw->...ohw", weight, img)
    return out + offset[:, None, None]


def _prepare(
    a: torch.Tensor,
    b: torch.Tensor,
    crop_border: int,
    y_channel: bool,
    data_range: float,
    quantize_y: bool,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate, batch, compute in >= float32, crop and optionally take Y; returns (a, b, was_single)."""
    _check_float(a, "a")
    _check_float(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"a and b must be (C,H,W) or (N,C,H,W), got shape {tuple(a.shape)}")
    if not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    single = a.ndim == 3
    if single:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    h, w = a.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")
    if a.dtype in (torch.float16, torch.bfloat16):
        # Half precision cannot hold MSEs or SSIM statistics accurately enough.
        a, b = a.float(), b.float()
    if crop_border:
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        if a.shape[1] != 3:
            raise ValueError(f"y_channel=True needs 3-channel RGB inputs, got {a.shape[1]} channels")
        a = rgb2ycbcr(a / data_range, y_only=True)
        b = rgb2ycbcr(b / data_range, y_only=True)
        if quantize_y:
            a = a.mul(255.0).round().div(255.0)
            b = b.mul(255.0).round().div(255.0)
        a, b = a * data_range, b * data_range
    elif quantize_y:
        raise ValueError("quantize_y=True only applies with y_channel=True")
    return a, b, single


def psnr(
    a: torch.Tensor,
    b: torch.Tensor,
    crop_border: int = 0,
    y_channel: bool = False,
    data_range: float = 1.0,
    *,
    quantize_y: bool = False,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: (N,) for (N,C,H,W) inputs, 0-d for (C,H,W).

    See the module docstring for the cropping, Y-channel and quantisation conventions.
    """
    in_dtype = a.dtype if isinstance(a, torch.Tensor) else None
    x, y, single = _prepare(a, b, crop_border, y_channel, data_range, quantize_y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    out = 10.0 * torch.log10(data_range**2 / mse)
    out = out.to(in_dtype)
    return out[0] if single else out


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    half = (_SSIM_WINDOW - 1) / 2.0
    coords = torch.arange(_SSIM_WINDOW, dtype=torch.float64) - half
    g = torch.exp(-(coords**2) / (2.0 * _SSIM_SIGMA**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _ssim_per_channel(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM averaged over the valid map, per channel: (N,C,H,W) -> (N,C)."""
    n, c, h, w = x.shape
    if min(h, w) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} after cropping, got {h}x{w}"
        )
    g = _gaussian_window(x.dtype, x.device)
    # One separable depthwise pass filters all five statistics of every channel at once.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(n * 5 * c, 1, h, w)
    stack = F.conv2d(stack, g.view(1, 1, -1, 1))
    stack = F.conv2d(stack, g.view(1, 1, 1, -1))
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.reshape(n, 5, c, *stack.shape[-2:]).unbind(dim=1)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    cov = e_xy - mu_xy
    ssim_map = ((2.0 * mu_xy + c1) * (2.0 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-2, -1))


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    crop_border: int = 0,
    y_channel: bool = False,
    data_range: float = 1.0,
    *,
    quantize_y: bool = False,
) -> torch.Tensor:
    """Structural similarity (Gaussian 11x11, sigma 1.5, valid filtering), mean over channels.

    Returns (N,) for (N,C,H,W) inputs, 0-d for (C,H,W). See the module docstring for the conventions.
    """
    in_dtype = a.dtype if isinstance(a, torch.Tensor) else None
    x, y, single = _prepare(a, b, crop_border, y_channel, data_range, quantize_y)
    out = _ssim_per_channel(x, y, data_range).mean(dim=1).to(in_dtype)
    return out[0] if single else out

