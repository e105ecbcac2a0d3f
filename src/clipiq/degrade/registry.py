"""The degradation registry: per-level parameters, `apply`, `compose` and random recipes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from types import MappingProxyType
from typing import Any

import numpy as np
from torch import Tensor

from clipiq.core.registry import Registry
from clipiq.degrade import ops
from clipiq.degrade._common import check_seed, derive_seeds

NUM_LEVELS = 5
FAMILIES = ("weather", "exposure", "color", "blur", "spatial", "noise", "compression")
# Recipes are applied in this family order, roughly the order a camera pipeline introduces them:
# scene (haze), exposure and white balance, optics and motion, resampling, sensor noise, then coding.
_FAMILY_ORDER = {f: i for i, f in enumerate(FAMILIES)}
_NON_PARAMETERS = ("image", "seed")


@dataclass(frozen=True)
class Degradation:
    """One registered degradation: its callable and the parameters of its 5 severity levels."""

    name: str
    family: str
    description: str
    levels: tuple[Mapping[str, Any], ...]
    fn: Callable[..., Tensor] = field(repr=False)
    random: bool
    differentiable: bool
    runs_on: str = "device"  # "device": the tensor's device; "cpu": round-trips through CPU code

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if len(self.levels) != NUM_LEVELS:
            raise ValueError(f"{self.name}: levels must hold {NUM_LEVELS} parameter dicts, got {len(self.levels)}")
        unknown = {k for lv in self.levels for k in lv} - set(self.parameters)
        if unknown:
            raise ValueError(f"{self.name}: level parameters {sorted(unknown)} are not arguments of {self.fn}")
        # read-only views, so that the documented table cannot be changed by accident
        object.__setattr__(self, "levels", tuple(MappingProxyType(dict(lv)) for lv in self.levels))

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the keyword arguments of `fn` that `apply` accepts as overrides."""
        return tuple(p for p in inspect.signature(self.fn).parameters if p not in _NON_PARAMETERS)

    def __call__(self, image: Tensor, level: int, seed: int | None = None, **overrides: Any) -> Tensor:
        """Same as ``apply(image, self.name, level, seed, **overrides)``."""
        return apply(image, self.name, level, seed=seed, **overrides)


