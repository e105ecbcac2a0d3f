"""``clipiq train grmp-finetune``: GRMP-IQA few-shot fine-tuning under the shared n-round IQA protocol.

The paper's recipe: k = 50 labelled images drawn from the 80 % training part of each of 10 random 80/20
splits; SGD at lr 1e-3 (no momentum, as in the authors' code), weight decay 1e-4, the whole k-shot set as
one batch; the text context, the last 4 blocks of both towers, their final layer norms and ``prompt_norm``
train while the VPT tokens stay frozen (the authors' set; ``model.train_vpt`` trains them too); lr x 0.3 when
the validation SRCC plateaus; the quality loss's gradient is projected against the scene-KL gradient with
lambda = 5 (``regularization``). ``model.meta_init`` starts the prompts from grmp-pretrain's meta-prompts.
Unlike the authors' code, the checkpoint is chosen on a validation split carved from the training part,
never on the test split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clipiq.iqa.grmp_iqa import MODEL_DEFAULTS, REG_DEFAULTS, GRMPIQAModel, build_model
from clipiq.train.protocol import iqa_defaults, run_protocol

DEFAULTS: dict[str, Any] = iqa_defaults({
    "method": "grmp-iqa",
    "model": dict(MODEL_DEFAULTS),
    "regularization": dict(REG_DEFAULTS),
    "train": {"epochs": 500, "batch_size": 64, "optimizer": "sgd", "momentum": 0.0, "lr": 1e-3,
              "weight_decay": 1e-4, "schedule": "plateau", "plateau_factor": 0.3, "plateau_patience": 5,
              "eval_every": 5, "patience": 20},
    "protocol": {"rounds": 10, "ratios": [0.8, 0.2], "val_fraction": 0.1, "shots": 50},
})


def build(cfg: Mapping[str, Any], device: torch.device) -> GRMPIQAModel:
    """A fresh model on a freshly loaded backbone (its last blocks are tuned), prompts from meta_init if set."""
    return build_model(cfg["model"], cfg["regularization"], stage="finetune", device=device)


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Run the configured protocol; returns the summary (also written to run_dir/summary.json)."""
    return run_protocol(cfg, run_dir, device, build, resume=resume, progress=progress)


__all__ = ["DEFAULTS", "build", "run"]
