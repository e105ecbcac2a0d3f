"""Paired low-light + motion-blur data in the manner of LOL-Blur (Zhou et al. 2022)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from clipiq.core.image import finish_batch, working_batch
from clipiq.degrade._common import (
    fft_filter,
    image_rngs,
    linear_to_srgb,
    noise_std,
    normal_noise,
    srgb_to_linear,
    stack_kernels,
)
from clipiq.degrade.kernels import motion_kernel, motion_trajectory
from clipiq.degrade.registry import DEGRADATIONS, check_level

# Ranges sampled per image when no level is given: (low, high, log-uniform?).
LOWLIGHT_BLUR_RANGES: dict[str, tuple[float, float, bool]] = {
    "length": (5.0, 33.0, False),
    "exposure": (0.04, 0.4, True),
    "shot": (0.0005, 0.005, True),
    "read": (0.001, 0.005, True),
}


def lowlight_blur_params(level: int) -> dict[str, float]:
    """The parameters used at `level`: motion_blur's length and low_light's exposure/shot/read."""
    level = check_level(level)
    return {**DEGRADATIONS["motion_blur"].levels[level - 1], **DEGRADATIONS["low_light"].levels[level - 1]}


def _sample_params(rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for key, (lo, hi, log) in LOWLIGHT_BLUR_RANGES.items():
        out[key] = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    return out


#: What a pair teaches: both degradations (the joint task), or one of them, for single-task baselines.
PAIR_PARTS = ("both", "lowlight", "blur")


def lowlight_blur_pair(image: Tensor, level: int | None = None, seed: int | None = None,
                       parts: str = "both") -> tuple[Tensor, Tensor]:
    """Make a (degraded, target) pair: blur along a random trajectory and darken in linear light, add shot
    and read noise, re-apply the sRGB curve. `level` None samples the parameters per image.

    ``parts`` splits the joint task for enhance-then-deblur baselines, with the same draws as "both":
    "lowlight" pairs the dark, noisy, blurred image with the blurred one at normal exposure (enhancement only);
    "blur" pairs the blurred image at normal exposure with the sharp one (deblurring only).
    """
    if parts not in PAIR_PARTS:
        raise ValueError(f"parts must be one of {', '.join(PAIR_PARTS)}, got {parts!r}")
    x, single = working_batch(image)
    fixed = None if level is None else lowlight_blur_params(level)
    rngs = image_rngs(seed, len(x))
    params = [fixed if fixed is not None else _sample_params(r.numpy(stream=1)) for r in rngs]
    kernels = [motion_kernel(p["length"], trajectory=motion_trajectory(r.numpy())) for p, r in zip(params, rngs)]
    lin = fft_filter(srgb_to_linear(x), stack_kernels(kernels, x))

    def column(key: str) -> Tensor:
        return torch.tensor([p[key] for p in params], device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

    blurred = linear_to_srgb(lin.clamp_min(0))
    if parts == "blur":
        return finish_batch(blurred, image, single), finish_batch(x, image, single)
    lin = lin.clamp_min(0) * column("exposure")
    std = noise_std(column("shot") * lin + column("read") ** 2)
    degraded = finish_batch(linear_to_srgb(lin + std * normal_noise(x, rngs)), image, single)
    target = finish_batch(blurred if parts == "lowlight" else x, image, single)
    return degraded, target
