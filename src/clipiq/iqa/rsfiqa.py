"""RSFIQA (Song et al. 2025, "Region-aware Semantic Attention for Fine-grained Image Quality Assessment",
arXiv 2508.07818): segment the image, describe and score each region, with Region-aware Semantic Attention.

There is no public code; this is built from the paper's text on a frozen CLIP, through the backbone's hooks only
(``embed_images``, ``forward_tokens`` with per-layer attention masks), never a copied tower.
``docs/methods/rsfiqa.md`` lists every choice; in short:

From the paper's text
    * The image is segmented into semantic regions (the paper uses SAM) and every region is described by a
      multimodal model along quality dimensions; the descriptions are encoded and fused with the region's
      visual features.
    * Region-aware Semantic Attention (RSA): visual tokens attend within their own region, so each region
      keeps its own quality evidence, and the regions are aggregated into the image's score by attention.

Our choices
    * View: the image resized (aspect kept) so its longer side is ``view_size`` (448), both sides rounded to
      multiples of the patch size: a grid of gh x gw tokens. Segmentation runs on the input image (resized so
      its longer side is at most ``segment_size``), and the labels go to the token grid by a majority vote over
      each patch's pixels (:func:`labels_to_grid`; ties go to the lower label).
    * RSA as an attention mask in the last ``rsa_layers`` (2) blocks (:func:`rsa_mask`): a patch token attends
      to the patch tokens of its own region plus the class token (and prompt tokens, none here); the class
      token attends to everything. Earlier blocks attend fully. ``rsa_layers: 0`` is the no-RSA ablation.
    * Region embeddings (``region_pool: token``): one extra class token per region, attending in every layer
      only to itself and its region's patch tokens (:func:`region_token_mask`), read out through ``ln_post`` and
      ``proj``, the path CLIP training aligned with text; the class token and the patches never see these
      tokens, so they compute what they would without them. Pooling the final patch tokens instead
      (``region_pool: mean``, MaskCLIP's read-out) does not localise on the offline backbone: untrained, on
      the local-distortion set of ``benchmarks/bench_rsfiqa.py`` (3 rounds), top-1 hit 0.169 against 0.369 with
      region tokens (chance 0.168), pixel AUC 0.493 against 0.630 (``clipiq.clip.dense`` found the same). Unlike the
      class token, region tokens do not receive a hybrid tower's global stem statistics. A region with
      no token on the grid (smaller than a patch) falls back to the class-token embedding for its reported
      score and is left out of the pooling (its area weight is zero).
    * Descriptions: each region's ``sentence`` from ``clipiq.segment.describe`` (``describer: clip`` by default,
      ``mllm``, or ``none`` for the ablation) is encoded by the frozen text tower (cached by string) and fused as
      ``normalize(region + gate * description)`` with a learnable scalar gate starting at 0: the untrained model
      ignores descriptions.
    * Region score: P("Good photo.") of the fused embedding against ("Good photo.", "Bad photo.") with the
      backbone's logit scale (the CLIP-IQA head), so the untrained model is zero-shot CLIP-IQA per region.
      The quality pair is CoOp-style learnable context (each phrase's words before its last, initialised from
      the phrases themselves, so training starts at the zero-shot prompts).
    * Aggregation: weights = softmax over the image's regions of ``log(area in tokens) + w . fused`` with
      ``w`` (a bias-free Linear) initialised to zero, so training starts at the area-weighted mean of the
      region scores. Global score = ``a * CLS score + (1 - a) * weighted region scores``, ``a = sigmoid(m)``
      with ``m`` learnable from 0 (0.5 / 0.5 at the start).
    * Trained: the two contexts, ``w``, the gate and ``m``; the backbone is frozen. Loss: MSE against the MOS
      scaled to [0,1]. Training views: the whole view (no crop), with a random horizontal flip of image and
      labels alike (``hflip``), padded to view_size x view_size so views stack; padded tokens are masked out
      of every layer's attention, so a padded view scores as the unpadded one.
    * Segmentation and descriptions depend only on the image: they are cached per image (keyed by a hash of
      its pixels, :func:`clipiq.clip.stem_cache.tensor_digest`) in a :class:`RegionCache`, which training
      epochs, validation and (in ``clipiq train rsfiqa``) the protocol's rounds reuse.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip.checkpoint import backbone_record, open_with_backbone, payload
from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess, check_aspect_ratio, interpolate, shrink_to
from clipiq.clip.prompts import TextFeatureCache, phrase_prompts, prompt_probabilities
from clipiq.clip.stem_cache import tensor_digest
from clipiq.clip.tokenizer import tokenize
from clipiq.core.hub import HubFile
from clipiq.core.tensors import load_trainable_state, trainable_state
from clipiq.iqa.registry import get_metric_spec
from clipiq.iqa.trained import TrainedMetric

log = logging.getLogger(__name__)

METHOD = "rsfiqa"

#: The model section of an RSFIQA config (what a checkpoint needs to rebuild the model).
MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "degradation-clip-v2",
    "weights": None,
    "view_size": 448,  # longer side of the view in pixels (a multiple of the patch size)
    "rsa_layers": 2,  # last blocks with region-restricted attention; 0 = no RSA (ablation)
    "region_pool": "token",  # token: one class token per region (default); mean: pooled patch tokens (ablation)
    "segmenter": "slic",  # any clipiq.segment name: slic | felzenszwalb | grid | sam
    "segmenter_options": {},
    "segment_size": 512,  # segmentation runs with the image's longer side at most this
    "describer": "clip",  # clipiq.segment.describe name (clip | mllm) or none (ablation)
    "describer_options": {},
    "quality_pair": ["Good photo.", "Bad photo."],
    "max_regions": 64,  # regions per image (at most 255); more is an error (raise it or set min_area)
    "hflip": True,  # random horizontal flip of training views
}

#: Options that only change speed or memory, not the trained tensors' meaning (kept out of the structure).
RUNTIME_KEYS = ("backbone", "weights")


def labels_to_grid(labels: Tensor, gh: int, gw: int) -> Tensor:
    """Region labels (H,W) 0..K-1 -> token-grid labels (gh,gw) by a majority vote over each cell's pixels.

    Pixel (y, x) belongs to cell (y*gh//H, x*gw//W); ties go to the lower label. A cell with no pixel (a grid
    finer than the labels) takes the label under its centre.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H,W), got {tuple(labels.shape)}")
    labels = labels.to("cpu", torch.int64)
    h, w = labels.shape
    k = int(labels.max()) + 1
    ys = torch.arange(h) * gh // h
    xs = torch.arange(w) * gw // w
    cell = ys[:, None] * gw + xs[None, :]
    votes = torch.bincount((cell * k + labels).reshape(-1), minlength=gh * gw * k).view(gh * gw, k)
    grid = votes.argmax(dim=1)
    empty = votes.sum(dim=1) == 0
    if empty.any():
        cy = ((torch.arange(gh) + 0.5) * h / gh).long().clamp(max=h - 1)
        cx = ((torch.arange(gw) + 0.5) * w / gw).long().clamp(max=w - 1)
        centre = labels[cy][:, cx].reshape(-1)
        grid = torch.where(empty, centre, grid)
    return grid.view(gh, gw)


