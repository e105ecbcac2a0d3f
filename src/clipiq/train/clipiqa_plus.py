"""``clipiq train clipiqa-plus``: CLIP-IQA+'s prompts trained under the shared n-round IQA protocol.

The backbone is frozen, so every round shares one backbone and one feature cache: each image's view
features are computed once, and training then runs only the text tower. The two contexts start at the
zero-shot phrases; the epoch is chosen by early stopping on a validation part carved from the training part.
With ``protocol.ratios: [1.0, 0.0]`` one round trains on every image (validation still carved from them):
the prompts to ship. The summary also holds zero-shot clipiqa (the untrained prompts) on the same test parts.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipiq.clip.load import load_clip
from clipiq.core.hub import sha256_file
from clipiq.data.labels import IQALabels
from clipiq.iqa.clipiqa_plus import METHOD, MODEL_DEFAULTS, FeatureCache, build_model
from clipiq.train import parallel
from clipiq.train.protocol import (
    ImageCache,
    correlations,
    iqa_defaults,
    load_iqa_labels,
    normalised_targets,
    predict_indices,
    round_split,
    run_protocol,
)

DEFAULTS: dict[str, Any] = iqa_defaults({
    "method": METHOD,
    "model": dict(MODEL_DEFAULTS),
    "train": {"epochs": 60, "batch_size": 32, "optimizer": "adam", "lr": 2e-3, "schedule": "constant",
              "patience": 10},
    "protocol": {"rounds": 10, "ratios": [0.8, 0.2], "val_fraction": 0.1, "group": "auto", "eval_batch": 64},
})


def _provenance(cfg: Mapping[str, Any], labels: IQALabels) -> dict[str, Any]:
    """What the prompts were trained on, recorded in every checkpoint's config."""
    src = cfg["data"].get("labels")
    return {"dataset": labels.name, "labels": src, "n_images": len(labels),
            "labels_sha256": sha256_file(src) if src and Path(src).is_file() else None}


def _zero_shot(cfg: Mapping[str, Any], labels: IQALabels, images: ImageCache, model: Any) -> dict[str, Any]:
    """The untrained prompts (zero-shot clipiqa) on each round's test part, as the protocol splits them."""
    pcfg = cfg["protocol"]
    which = range(int(pcfg["rounds"])) if pcfg.get("only_round") is None else [int(pcfg["only_round"])]
    tests = [list(round_split(labels, pcfg, int(cfg["seed"]) + r).test) for r in which]
    if not any(tests):
        return {}
    scored = sorted({i for t in tests for i in t})
    pred = dict(zip(scored, predict_indices(model, images, scored, int(pcfg["eval_batch"]), "test",
                                            int(cfg["data"].get("workers", 2)))))
    targets = normalised_targets(labels)
    rows = [correlations(np.array([pred[i] for i in t]), targets[t]) for t in tests]
    return {f"{k}_{stat}": fn([r[k] for r in rows]) for k in ("srcc", "plcc")
            for stat, fn in (("median", statistics.median), ("mean", statistics.fmean))}


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Run the configured protocol; returns the summary (also written to run_dir/summary.json)."""
    labels = load_iqa_labels(cfg["data"])
    cfg = {**cfg, "trained_on": _provenance(cfg, labels)}
    mcfg = {**MODEL_DEFAULTS, **cfg["model"]}
    clip, preprocess = load_clip(mcfg["backbone"], weights=mcfg["weights"], device=device)
    # One frozen backbone and view setting for every round: each image's features are computed once, while
    # the shared image cache holds the decoded image (the zero-shot baseline reuses both).
    features = FeatureCache()
    images = ImageCache(labels, cfg["data"].get("cache_mb", 4096))

    def build(c: Mapping[str, Any], dev: torch.device) -> Any:
        return build_model(c["model"], clip=clip, preprocess=preprocess, features=features)

    summary = run_protocol(cfg, run_dir, device, build, resume=resume, progress=progress, labels=labels,
                           images=images)
    if not parallel.is_main_process():  # rank 0 scores the zero-shot baseline and writes the summary
        return summary
    zero = _zero_shot(cfg, labels, images, build(cfg, device).eval())
    if zero:
        summary["zero_shot_clipiqa"] = zero
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
