"""Padding to a network's size multiple, and overlapping tiles blended back with smooth weights.

A restorer that works on local neighbourhoods can process a large image as tiles and give (almost) the
untiled result, provided every output pixel is taken from tiles that saw enough context around it:

* Tiles of side ``tile`` are spread evenly over each axis so that neighbours overlap by at least
  ``overlap`` pixels (:func:`tile_starts`); an axis no longer than ``tile`` is one tile.
* Each tile's output is weighted by a separable window (:func:`axis_window`) that is 0 for the
  ``margin = overlap // 4`` pixels next to an edge shared with another tile (where the tile saw padding
  instead of the real neighbourhood), rises as a raised cosine (``sin^2``) over the rest of the overlap,
  and is 1 elsewhere and along the image border. Complementary raised-cosine ramps sum to 1, so where two
  tiles overlap by exactly ``overlap`` the blend is a partition of unity; elsewhere the weighted sum is
  divided by the summed weights.
* Sums are accumulated in float64: when every tile gives a pixel the same float32 value (a pointwise
  operator) the normalised float64 sum rounds back to exactly that value, so tiling is exact.

For an operator whose output depends on at most ``margin`` pixels around each pixel, tiled equals untiled
up to float rounding; beyond that the blend hides the seams but cannot recover context a tile never saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["axis_window", "margin_for", "tile_starts", "tiled_apply"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of ``tile``-sized tiles covering ``length``, spread evenly, neighbours overlapping >= ``overlap``."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile), got overlap={overlap} and tile={tile}")
    if length <= tile:
        return [0]
    # n - 1 >= (length - tile) / (tile - overlap) keeps every step, rounded up, at most tile - overlap.
    n = 1 + math.ceil((length - tile) / (tile - overlap))
    return [i * (length - tile) // (n - 1) for i in range(n)]


def margin_for(overlap: int) -> int:
    """Pixels next to a shared tile edge that get weight 0: a quarter of the overlap."""
    return overlap // 4


def axis_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool, dtype: torch.dtype = torch.float64
                ) -> Tensor:
    """Blend weights (size,) for one tile along one axis; ``ramp_start``/``ramp_end``: that edge is shared.

    0 for ``margin_for(overlap)`` pixels at a shared edge, a ``sin^2`` ramp over the rest of the overlap, else 1.
    """
    w = torch.ones(size, dtype=dtype)
    m = margin_for(overlap)
    width = overlap - 2 * m  # the ramp is centred in the overlap, so two neighbours' ramps coincide
    if width <= 0:
        return w
    # pixel centres (i + 0.5): the first ramp pixel is already above 0, so covered pixels never sum to 0
    pos = (torch.arange(size, dtype=dtype) + 0.5 - m) / width
    ramp = torch.sin(pos.clamp(0.0, 1.0) * (math.pi / 2)) ** 2
    if ramp_start:
        w = w * ramp
    if ramp_end:
        w = w * ramp.flip(0)
    return w


def tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, scale: int = 1,
                out_device: torch.device | str = "cpu") -> Tensor:
    """Run ``fn`` on overlapping ``tile`` x ``tile`` crops of (N,C,H,W) ``x`` and blend the outputs.

    ``fn`` maps (N,C,h,w) to (N,C',h*scale,w*scale). The result, (N,C',H*scale,W*scale) float32 on
    ``out_device``, is accumulated there in float64, so device memory holds only one tile at a time.
    """
    n, _, h, w = x.shape
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    s = scale
    out: Tensor | None = None
    weight = torch.zeros(h * s, w * s, dtype=torch.float64, device=out_device)
    for i, top in enumerate(rows):
        wy = axis_window(th * s, overlap * s, i > 0, i < len(rows) - 1).to(out_device)
        for j, left in enumerate(cols):
            wx = axis_window(tw * s, overlap * s, j > 0, j < len(cols) - 1).to(out_device)
            # contiguous, as an untiled image is: some kernels round differently on strided views
            y = fn(x[..., top : top + th, left : left + tw].contiguous())
            if y.shape[-2:] != (th * s, tw * s):
                raise RuntimeError(f"a {th}x{tw} tile gave a {tuple(y.shape[-2:])} output; expected scale {s}")
            if out is None:
                out = torch.zeros(n, y.shape[1], h * s, w * s, dtype=torch.float64, device=out_device)
            win = wy[:, None] * wx[None, :]
            region = (slice(top * s, (top + th) * s), slice(left * s, (left + tw) * s))
            out[(..., *region)] += y.to(out_device, torch.float64) * win
            weight[region] += win
    assert out is not None  # at least one tile
    return (out / weight).float()