def padding_mask(token_labels: Tensor, n_prefix: int = 1) -> Tensor | None:
    """Boolean (N,1,L,L) mask hiding padded tokens (label -1) from every query; None when nothing is padded.

    ``token_labels`` (N,T) are the patch tokens' region labels; the sequence is [n_prefix tokens, T tokens].
    """
    valid = token_labels >= 0
    if bool(valid.all()):
        return None
    n, t = token_labels.shape
    keys = torch.cat([valid.new_ones(n, n_prefix), valid], dim=1)
    return keys[:, None, None, :].expand(n, 1, n_prefix + t, n_prefix + t)


def rsa_mask(token_labels: Tensor, n_prefix: int = 1) -> Tensor:
    """Region-aware attention as a boolean (N,1,L,L) mask (True = may attend), L = n_prefix + T.

    The prefix (class token, prompts) attends to every non-padded token; a patch token attends to the prefix
    and to the patch tokens of its own region. Padded tokens (label -1) are attended by no one but each other.
    """
    n, t = token_labels.shape
    valid = token_labels >= 0
    keys = torch.cat([valid.new_ones(n, n_prefix), valid], dim=1)  # (N, L)
    mask = keys[:, None, :].repeat(1, n_prefix + t, 1)  # every row: the valid keys
    same = token_labels[:, :, None] == token_labels[:, None, :]  # (N, T, T)
    mask[:, n_prefix:, n_prefix:] = same
    return mask[:, None]


