"""A name -> spec registry behind ``create_segmenter`` (each segmenter adds an entry, not a branch).

A spec names the class that builds the segmenter as ``"module:Class"``; it is imported when a segmenter is
created, so listing and option checks import neither scikit-image nor transformers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from clipiq.core.registry import Registry, check_known_options
from clipiq.segment.base import Segmenter

__all__ = ["DEFAULT_SEGMENTER", "LazySpec", "SEGMENTERS", "SegmenterSpec", "create_segmenter",
           "get_segmenter_spec", "list_segmenters", "register_segmenter"]

#: The segmenter used when none is named: offline, no weights.
DEFAULT_SEGMENTER = "slic"

#: Options every segmenter takes (see :class:`clipiq.segment.base.Segmenter`).
COMMON_OPTIONS = ("min_area",)


@dataclass(frozen=True)
class LazySpec:
    """A named component built from ``target``, ``"package.module:Class"``, imported only when first built.

    ``options`` names the component's own options; ``needs`` names the optional packages it imports.
    """

    name: str
    target: str
    description: str
    options: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    has_weights: bool = False

    def load(self) -> type:
        """The component's class (its module imported now)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class SegmenterSpec(LazySpec):
    """What a segmenter is and how to build it (``min_area`` is accepted besides ``options``)."""


SEGMENTERS: Registry[SegmenterSpec] = Registry("segmenter")


def register_segmenter(spec: SegmenterSpec, *, overwrite: bool = False) -> SegmenterSpec:
    """Add a segmenter to the registry (names are unique, case-insensitive)."""
    return SEGMENTERS.register(spec.name, spec, overwrite=overwrite)


def list_segmenters(pattern: str | None = None) -> list[str]:
    """Names of the registered segmenters, optionally only those matching a glob ``pattern``."""
    return SEGMENTERS.names(pattern)


def get_segmenter_spec(name: str) -> SegmenterSpec:
    """The spec of a segmenter; an unknown name raises UnknownNameError with close matches."""
    return SEGMENTERS.get(name)


def create_segmenter(name: str = DEFAULT_SEGMENTER, **options: Any) -> Segmenter:
    """Build a segmenter by name; unknown options raise ConfigError naming the known ones."""
    spec = get_segmenter_spec(name)
    check_known_options("segmenter", spec.name, options, (*spec.options, *COMMON_OPTIONS))
    return spec.load()(**options)




for _spec in (
    SegmenterSpec("slic", "clipiq.segment.slic:SlicSegmenter",
                  "SLIC superpixels on Lab (scikit-image); the offline default",
                  options=("n_segments", "compactness", "sigma"), needs=("scikit-image",)),
    SegmenterSpec("felzenszwalb", "clipiq.segment.felzenszwalb:FelzenszwalbSegmenter",
                  "Felzenszwalb-Huttenlocher graph segmentation (scikit-image), parameters per 500x500 pixels",
                  options=("scale", "sigma", "min_size"), needs=("scikit-image",)),
    SegmenterSpec("grid", "clipiq.segment.grid:GridSegmenter", "rows x cols rectangles (default 2x2)",
                  options=("rows", "cols")),
    SegmenterSpec("sam", "clipiq.segment.sam:SamSegmenter",
                  "Segment Anything automatic masks (transformers SamModel) merged into a partition",
                  options=("weights", "checkpoint", "allow_unverified", "points_per_side", "points_per_batch",
                           "pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                           "mask_threshold", "device"),
                  needs=("transformers",), has_weights=True),
):
    register_segmenter(_spec)
del _spec
