"""Blur kernels: anti-aliased disks (defocus) and random camera-shake trajectories (motion)."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

# Sub-pixel grid used to anti-alias the disk edge.
_DISK_SUPERSAMPLE = 8
# Number of random direction changes along a trajectory; fixed so that the same seed yields the same
# trajectory shape whatever its length (lengths only rescale it).
_TRAJECTORY_STEPS = 64
# The path is drawn with a Gaussian of std SOFTNESS * length. Besides modelling the lens and pixel
# footprint, this damps the sinc-like side lobes of a thin path's spectrum; without it a longer path can
# blur a periodic texture (a fence, say) less than a shorter one, which breaks the severity ordering.
SOFTNESS = 0.1


def disk_kernel(radius: float) -> np.ndarray:
    """Anti-aliased, normalised disk (pillbox) of the given radius in pixels, odd size 2*ceil(radius)+1."""
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    r = math.ceil(radius)
    s = _DISK_SUPERSAMPLE
    # sample centres of an s x s sub-grid inside every pixel
    t = (np.arange((2 * r + 1) * s) + 0.5) / s - (r + 0.5)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    k = inside.reshape(2 * r + 1, s, 2 * r + 1, s).mean(axis=(1, 3))
    return k / k.sum()


def motion_trajectory(rng: np.random.Generator) -> np.ndarray:
    """A random camera-shake path of unit length as complex points (x + iy), starting at 0.

    The heading follows a random walk with a random overall drift (curved strokes), and occasionally jumps
    by a large angle (abrupt shakes), in the spirit of Boracchi & Foi (2012).
    """
    n = _TRAJECTORY_STEPS
    heading0 = rng.uniform(0.0, 2 * math.pi)
    wobble = rng.uniform(0.0, 0.35)  # std of the per-step heading change, radians
    drift = rng.normal(0.0, 0.04)  # steady turning per step, radians
    jerk_prob = rng.uniform(0.0, 0.06)
    turns = drift + wobble * rng.standard_normal(n)
    jerks = rng.random(n) < jerk_prob
    turns = turns + jerks * rng.choice([-1.0, 1.0], size=n) * rng.uniform(math.pi / 2, math.pi, size=n)
    heading = heading0 + np.cumsum(turns)
    steps = np.exp(1j * heading) / n
    return np.concatenate([[0.0 + 0.0j], np.cumsum(steps)])


def motion_kernel(
    length: float,
    rng: np.random.Generator | int | None = None,
    trajectory: np.ndarray | None = None,
    softness: float = SOFTNESS,
) -> np.ndarray:
    """Normalised motion-blur kernel tracing a random trajectory of `length` pixels, centred on its mass.

    Pass `trajectory` (from `motion_trajectory`) to reuse one path at several lengths; the path is drawn
    with a Gaussian of std `softness * length`.
    """
    if not length > 0:
        raise ValueError(f"length must be > 0, got {length}")
    if not softness >= 0:
        raise ValueError(f"softness must be >= 0, got {softness}")
    if trajectory is None:
        trajectory = motion_trajectory(np.random.default_rng(rng))
    pts = np.asarray(trajectory, dtype=np.complex128) * length
    # resample the polyline densely (<= 0.25 px apart) so the splatted kernel has no gaps
    seg = np.abs(np.diff(pts))
    dense = [pts[:1]]
    for a, b, d in zip(pts[:-1], pts[1:], seg):
        m = max(1, math.ceil(d / 0.25))
        dense.append(a + (b - a) * (np.arange(1, m + 1) / m))
    pts = np.concatenate(dense)
    pts = pts - pts.mean()  # centre of mass at the kernel centre, so blur does not shift the image
    sigma = softness * length
    r = math.ceil(np.max(np.abs(np.concatenate([pts.real, pts.imag])))) + 1 + math.ceil(3 * sigma)
    size = 2 * r + 1
    k = np.zeros((size, size), dtype=np.float64)
    x, y = pts.real + r, pts.imag + r
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    # bilinear splatting of every sample onto its four neighbouring pixels
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    if sigma > 0:
        k = gaussian_filter(k, sigma, mode="constant", truncate=3.0)
    return k / k.sum()