def region_token_mask(token_labels: Tensor, n_regions: int, rsa: bool) -> Tensor:
    """Attention (N,1,L,L) for [class token, ``n_regions`` region tokens, T patch tokens] (True = may attend).

    Region token k attends to itself and to the patch tokens labelled k, in every layer, so it pools its region
    through the path (class token, ``ln_post``, ``proj``) that training aligned with text. The class token and
    the patch tokens never see a region token, so they compute exactly what they would without them: all valid
    patches, or with ``rsa`` the patches of their own region (and the class token). Padded tokens (label -1)
    are seen by no one; a region token with no patch (absent region) sees only itself.
    """
    n, t = token_labels.shape
    r = int(n_regions)
    inner = rsa_mask(token_labels) if rsa else None  # (N,1,1+T,1+T)
    valid = token_labels >= 0
    size = 1 + r + t
    mask = torch.zeros(n, size, size, dtype=torch.bool, device=token_labels.device)
    keep = [0, *range(1 + r, size)]  # class token and patches: their usual attention
    if inner is not None:
        mask[:, 0, :1] = True
        mask[:, 0, 1 + r :] = valid
        mask[:, 1 + r :, 0] = True
        mask[:, 1 + r :, 1 + r :] = inner[:, 0, 1:, 1:]
    else:
        keys = torch.zeros(n, size, dtype=torch.bool, device=token_labels.device)
        keys[:, 0] = True
        keys[:, 1 + r :] = valid
        mask[:, keep] = keys[:, None, :].expand(n, len(keep), size)
    regions = torch.arange(r, device=token_labels.device)
    mask[:, 1 : 1 + r, 1 + r :] = token_labels[:, None, :] == regions[None, :, None]
    mask[:, 1 : 1 + r, 1 : 1 + r] = torch.eye(r, dtype=torch.bool, device=token_labels.device)
    return mask[:, None]


@dataclass
class RegionInfo:
    """What segmentation and description give for one image (independent of the model's trained tensors)."""

    labels: Tensor  # (h, w) uint8 at the segmentation resolution
    size: tuple[int, int]  # the input image's (H, W)
    sentences: list[str]
    levels: list[dict[str, int]]
    contents: list[str | None]
    grids: dict[tuple[int, int], Tensor] = field(default_factory=dict)

    @property
    def n_regions(self) -> int:
        """K, the number of regions."""
        return len(self.sentences)

    def nbytes(self) -> int:
        """Approximate memory held."""
        return self.labels.numel() + sum(g.numel() * 8 for g in self.grids.values()) + \
            sum(len(s) for s in self.sentences) + 64 * len(self.sentences)


class RegionCache:
    """Per-image :class:`RegionInfo` keyed by a hash of the pixels, LRU-evicted within ``budget_mb`` (thread-safe)."""

    def __init__(self, budget_mb: float = 1024):
        self.budget = int(budget_mb * 2**20)
        self._items: OrderedDict[bytes, RegionInfo] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, image: Tensor, compute: Callable[[Tensor], RegionInfo]) -> RegionInfo:
        """The cached info of ``image`` (3,H,W), else ``compute(image)``, stored."""
        key = tensor_digest(image)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit
        info = compute(image)
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = info
                self.bytes += info.nbytes()
                while self.bytes > self.budget and len(self._items) > 1:
                    _, old = self._items.popitem(last=False)
                    self.bytes -= old.nbytes()
        return info

    def __deepcopy__(self, memo: dict) -> RegionCache:
        return self  # shared: entries depend only on pixels and the segmentation settings


def create_region_describer(name: str, clip: CLIP, preprocess: Preprocess,
                            options: Mapping[str, Any] | None = None) -> Callable[[Tensor, Tensor], list]:
    """A describer from ``clipiq.segment.describe`` (imported on first use); ``clip`` shares the backbone."""
    from clipiq.segment.describe import create_describer

    opts = dict(options or {})
    if name == "clip":
        opts.setdefault("clip", clip)
        opts.setdefault("preprocess", preprocess)
    return create_describer(name, **opts)


