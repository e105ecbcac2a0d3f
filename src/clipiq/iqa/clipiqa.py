"""Zero-shot CLIP-IQA (Wang et al., AAAI 2023): softmax within antonym prompt pairs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import RESIZE_MODES, Preprocess, check_aspect_ratio, grid_count, shrink_to
from clipiq.clip.tokenizer import tokenize
from clipiq.clip.vocabulary import ATTRIBUTE_PROMPTS
from clipiq.iqa.base import QualityMetric
from clipiq.iqa.registry import get_metric_spec

VIEWS = ("tiles", *RESIZE_MODES)


def check_view(view: str, max_tiles: int) -> None:
    """Raise ValueError for an unknown view or a tile budget below one."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")


def prepare_view(image: Tensor, preprocess: Preprocess, view: str = "tiles", max_side: int | None = 1024,
                 max_tiles: int = 16) -> Tensor:
    """Resize or tile one (3,H,W) image to a CLIP-IQA view (on CPU) without normalising.

    Every view refuses images more elongated than ``preprocess.max_aspect_ratio`` (see
    :data:`clipiq.clip.preprocess.MAX_ASPECT_RATIO`), before any resizing.
    """
    x = image.unsqueeze(0)
    check_aspect_ratio(*x.shape[-2:], preprocess.max_aspect_ratio)
    if view == "tiles":
        return _tiles(x, preprocess, max_tiles)
    if view in ("native", "shortest"):
        x = shrink_to(x, max_side)
    return preprocess.resize(x, view)[0]


def _tiles(x: Tensor, preprocess: Preprocess, max_tiles: int) -> Tensor:
    # Tiles at the model's own input size keep the native pixel scale; the stride grows on large
    # images so at most max_tiles are scored. The grid is counted on the canvas patches() cuts, which
    # is upscaled for images smaller than a tile.
    s = preprocess.image_size
    h, w = preprocess.patch_canvas(*x.shape[-2:], s)
    stride = s
    while grid_count(h, s, stride) * grid_count(w, s, stride) > max_tiles:
        stride = int(stride * 1.25) + 1
    return preprocess.patches(x, s, stride)[0]


def encode_views(clip: CLIP, preprocess: Preprocess, batch: Tensor) -> Tensor:
    """Normalised fp32 image features (N, V, D) of prepared views: (N,3,s,s) (V=1) or tiles (N,V,3,s,s)."""
    n = len(batch)
    if batch.ndim == 5:
        batch = batch.flatten(0, 1)
    x = preprocess.normalize(batch.to(clip.device, clip.dtype))
    # The similarity head runs in fp32: bf16 rounding of the logits costs ranking fidelity.
    feats = clip.encode_image(x, normalize=True).float()
    return feats.view(n, -1, feats.shape[-1])


def pair_probabilities(image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                       mask: Tensor | None = None) -> Tensor:
    """P(positive) within each antonym pair (N, P), averaged over the views of each image.

    ``text_features`` are (2P, D) as (positive, negative) per pair; ``mask`` (N, V) marks the real views
    when images with fewer views are padded to a common count.
    """
    logits = logit_scale.float().exp() * image_features @ text_features.float().t()
    probs = logits.unflatten(-1, (-1, 2)).softmax(dim=-1)[..., 0]  # (N, V, P)
    if mask is None:
        return probs.mean(dim=1)
    m = mask.to(probs.dtype).unsqueeze(-1)
    return (probs * m).sum(dim=1) / m.sum(dim=1)


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
        check_view(view, max_tiles)
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
        """Resize or tile to the metric's view (see :func:`prepare_view`)."""
        return prepare_view(image, self.preprocess, self.view, self.max_side, self.max_tiles)

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """Softmax within each antonym pair (averaged over tiles in the tiles view)."""
        feats = encode_views(self.clip, self.preprocess, batch)
        probs = pair_probabilities(feats, self.text_features, self.clip.logit_scale)
        nq = len(self.quality_pairs)
        out = {"score": probs[:, :nq].mean(dim=1)}
        for i, a in enumerate(self.attributes):
            out[a] = probs[:, nq + i]
        return out


__all__ = ["CLIPIQA", "VIEWS", "check_view", "encode_views", "pair_probabilities", "prepare_view"]
