"""Region descriptions over five quality dimensions (RSFIQA, Song et al. 2025, arXiv 2508.07818).

A :class:`RegionDescriber` takes an image (3,H,W) in [0,1] and a partition ``labels`` (H,W) with labels exactly
0..K-1 (as a :class:`clipiq.segment.Segmenter` returns) and gives one :class:`RegionDescription` per region, in
label order: a level per dimension of :data:`DIMENSIONS` (an index into :data:`LEVELS`, 0 best .. 4 worst), a
short sentence, and a content word.

Describers, built by :func:`create_describer` (see :func:`list_describers`):

``clip`` (offline default)
    Dense CLIP maps (:mod:`clipiq.clip.dense`): per-patch joint-space embeddings computed once per image, the
    probability of the negative prompt of one antonym pair per dimension (:data:`PROMPT_PAIRS`), upsampled to
    the image like :func:`clipiq.clip.dense_maps` and averaged over each region's pixels. The mean probability
    ``p`` maps to a level by :data:`THRESHOLDS` (0.2, 0.4, 0.6, 0.8): ``p < 0.2`` excellent, ``0.2 <= p < 0.4``
    good, ``0.4 <= p < 0.6`` fair, ``0.6 <= p < 0.8`` poor, ``p >= 0.8`` bad. The content word is zero-shot
    over :data:`CONTENT_WORDS` ("a photo of the sky.", ...) with the region's pooled embedding (the patch
    embeddings averaged over the region's pixels, i.e. weighted by how many of its pixels each patch covers,
    then normalised).
``mllm``
    An image-text-to-text model of transformers (Qwen2-VL, Qwen2.5-VL, LLaVA) from a local folder, asked once
    per region; see :mod:`clipiq.segment.describe_mllm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq.core.errors import ConfigError
from clipiq.core.image import check_image_batch
from clipiq.core.registry import Registry, check_known_options
from clipiq.segment.base import check_option
from clipiq.segment.registry import LazySpec

__all__ = ["CONTENT_WORDS", "DEFAULT_DESCRIBER", "DESCRIBERS", "DIMENSIONS", "LEVELS", "PROMPT_PAIRS", "THRESHOLDS",
           "ClipDescriber", "DescriberSpec", "RegionDescriber", "RegionDescription", "check_regions",
           "create_describer", "get_describer_spec", "levels_from_probabilities", "list_describers",
           "region_means", "register_describer", "sentence"]

#: The quality dimensions every description rates, in this order.
DIMENSIONS = ("colour", "noise", "artifacts", "blur", "overall")
#: Level names by index: 0 (best) .. 4 (worst).
LEVELS = ("excellent", "good", "fair", "poor", "bad")
#: Upper bounds of the negative-prompt probability of levels 0..3; level 4 is ``p >= 0.8``.
THRESHOLDS = (0.2, 0.4, 0.6, 0.8)

#: One (positive, negative) prompt pair per dimension for the ``clip`` describer. colour, noise, blur and
#: overall are the ``colorfulness``, ``noisiness``, ``sharpness`` and ``quality`` pairs of
#: :data:`clipiq.clip.vocabulary.ATTRIBUTE_PROMPTS`; artifacts is new.
PROMPT_PAIRS: dict[str, tuple[str, str]] = {
    "colour": ("Colorful photo.", "Dull photo."),
    "noise": ("Clean photo.", "Noisy photo."),
    "artifacts": ("Smooth photo.", "Blocky photo with compression artifacts."),
    "blur": ("Sharp photo.", "Blurry photo."),
    "overall": ("Good photo.", "Bad photo."),
}

#: Content words of the ``clip`` describer and the phrase of each zero-shot prompt "a photo of {phrase}.".
CONTENT_WORDS: dict[str, str] = {
    "sky": "the sky", "cloud": "clouds", "water": "water", "grass": "grass", "tree": "a tree",
    "plant": "a plant", "flower": "a flower", "person": "a person", "face": "a face", "animal": "an animal",
    "building": "a building", "wall": "a wall", "road": "a road", "car": "a car", "mountain": "a mountain",
    "sand": "sand", "snow": "snow", "rock": "a rock", "furniture": "furniture", "food": "food",
    "text": "text", "floor": "a floor",
}

DEFAULT_DESCRIBER = "clip"


@dataclass(frozen=True)
class RegionDescription:
    """One region's description: ``levels`` maps each of :data:`DIMENSIONS` to a level index 0..4."""

    levels: dict[str, int]
    sentence: str
    content: str | None

    @property
    def level_names(self) -> dict[str, str]:
        """Each dimension's level as a word of :data:`LEVELS`."""
        return {d: LEVELS[i] for d, i in self.levels.items()}


