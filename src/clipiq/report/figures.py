"""The pictures of a report: photos, heatmap overlays, region outlines and the score histogram.

Everything here returns PIL images or encoded bytes; nothing is written to disk. matplotlib is imported
lazily (only its colormaps and the Agg canvas are used), so importing :mod:`clipiq.report` stays cheap.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from clipiq.clip.preprocess import longer_side_at_most

#: The longer side of the large pictures of a page (quality map, regions, before / after).
PHOTO_SIDE = 768
#: The longer side of the degradation maps and of the index's thumbnails.
SMALL_SIDE = 192
THUMB_SIDE = 160
#: The colormap of the quality heatmap (1 = worst: red) and of the degradation maps.
HEATMAP_CMAP = "RdYlGn_r"
DEGRADATION_CMAP = "magma"
#: How much of the heatmap's colour covers the photo.
HEATMAP_ALPHA = 0.5
#: The outline colour of region boundaries.
OUTLINE_RGB = (255, 235, 0)


def _matplotlib():
    """matplotlib, on the Agg backend; a pyplot already imported by the caller keeps its backend."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


def colormap(name: str):
    """A matplotlib colormap by name."""
    return _matplotlib().colormaps[name]


def css_gradient(name: str, stops: int = 6) -> str:
    """A CSS ``linear-gradient`` drawing the colormap from 0 (left) to 1 (right), for a legend."""
    cmap = colormap(name)
    parts = []
    for i in range(stops):
        r, g, b, _ = cmap(i / (stops - 1))
        parts.append(f"rgb({round(r * 255)},{round(g * 255)},{round(b * 255)}) {round(100 * i / (stops - 1))}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def _finite(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)


def to_uint8(image: Tensor) -> np.ndarray:
    """A (3, H, W) float tensor in [0, 1] as an (H, W, 3) uint8 array (NaN -> 0, values clipped)."""
    a = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    return (_finite(a) * 255.0 + 0.5).astype(np.uint8)


def photo(image: Tensor, side: int = PHOTO_SIDE) -> Image.Image:
    """The image as an RGB picture, its longer side at most ``side``."""
    im = Image.fromarray(to_uint8(image), "RGB")
    h, w = longer_side_at_most(im.height, im.width, side)
    return im if (h, w) == (im.height, im.width) else im.resize((w, h), Image.Resampling.LANCZOS)


def _map_at(values: Tensor, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) map resized (bilinear) to ``size`` = (h, w), as floats in [0, 1]."""
    a = _finite(values.detach().float().cpu().numpy()).astype(np.float32)
    h, w = size
    if a.shape == (h, w):
        return a
    return np.asarray(Image.fromarray(a, "F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32).clip(0, 1)


def colorize(values: np.ndarray, cmap_name: str) -> np.ndarray:
    """A map in [0, 1] through a colormap, as (H, W, 3) uint8."""
    rgba = colormap(cmap_name)(values)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def heatmap_overlay(base: Image.Image, heatmap: Tensor, alpha: float = HEATMAP_ALPHA) -> Image.Image:
    """The heatmap's colours blended over ``base`` (``alpha`` of colour, the rest photo)."""
    colours = colorize(_map_at(heatmap, (base.height, base.width)), HEATMAP_CMAP)
    mixed = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colours.astype(np.float32)
    return Image.fromarray((mixed + 0.5).clip(0, 255).astype(np.uint8), "RGB")


def map_picture(values: Tensor, side: int = SMALL_SIDE) -> Image.Image:
    """A degradation map on its own, coloured, its longer side at most ``side``."""
    h, w = longer_side_at_most(int(values.shape[-2]), int(values.shape[-1]), side)
    return Image.fromarray(colorize(_map_at(values, (h, w)), DEGRADATION_CMAP), "RGB")


def _labels_at(labels: Tensor, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) label map resized to ``size`` by nearest neighbour."""
    lab = labels.detach().cpu().numpy()
    h, w = size
    rows = np.minimum((np.arange(h) + 0.5) * lab.shape[0] / h, lab.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(w) + 0.5) * lab.shape[1] / w, lab.shape[1] - 1).astype(np.intp)
    return lab[rows[:, None], cols[None, :]]


def boundaries(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """A boolean mask of the pixels on a border between two labels (both sides), dilated to ``thickness``."""
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[1:, :] != labels[:-1, :]
    dx = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    for _ in range(max(0, thickness - 1)):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def _anchor(mask: np.ndarray) -> tuple[int, int] | None:
    """A pixel of the region near its centroid (inside it, even for a ring or a crescent), as (x, y)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[i]), int(ys[i])


