"""The degradation operations with explicit parameters.

Every function takes a float image (3,H,W) or batch (N,3,H,W) in [0,1] and returns a tensor of the same
shape, dtype and device, clamped to [0,1]. Random operations take a `seed`; image i of a batch gets its
own stream derived from (seed, i), so image 0 of a batch matches the same image processed alone.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clipiq.core.image import finish_batch, working_batch
from clipiq.degrade._common import (
    fft_filter,
    gaussian_kernel1d,
    image_rngs,
    linear_to_srgb,
    luminance,
    noise_std,
    normal_noise,
    separable_filter,
    srgb_to_linear,
    stack_kernels,
    uniform_noise,
)
from clipiq.degrade.kernels import disk_kernel, motion_kernel, motion_trajectory
from clipiq.degrade.resize import imresize

_JPEG_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: float, name: str) -> float:
    if not (_is_real(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _non_negative(value: float, name: str) -> float:
    if not (_is_real(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def _int_at_least(value: int, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------- blur


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Isotropic Gaussian blur with standard deviation `sigma` pixels (mirrored borders)."""
    sigma = _positive(sigma, "sigma")
    x, single = working_batch(image)
    k = gaussian_kernel1d(sigma, dtype=x.dtype, device=x.device)
    return finish_batch(separable_filter(x, k), image, single)


def motion_blur(image: Tensor, length: float, seed: int | None = None) -> Tensor:
    """Camera-shake blur along a random trajectory of `length` pixels (one trajectory per image)."""
    length = _positive(length, "length")
    x, single = working_batch(image)
    kernels = [motion_kernel(length, trajectory=motion_trajectory(r.numpy())) for r in image_rngs(seed, len(x))]
    return finish_batch(fft_filter(x, stack_kernels(kernels, x)), image, single)


def defocus_blur(image: Tensor, radius: float) -> Tensor:
    """Out-of-focus blur with an anti-aliased disk of `radius` pixels."""
    radius = _positive(radius, "radius")
    x, single = working_batch(image)
    k = stack_kernels([disk_kernel(radius)], x)
    return finish_batch(fft_filter(x, k), image, single)


def resize_blur(image: Tensor, factor: float) -> Tensor:
    """Loss of resolution: bicubic downscale by `factor` (anti-aliased) and bicubic upscale back."""
    factor = _positive(factor, "factor")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    x, single = working_batch(image)
    h, w = x.shape[-2:]
    small = imresize(x, size=(max(1, round(h / factor)), max(1, round(w / factor))))
    return finish_batch(imresize(small, size=(h, w)), image, single)


# --------------------------------------------------------------------------------------------- noise


def gaussian_noise(image: Tensor, sigma: float, seed: int | None = None) -> Tensor:
    """Additive white Gaussian noise with standard deviation `sigma` (image range [0,1]), per channel."""
    sigma = _non_negative(sigma, "sigma")
    x, single = working_batch(image)
    return finish_batch(x + sigma * normal_noise(x, image_rngs(seed, len(x))), image, single)


def poisson_gaussian_noise(image: Tensor, shot: float, read: float, seed: int | None = None) -> Tensor:
    """Sensor noise with variance shot*x + read**2 (heteroscedastic normal form of Poisson-Gaussian noise).

    The normal approximation of the Poisson part (Foi et al. 2008; Brooks et al. 2019) keeps the noise a
    smooth, monotone function of the parameters for a fixed seed.
    """
    shot = _non_negative(shot, "shot")
    read = _non_negative(read, "read")
    x, single = working_batch(image)
    std = noise_std(shot * x + read**2)
    return finish_batch(x + std * normal_noise(x, image_rngs(seed, len(x))), image, single)


def impulse_noise(image: Tensor, amount: float, seed: int | None = None, salt_ratio: float = 0.5) -> Tensor:
    """Salt-and-pepper noise: a fraction `amount` of pixels set to white (salt) or black (pepper)."""
    amount = _non_negative(amount, "amount")
    if amount > 1:
        raise ValueError(f"amount must be in [0,1], got {amount}")
    salt_ratio = _non_negative(salt_ratio, "salt_ratio")
    if salt_ratio > 1:
        raise ValueError(f"salt_ratio must be in [0,1], got {salt_ratio}")
    x, single = working_batch(image)
    n, _, h, w = x.shape
    # the same uniforms at every amount: the corrupted set grows with the amount
    u = uniform_noise(x, image_rngs(seed, n), (2, h, w))
    hit = (u[:, 0:1] < amount).expand_as(x)
    salt = (u[:, 1:2] < salt_ratio).expand_as(x).to(x.dtype)
    return finish_batch(torch.where(hit, salt, x), image, single)


# --------------------------------------------------------------------------------------- compression


