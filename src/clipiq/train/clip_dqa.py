"""``clipiq train clip-dqa``: CLIP-DQA's prompts trained under the shared n-round IQA protocol.

The paper's recipe: frozen backbone, one random full-resolution patch plus the global view per image,
MSE against the MOS scaled to [0,1], Adam at 1e-4, batch 64, 25 epochs, 80/20 splits by scene over 10
rounds. Unlike the authors' code, the epoch is chosen on a validation split carved from the training
scenes (not on the test split), images are normalised with the backbone's own statistics, and the SRCC
on 128 training images is logged at each evaluation (``train_srcc``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clipiq.iqa.clip_dqa import MODEL_DEFAULTS, CLIPDQAModel, build_model
from clipiq.train.protocol import iqa_defaults, run_protocol

DEFAULTS: dict[str, Any] = iqa_defaults({
    "method": "clip-dqa",
    "model": dict(MODEL_DEFAULTS),
    "train": {"epochs": 25, "batch_size": 64, "optimizer": "adam", "lr": 1e-4, "schedule": "constant"},
    "protocol": {"rounds": 10, "ratios": [0.8, 0.2], "val_fraction": 0.1, "group": "auto", "train_eval": 128},
})


def build(cfg: Mapping[str, Any], device: torch.device) -> CLIPDQAModel:
    """Fresh prompts on the configured backbone (the backbone is frozen)."""
    return build_model(cfg["model"], device=device)


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Run the configured protocol; returns the summary (also written to run_dir/summary.json)."""
    return run_protocol(cfg, run_dir, device, build, resume=resume, progress=progress)