def _font(size: int):
    try:  # Pillow >= 10.1 draws its embedded font at any size (needs FreeType); older ones have one bitmap size
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def regions_picture(base: Image.Image, labels: Tensor, numbered: Sequence[int]) -> Image.Image:
    """``base`` with the borders of ``labels`` drawn, and region ``numbered[i]`` marked ``i + 1`` (1 = worst)."""
    lab = _labels_at(labels, (base.height, base.width))
    thickness = 1 if max(base.size) < 400 else 2
    arr = np.array(base)
    arr[boundaries(lab, thickness + 1)] = (0, 0, 0)  # a dark rim keeps the outline visible on bright areas
    arr[boundaries(lab, thickness)] = OUTLINE_RGB
    out = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(out)
    font = _font(max(10, round(max(base.size) / 30)))
    for rank, label in enumerate(numbered, start=1):
        at = _anchor(lab == label)
        if at is None:
            continue
        text = str(rank)
        left, top, right, bottom = draw.textbbox(at, text, font=font, anchor="mm")
        draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
        draw.text(at, text, fill=OUTLINE_RGB, font=font, anchor="mm")
    return out


def thumbnail(image: Tensor, side: int = THUMB_SIDE) -> Image.Image:
    """A small picture of the image for the index's gallery."""
    return photo(image, side)


def encode_jpeg(im: Image.Image, quality: int, scale: float = 1.0) -> bytes:
    """``im`` as a baseline JPEG at ``quality``, first shrunk by ``scale`` when below 1."""
    if scale < 1.0:
        w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()


def histogram_png(scores: Sequence[float], metric: str) -> bytes:
    """A histogram of the scores (NaN dropped) as a small PNG, drawn on matplotlib's Agg canvas."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    values = [float(s) for s in scores if math.isfinite(float(s))]
    fig = Figure(figsize=(6.4, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if values:
        bins = min(30, max(5, len(values) // 3))
        ax.hist(values, bins=bins, color="#4a78b5", edgecolor="white", linewidth=0.6)
    ax.set_xlabel(f"score ({metric})" if metric else "score")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def scatter_png(predicted: Sequence[float], truth: Sequence[float], *, xlabel: str = "prediction",
                ylabel: str = "MOS", title: str = "") -> bytes:
    """Predictions against opinion scores (pairs with a NaN dropped) as a small PNG on matplotlib's Agg canvas."""
    if len(predicted) != len(truth):
        raise ValueError(f"scatter_png: {len(predicted)} predictions for {len(truth)} opinion scores")
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs = [(float(p), float(t)) for p, t in zip(predicted, truth) if math.isfinite(float(p)) and
             math.isfinite(float(t))]
    fig = Figure(figsize=(4.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if pairs:
        xs, ys = zip(*pairs)
        ax.scatter(xs, ys, s=9, alpha=0.6, color="#4a78b5", edgecolors="none")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


__all__ = [
    "DEGRADATION_CMAP",
    "HEATMAP_CMAP",
    "PHOTO_SIDE",
    "SMALL_SIDE",
    "THUMB_SIDE",
    "boundaries",
    "colorize",
    "css_gradient",
    "encode_jpeg",
    "heatmap_overlay",
    "histogram_png",
    "scatter_png",
    "map_picture",
    "photo",
    "regions_picture",
    "thumbnail",
    "to_uint8",
]