def jpeg(image: Tensor, quality: int, subsampling: str = "4:2:0") -> Tensor:
    """JPEG compression with the libjpeg codec (via PIL) at `quality` 1..100; runs on CPU."""
    quality = _int_at_least(quality, 1, "quality")
    if quality > 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if subsampling not in _JPEG_SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {sorted(_JPEG_SUBSAMPLING)}, got {subsampling!r}")
    x, single = working_batch(image)
    arr = x.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=_JPEG_SUBSAMPLING[subsampling])
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(np.asarray(im.convert("RGB")))
    y = torch.from_numpy(np.stack(out)).to(device=x.device).permute(0, 3, 1, 2).to(x.dtype) / 255
    return finish_batch(y, image, single)


def _median_cut(pixels: np.ndarray, colors: int) -> np.ndarray:
    """Greedy median cut: repeatedly split the box with the largest squared error at the median of its
    widest channel, then replace every pixel by its box mean.

    Each palette is a refinement of the palettes with fewer colours, so the error falls with `colors`.
    """
    boxes: list[np.ndarray] = [np.arange(len(pixels))]

    def sse(idx: np.ndarray) -> float:
        p = pixels[idx]
        return float(((p - p.mean(axis=0)) ** 2).sum())

    errors = [sse(boxes[0])]
    while len(boxes) < colors:
        j = int(np.argmax(errors))
        if errors[j] <= 0:
            break
        idx = boxes[j]
        p = pixels[idx]
        ch = int(np.argmax(p.var(axis=0)))
        half = len(idx) // 2
        order = np.argpartition(p[:, ch], half)
        lo, hi = idx[order[:half]], idx[order[half:]]
        boxes[j], errors[j] = lo, sse(lo)
        boxes.append(hi)
        errors.append(sse(hi))
    out = np.empty_like(pixels)
    for idx in boxes:
        out[idx] = pixels[idx].mean(axis=0)
    return out


def quantization(image: Tensor, colors: int) -> Tensor:
    """Colour quantisation to at most `colors` palette colours (median cut, no dithering); runs on CPU."""
    colors = _int_at_least(colors, 1, "colors")
    x, single = working_batch(image)
    arr = x.detach().to(torch.float64).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([_median_cut(a.reshape(-1, 3), colors).reshape(a.shape) for a in arr])
    y = torch.from_numpy(out).to(device=x.device, dtype=x.dtype).permute(0, 3, 1, 2)
    return finish_batch(y, image, single)


def banding(image: Tensor, levels: int) -> Tensor:
    """Posterisation: each channel rounded to `levels` evenly spaced values (0 and 1 kept), so smooth
    gradients turn into visible bands."""
    levels = _int_at_least(levels, 2, "levels")
    x, single = working_batch(image)
    return finish_batch(torch.round(x * (levels - 1)) / (levels - 1), image, single)


# ------------------------------------------------------------------------------------------ exposure


def low_light(image: Tensor, exposure: float, shot: float, read: float, seed: int | None = None) -> Tensor:
    """Under-exposure: linearise, scale by `exposure`, add shot (variance shot*signal) and read (std `read`)
    sensor noise in linear space, re-apply the sRGB curve."""
    exposure = _positive(exposure, "exposure")
    shot = _non_negative(shot, "shot")
    read = _non_negative(read, "read")
    x, single = working_batch(image)
    lin = srgb_to_linear(x) * exposure
    std = noise_std(shot * lin + read**2)
    lin = lin + std * normal_noise(x, image_rngs(seed, len(x)))
    return finish_batch(linear_to_srgb(lin), image, single)


def over_exposure(image: Tensor, gain: float) -> Tensor:
    """Over-exposure: multiply linear intensities by `gain` (>= 1) and clip highlights, as a sensor would."""
    gain = _positive(gain, "gain")
    x, single = working_batch(image)
    return finish_batch(linear_to_srgb(srgb_to_linear(x) * gain), image, single)


# --------------------------------------------------------------------------------------------- color


def contrast_change(image: Tensor, factor: float) -> Tensor:
    """Scale deviations from the image's mean luma by `factor` (< 1 lowers contrast)."""
    factor = _non_negative(factor, "factor")
    x, single = working_batch(image)
    mean = luminance(x).mean(dim=(-2, -1), keepdim=True)
    return finish_batch(mean + factor * (x - mean), image, single)


def saturation_change(image: Tensor, factor: float) -> Tensor:
    """Scale each pixel's chroma (deviation from its luma) by `factor` (< 1 desaturates, 0 gives grey)."""
    factor = _non_negative(factor, "factor")
    x, single = working_batch(image)
    grey = luminance(x)
    return finish_batch(grey + factor * (x - grey), image, single)


# Orthonormal basis of the chroma plane (orthogonal to grey): hue 0 points to red, 120 to green, 240 to blue.
_CHROMA_E1 = np.array([2.0, -1.0, -1.0]) / math.sqrt(6.0)
_CHROMA_E2 = np.array([0.0, 1.0, -1.0]) / math.sqrt(2.0)