def sentence(levels: dict[str, int], content: str | None = None) -> str:
    """"a region of sky with good colour, poor noise, fair artifacts, good blur; overall fair"."""
    where = f"a region of {content}" if content else "a region"
    parts = ", ".join(f"{LEVELS[levels[d]]} {d}" for d in DIMENSIONS if d != "overall")
    return f"{where} with {parts}; overall {LEVELS[levels['overall']]}"


def levels_from_probabilities(p: Tensor, thresholds: Sequence[float] = THRESHOLDS) -> Tensor:
    """Negative-prompt probabilities -> level indices (int64, same shape): the number of thresholds <= p."""
    bounds = torch.tensor(tuple(thresholds), dtype=torch.float32)
    return torch.bucketize(p.float().cpu(), bounds, right=True)


def check_regions(image: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]:
    """Validate one image (3,H,W) and its labels (H,W) 0..K-1 (every label present): (image, labels, K) on CPU."""
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"image must be one float tensor (3,H,W) in [0,1], got "
                         f"{tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__}")
    image = check_image_batch(image, "image")[0].detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (H,W), got "
                         f"{labels.dtype if isinstance(labels, Tensor) else type(labels).__name__}")
    if tuple(labels.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the image size {tuple(image.shape[-2:])}")
    labels = labels.detach().to("cpu", torch.int64)
    present = torch.unique(labels)
    k = int(present.numel())
    if int(present[0]) != 0 or int(present[-1]) != k - 1:
        raise ValueError(f"labels must be consecutive 0..K-1 with every label present (as a segmenter returns), "
                         f"got {k} distinct labels from {int(present[0])} to {int(present[-1])}; "
                         f"use clipiq.segment.relabel_consecutive")
    return image, labels, k


def region_means(values: Tensor, labels: Tensor, k: int) -> Tensor:
    """Mean of each channel of ``values`` (C,H,W) over each region's pixels: (K, C), fp32 (summed in fp64)."""
    flat = values.double().reshape(values.shape[0], -1)
    idx = labels.reshape(-1).to(flat.device)
    sums = torch.zeros(k, flat.shape[0], dtype=torch.float64, device=flat.device).index_add_(0, idx, flat.T)
    counts = torch.bincount(idx, minlength=k).clamp_min(1).to(sums.dtype)
    return (sums / counts[:, None]).float()


class RegionDescriber:
    """Base of the describers: ``describer(image (3,H,W), labels (H,W) 0..K-1)`` -> K descriptions, label order.

    Subclasses implement :meth:`describe` on validated CPU input.
    """

    #: The registry name, set by :func:`create_describer`.
    name: ClassVar[str] = "describer"

    def describe(self, image: Tensor, labels: Tensor, k: int) -> list[RegionDescription]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, image: Tensor, labels: Tensor) -> list[RegionDescription]:
        image, labels, k = check_regions(image, labels)
        out = self.describe(image, labels, k)
        if len(out) != k:
            raise RuntimeError(f"describer {self.name} returned {len(out)} descriptions for {k} regions")
        return out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