class RSFIQAModel(nn.Module):
    """Frozen CLIP + region segmentation, descriptions and RSA; implements the IQA protocol's model interface."""

    method = METHOD

    def __init__(self, clip: CLIP, preprocess: Preprocess, *, view_size: int = 448, rsa_layers: int = 2,
                 region_pool: str = "token", segmenter: str = "slic",
                 segmenter_options: Mapping[str, Any] | None = None,
                 segment_size: int = 512, describer: str = "clip",
                 describer_options: Mapping[str, Any] | None = None,
                 quality_pair: Sequence[str] = ("Good photo.", "Bad photo."), max_regions: int = 64,
                 hflip: bool = True, region_cache: RegionCache | None = None, backbone: str | None = None,
                 weights: str | None = None):
        super().__init__()
        p = clip.visual.patch_size
        layers = len(clip.visual.transformer.blocks)
        if view_size < p or view_size % p:
            raise ValueError(f"view_size must be a positive multiple of the patch size {p}, got {view_size}")
        if not 0 <= rsa_layers <= layers:
            raise ValueError(f"rsa_layers must be between 0 and {layers} (the image tower's depth), got {rsa_layers}")
        if not 1 <= max_regions <= 255:
            raise ValueError(f"max_regions must be between 1 and 255, got {max_regions}")
        if len(quality_pair) != 2:
            raise ValueError(f"quality_pair must be two phrases (good, bad), got {list(quality_pair)!r}")
        if segment_size < p:
            raise ValueError(f"segment_size must be at least one patch ({p} px), got {segment_size}")
        if region_pool not in ("token", "mean"):
            raise ValueError(f"region_pool must be 'token' or 'mean', got {region_pool!r}")
        from clipiq.segment import create_segmenter

        self.clip = clip.requires_grad_(False)
        self.preprocess = preprocess
        self.patch = p
        self.view_size, self.rsa_layers, self.segment_size = int(view_size), int(rsa_layers), int(segment_size)
        self.max_regions, self.hflip, self.region_pool = int(max_regions), bool(hflip), str(region_pool)
        self.segmenter_name, self.segmenter_options = segmenter, dict(segmenter_options or {})
        self.segmenter = create_segmenter(segmenter, **self.segmenter_options)
        self.describer_name = str(describer)
        self.describer_options = dict(describer_options or {})
        self._describer: Callable[[Tensor, Tensor], list] | None = None
        self.backbone_name, self.backbone_weights = backbone, weights
        self.structure = {"view_size": self.view_size, "rsa_layers": self.rsa_layers,
                          "region_pool": self.region_pool, "segmenter": segmenter,
                          "segmenter_options": self.segmenter_options, "segment_size": self.segment_size,
                          "describer": self.describer_name, "describer_options": self.describer_options,
                          "quality_pair": list(quality_pair), "max_regions": self.max_regions, "hflip": self.hflip}
        self.good = phrase_prompts(clip, quality_pair[0])
        self.bad = phrase_prompts(clip, quality_pair[1])
        d = clip.cfg.embed_dim
        self.region_scorer = nn.Linear(d, 1, bias=False)  # a bias would cancel in the softmax over regions
        nn.init.zeros_(self.region_scorer.weight)
        self.gate = nn.Parameter(torch.zeros(())) if self.uses_descriptions else None
        self.mix = nn.Parameter(torch.zeros(()))
        self.region_cache = region_cache if region_cache is not None else RegionCache()
        self._sentences: dict[str, Tensor] = {}
        self._lock = threading.Lock()
        self._text_cache = TextFeatureCache()

    @property
    def uses_descriptions(self) -> bool:
        """False for ``describer: none`` (the ablation without descriptions)."""
        return self.describer_name.lower() != "none"

    @property
    def describer(self) -> Callable[[Tensor, Tensor], list] | None:
        """The region describer, built on first use (None without descriptions)."""
        if not self.uses_descriptions:
            return None
        if self._describer is None:
            self._describer = create_region_describer(self.describer_name, self.clip, self.preprocess,
                                                      self.describer_options)
        return self._describer

    @describer.setter
    def describer(self, fn: Callable[[Tensor, Tensor], list]) -> None:
        self._describer = fn

    def train(self, mode: bool = True) -> RSFIQAModel:
        """Train mode for the trained tensors; the backbone stays in eval mode (it is frozen)."""
        super().train(mode)
        self.clip.eval()
        return self

    # ---- text side -----------------------------------------------------------------------------------------

    def text_features(self) -> Tensor:
        """Normalised embeddings of the learnable (good, bad) pair (2, embed_dim), cached outside training."""
        return self._text_cache.get(self.training, self.parameters(),
                                    lambda: torch.cat([self.good(self.clip), self.bad(self.clip)]))

    @torch.no_grad()
    def sentence_embeddings(self, sentences: Sequence[str]) -> Tensor:
        """Normalised frozen-text-tower embeddings (K, embed_dim) float32 on CPU, cached by sentence."""
        with self._lock:
            todo = sorted({s for s in sentences if s not in self._sentences})
        if todo:
            tokens = tokenize(todo).to(self.clip.device)
            emb = self.clip.encode_text(tokens, normalize=True).float().cpu()
            with self._lock:
                self._sentences.update(zip(todo, emb))
        d = self.clip.cfg.embed_dim
        if not sentences:
            return torch.zeros(0, d)
        with self._lock:
            return torch.stack([self._sentences[s] for s in sentences]).clone()

    # ---- regions --------------------------------------------------------------------------------------------

    def view_shape(self, height: int, width: int) -> tuple[int, int]:
        """The view's (h, w): longer side ``view_size``, aspect kept, sides multiples of the patch size."""
        check_aspect_ratio(height, width, self.preprocess.max_aspect_ratio)
        p, s = self.patch, self.view_size / max(height, width)
        return max(p, round(height * s / p) * p), max(p, round(width * s / p) * p)

    def view(self, image: Tensor) -> Tensor:
        """The (3,h,w) [0,1] view of one (3,H,W) image."""
        return interpolate(image[None], self.view_shape(*image.shape[-2:]), self.preprocess.cfg.interpolation)[0]

    def _analyse(self, image: Tensor) -> RegionInfo:
        h, w = image.shape[-2:]
        img = shrink_to(image.detach().to("cpu", torch.float32)[None], self.segment_size, "bilinear")[0]
        labels = self.segmenter(img)
        k = int(labels.max()) + 1
        if k > self.max_regions:
            raise ValueError(f"segmenter {self.segmenter_name} found {k} regions, more than max_regions="
                             f"{self.max_regions}: raise model.max_regions (at most 255) or set a min_area in "
                             "model.segmenter_options")
        describer = self.describer
        if describer is None:
            sentences, levels, contents = [""] * k, [{} for _ in range(k)], [None] * k
        else:
            descs = list(describer(img, labels))
            if len(descs) != k:
                raise RuntimeError(f"describer {self.describer_name} gave {len(descs)} descriptions for {k} regions")
            sentences = [str(d.sentence) for d in descs]
            levels = [dict(d.levels) for d in descs]
            contents = [d.content for d in descs]
        return RegionInfo(labels.to(torch.uint8), (int(h), int(w)), sentences, levels, contents)

    def regions(self, image: Tensor) -> RegionInfo:
        """Segmentation and descriptions of one (3,H,W) [0,1] image, cached by its pixels."""
        return self.region_cache.get(image, self._analyse)

    def grid(self, info: RegionInfo) -> Tensor:
        """The token-grid labels (gh, gw) of an image's view."""
        gh, gw = (s // self.patch for s in self.view_shape(*info.size))
        g = info.grids.get((gh, gw))
        if g is None:
            g = labels_to_grid(info.labels.long(), gh, gw)
            info.grids[(gh, gw)] = g
        return g

    def descriptions(self, info: RegionInfo, rows: int | None = None) -> Tensor | None:
        """Description embeddings (rows or K, embed_dim), zero rows after K; None without descriptions."""
        if not self.uses_descriptions:
            return None
        emb = self.sentence_embeddings(info.sentences)
        rows = info.n_regions if rows is None else rows
        out = torch.zeros(rows, emb.shape[-1])
        out[: len(emb)] = emb
        return out

    # ---- the network ----------------------------------------------------------------------------------------

    def _encode(self, x: Tensor) -> Tensor:
        return self.preprocess.normalize(x.to(self.clip.device, self.clip.dtype))

    def _patch_tokens(self, images: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor | None]]:
        """Patch tokens (L_i, W) and class-token additions of each view, views of one shape in one batch."""
        visual = self.clip.visual
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        toks: list[Tensor] = [images[0]] * len(images)
        extras: list[Tensor | None] = [None] * len(images)
        for idx in groups.values():
            t, e = visual.embed_images(self._encode(torch.stack([images[i] for i in idx])))
            for j, i in enumerate(idx):
                toks[i] = t[j]
                extras[i] = None if e is None else e[j]
        return toks, extras

    def attention_masks(self, token_labels: Tensor, n_prefix: int = 1) -> list[Tensor | None] | None:
        """Per-layer masks: padding-only (or None) in the first blocks, RSA in the last ``rsa_layers``."""
        layers = len(self.clip.visual.transformer.blocks)
        pad = padding_mask(token_labels, n_prefix)
        rsa = rsa_mask(token_labels, n_prefix) if self.rsa_layers else None
        masks = [pad] * (layers - self.rsa_layers) + [rsa] * self.rsa_layers
        return None if all(m is None for m in masks) else masks

    def score_views(self, images: Sequence[Tensor], grids: Sequence[Tensor], desc: Tensor | None = None,
                    n_regions: Sequence[int] | None = None) -> dict[str, Tensor]:
        """Scores of [0,1] views (3,h_i,w_i) with their token-grid labels (h_i/p, w_i/p) (-1 = padding).

        ``desc`` (N, R', embed_dim): description embeddings by region (ignored without descriptions);
        ``n_regions``: K of each image (default: its largest grid label + 1). Returns ``score`` (N,),
        ``cls_score`` (N,), ``region_scores`` and ``weights`` (N, R) and ``counts`` (N, R) tokens per region.
        """
        toks, extras = self._patch_tokens(images)
        n = len(images)
        lengths = [t.shape[0] for t in toks]
        for t, g in zip(toks, grids):
            if t.shape[0] != g.numel():
                raise ValueError(f"a view has {t.shape[0]} tokens but its grid labels {tuple(g.shape)}")
        if n_regions is None:
            n_regions = [int(g.max()) + 1 for g in grids]
        r = max(n_regions)
        length = max(lengths)
        dev = toks[0].device
        tokens = toks[0].new_zeros(n, length, toks[0].shape[-1])
        lab = torch.full((n, length), -1, dtype=torch.int64, device=dev)
        for i, (t, g) in enumerate(zip(toks, grids)):
            tokens[i, : len(t)] = t
            lab[i, : len(t)] = g.reshape(-1).to(dev)
        cls_extra = None if extras[0] is None else torch.stack(extras)
        onehot = F.one_hot(lab.clamp(min=0), r).float() * (lab >= 0).float()[..., None]  # (N, T, R)
        counts = onehot.sum(dim=1)
        present = counts > 0
        visual = self.clip.visual
        if self.region_pool == "token":
            layers = len(visual.transformer.blocks)
            plain = region_token_mask(lab, r, rsa=False)
            rsa = region_token_mask(lab, r, rsa=True) if self.rsa_layers else plain
            queries = (visual.cls_token + visual.pos_embed[0]).to(tokens.dtype).expand(n, r, -1)
            out = visual.forward_tokens([queries, tokens], attn_mask=[plain] * (layers - self.rsa_layers)
                                        + [rsa] * self.rsa_layers, return_tokens=True, cls_extra=cls_extra)
            pooled = out.tokens[:, :r].float()
        else:
            out = visual.forward_tokens(tokens, attn_mask=self.attention_masks(lab), return_tokens=True,
                                        cls_extra=cls_extra)
            pooled = (onehot.transpose(1, 2) @ out.tokens.float()) / counts.clamp(min=1)[..., None]
        cls = out.pooled.float()
        region = torch.where(present[..., None], pooled, cls[:, None].expand_as(pooled))
        fused = F.normalize(region, dim=-1)
        if self.gate is not None and desc is not None:
            fused = F.normalize(fused + self.gate * desc[:, :r].to(fused), dim=-1)
        text = self.text_features()
        scale = self.clip.logit_scale
        region_scores = prompt_probabilities(fused.reshape(n * r, -1), text, scale)[:, 0].view(n, r)
        cls_score = prompt_probabilities(cls, text, scale)[:, 0]
        logits = counts.clamp(min=1e-12).log() + self.region_scorer(fused).squeeze(-1)
        weights = logits.masked_fill(~present, float("-inf")).softmax(dim=-1)
        a = torch.sigmoid(self.mix)
        score = a * cls_score + (1 - a) * (weights * region_scores).sum(dim=-1)
        return {"score": score, "cls_score": cls_score, "region_scores": region_scores, "weights": weights,
                "counts": counts}

    # ---- IQA protocol interface -----------------------------------------------------------------------------

    def train_views(self, image: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """The whole view padded to view_size^2, its grid labels (-1 = padding) and description embeddings.

        With ``hflip`` the view and its labels are flipped together half of the time.
        """
        info = self.regions(image)
        view, grid = self.view(image), self.grid(info)
        if self.hflip and rng.random() < 0.5:
            view, grid = view.flip(-1), grid.flip(-1)
        s, g = self.view_size, self.view_size // self.patch
        padded = view.new_zeros(3, s, s)
        padded[:, : view.shape[1], : view.shape[2]] = view
        glab = torch.full((g, g), -1, dtype=torch.int64)
        glab[: grid.shape[0], : grid.shape[1]] = grid
        desc = self.descriptions(info, self.max_regions)
        return padded, glab, desc if desc is not None else torch.zeros(self.max_regions, 0)

    def forward(self, views: Tensor, grids: Tensor, desc: Tensor | None = None) -> Tensor:
        """Scores (N,) of stacked training views (N,3,S,S), grid labels (N,S/p,S/p) and descriptions (N,R,D)."""
        images, glabs = [], []
        p = self.patch
        for v, g in zip(views, grids):
            valid = g >= 0
            gh, gw = int(valid.any(1).sum()), int(valid.any(0).sum())
            images.append(v[:, : gh * p, : gw * p])
            glabs.append(g[:gh, :gw])
        if desc is not None and desc.shape[-1] == 0:
            desc = None
        return self.score_views(images, glabs, desc)["score"]

    def training_losses(self, views: tuple[Tensor, Tensor, Tensor], target: Tensor) -> dict[str, Tensor]:
        """MSE between the global score and the MOS scaled to [0,1]."""
        pred = self(*views)
        return {"loss": F.mse_loss(pred.float(), target.float())}

    def _score_images(self, images: Sequence[Tensor]) -> tuple[list[RegionInfo], dict[str, Tensor]]:
        infos = [self.regions(im) for im in images]
        views = [self.view(im) for im in images]
        grids = [self.grid(info) for info in infos]
        k = [info.n_regions for info in infos]
        desc = None
        if self.uses_descriptions:
            desc = torch.stack([self.descriptions(info, max(k)) for info in infos])
        return infos, self.score_views(views, grids, desc, k)

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor], phase: str = "test") -> Tensor:
        """Global scores (N,) of [0,1] images (3,H,W) of any sizes."""
        return self._score_images(list(images))[1]["score"].float().cpu()

    @torch.no_grad()
    def score_regions(self, image: Tensor) -> dict[str, Any]:
        """One image's score, its region labels at its own resolution, and each region's score and description."""
        (info,), out = self._score_images([image])
        h, w = info.size
        labels = F.interpolate(info.labels[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        k = info.n_regions
        return {"score": float(out["score"][0]), "labels": labels,
                "region_scores": [float(s) for s in out["region_scores"][0, :k]],
                "weights": [float(s) for s in out["weights"][0, :k]],
                "descriptions": list(info.sentences), "dimensions": [dict(lv) for lv in info.levels]}

    def checkpoint_payload(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Only the trained tensors, with the config (the model's structure in it) and the backbone."""
        state = {k: v for k, v in trainable_state(self).items() if not k.startswith("clip.")}
        cfg = {**dict(config), "model": {**dict(config.get("model", {})), **self.structure}}
        return payload(METHOD, state, cfg, backbone_record(self.clip, self.backbone_name, self.backbone_weights))


def build_model(model_cfg: Mapping[str, Any], device: torch.device | str | None = None, precision: str = "fp32",
                clip: CLIP | None = None, preprocess: Preprocess | None = None,
                region_cache: RegionCache | None = None) -> RSFIQAModel:
    """An RSFIQA model with fresh trained tensors on the backbone named in ``model_cfg``."""
    cfg = {**MODEL_DEFAULTS, **dict(model_cfg)}
    unknown = sorted(set(cfg) - set(MODEL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown rsfiqa model option(s) {', '.join(unknown)}; known: {', '.join(MODEL_DEFAULTS)}")
    if clip is None or preprocess is None:
        clip, preprocess = load_clip(cfg["backbone"], weights=cfg["weights"], device=device, precision=precision)
    model = RSFIQAModel(clip, preprocess, view_size=int(cfg["view_size"]), rsa_layers=int(cfg["rsa_layers"]),
                        region_pool=str(cfg["region_pool"]),
                        segmenter=str(cfg["segmenter"]), segmenter_options=cfg["segmenter_options"],
                        segment_size=int(cfg["segment_size"]), describer=str(cfg["describer"]),
                        describer_options=cfg["describer_options"], quality_pair=cfg["quality_pair"],
                        max_regions=int(cfg["max_regions"]), hflip=bool(cfg["hflip"]), region_cache=region_cache,
                        backbone=cfg["backbone"], weights=cfg["weights"])
    return model.to(clip.device)


def load_model(checkpoint: str | os.PathLike, model: str | None = None, weights: str | None = None,
               device: torch.device | str | None = None, precision: str = "fp32") -> RSFIQAModel:
    """Rebuild a trained RSFIQA model from its checkpoint (refusing a backbone other than its own)."""
    ck, clip, preprocess, name, w = open_with_backbone(checkpoint, METHOD, model, weights, device, precision)
    # Checkpoints from before region tokens pooled their regions' patch tokens.
    mcfg = {"region_pool": "mean", **{k: v for k, v in dict(ck.config.get("model", {})).items() if k in MODEL_DEFAULTS}}
    m = build_model({**mcfg, "backbone": name, "weights": w}, clip=clip, preprocess=preprocess)
    load_trainable_state(m, ck.state, str(checkpoint))
    return m.eval()


#: Checkpoints shipped inside the package, by the backbone they were trained on (see docs/models/rsfiqa.md).
SHIPPED: dict[str, HubFile] = {
    "degradation-clip-v2": HubFile(
        name="rsfiqa-degradation-clip-v2",
        package_file="weights/rsfiqa-degradation-clip-v2.safetensors",
        sha256="06df4d5a14c202c1f2a257b52aef0f346fa6d5b7453d1c4a0a645de177720190",
        size=4144,
        license="MIT",  # this project's own checkpoint, under the project's licence
        description="RSFIQA for degradation-clip-v2 (configs/rsfiqa/livec.yaml): round 0 of the LIVE Challenge "
                    "development benchmark, trained on 288 of its 400 images (32 more for early stopping).",
    ),
}


class RSFIQA(TrainedMetric):
    """The ``rsfiqa`` metric: a trained RSFIQA checkpoint; ``score_regions`` explains a score region by region."""

    spec = get_metric_spec(METHOD)
    load_net = staticmethod(load_model)
    train_command = "clipiq train rsfiqa --config configs/rsfiqa/livec.yaml"
    shipped = SHIPPED
    default_backbone = "degradation-clip-v2"

    def __init__(self, model: str | None = None, weights: str | None = None, device: torch.device | None = None,
                 precision: str = "fp32", checkpoint: str | os.PathLike | None = None, batch_size: int = 8):
        super().__init__(checkpoint, model=model, weights=weights, device=device, precision=precision,
                         batch_size=batch_size)

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """The global RSFIQA score of each image of the batch."""
        return {"score": self.net.predict(list(batch))}

    @torch.inference_mode()
    def score_regions(self, image: Any) -> dict[str, Any]:
        """One image (path, PIL image or (3,H,W) [0,1] tensor) -> ``score`` (float), ``labels`` (H,W int64,
        0..K-1 at the image's resolution), ``region_scores`` (K floats), ``weights`` (K pooling weights, 0 for
        a region with no token), ``descriptions`` (K sentences) and ``dimensions`` (K dicts of levels; empty
        without descriptions)."""
        from clipiq.data.runner import decode

        img = decode(image)
        return self.net.score_regions(img)


__all__ = ["MODEL_DEFAULTS", "RSFIQA", "RSFIQAModel", "RegionCache", "RegionInfo", "build_model", "labels_to_grid",
           "load_model", "padding_mask", "region_token_mask", "rsa_mask"]
