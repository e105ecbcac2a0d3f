"""The shared part of metrics that score with a trained method checkpoint (clip-dqa, grmp-iqa, clipiqa+)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from clipiq.clip.model import CLIP
from clipiq.core.hub import HubFile, resolve
from clipiq.iqa.base import QualityMetric


class TrainedMetric(QualityMetric):
    """A method checkpoint rebuilt on its own backbone behind the shared inference wrapper.

    Subclasses set ``spec``, ``load_net`` (the method's ``load_model``: checkpoint, model, weights,
    device, precision -> a network with a ``clip`` backbone) and ``train_command`` (how to train a
    checkpoint, quoted when none is given), then apply their own options to ``self.net``. A method that
    ships checkpoints inside the package lists them in ``shipped`` (by backbone name, sha256-pinned hub
    records) and names the backbone used when neither a model nor a checkpoint is given in
    ``default_backbone``: ``create_metric(name)`` then works offline with no arguments.
    """

    load_net: ClassVar[Callable[..., nn.Module]]
    train_command: ClassVar[str]
    shipped: ClassVar[Mapping[str, HubFile]] = {}
    default_backbone: ClassVar[str | None] = None

    def __init__(self, checkpoint: str | os.PathLike | None, *, model: str | None = None,
                 weights: str | None = None, device: torch.device | str | None = None, precision: str = "fp32",
                 batch_size: int = 16):
        name = self.spec.name
        if checkpoint is None:
            if weights is not None:
                raise ValueError(f"{name}: shipped checkpoints are chosen by backbone name, not by a weights file; "
                                 "pass checkpoint=FILE with weights=")
            checkpoint = self.shipped_checkpoint(model)
        net = self.load_net(checkpoint, model=model, weights=weights, device=device, precision=precision)
        super().__init__(net.clip.device, net.clip.dtype, batch_size)
        self.net = net
        # The checkpoint is part of what produced a score: scores files record the backbone and the file's hash.
        digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:12]
        self.model_id = f"{net.clip.weights_name}+{Path(checkpoint).name}#{digest}"

    @classmethod
    def shipped_checkpoint(cls, model: str | None = None) -> Path:
        """The verified path of the checkpoint shipped for backbone ``model`` (default: ``default_backbone``)."""
        name = cls.spec.name
        backbone = model or cls.default_backbone
        record = cls.shipped.get(backbone.lower()) if backbone else None
        if record is None:
            which = f"for backbone {backbone!r} " if backbone else ""
            raise ValueError(f"{name} needs a trained checkpoint: none ships {which}(shipped for: "
                             f"{', '.join(cls.shipped) or 'none'}); pass create_metric({name!r}, checkpoint=FILE) or "
                             f"clipiq score --metric {name} --checkpoint FILE (train one with `{cls.train_command}`)")
        return resolve(record)

    @property
    def clip(self) -> CLIP:
        """The backbone (for callers that report which weights scored)."""
        return self.net.clip


__all__ = ["TrainedMetric"]
