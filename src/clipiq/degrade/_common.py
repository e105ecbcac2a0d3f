"""Shared helpers for the degradations: input checks, per-image seeding, sRGB curves and filtering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq.core.image import LUMA_WEIGHTS


def check_seed(seed: object, name: str = "seed") -> int | None:
    """Accept None or a non-negative integer seed."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"{name} must be None or a non-negative int, got {type(seed).__name__}")
    if int(seed) < 0:
        raise ValueError(f"{name} must be non-negative, got {seed}")
    return int(seed)


@dataclass(frozen=True)
class ImageRNG:
    """Independent random streams for one image of a batch, derived from (seed, index)."""

    seed_seq: np.random.SeedSequence

    def _child(self, *keys: int) -> np.random.SeedSequence:
        # Built from entropy and spawn key, so repeated calls give the same stream (spawn() would not).
        return np.random.SeedSequence(self.seed_seq.entropy, spawn_key=(*self.seed_seq.spawn_key, *keys))

    def numpy(self, stream: int = 0) -> np.random.Generator:
        """A numpy generator (kernel shapes, scalar parameters); distinct `stream`s are independent."""
        return np.random.default_rng(self._child(0, stream))

    def torch(self, device: torch.device, stream: int = 0) -> torch.Generator:
        """A torch generator on `device` (per-pixel noise); distinct `stream`s are independent."""
        state = self._child(1, stream).generate_state(2, np.uint32)
        gen = torch.Generator(device=device)
        gen.manual_seed((int(state[0]) << 31) ^ int(state[1]))
        return gen


def image_rngs(seed: int | None, n: int) -> list[ImageRNG]:
    """One ImageRNG per image; image i of a batch gets the same stream as a single image when i == 0."""
    seed = check_seed(seed)
    entropy = np.random.SeedSequence().entropy if seed is None else seed
    return [ImageRNG(np.random.SeedSequence(entropy, spawn_key=(i,))) for i in range(n)]


def derive_seeds(seed: int | None, n: int) -> list[int]:
    """n independent integer seeds derived from `seed` (fresh entropy when None)."""
    seed = check_seed(seed)
    entropy = np.random.SeedSequence().entropy if seed is None else seed
    out = []
    for i in range(n):
        state = np.random.SeedSequence(entropy, spawn_key=(i,)).generate_state(2, np.uint32)
        out.append((int(state[0]) << 32) | int(state[1]))
    return out


def srgb_to_linear(x: Tensor) -> Tensor:
    """Inverse sRGB transfer curve (IEC 61966-2-1), values in [0,1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """sRGB transfer curve (IEC 61966-2-1), values in [0,1]."""
    x = x.clamp(0.0, 1.0)
    # clamp_min inside the power keeps the gradient finite in the untaken branch at 0
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def noise_std(variance: Tensor) -> Tensor:
    """Square root that stays exact for zero variance and keeps a finite gradient there."""
    return torch.sqrt(variance.clamp_min(1e-20))


def luminance(x: Tensor) -> Tensor:
    """Rec. 601 luma of a (N,3,H,W) batch, shape (N,1,H,W)."""
    r, g, b = LUMA_WEIGHTS
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def pad_image(x: Tensor, ph: int, pw: int) -> Tensor:
    """Mirror padding (no edge repeat); falls back to edge replication when the pad exceeds the image."""
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (pw, pw, ph, ph), mode=mode)


def gaussian_kernel1d(
    sigma: float,
    radius: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Normalised 1-D Gaussian taps with radius ceil(3*sigma) unless given."""
    if radius is None:
        radius = max(1, int(np.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def separable_filter(x: Tensor, k1d: Tensor) -> Tensor:
    """Filter every channel of a (N,C,H,W) batch with a symmetric 1-D kernel along H and W."""
    c = x.shape[1]
    r = k1d.numel() // 2
    xp = pad_image(x, r, r)
    kv = k1d.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kh = k1d.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(xp, kv, groups=c), kh, groups=c)


def fft_filter(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve each image of a (N,C,H,W) batch with its own odd-sized 2-D kernel (N or 1, kh, kw) via FFT.

    Mirror padding by half the kernel size followed by a circular convolution gives a linear convolution
    on the retained centre, so the result equals a direct convolution with mirrored borders.
    """
    kh, kw = kernels.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernels must have odd height and width, got {kh}x{kw}")
    h, w = x.shape[-2:]
    ph, pw = kh // 2, kw // 2
    xp = pad_image(x, ph, pw)
    hp, wp = xp.shape[-2:]
    kp = F.pad(kernels.to(x.dtype), (0, wp - kw, 0, hp - kh))
    kp = torch.roll(kp, shifts=(-ph, -pw), dims=(-2, -1))
    spec = torch.fft.rfft2(xp) * torch.fft.rfft2(kp).unsqueeze(1)
    y = torch.fft.irfft2(spec, s=(hp, wp))
    return y[..., ph : ph + h, pw : pw + w]


def stack_kernels(kernels: Sequence[np.ndarray], like: Tensor) -> Tensor:
    """Zero-pad odd-sized kernels to a common size and stack them as (N,k,k) on `like`'s device."""
    size = max(k.shape[0] for k in kernels)
    out = np.zeros((len(kernels), size, size))
    for i, k in enumerate(kernels):
        o = (size - k.shape[0]) // 2
        out[i, o : o + k.shape[0], o : o + k.shape[1]] = k
    return torch.from_numpy(out).to(device=like.device, dtype=like.dtype)


def normal_noise(x: Tensor, rngs: Sequence[ImageRNG], shape: tuple[int, ...] | None = None) -> Tensor:
    """Standard normal noise, one independent draw per image, on x's device."""
    shape = tuple(x.shape[1:]) if shape is None else shape
    return torch.stack([torch.randn(shape, generator=r.torch(x.device), device=x.device, dtype=x.dtype) for r in rngs])


def uniform_noise(x: Tensor, rngs: Sequence[ImageRNG], shape: tuple[int, ...]) -> Tensor:
    """Uniform [0,1) noise, one independent draw per image, on x's device."""
    return torch.stack([torch.rand(shape, generator=r.torch(x.device), device=x.device, dtype=x.dtype) for r in rngs])
