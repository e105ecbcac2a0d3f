"""Zero-shot CLIP-IQA (Wang et al., AAAI 2023): softmax within antonym prompt pairs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clipiq.clip.load import load_clip
from clipiq.clip.preprocess import RESIZE_MODES, check_aspect_ratio, grid_count, interpolate
from clipiq.clip.tokenizer import tokenize
from clipiq.clip.vocabulary import ATTRIBUTE_PROMPTS
from clipiq.iqa.base import QualityMetric
from clipiq.iqa.registry import get_metric_spec

VIEWS = ("tiles", *RESIZE_MODES)


class CLIPIQA(QualityMetric):
    """Probability of the positive prompt of each antonym pair; 'score' averages the quality pairs."""

    spec = get_metric_spec("clipiqa")

    def __init__(
        self,
        model: str | None = None,
        weights: str | None = None,
        device: torch.device | None = None,
        precision: str = "fp32",
        prompts: Sequence[tuple[str, str]] | None = None,
        attributes: Sequence[str] | str = (),
        view: str = "tiles",
        max_side: int | None = 1024,
        max_tiles: int = 16,
        batch_size: int = 32,
    ):
        name = model if model or weights else self.spec.default_model  # a file alone is loaded as what it holds
        clip, preprocess = load_clip(name, weights=weights, device=device, precision=precision)
        super().__init__(clip.device, clip.dtype, batch_size)
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        if max_tiles < 1:
            raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
        if attributes == "all":
            attributes = [a for a in ATTRIBUTE_PROMPTS if a != "quality"]
        elif isinstance(attributes, str):
            attributes = [a.strip() for a in attributes.split(",") if a.strip()]
        unknown = [a for a in attributes if a not in ATTRIBUTE_PROMPTS]
        if unknown:
            raise ValueError(f"unknown CLIP-IQA attribute(s) {unknown}; known: {', '.join(ATTRIBUTE_PROMPTS)}")
        self.clip, self.preprocess = clip, preprocess
        self.view, self.max_side, self.max_tiles = view, max_side, max_tiles
        self.quality_pairs = [tuple(p) for p in (prompts or [ATTRIBUTE_PROMPTS["quality"]])]
        for p in self.quality_pairs:
            if len(p) != 2 or not all(isinstance(s, str) and s for s in p):
                raise ValueError(f"each prompt pair must be two non-empty strings (positive, negative), got {p!r}")
        self.attributes = list(attributes)
        self.output_names = ("score", *self.attributes)
        pairs = self.quality_pairs + [ATTRIBUTE_PROMPTS[a] for a in self.attributes]
        texts = [t for pair in pairs for t in pair]
        with torch.inference_mode():
            feats = clip.encode_text(tokenize(texts).to(clip.device), normalize=True)
        self.register_buffer("text_features", feats.clone(), persistent=False)

    def prepare(self, image: Tensor) -> Tensor:
        """Resize or tile to the metric's view (on CPU, per image) without normalising.

        Every view refuses images more elongated than ``preprocess.max_aspect_ratio`` (see
        :data:`clipiq.clip.preprocess.MAX_ASPECT_RATIO`), before any resizing.
        """
        x = image.unsqueeze(0)
        check_aspect_ratio(*x.shape[-2:], self.preprocess.max_aspect_ratio)
        if self.view == "tiles":
            return self._tiles(x)
        if self.max_side and self.view in ("native", "shortest") and max(x.shape[-2:]) > self.max_side:
            s = self.max_side / max(x.shape[-2:])
            x = interpolate(x, (max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s))))
        return self.preprocess.resize(x, self.view)[0]

    def _tiles(self, x: Tensor) -> Tensor:
        # Tiles at the model's own input size keep the native pixel scale; the stride grows on large
        # images so at most max_tiles are scored. The grid is counted on the canvas patches() cuts, which
        # is upscaled for images smaller than a tile.
        s = self.preprocess.image_size
        h, w = self.preprocess.patch_canvas(*x.shape[-2:], s)
        stride = s
        while grid_count(h, s, stride) * grid_count(w, s, stride) > self.max_tiles:
            stride = int(stride * 1.25) + 1
        return self.preprocess.patches(x, s, stride)[0]

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """Softmax within each antonym pair (averaged over tiles in the tiles view)."""
        n = len(batch)
        if batch.ndim == 5:  # (N, tiles, 3, s, s)
            batch = batch.flatten(0, 1)
        x = self.preprocess.normalize(batch.to(self.device, self.clip.dtype))
        # The similarity head runs in fp32: bf16 rounding of the logits costs ranking fidelity.
        img = self.clip.encode_image(x, normalize=True).float()
        logits = self.clip.logit_scale.float().exp() * img @ self.text_features.float().t()
        probs = logits.view(len(x), -1, 2).softmax(dim=-1)[..., 0]
        probs = probs.view(n, -1, probs.shape[-1]).mean(dim=1)
        nq = len(self.quality_pairs)
        out = {"score": probs[:, :nq].mean(dim=1)}
        for i, a in enumerate(self.attributes):
            out[a] = probs[:, nq + i]
        return out


__all__ = ["CLIPIQA", "VIEWS"]
