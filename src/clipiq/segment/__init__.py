"""Region segmenters behind one registry: each returns a partition of the image into regions 0..K-1.

:func:`create_segmenter` builds a :class:`Segmenter` by name (see :func:`list_segmenters`): ``slic`` (the
offline default), ``felzenszwalb``, ``grid`` and ``sam`` (Segment Anything, needs weights). A segmenter takes
a [0,1] float tensor (3,H,W) or (N,3,H,W) and returns int64 labels (H,W) or (N,H,W). Importing this package
imports neither scikit-image nor transformers; the segmenter classes load on first use.

Region descriptions (RSFIQA): :func:`create_describer` builds a :class:`RegionDescriber` by name (see
:func:`list_describers`): ``clip`` (the offline default, dense CLIP maps) and ``mllm`` (a transformers
multimodal LLM). ``describer(image, labels)`` gives one :class:`RegionDescription` per region, a level of
:data:`LEVELS` per dimension of :data:`DIMENSIONS`. They load on first use too.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipiq.segment.base import Segmenter
from clipiq.segment.masks import box_iou, box_nms, mask_boxes, masks_to_partition
from clipiq.segment.regions import fill_unlabelled, merge_small_regions, relabel_consecutive
from clipiq.segment.registry import (
    DEFAULT_SEGMENTER,
    SEGMENTERS,
    SegmenterSpec,
    create_segmenter,
    get_segmenter_spec,
    list_segmenters,
    register_segmenter,
)

_DESCRIBE = ("CONTENT_WORDS", "DESCRIBERS", "DIMENSIONS", "LEVELS", "PROMPT_PAIRS", "THRESHOLDS", "ClipDescriber",
             "DescriberSpec", "RegionDescriber", "RegionDescription", "create_describer", "get_describer_spec",
             "list_describers", "register_describer")

_LAZY = {
    **dict.fromkeys(_DESCRIBE, "clipiq.segment.describe"),
    "MllmDescriber": "clipiq.segment.describe_mllm",
    "FelzenszwalbSegmenter": "clipiq.segment.felzenszwalb",
    "GridSegmenter": "clipiq.segment.grid",
    "SAM_CHECKPOINTS": "clipiq.segment.sam",
    "SamSegmenter": "clipiq.segment.sam",
    "SlicSegmenter": "clipiq.segment.slic",
    "grid_labels": "clipiq.segment.grid",
    "load_sam_model": "clipiq.segment.sam",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONTENT_WORDS",
    "DEFAULT_SEGMENTER",
    "DESCRIBERS",
    "DIMENSIONS",
    "LEVELS",
    "PROMPT_PAIRS",
    "SAM_CHECKPOINTS",
    "SEGMENTERS",
    "THRESHOLDS",
    "ClipDescriber",
    "DescriberSpec",
    "FelzenszwalbSegmenter",
    "GridSegmenter",
    "MllmDescriber",
    "RegionDescriber",
    "RegionDescription",
    "SamSegmenter",
    "Segmenter",
    "SegmenterSpec",
    "SlicSegmenter",
    "box_iou",
    "box_nms",
    "create_describer",
    "create_segmenter",
    "fill_unlabelled",
    "get_describer_spec",
    "get_segmenter_spec",
    "grid_labels",
    "list_describers",
    "list_segmenters",
    "load_sam_model",
    "mask_boxes",
    "masks_to_partition",
    "merge_small_regions",
    "register_describer",
    "register_segmenter",
    "relabel_consecutive",
]