def color_cast(image: Tensor, strength: float, hue: float | None = None, seed: int | None = None) -> Tensor:
    """White-balance error: per-channel linear gains exp(strength * v), v a unit chroma direction at
    `hue` degrees (random per image when None), so overall brightness is roughly kept."""
    strength = _non_negative(strength, "strength")
    if hue is not None and not _is_real(hue):
        raise ValueError(f"hue must be None or a finite angle in degrees, got {hue!r}")
    x, single = working_batch(image)
    angles = [
        math.radians(hue) if hue is not None else r.numpy().uniform(0, 2 * math.pi) for r in image_rngs(seed, len(x))
    ]
    dirs = np.stack([math.cos(a) * _CHROMA_E1 + math.sin(a) * _CHROMA_E2 for a in angles])
    gains = torch.from_numpy(np.exp(strength * dirs)).to(device=x.device, dtype=x.dtype)
    return finish_batch(linear_to_srgb(srgb_to_linear(x) * gains[:, :, None, None]), image, single)


# ------------------------------------------------------------------------------------------- spatial


def pixelate(image: Tensor, block: int) -> Tensor:
    """Mosaic: average `block` x `block` cells and repeat each mean over its cell."""
    block = _int_at_least(block, 1, "block")
    x, single = working_batch(image)
    h, w = x.shape[-2:]
    ph, pw = (-h) % block, (-w) % block
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    cells = F.avg_pool2d(xp, block)
    y = cells.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)[..., :h, :w]
    return finish_batch(y, image, single)


# ------------------------------------------------------------------------------------------- weather


def _depth_proxy(x: Tensor, rngs: list) -> Tensor:
    """Relative depth in [0,1] for outdoor-like framing: far at the top, near at the bottom, plus smooth
    random undulation so the haze is not a pure vertical ramp."""
    n, _, h, w = x.shape
    ramp = torch.linspace(1.0, 0.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    coarse = torch.from_numpy(np.stack([r.numpy().random((1, 4, 4)) for r in rngs])).to(x.device, x.dtype)
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    d = 0.75 * ramp + 0.25 * smooth
    lo = d.amin(dim=(-2, -1), keepdim=True)
    hi = d.amax(dim=(-2, -1), keepdim=True)
    return 0.1 + 0.9 * (d - lo) / (hi - lo).clamp_min(1e-6)


def _check_depth(depth: Tensor, x: Tensor, normalize: bool) -> Tensor:
    if not isinstance(depth, Tensor):
        raise TypeError(f"depth must be a torch.Tensor or None, got {type(depth).__name__}")
    n, _, h, w = x.shape
    if depth.ndim == 2:
        d = depth[None, None]
    elif depth.ndim == 3 and depth.shape[0] in (1, n):
        d = depth[:, None]
    elif depth.ndim == 4 and depth.shape[1] == 1 and depth.shape[0] in (1, n):
        d = depth
    else:
        raise ValueError(
            f"depth must have shape (H,W), (N,H,W) or (N,1,H,W) matching the image, "
            f"got {tuple(depth.shape)} for an image batch of {n}"
        )
    if d.shape[-2:] != (h, w):
        raise ValueError(f"depth spatial size {tuple(d.shape[-2:])} does not match the image ({h}, {w})")
    d = d.to(device=x.device, dtype=x.dtype)
    if not bool(torch.isfinite(d).all()) or float(d.min()) < 0:
        raise ValueError("depth must be finite and non-negative")
    if normalize:
        d = d / d.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return d.expand(n, 1, h, w)


def haze(
    image: Tensor,
    beta: float,
    airlight: float | Sequence[float] | None = None,
    depth: Tensor | None = None,
    normalize_depth: bool = True,
    seed: int | None = None,
) -> Tensor:
    """Atmospheric scattering I = J*t + A*(1-t) with transmission t = exp(-beta*d).

    `depth` (H,W), (N,H,W) or (N,1,H,W) is divided by its per-image maximum unless `normalize_depth` is
    False; without it a seeded depth proxy (far at the top) is used. `airlight` A is a grey level or an RGB
    triple; when None it is drawn per image in [0.8, 1.0].
    """
    beta = _non_negative(beta, "beta")
    x, single = working_batch(image)
    rngs = image_rngs(seed, len(x))
    d = _depth_proxy(x, rngs) if depth is None else _check_depth(depth, x, normalize_depth)
    if airlight is None:
        # a stream separate from the depth proxy's, so passing a depth map does not change A
        a = [r.numpy(stream=1).uniform(0.8, 1.0) for r in rngs]
        air = torch.tensor(a, device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    else:
        vals = [airlight] if isinstance(airlight, Real) else list(airlight)
        if len(vals) not in (1, 3) or not all(_is_real(v) and 0 <= v <= 1 for v in vals):
            raise ValueError(f"airlight must be None, a value in [0,1] or three such values, got {airlight!r}")
        air = torch.tensor(vals, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    t = torch.exp(-beta * d)
    return finish_batch(x * t + air * (1 - t), image, single)