def _levels(**columns: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """Per-level dicts from one sequence per parameter."""
    return tuple(dict(zip(columns, values)) for values in zip(*columns.values()))


_RECORDS = (
    Degradation(
        "gaussian_blur",
        "blur",
        "Isotropic Gaussian blur (out-of-focus optics, smoothing).",
        _levels(sigma=(0.8, 1.3, 2.0, 3.0, 4.5)),
        ops.gaussian_blur,
        random=False,
        differentiable=True,
    ),
    Degradation(
        "motion_blur",
        "blur",
        "Camera shake: blur along a random seeded trajectory of given length.",
        _levels(length=(5, 9, 15, 23, 33)),
        ops.motion_blur,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "defocus_blur",
        "blur",
        "Defocus: convolution with an anti-aliased disk (pillbox).",
        _levels(radius=(1.5, 2.5, 3.5, 5.0, 7.0)),
        ops.defocus_blur,
        random=False,
        differentiable=True,
    ),
    Degradation(
        "gaussian_noise",
        "noise",
        "Additive white Gaussian noise, independent per channel.",
        _levels(sigma=(0.02, 0.04, 0.07, 0.11, 0.16)),
        ops.gaussian_noise,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "poisson_gaussian_noise",
        "noise",
        "Sensor noise: signal-dependent shot plus constant read noise.",
        _levels(shot=(0.001, 0.003, 0.008, 0.016, 0.03), read=(0.005, 0.01, 0.015, 0.02, 0.03)),
        ops.poisson_gaussian_noise,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "impulse_noise",
        "noise",
        "Salt-and-pepper noise: a fraction of pixels set to black or white.",
        _levels(amount=(0.01, 0.03, 0.06, 0.10, 0.16)),
        ops.impulse_noise,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "jpeg",
        "compression",
        "JPEG compression with the real codec (PIL/libjpeg, 4:2:0).",
        _levels(quality=(50, 30, 18, 10, 5)),
        ops.jpeg,
        random=False,
        differentiable=False,
        runs_on="cpu",
    ),
    Degradation(
        "quantization",
        "compression",
        "Colour quantisation to a small palette (median cut, no dither).",
        _levels(colors=(64, 32, 16, 8, 4)),
        ops.quantization,
        random=False,
        differentiable=False,
        runs_on="cpu",
    ),
    Degradation(
        "banding",
        "compression",
        "Posterisation: few levels per channel, gradients turn into bands.",
        _levels(levels=(32, 16, 10, 6, 4)),
        ops.banding,
        random=False,
        differentiable=False,
    ),
    Degradation(
        "low_light",
        "exposure",
        "Under-exposure with shot and read noise added in linear space.",
        _levels(
            exposure=(0.4, 0.25, 0.14, 0.08, 0.04),
            shot=(0.0005, 0.001, 0.002, 0.003, 0.005),
            read=(0.001, 0.002, 0.003, 0.004, 0.005),
        ),
        ops.low_light,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "over_exposure",
        "exposure",
        "Over-exposure: linear gain with clipped highlights.",
        _levels(gain=(1.6, 2.2, 3.0, 4.2, 6.0)),
        ops.over_exposure,
        random=False,
        differentiable=True,
    ),
    Degradation(
        "haze",
        "weather",
        "Haze/fog by atmospheric scattering over a (proxy or given) depth map.",
        _levels(beta=(0.35, 0.7, 1.1, 1.6, 2.3)),
        ops.haze,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "contrast_change",
        "color",
        "Contrast decrease towards the mean luma.",
        _levels(factor=(0.75, 0.55, 0.4, 0.28, 0.18)),
        ops.contrast_change,
        random=False,
        differentiable=True,
    ),
    Degradation(
        "saturation_change",
        "color",
        "Desaturation towards each pixel's luma.",
        _levels(factor=(0.7, 0.5, 0.33, 0.18, 0.05)),
        ops.saturation_change,
        random=False,
        differentiable=True,
    ),
    Degradation(
        "color_cast",
        "color",
        "White-balance error: linear channel gains along a random hue.",
        _levels(strength=(0.1, 0.18, 0.28, 0.4, 0.55)),
        ops.color_cast,
        random=True,
        differentiable=True,
    ),
    Degradation(
        "pixelate",
        "spatial",
        "Mosaic of block averages.",
        _levels(block=(2, 3, 5, 8, 12)),
        ops.pixelate,
        random=False,
        differentiable=True,
    ),
    Degradation(
        "resize_blur",
        "spatial",
        "Bicubic downscale and upscale back (loss of resolution).",
        _levels(factor=(1.5, 2.0, 3.0, 4.0, 6.0)),
        ops.resize_blur,
        random=False,
        differentiable=True,
    ),
)

# Registration order is the documented table's order, and synthetic datasets number their types by it.
DEGRADATIONS: Registry[Degradation] = Registry("degradation")
for _record in _RECORDS:
    DEGRADATIONS.register(_record.name, _record)


def get_degradation(name: str) -> Degradation:
    """Look up a registered degradation by name (an unknown name lists close matches)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return DEGRADATIONS.get(name)


def check_level(level: object, name: str = "level") -> int:
    """Accept an integer severity level in 1..NUM_LEVELS."""
    if isinstance(level, bool) or not isinstance(level, Integral) or not 1 <= int(level) <= NUM_LEVELS:
        raise ValueError(f"{name} must be an integer in 1..{NUM_LEVELS}, got {level!r}")
    return int(level)


def _check_overrides(record: Degradation, overrides: Mapping[str, Any]) -> None:
    unknown = set(overrides) - set(record.parameters)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for {record.name!r}; valid: {', '.join(record.parameters)}"
        )


def apply(image: Tensor, name: str, level: int, seed: int | None = None, **overrides: Any) -> Tensor:
    """Apply degradation `name` at severity `level` (1..5); keyword overrides replace level parameters."""
    record = get_degradation(name)
    level = check_level(level)
    seed = check_seed(seed)
    _check_overrides(record, overrides)
    params = {**record.levels[level - 1], **overrides}
    if record.random:
        params["seed"] = seed
    return record.fn(image, **params)


Step = tuple[str, int, Mapping[str, Any]]


class Compose:
    """A fixed sequence of (name, level[, overrides]) degradations applied in order."""

    def __init__(self, steps: Iterable[Sequence[Any]], seed: int | None = None):
        self.seed = check_seed(seed)
        parsed: list[Step] = []
        for i, step in enumerate(steps):
            if isinstance(step, str) or not isinstance(step, Sequence) or len(step) not in (2, 3):
                raise ValueError(f"steps[{i}] must be (name, level) or (name, level, overrides), got {step!r}")
            record = get_degradation(step[0])
            level = check_level(step[1], f"steps[{i}] level")
            overrides = dict(step[2]) if len(step) == 3 else {}
            _check_overrides(record, overrides)
            parsed.append((record.name, level, MappingProxyType(overrides)))
        self.steps: tuple[Step, ...] = tuple(parsed)

    def __call__(self, image: Tensor) -> Tensor:
        """Apply every step; with a seed the result is the same on every call."""
        seeds = derive_seeds(self.seed, len(self.steps))
        for (name, level, overrides), s in zip(self.steps, seeds):
            image = apply(image, name, level, seed=s, **overrides)
        return image

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        parts = [f"({n!r}, {lv}, {dict(ov)!r})" if ov else f"({n!r}, {lv})" for n, lv, ov in self.steps]
        return f"Compose([{', '.join(parts)}], seed={self.seed})"


def compose(steps: Iterable[Sequence[Any]], seed: int | None = None) -> Compose:
    """Build a callable applying [(name, level), ...] in order, deterministic for a given seed."""
    return Compose(steps, seed=seed)


def sample_recipe(
    rng_or_seed: np.random.Generator | int | None = None,
    max_ops: int = 2,
    *,
    min_ops: int = 1,
    names: Iterable[str] | None = None,
    min_level: int = 1,
    max_level: int = NUM_LEVELS,
    distinct_families: bool = True,
) -> list[tuple[str, int]]:
    """Draw min_ops..max_ops (uniformly many) distinct degradations with uniform levels, ordered as a
    camera pipeline would; with `distinct_families` no two come from the same family."""
    rng = (
        rng_or_seed
        if isinstance(rng_or_seed, np.random.Generator)
        else np.random.default_rng(check_seed(rng_or_seed, "rng_or_seed"))
    )
    pool = list(DEGRADATIONS) if names is None else [get_degradation(n).name for n in names]
    if not pool:
        raise ValueError("names must not be empty")
    lo, hi = check_level(min_level, "min_level"), check_level(max_level, "max_level")
    if lo > hi:
        raise ValueError(f"min_level ({lo}) must not exceed max_level ({hi})")
    available = len({DEGRADATIONS[n].family for n in pool}) if distinct_families else len(set(pool))
    if isinstance(max_ops, bool) or not isinstance(max_ops, Integral) or not 1 <= max_ops <= available:
        raise ValueError(f"max_ops must be an integer in 1..{available} for these names, got {max_ops!r}")
    if isinstance(min_ops, bool) or not isinstance(min_ops, Integral) or not 1 <= min_ops <= max_ops:
        raise ValueError(f"min_ops must be an integer in 1..max_ops ({max_ops}), got {min_ops!r}")
    n_ops = int(rng.integers(int(min_ops), int(max_ops) + 1))
    chosen: list[str] = []
    for i in rng.permutation(len(pool)):
        name = pool[i]
        if name in chosen or (
            distinct_families and any(DEGRADATIONS[c].family == DEGRADATIONS[name].family for c in chosen)
        ):
            continue
        chosen.append(name)
        if len(chosen) == n_ops:
            break
    chosen.sort(key=lambda n: _FAMILY_ORDER[DEGRADATIONS[n].family])
    return [(n, int(rng.integers(lo, hi + 1))) for n in chosen]
