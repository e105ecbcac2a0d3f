"""What an explanation of one image holds (:func:`clipiq.explain.explain` makes it; :mod:`clipiq.report` renders it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

#: The degradation maps every explanation carries: the per-cell probability of the degraded prompt of each pair.
DEGRADATION_MAPS: tuple[str, ...] = ("dark", "blurry", "noisy")


@dataclass
class RegionExplanation:
    """One region of the image's partition: its score, description and five-dimension levels."""

    label: int  # the value of this region in Explanation.labels
    score: float  # the region's quality in [0, 1], higher is better
    area: float  # fraction of the image's pixels
    description: str  # one short sentence
    dimensions: dict[str, str] = field(default_factory=dict)  # colour, noise, artifacts, blur, overall -> level


@dataclass
class Explanation:
    """Why one image scores as it does: its score and attributes, maps, worst-first regions, and a restoration."""

    metric: str  # the metric that gave ``score``
    score: float  # the global quality, higher is better
    image: Tensor  # (3, H, W) float in [0, 1]: the image the maps and labels refer to (possibly downscaled)
    attributes: dict[str, float] = field(default_factory=dict)  # e.g. brightness, noisiness, sharpness in [0, 1]
    heatmap: Tensor | None = None  # (H, W) float in [0, 1], 1 = worst quality at that place
    degradation_maps: dict[str, Tensor] = field(default_factory=dict)  # DEGRADATION_MAPS -> (H, W) in [0, 1]
    labels: Tensor | None = None  # (H, W) int64 partition, values 0..K-1
    regions: list[RegionExplanation] = field(default_factory=list)  # worst first
    restorer: str | None = None  # the restorer's name when a restoration was asked for
    restored: Tensor | None = None  # (3, H', W') float in [0, 1]
    restored_score: float | None = None  # ``metric`` on the restored image
    source: str = ""  # the input's path (or a name) for reports
    original_size: tuple[int, int] | None = None  # (H, W) of the input before any downscaling
