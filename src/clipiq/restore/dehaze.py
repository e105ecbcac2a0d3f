"""Classic single-image dehazers, batched and tensor-first, for making synthetic dehazed-image data.

Every function takes a float image (3,H,W) or batch (N,3,H,W) in [0,1] and returns the same shape,
dtype and device, clamped to [0,1]; half precision is processed in float32. Images of a batch are
processed independently, so a batched result equals the per-image results.

* :func:`dark_channel_prior`: He, Sun and Tang, "Single Image Haze Removal Using Dark Channel Prior"
  (CVPR 2009), with the transmission refined by a guided filter (He, Sun and Tang, ECCV 2010) instead of
  soft matting. The airlight is the mean colour of the brightest 0.1% of dark-channel pixels; the
  guided filter uses the luma as guide and, unless ``radius`` is given, a radius of 4 patch half-widths
  (28 for the default 15-pixel patch) capped at an eighth of the image's shorter side.
* :func:`contrast_stretch` and :func:`gamma_restore`: global tone curves that remove some of the veil
  but know nothing about depth; weak "dehazers".

:data:`DEHAZERS` is a registry of variants of different strength, listed from ``"none"`` (the hazy input)
to ``"dcp-strong"`` (over-dehazed, with halos), so that the dehazed images span a range of quality. Each
is also a restorer, ``dehaze-<name>`` in :func:`clipiq.create_restorer`, whose options override the
variant's presets. Only ``none`` is tileable: the airlight and the percentiles are whole-image statistics,
so tiles would each get their own (see :mod:`clipiq.restore.base` for what happens above the budget).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq.core.image import LUMA_WEIGHTS, finish_batch, working_batch
from clipiq.core.registry import Registry
from clipiq.restore.base import RUN_OPTIONS, Restorer
from clipiq.restore.registry import RestorerSpec, register_restorer

__all__ = [
    "DEHAZERS",
    "DehazeRestorer",
    "Dehazer",
    "contrast_stretch",
    "dark_channel_prior",
    "dehaze",
    "gamma_restore",
    "guided_filter",
]

# Fraction of the brightest dark-channel pixels whose colours give the airlight (He et al. use 0.1%).
_AIRLIGHT_FRACTION = 0.001
# A floor for the airlight: I/A is taken per channel, and a black "airlight" would divide by zero.
_MIN_AIRLIGHT = 1e-2
# Channels whose percentile range is narrower than this are flat; stretching them would only amplify noise.
_MIN_SPAN = 1e-6
_DCP_PAPER = "He, Sun and Tang, Single Image Haze Removal Using Dark Channel Prior, CVPR 2009"


def _check_real(value: object, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if v < lo or v > hi or (lo_open and v == lo):
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name} must lie in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return v


def _check_int(value: object, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if int(value) < lo:
        raise ValueError(f"{name} must be at least {lo}, got {value}")
    return int(value)


def _grey(x: Tensor) -> Tensor:
    """Rec. 601 luma of (N,3,H,W) as (N,1,H,W)."""
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _box_sum_1d(x: Tensor, radius: int, dim: int) -> tuple[Tensor, Tensor]:
    """Sums over windows of half-width ``radius`` along ``dim`` (clipped at the borders), and the counts."""
    n = x.shape[dim]
    c = x.cumsum(dim=dim)
    # The integral image padded with radius+1 zeros in front and `radius` copies of the total behind, so
    # every window sum, including windows clipped at the borders, is a difference of two shifted slices.
    head = torch.zeros_like(c.narrow(dim, 0, 1)).repeat_interleave(radius + 1, dim=dim)
    tail = c.narrow(dim, n - 1, 1).repeat_interleave(radius, dim=dim)
    ext = torch.cat([head, c, tail], dim=dim)
    sums = ext.narrow(dim, 2 * radius + 1, n) - ext.narrow(dim, 0, n)
    idx = torch.arange(n, device=x.device)
    count = (idx + radius + 1).clamp(max=n) - (idx - radius).clamp(min=0)
    return sums, count


def _box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r+1)^2 windows clipped at the borders, in O(1) per pixel from integral images."""
    # float64 running sums: in float32 the sum over a whole photo swamps the small window differences.
    s, n_h = _box_sum_1d(x.double(), radius, -2)
    s, n_w = _box_sum_1d(s, radius, -1)
    count = (n_h[:, None] * n_w[None, :]).to(torch.float64)
    return (s / count).to(x.dtype)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float = 1e-3) -> Tensor:
    """He et al.'s guided filter of ``src`` (N,C,H,W) by a grey ``guide`` (N,1,H,W), box radius ``radius``."""
    for name, t in (("guide", guide), ("src", src)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.ndim != 4:
            raise ValueError(f"{name} must have shape (N,C,H,W), got {tuple(t.shape)}")
    if guide.shape[1] != 1 or guide.shape[0] != src.shape[0] or guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(
            f"guide must have shape (N,1,H,W) matching src (N,C,H,W), got {tuple(guide.shape)} "
            f"and {tuple(src.shape)}"
        )
    r = _check_int(radius, "radius", 1)
    eps = _check_real(eps, "eps", 0.0, math.inf, lo_open=True)
    c = src.shape[1]
    # one box pass over all four statistics (the integral images are the expensive part)
    stats = _box_mean(torch.cat([guide, guide * guide, src, guide * src], dim=1), r)
    mean_i, mean_ii, mean_p, mean_ip = stats.split([1, 1, c, c], dim=1)
    var_i = mean_ii - mean_i * mean_i
    cov_ip = mean_ip - mean_i * mean_p
    # eps decides what counts as an edge: windows with variance well below eps are smoothed flat.
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    mean_a, mean_b = _box_mean(torch.cat([a, b], dim=1), r).split([c, c], dim=1)
    return mean_a * guide + mean_b


def _min_filter(x: Tensor, patch: int) -> Tensor:
    # max_pool pads with -inf, so negated it ignores the outside: windows shrink at the borders.
    # A square min is separable: two 1-D passes cost 2*patch comparisons per pixel instead of patch^2.
    p = patch // 2
    y = -F.max_pool2d(-x, kernel_size=(patch, 1), stride=1, padding=(p, 0))
    return -F.max_pool2d(-y, kernel_size=(1, patch), stride=1, padding=(0, p))


def _dark_channel(x: Tensor, patch: int) -> Tensor:
    """Min over channels, then over a patch x patch window: (N,C,H,W) -> (N,1,H,W)."""
    return _min_filter(x.amin(dim=1, keepdim=True), patch)


def _airlight(x: Tensor, dark: Tensor) -> Tensor:
    """Per-image RGB airlight (N,3,1,1): mean colour of the brightest 0.1% of dark-channel pixels."""
    n, _, h, w = x.shape
    k = max(1, round(_AIRLIGHT_FRACTION * h * w))
    # a stable sort breaks ties by position, so the choice never depends on the thread count
    idx = dark.flatten(1).sort(dim=1, descending=True, stable=True).indices[:, :k]
    picked = x.flatten(2).gather(2, idx[:, None, :].expand(n, 3, k))
    return picked.mean(dim=2).clamp_min(_MIN_AIRLIGHT).view(n, 3, 1, 1)


def _default_radius(patch: int, h: int, w: int) -> int:
    # He et al. pair a 15-pixel patch with a guided-filter radius of about 4 patch half-widths on
    # 600-pixel photos; on small crops that radius would average over much of the image, so cap it at an
    # eighth of the shorter side (on 128-pixel crops of haze-free photos this restores best by SSIM).
    return max(1, min(4 * (patch // 2), min(h, w) // 8))


def dark_channel_prior(
    x: Tensor,
    patch: int = 15,
    omega: float = 0.95,
    t0: float = 0.1,
    refine: bool = True,
    radius: int | None = None,
    eps: float = 1e-3,
) -> Tensor:
    """Dehaze by the dark channel prior (He et al. 2009) with guided-filter refinement of the transmission."""
    img, single = working_batch(x, "x")
    patch = _check_int(patch, "patch", 1)
    if patch % 2 == 0:
        raise ValueError(f"patch must be odd so windows are centred, got {patch}")
    omega = _check_real(omega, "omega", 0.0, 1.0)
    t0 = _check_real(t0, "t0", 0.0, 1.0, lo_open=True)
    if radius is not None:
        radius = _check_int(radius, "radius", 1)
    img = img.clamp(0.0, 1.0)
    air = _airlight(img, _dark_channel(img, patch))
    # omega < 1 keeps a little haze on purpose: far objects look unnatural without aerial perspective.
    t = 1.0 - omega * _dark_channel(img / air, patch)
    if refine:
        h, w = img.shape[-2:]
        r = radius if radius is not None else _default_radius(patch, h, w)
        t = guided_filter(_grey(img), t, r, eps)
    # the t0 floor stops dense haze (t -> 0) from amplifying noise into garbage
    t = t.clamp(min=t0, max=1.0)
    return finish_batch((img - air) / t + air, x, single)


def _percentiles(x: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    """Per-(image, channel) percentiles of (N,C,H,W), each (N,C,1,1), interpolated linearly."""
    # own sort-based quantile: torch.quantile refuses inputs above 16M elements (a batch of photos)
    s = x.flatten(2).sort(dim=2).values
    n = s.shape[2]
    out = []
    for q in (low, high):
        pos = q * (n - 1)
        i0 = math.floor(pos)
        i1 = min(i0 + 1, n - 1)
        frac = pos - i0
        out.append((s[..., i0] * (1.0 - frac) + s[..., i1] * frac)[..., None, None])
    return out[0], out[1]


def _stretch(img: Tensor, low: float, high: float) -> Tensor:
    lo, hi = _percentiles(img, low, high)
    span = hi - lo
    stretched = (img - lo) / span.clamp_min(_MIN_SPAN)
    return torch.where(span > _MIN_SPAN, stretched, img)


def contrast_stretch(x: Tensor, low: float = 0.01, high: float = 0.99) -> Tensor:
    """Map each channel's ``low``..``high`` percentiles (per image) linearly to 0..1; flat channels pass."""
    img, single = working_batch(x, "x")
    low = _check_real(low, "low", 0.0, 1.0)
    high = _check_real(high, "high", 0.0, 1.0)
    if not low < high:
        raise ValueError(f"low must be below high, got low={low} and high={high}")
    return finish_batch(_stretch(img, low, high), x, single)


def gamma_restore(x: Tensor, gamma: float = 1.5) -> Tensor:
    """Darken mid-tones by ``x**gamma``, then stretch each channel's 0.1..99.9 percentiles to 0..1."""
    img, single = working_batch(x, "x")
    gamma = _check_real(gamma, "gamma", 0.0, math.inf, lo_open=True)
    # the floor keeps the gradient of pow finite at black for gamma < 1
    y = img.clamp(1e-6, 1.0).pow(gamma)
    return finish_batch(_stretch(y, 0.001, 0.999), x, single)


def _identity(x: Tensor) -> Tensor:
    """No dehazing: the hazy input, checked and clamped."""
    img, single = working_batch(x, "x")
    return finish_batch(img, x, single)


@dataclass(frozen=True)
class Dehazer:
    """A named dehazer: a function with preset options; calling it runs ``fn(x, **defaults, **options)``."""

    fn: Callable[..., Tensor]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    #: False when the result at a pixel depends on whole-image statistics (airlight, percentiles).
    tileable: bool = False
    #: Peak working memory per pixel in bytes, as clipiq.restore.evaluate measures it on CPU, rounded up.
    bytes_per_pixel: int = 96
    paper: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options ``fn`` takes besides the image."""
        return tuple(list(inspect.signature(self.fn).parameters)[1:])

    def __call__(self, x: Tensor, **options: Any) -> Tensor:
        return self.fn(x, **{**self.defaults, **options})


#: Named dehazers, from weakest to strongest; each maps an image or batch to the same shape.
DEHAZERS: Registry[Dehazer] = Registry("dehazer")  # lists in registration order
# float64 integral images for the guided filter make the refined DCP the most memory-hungry
_DCP = {"fn": dark_channel_prior, "bytes_per_pixel": 256, "paper": _DCP_PAPER}
for _name, _dehazer in {
    "none": Dehazer(_identity, "no dehazing: the hazy input", tileable=True, bytes_per_pixel=32),
    "gamma": Dehazer(gamma_restore, "weak global dehazer: gamma 1.5 and a mild stretch", {"gamma": 1.5}),
    "contrast": Dehazer(contrast_stretch, "global dehazer: 1..99 percentile stretch per channel",
                        {"low": 0.01, "high": 0.99}),
    "dcp-weak": Dehazer(description="under-dehazed: the dark channel prior removing only 60% of the haze",
                        defaults={"omega": 0.6}, **_DCP),
    "dcp": Dehazer(description="dark channel prior, He et al.'s settings: omega 0.95, t0 0.1, guided filter",
                   defaults={"omega": 0.95}, **_DCP),
    "dcp-strong": Dehazer(description="over-dehazed: omega 1, t0 0.05 and the blocky unrefined transmission "
                          "(halos at edges)", defaults={"omega": 1.0, "t0": 0.05, "refine": False},
                          **{**_DCP, "bytes_per_pixel": 128}),
}.items():
    DEHAZERS.register(_name, _dehazer)


def dehaze(x: Tensor, name: str, **options: Any) -> Tensor:
    """Run the dehazer called ``name`` in :data:`DEHAZERS` on an image (3,H,W) or batch (N,3,H,W)."""
    return DEHAZERS.get(name)(x, **options)


class DehazeRestorer(Restorer):
    """A :data:`DEHAZERS` entry as a restorer (restorer name ``dehaze-<dehazer>``); options override its presets."""

    def __init__(self, dehazer: str, *, precision: str = "fp32", **options: Any):
        entry = DEHAZERS.get(dehazer)
        run = {k: options.pop(k) for k in RUN_OPTIONS if k in options}
        # instance attributes before the base class reads them (its tiling warning, its budget)
        self.name = f"dehaze-{dehazer}"
        self.tileable = entry.tileable
        self.bytes_per_pixel = entry.bytes_per_pixel
        super().__init__(precision=precision, **run)
        self.dehazer = entry
        self.options = options
        entry(torch.full((3, 2, 2), 0.5), **options)  # bad option values fail now, not on the first image

    def restore_batch(self, x: Tensor) -> Tensor:
        """Dehaze each image of the batch."""
        return self.dehazer(x, **self.options)


for _key, _entry in DEHAZERS.items():
    register_restorer(RestorerSpec(
        name=f"dehaze-{_key}", factory=partial(DehazeRestorer, _key), description=_entry.description,
        task="dehaze", tileable=_entry.tileable, options=_entry.options, paper=_entry.paper,
    ))  # fmt: skip
