"""The one inference wrapper every quality metric shares: input validation, batching, precision."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from clipiq.core.image import check_image_batch, pil_to_tensor
from clipiq.data.io import DEFAULT_MAX_PIXELS, open_image

ImageInput = str | os.PathLike | Image.Image | Tensor


def to_tensor_list(inputs: ImageInput | Sequence[ImageInput], max_pixels: int | None = DEFAULT_MAX_PIXELS
                   ) -> list[Tensor]:
    """Validate paths, PIL images or [0,1] float tensors and return a list of (3,H,W) tensors."""
    if isinstance(inputs, Tensor):
        return list(check_image_batch(inputs, "images").unbind(0))
    if isinstance(inputs, str | os.PathLike | Image.Image):
        inputs = [inputs]
    if not isinstance(inputs, Iterable):
        raise TypeError(f"images must be paths, PIL images or tensors, got {type(inputs).__name__}")
    out: list[Tensor] = []
    for i, item in enumerate(inputs):
        if isinstance(item, str | os.PathLike):
            out.append(pil_to_tensor(open_image(Path(item), max_pixels=max_pixels)))
        elif isinstance(item, Image.Image):
            out.append(pil_to_tensor(item))
        elif isinstance(item, Tensor):
            out.extend(check_image_batch(item, f"images[{i}]").unbind(0))
        else:
            raise TypeError(f"images[{i}] must be a path, PIL image or tensor, got {type(item).__name__}")
    if not out:
        raise ValueError("no images given")
    return out


class QualityMetric(nn.Module):
    """Base class: subclasses implement ``prepare`` (per image, CPU) and ``score_prepared`` (batch).

    Calling the metric takes paths, PIL images or float tensors (N,3,H,W) in [0,1] and returns a
    float32 CPU tensor of N scores.
    """

    name: str = "metric"
    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    output_names: tuple[str, ...] = ("score",)

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32, batch_size: int = 32):
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def prepare(self, image: Tensor) -> Tensor:
        """One (3,H,W) [0,1] image -> what ``score_prepared`` batches (thread-safe, CPU)."""
        return image

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """A stacked batch of prepared images -> named outputs, at least 'score' of shape (N,)."""
        raise NotImplementedError

    @torch.inference_mode()
    def score_many(self, prepared: Sequence[Tensor]) -> dict[str, Tensor]:
        """Score prepared images, batching runs of equal shape; outputs in input order."""
        outputs: dict[str, list[Tensor]] = {}
        i = 0
        while i < len(prepared):
            j = i + 1
            while j < len(prepared) and j - i < self.batch_size and prepared[j].shape == prepared[i].shape:
                j += 1
            batch = torch.stack(list(prepared[i:j])).to(self.device)
            for k, v in self.score_prepared(batch).items():
                outputs.setdefault(k, []).append(v.detach().float().cpu())
            i = j
        return {k: torch.cat(v) for k, v in outputs.items()}

    def forward(self, images: ImageInput | Sequence[ImageInput], **_: Any) -> Tensor:
        """Scores (N,) for paths, PIL images or a [0,1] float batch."""
        return self.score_with_outputs(images)["score"]

    def score_with_outputs(self, images: ImageInput | Sequence[ImageInput]) -> dict[str, Tensor]:
        """All named outputs (the score and any extras such as CLIP-IQA attributes), each (N,)."""
        tensors = to_tensor_list(images)
        return self.score_many([self.prepare(t) for t in tensors])

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lower_better={self.lower_better}, range={self.score_range}"
