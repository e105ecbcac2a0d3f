"""``clipiq train rsfiqa``: RSFIQA's small trained part (quality-pair context, region scorer, description gate,
CLS/region mixing) under the shared n-round IQA protocol, the backbone frozen.

Our recipe (the paper's text gives none we could follow exactly): the whole view (longer side
``model.view_size``) with a random horizontal flip, MSE against the MOS scaled to [0,1], Adam at 1e-3 (few,
small tensors), batch 16, 10 epochs, 80/20 splits by content over 10 rounds with early stopping on a validation
split of the training part. Segmentations and descriptions are computed once per image and shared by every
round of a run (one :class:`~clipiq.iqa.rsfiqa.RegionCache` per segmentation setting in this process).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clipiq.iqa.rsfiqa import MODEL_DEFAULTS, RegionCache, RSFIQAModel, build_model
from clipiq.train.protocol import iqa_defaults, run_protocol

DEFAULTS: dict[str, Any] = iqa_defaults({
    "method": "rsfiqa",
    "model": dict(MODEL_DEFAULTS),
    "data": {"region_cache_mb": 1024},  # segmentations and descriptions kept per image
    "train": {"epochs": 10, "batch_size": 16, "optimizer": "adam", "lr": 1e-3, "schedule": "constant"},
    "protocol": {"rounds": 10, "ratios": [0.8, 0.2], "val_fraction": 0.1, "group": "auto", "train_eval": 64},
})

_CACHES: dict[str, RegionCache] = {}


def region_cache(cfg: Mapping[str, Any]) -> RegionCache:
    """The process's region cache for this config's segmentation and description settings."""
    m = cfg["model"]
    key = json.dumps({k: m.get(k) for k in ("backbone", "weights", "segmenter", "segmenter_options", "segment_size",
                                            "describer", "describer_options", "max_regions")},
                     sort_keys=True, default=str)
    if key not in _CACHES:
        _CACHES[key] = RegionCache(float(cfg["data"].get("region_cache_mb", 1024)))
    return _CACHES[key]


def build(cfg: Mapping[str, Any], device: torch.device) -> RSFIQAModel:
    """Fresh trained tensors on the configured (frozen) backbone, sharing the run's region cache."""
    return build_model(cfg["model"], device=device, region_cache=region_cache(cfg))


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Run the configured protocol; returns the summary (also written to run_dir/summary.json)."""
    return run_protocol(cfg, run_dir, device, build, resume=resume, progress=progress)
