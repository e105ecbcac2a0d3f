"""Target domains for super-resolution: named LR formation processes a bicubic-trained SR model never saw.

Each domain is a recipe ``(hr, scale, generator) -> lr``: ``hr`` a (3,H,W) float image in [0,1] with H and W
multiples of ``scale``, ``lr`` the (3,H/scale,W/scale) image rounded to 8-bit levels, as a saved LR file is.
The recipe's random parameters (blur shape, noise level, JPEG quality, the noise itself) are drawn from the
``torch.Generator``, so one generator state gives one LR image. Downsampling is clipiq's MATLAB-exact bicubic
:func:`~clipiq.degrade.resize.imresize`; the blurs, noise and JPEG are the operations of
:mod:`clipiq.degrade.ops` (the anisotropic Gaussian kernel is the one piece added here).

``SR_DOMAINS`` maps names to :class:`SRDomain` records (``bicubic`` is the source domain CDASR trains on;
``TARGET_DOMAINS`` are the others); ``make_lr(hr, name, scale, generator)`` looks a name up (an unknown name
raises :class:`~clipiq.core.errors.UnknownNameError` with close matches).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from clipiq.core.registry import Registry
from clipiq.degrade._common import fft_filter, stack_kernels
from clipiq.degrade.ops import jpeg, motion_blur, poisson_gaussian_noise
from clipiq.degrade.resize import imresize

__all__ = [
    "SR_DOMAINS",
    "TARGET_DOMAINS",
    "SRDomain",
    "anisotropic_gaussian_kernel",
    "get_sr_domain",
    "make_lr",
]

Recipe = Callable[[Tensor, int, torch.Generator], Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _seed(generator: torch.Generator) -> int:
    # the ops of clipiq.degrade take integer seeds; draw one so the noise follows the generator too
    return int(torch.randint(0, 2**31 - 1, (), generator=generator))


def _check(hr: Tensor, scale: int) -> None:
    if not isinstance(hr, Tensor) or hr.ndim != 3 or hr.shape[0] != 3 or not hr.is_floating_point():
        raise ValueError(f"hr must be a float (3,H,W) image tensor, got {getattr(hr, 'shape', type(hr))}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"hr is {w}x{h}, not a multiple of the scale {scale} (crop it first)")


def _down(x: Tensor, scale: int) -> Tensor:
    """MATLAB bicubic downscale, clipped and rounded to 8-bit levels (as LR files on disk are)."""
    return imresize(x, 1 / scale).clamp(0, 1).mul(255).round().div(255)


def anisotropic_gaussian_kernel(sigma_long: float, sigma_short: float, angle: float) -> np.ndarray:
    """Normalised 2-D Gaussian with standard deviations ``sigma_long``/``sigma_short`` (pixels), the long axis
    at ``angle`` radians; odd size covering 3 standard deviations of the long axis."""
    if not (sigma_long > 0 and sigma_short > 0):
        raise ValueError(f"sigmas must be > 0, got {sigma_long}, {sigma_short}")
    r = max(1, math.ceil(3 * max(sigma_long, sigma_short)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy  # coordinates along and across the long axis
    k = np.exp(-0.5 * ((u / sigma_long) ** 2 + (v / sigma_short) ** 2))
    return k / k.sum()


def _aniso_blur(hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    # Wider than the bicubic kernel's own anti-aliasing (about 0.5 * scale at HR), so the LR is softer and
    # direction-dependent: the SR model sharpens too little, and not in the blur's direction.
    long = _uniform(generator, 0.6 * scale, 1.2 * scale)
    short = _uniform(generator, 0.25 * scale, 0.6 * scale)
    angle = _uniform(generator, 0.0, math.pi)
    k = stack_kernels([anisotropic_gaussian_kernel(long, short, angle)], hr)
    return fft_filter(hr[None], k)[0].clamp(0, 1)


def aniso_blur_lr(hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    """Anisotropic Gaussian blur (random widths and angle), then bicubic downscaling."""
    _check(hr, scale)
    return _down(_aniso_blur(hr, scale, generator), scale)


def motion_blur_lr(hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    """Camera-shake blur (a random trajectory of 1.5-3 LR pixels), then bicubic downscaling."""
    _check(hr, scale)
    length = _uniform(generator, 1.5 * scale, 3.0 * scale)
    return _down(motion_blur(hr, length, seed=_seed(generator)), scale)


def _sensor_noise(lr: Tensor, generator: torch.Generator, strength: float = 1.0) -> Tensor:
    # Poisson-Gaussian (shot + read) noise at the LR grid, where a sensor of that resolution would add it
    shot = _uniform(generator, 0.002, 0.01) * strength**2
    read = _uniform(generator, 0.01, 0.03) * strength
    return poisson_gaussian_noise(lr, shot, read, seed=_seed(generator)).mul(255).round().div(255)


def noise_lr(hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    """Bicubic downscaling, then sensor noise (shot 0.002-0.01, read 0.01-0.03)."""
    _check(hr, scale)
    return _sensor_noise(_down(hr, scale), generator)


def jpeg_lr(hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    """Bicubic downscaling, then JPEG compression (quality 30-60, 4:2:0)."""
    _check(hr, scale)
    quality = int(torch.randint(30, 61, (), generator=generator))
    return jpeg(_down(hr, scale), quality)


def blur_noise_jpeg_lr(hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
    """The classical chain: anisotropic blur, bicubic downscaling, milder sensor noise, JPEG (quality 50-80)."""
    _check(hr, scale)
    lr = _sensor_noise(_down(_aniso_blur(hr, scale, generator), scale), generator, strength=0.6)
    return jpeg(lr, int(torch.randint(50, 81, (), generator=generator)))


def bicubic_lr(hr: Tensor, scale: int, generator: torch.Generator | None = None) -> Tensor:
    """The source domain: MATLAB bicubic downscaling only (``generator`` is unused)."""
    _check(hr, scale)
    return _down(hr, scale)


@dataclass(frozen=True)
class SRDomain:
    """A named LR formation process."""

    name: str
    recipe: Recipe
    description: str
    source: bool = False  # True for the domain the source model is trained on

    def __call__(self, hr: Tensor, scale: int, generator: torch.Generator) -> Tensor:
        """The LR image of ``hr`` in this domain."""
        return self.recipe(hr, scale, generator)


SR_DOMAINS: Registry[SRDomain] = Registry("SR domain")
for _d in (
    SRDomain("bicubic", bicubic_lr, "MATLAB bicubic downscaling (the source domain)", source=True),
    SRDomain("aniso_blur", aniso_blur_lr, "anisotropic Gaussian blur, then bicubic downscaling"),
    SRDomain("motion_blur", motion_blur_lr, "camera-shake blur, then bicubic downscaling"),
    SRDomain("noise", noise_lr, "bicubic downscaling, then Poisson-Gaussian sensor noise"),
    SRDomain("jpeg", jpeg_lr, "bicubic downscaling, then JPEG (quality 30-60)"),
    SRDomain("blur_noise_jpeg", blur_noise_jpeg_lr, "anisotropic blur, downscaling, sensor noise and JPEG"),
):
    SR_DOMAINS.register(_d.name, _d)

#: The domains the source model never saw (every registered one but ``bicubic``).
TARGET_DOMAINS: tuple[str, ...] = tuple(n for n in SR_DOMAINS.names() if not SR_DOMAINS.get(n).source)


def get_sr_domain(name: str) -> SRDomain:
    """The :class:`SRDomain` called ``name`` (UnknownNameError with close matches otherwise)."""
    return SR_DOMAINS.get(name)


def make_lr(hr: Tensor, domain: str, scale: int, generator: torch.Generator | None = None) -> Tensor:
    """The LR image of ``hr`` in ``domain`` (a fresh generator seeded 0 when none is given)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return get_sr_domain(domain)(hr, scale, gen)
