"""The one inference wrapper every quality metric shares: input validation, batching, precision."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from clipiq.data.io import DEFAULT_MAX_PIXELS
from clipiq.data.runner import BatchRunner, ImageInput, RunResult
from clipiq.iqa.spec import MetricSpec


class QualityMetric(nn.Module):
    """Base class: subclasses implement ``prepare`` (per image, CPU) and ``score_prepared`` (batch).

    Calling the metric takes paths, PIL images or float tensors (N,3,H,W) in [0,1] and returns a
    float32 CPU tensor of N scores.
    """

    #: Set by each subclass from the metric registry (and by ``create_metric`` to the spec it built from).
    spec: MetricSpec
    output_names: tuple[str, ...] = ("score",)

    def __init__(self, device: torch.device | str, dtype: torch.dtype = torch.float32, batch_size: int = 32):
        super().__init__()
        self._device = torch.device(device)  # only for a metric without tensors; see ``device``
        self.dtype = dtype
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        """The registered name (from the spec)."""
        return self.spec.name

    @property
    def lower_better(self) -> bool:
        """Whether lower scores mean better quality (from the spec)."""
        return self.spec.lower_better

    @property
    def score_range(self) -> tuple[float, float]:
        """The range scores lie in (from the spec)."""
        return self.spec.score_range

    @property
    def device(self) -> torch.device:
        """Where the metric's tensors are now, so it follows ``.to()``; the construction device if it has none."""
        first = next(self.parameters(), None)
        if first is None:
            first = next(self.buffers(), None)
        return self._device if first is None else first.device

    def prepare(self, image: Tensor) -> Tensor:
        """One (3,H,W) [0,1] image -> what ``score_prepared`` batches (thread-safe, CPU)."""
        return image

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """A stacked batch of prepared images -> named outputs, at least 'score' of shape (N,)."""
        raise NotImplementedError

    @torch.inference_mode()
    def score_batch(self, prepared: Sequence[Tensor]) -> list[dict[str, float]]:
        """Score prepared images of one shape in one forward pass: per image, its outputs by name."""
        batch = torch.stack(list(prepared)).to(self.device)
        outputs = {k: v.detach().float().cpu().tolist() for k, v in self.score_prepared(batch).items()}
        return [{k: v[i] for k, v in outputs.items()} for i in range(len(prepared))]

    def iter_results(self, images: ImageInput | Iterable[ImageInput], *, batch_size: int | None = None,
                     workers: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS, ahead: int | None = None
                     ) -> Iterator[RunResult]:
        """Score many inputs as a stream: one result per input (outputs by name, or an error), as batches finish.

        Decoding and ``prepare`` run in ``workers`` threads a bounded window ahead of the model, so memory
        stays bounded for any number of inputs. Results come in completion order; each carries its index.
        """
        runner = BatchRunner(self.score_batch, prepare=self.prepare, batch_size=batch_size or self.batch_size,
                             workers=workers, max_pixels=max_pixels, ahead=ahead)
        return runner.run(images)

    def forward(self, images: ImageInput | Iterable[ImageInput], **_: Any) -> Tensor:
        """Scores (N,) for paths, PIL images or a [0,1] float batch."""
        return self.score_with_outputs(images)["score"]

    def score_with_outputs(self, images: ImageInput | Iterable[ImageInput]) -> dict[str, Tensor]:
        """All named outputs (the score and any extras such as CLIP-IQA attributes), each (N,), in input order.

        Raises the first failure (naming the input) rather than reporting it; see :meth:`iter_results`.
        """
        # Only the small per-image outputs are kept; images are decoded and dropped as the stream goes.
        by_index = {r.index: r.unwrap() for r in self.iter_results(images)}
        if not by_index:
            raise ValueError("no images given")
        rows = [by_index[i] for i in range(len(by_index))]
        return {k: torch.tensor([row[k] for row in rows], dtype=torch.float32) for k in rows[0]}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lower_better={self.lower_better}, range={self.score_range}"
