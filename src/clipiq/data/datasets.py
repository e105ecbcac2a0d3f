"""Torch datasets over IQA label records, with per-file errors and an option to skip unreadable images."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from clipiq.data.io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from clipiq.data.labels import IQASample

logger = logging.getLogger(__name__)

__all__ = ["IQADataset", "skip_bad_collate"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class IQADataset(Dataset):
    """Images and scores of IQA records; items are dicts ``image``, ``score``, ``index``, ``path``.

    ``transform`` receives the (3,H,W) float image in [0,1]. With ``load_ref=True`` the item also holds
    ``ref`` and the transform receives ``torch.stack([image, ref])`` (2,3,H,W), so random crops and flips
    hit both alike. An unreadable file raises :class:`ImageLoadError` naming it; with ``skip_bad=True`` it
    is logged and the item is ``None``, which :func:`skip_bad_collate` drops from the batch. (Through
    DataLoader workers torch re-raises the error as a RuntimeError whose message keeps the file name.)
    """

    def __init__(
        self,
        samples: Sequence[IQASample],
        transform: Transform | None = None,
        *,
        load_ref: bool = False,
        skip_bad: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.samples = samples
        self.transform = transform
        self.load_ref = load_ref
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        if load_ref:
            missing = [i for i, s in enumerate(samples) if s.ref is None]
            if missing:
                n, first = len(missing), missing[0]
                raise ValueError(f"load_ref=True but {n} records have no reference (first: index {first})")

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = load_image(s.path, max_pixels=self.max_pixels)
        item: dict[str, Any] = {"index": index, "path": str(s.path)}
        if self.load_ref and s.ref is not None:
            ref = load_image(s.ref, max_pixels=self.max_pixels)
            if ref.shape != image.shape:
                sizes = f"{tuple(image.shape[1:])} vs {tuple(ref.shape[1:])}"
                raise ImageLoadError(s.path, f"size differs from its reference {s.ref}: {sizes}")
            if self.transform is not None:
                image, ref = self.transform(torch.stack([image, ref])).unbind(0)
            item["ref"] = ref
        elif self.transform is not None:
            image = self.transform(image)
        item["image"] = image
        item["score"] = torch.tensor(s.score, dtype=torch.float32)
        return item

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self._load(index)
        except ImageLoadError as e:
            if not self.skip_bad:
                raise
            logger.warning("skipping item %d: %s", index, e)
            return None


def skip_bad_collate(batch: Sequence[Any]) -> Any:
    """``default_collate`` after dropping ``None`` items; returns ``None`` when every item was bad."""
    kept = [b for b in batch if b is not None]
    if len(kept) < len(batch):
        logger.debug("dropped %d unreadable items from a batch of %d", len(batch) - len(kept), len(batch))
    return default_collate(kept) if kept else None