def _check_thresholds(describer: str, thresholds: Any) -> tuple[float, ...]:
    if (not isinstance(thresholds, Sequence) or len(thresholds) != len(LEVELS) - 1
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0 for t in thresholds)
            or list(thresholds) != sorted(thresholds)):
        raise ConfigError(f"describer {describer}: option thresholds must be {len(LEVELS) - 1} increasing numbers "
                          f"in [0,1], got {thresholds!r}")
    return tuple(float(t) for t in thresholds)


class ClipDescriber(RegionDescriber):
    """Levels from dense CLIP antonym-pair maps averaged per region; content by zero-shot on pooled embeddings.

    ``model``: a :func:`clipiq.load_clip` name (default the offline ``degradation-clip-v2``), loaded on
    ``device``; or pass an already-loaded pair as ``clip=`` and ``preprocess=`` to share a backbone.
    ``radius`` / ``max_tokens``: as :func:`clipiq.clip.dense_features`. ``thresholds``: 4 increasing
    probabilities (default :data:`THRESHOLDS`). ``content_words``: words of :data:`CONTENT_WORDS` (or
    ``{word: phrase}``) to choose from; empty gives ``content=None``.
    """

    name: ClassVar[str] = "clip"

    def __init__(
        self,
        model: str = "degradation-clip-v2",
        *,
        weights: str | Path | None = None,
        clip: Any = None,
        preprocess: Any = None,
        device: str | torch.device | None = "cpu",
        radius: int | None = None,
        max_tokens: int | None = None,
        thresholds: Sequence[float] = THRESHOLDS,
        content_words: Sequence[str] | dict[str, str] = tuple(CONTENT_WORDS),
    ) -> None:
        n = self.name
        if (clip is None) != (preprocess is None):
            raise ConfigError(f"describer {n}: pass both clip= and preprocess= (as returned by clipiq.load_clip) "
                              "or neither")
        if radius is not None:
            check_option(n, "radius", radius, kind=int, low=1)
        if max_tokens is not None:
            check_option(n, "max_tokens", max_tokens, kind=int, low=2)
        self.thresholds = _check_thresholds(n, thresholds)
        if isinstance(content_words, dict):
            words = dict(content_words)
        else:
            if isinstance(content_words, str):
                raise ConfigError(f"describer {n}: option content_words must be a sequence of words, "
                                  f"got {content_words!r}")
            unknown = [w for w in content_words if w not in CONTENT_WORDS]
            if unknown:
                raise ConfigError(f"describer {n}: unknown content word(s) {', '.join(map(repr, unknown))}; known: "
                                  f"{', '.join(CONTENT_WORDS)} (or pass a dict word -> phrase)")
            words = {w: CONTENT_WORDS[w] for w in content_words}
        self.content_words = tuple(words)
        self._content_prompts = tuple(f"a photo of {phrase}." for phrase in words.values())
        if clip is None:
            from clipiq.clip.load import load_clip

            clip, preprocess = load_clip(model, weights=weights, device=device)
            self.model = model
        else:
            self.model = getattr(clip, "weights_name", None) or type(clip).__name__
        from clipiq.clip.dense import _check_pairing

        _check_pairing(clip, preprocess)
        self.radius, self.max_tokens = radius, max_tokens
        self._clip, self._preprocess = clip, preprocess
        self._content_text: Tensor | None = None

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(PROMPT_PAIRS[d] for d in DIMENSIONS)

    @torch.no_grad()
    def dense(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pixel negative-prompt probabilities (5,H,W) in :data:`DIMENSIONS` order and the dense
        embeddings (D, gh, gw) of one image, one forward pass."""
        from clipiq.clip.dense import DEFAULT_MAX_TOKENS, dense_features, pair_probabilities

        clip = self._clip
        feats = dense_features(clip, self._preprocess, image[None], radius=self.radius,
                               max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS)
        grid = pair_probabilities(clip, feats, self.pairs)
        p = clip.visual.patch_size
        h, w = image.shape[-2:]
        maps = F.interpolate(grid, size=(grid.shape[-2] * p, grid.shape[-1] * p), mode="bilinear",
                             align_corners=False)[..., :h, :w].clamp(0.0, 1.0)
        return maps[0].cpu(), feats[0].cpu()

    @torch.no_grad()
    def content_text_features(self) -> Tensor:
        """Normalised fp32 text embeddings (len(content_words), D) of the content prompts."""
        if self._content_text is None:
            from clipiq.clip.tokenizer import tokenize

            clip = self._clip
            feats = clip.encode_text(tokenize(list(self._content_prompts)).to(clip.device)).float()
            self._content_text = F.normalize(feats, dim=-1).cpu()
        return self._content_text

    def pooled_features(self, features: Tensor, labels: Tensor, k: int) -> Tensor:
        """Dense embeddings (D,gh,gw) averaged over each region's pixels, normalised: (K, D)."""
        d, gh, gw = features.shape
        p = self._clip.visual.patch_size
        h, w = labels.shape
        cell = ((torch.arange(h) // p)[:, None] * gw + (torch.arange(w) // p)[None, :]).reshape(-1)
        counts = torch.bincount(labels.reshape(-1) * (gh * gw) + cell, minlength=k * gh * gw).view(k, gh * gw)
        pooled = counts.float() @ features.float().reshape(d, gh * gw).T
        return F.normalize(pooled, dim=-1)

    def describe(self, image: Tensor, labels: Tensor, k: int) -> list[RegionDescription]:
        maps, features = self.dense(image)
        levels = levels_from_probabilities(region_means(maps, labels, k), self.thresholds)  # (K, 5)
        contents: list[str | None] = [None] * k
        if self.content_words:
            sims = self.pooled_features(features, labels, k) @ self.content_text_features().T
            contents = [self.content_words[i] for i in sims.argmax(dim=1).tolist()]
        out = []
        for row, content in zip(levels.tolist(), contents):
            lv = dict(zip(DIMENSIONS, row))
            out.append(RegionDescription(levels=lv, sentence=sentence(lv, content), content=content))
        return out


@dataclass(frozen=True)
class DescriberSpec(LazySpec):
    """What a region describer is and how to build it: ``target`` is called with the options in ``options``."""


DESCRIBERS: Registry[DescriberSpec] = Registry("describer")


def register_describer(spec: DescriberSpec, *, overwrite: bool = False) -> DescriberSpec:
    """Add a describer to the registry (names are unique, case-insensitive)."""
    return DESCRIBERS.register(spec.name, spec, overwrite=overwrite)


def list_describers(pattern: str | None = None) -> list[str]:
    """Names of the registered describers, optionally only those matching a glob ``pattern``."""
    return DESCRIBERS.names(pattern)


def get_describer_spec(name: str) -> DescriberSpec:
    """The spec of a describer; an unknown name raises UnknownNameError with close matches."""
    return DESCRIBERS.get(name)


def create_describer(name: str = DEFAULT_DESCRIBER, **options: Any) -> RegionDescriber:
    """Build a region describer by name; unknown options raise ConfigError naming the known ones."""
    spec = get_describer_spec(name)
    check_known_options("describer", spec.name, options, spec.options)
    return spec.load()(**options)


for _spec in (
    DescriberSpec("clip", "clipiq.segment.describe:ClipDescriber",
                  "dense CLIP antonym-pair maps averaged per region (offline default)",
                  options=("model", "weights", "clip", "preprocess", "device", "radius", "max_tokens", "thresholds",
                           "content_words")),
    DescriberSpec("mllm", "clipiq.segment.describe_mllm:MllmDescriber",
                  "a transformers image-text-to-text model (Qwen2-VL, Qwen2.5-VL, LLaVA) asked per region",
                  options=("weights", "max_new_tokens", "device", "prompt", "fallback_model", "clip", "preprocess"),
                  needs=("transformers",), has_weights=True),
):
    register_describer(_spec)
del _spec
