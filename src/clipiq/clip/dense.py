"""Dense CLIP maps: per-patch embeddings in the joint image-text space, and per-patch antonym-pair probabilities.

``dense_features`` gives one normalised joint-space embedding per patch of the image at its native resolution;
``pair_probabilities`` turns them into per-patch probabilities for antonym prompt pairs; ``dense_maps`` does both
and upsamples to the image, returning a :class:`DenseMaps`.

How the per-patch embeddings are obtained. CLIP's training aligns only the class token with the text, so the
patch tokens are not in the joint space. We give every grid cell its own class token that attends only to the
patches within ``radius`` cells of it (a (2r+1)^2 neighbourhood), while the patch tokens attend only to their
own neighbourhood and never to any class token. Each cell's class token is thus pooled over a crop about the
size of the model's training input, through the very path (class token, ``ln_post``, ``proj``) that training
aligned with the text. Measured on the trained ``degradation-clip`` model at native resolution, 10 photos
(examples/ and Kodak24) with their left half degraded: mean probability of the negative prompt, left / right:

=================================================  ===========  ===========  ============
features (10 photos, left half degraded)           gauss. blur  gauss.       low light 4
                                                   5: sharp.    noise 4      brightness
=================================================  ===========  ===========  ============
last-layer patch tokens, ln_post, proj (MaskCLIP)  0.51 / 0.53  0.53 / 0.50  0.53 / 0.71
value path of the last block (MaskCLIP variant)    0.43 / 0.44  0.49 / 0.48  0.54 / 0.45
patch tokens, local attention (r=3)                0.68 / 0.43  0.56 / 0.42  0.61 / 0.60
value path, local attention (r=3)                  0.80 / 0.38  0.50 / 0.39  0.54 / 0.52
class token per cell, local attention (r=3)        0.73 / 0.17  0.78 / 0.13  0.85 / 0.36
=================================================  ===========  ===========  ============

The first two rows use the tower's global attention: the degraded half does not stand out at all, nor does it
when the photo is first resized to 256 px (blur: 0.53 / 0.54 and 0.47 / 0.45). At native resolution a patch
attends to hundreds or thousands of tokens where training showed it 16 to 64, which washes out local evidence.
Local attention fixes that; the per-cell class token is the only variant that also reads noise and darkness,
so it is what we use. Radii 2 to 4 gave the same separation within 0.03; the default radius is about half the
model's nominal input grid.

Exactness and memory. Attention is local, so the computation is tiled, exactly: at every layer a tile of cells
is run together with a halo of ``radius`` cells of patch tokens, which is all its tokens can see. No attention
call sees more than ``max_tokens`` tokens, so attention memory stays under about ``batch_size * heads *
max_tokens^2`` floats however large the image is (the token arrays themselves grow linearly with its area),
and the result does not depend on ``max_tokens``. A 2000x1500 photo takes 1.6 s on one CPU core with
``degradation-clip``.
"""

from __future__ import annotations

import difflib
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq.clip.model import CLIP, VisionTower
from clipiq.clip.preprocess import Preprocess
from clipiq.clip.tokenizer import tokenize
from clipiq.clip.vocabulary import ATTRIBUTE_PROMPTS
from clipiq.core.errors import UnknownNameError
from clipiq.core.image import check_image_batch, pad_to_multiple

# An attribute name of ATTRIBUTE_PROMPTS ("sharpness") or an explicit (positive, negative) prompt pair.
PairSpec = str | tuple[str, str]
MapSize = Literal["image", "grid"] | tuple[int, int]

DEFAULT_MAX_TOKENS = 2048


@dataclass(frozen=True)
class DenseMaps:
    """Per-patch probability of each pair's NEGATIVE prompt (e.g. "Blurry photo."): high means degraded.

    ``maps`` is (N, K, H, W) at the requested size, ``grid`` the (N, K, gh, gw) patch grid it was upsampled
    from (one cell per ``patch_size`` pixels, from the top-left corner), K following ``names`` and ``pairs``.
    """

    maps: Tensor
    grid: Tensor
    names: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    patch_size: int

    def __getitem__(self, name: str) -> Tensor:
        """The (N, H, W) map of one pair, by name ("sharpness", or "positive / negative" for explicit pairs)."""
        if name not in self.names:
            raise UnknownNameError(f"no map named {name!r}; these maps are: {', '.join(self.names)}")
        return self.maps[:, self.names.index(name)]


def resolve_pairs(pairs: PairSpec | Sequence[PairSpec]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Names and (positive, negative) prompts of a pair spec: a name, or a sequence of names and explicit pairs.

    A bare string is always a name; an explicit pair goes inside a sequence: ``[("Sharp photo.", "Blurry photo.")]``.
    """
    items = [pairs] if isinstance(pairs, str) else list(pairs)
    if not items:
        raise ValueError("no prompt pairs given: pass names such as 'sharpness' or (positive, negative) pairs")
    names: list[str] = []
    resolved: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            if item not in ATTRIBUTE_PROMPTS:
                close = difflib.get_close_matches(item, list(ATTRIBUTE_PROMPTS), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise UnknownNameError(
                    f"unknown prompt pair {item!r}; known: {', '.join(ATTRIBUTE_PROMPTS)}.{hint}"
                )
            names.append(item)
            resolved.append(ATTRIBUTE_PROMPTS[item])
        elif isinstance(item, Sequence) and len(item) == 2 and all(isinstance(s, str) and s.strip() for s in item):
            names.append(f"{item[0]} / {item[1]}")
            resolved.append((item[0], item[1]))
        else:
            raise ValueError(f"each prompt pair must be an attribute name or two non-empty strings "
                             f"(positive, negative), got {item!r}")
    return tuple(names), tuple(resolved)


def default_radius(clip: CLIP) -> int:
    """Neighbourhood radius in cells: a (2r+1)^2 window about the model's nominal input grid (3 for 8x8)."""
    return max(1, clip.visual.grid // 2 - 1)


# Text embeddings per model and prompt set. The key fingerprints the text tower's parameter storage and
# in-place version counters, so moving the model or training its text tower invalidates the entries.
_TEXT_CACHE: weakref.WeakKeyDictionary[CLIP, tuple[tuple, dict[tuple[tuple[str, str], ...], Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def _text_fingerprint(clip: CLIP) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype) for p in clip.text.parameters())


@torch.no_grad()
def pair_text_features(clip: CLIP, pairs: PairSpec | Sequence[PairSpec]) -> Tensor:
    """Normalised fp32 text embeddings (K, 2, D) of (positive, negative) per pair, cached per model."""
    _, resolved = resolve_pairs(pairs)
    fingerprint = _text_fingerprint(clip)
    cached = _TEXT_CACHE.get(clip)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, {})
        _TEXT_CACHE[clip] = cached
    table = cached[1]
    if resolved not in table:
        texts = [t for pair in resolved for t in pair]
        feats = clip.encode_text(tokenize(texts).to(clip.device)).float()
        table[resolved] = F.normalize(feats, dim=-1).view(len(resolved), 2, -1)
    return table[resolved]


def _check_pairing(clip: CLIP, preprocess: Preprocess) -> None:
    if not isinstance(clip, CLIP):
        raise TypeError(f"clip must be a clipiq CLIP model (from clipiq.load_clip), got {type(clip).__name__}")
    if not isinstance(preprocess, Preprocess):
        raise TypeError(f"preprocess must be the Preprocess returned with the model, got {type(preprocess).__name__}")
    if preprocess.cfg != clip.cfg.preprocess:
        raise ValueError(f"preprocess {preprocess!r} does not belong to model {clip.cfg.name} "
                         f"(its weights expect {clip.cfg.preprocess})")


def _split(length: int, most: int) -> list[tuple[int, int]]:
    """[0, length) in as few near-equal pieces of at most ``most`` as possible."""
    parts = math.ceil(length / most)
    edges = [round(i * length / parts) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _tiles(gh: int, gw: int, r: int, max_tokens: int) -> list[tuple[int, int, int, int]]:
    """Core tiles (top, bottom, left, right) whose attention call (halo patches + core class tokens) fits."""

    def tokens(bh: int, bw: int) -> int:
        return min(bh + 2 * r, gh) * min(bw + 2 * r, gw) + bh * bw

    if tokens(1, 1) > max_tokens:
        raise ValueError(f"max_tokens={max_tokens} is too small for radius {r}: one cell needs "
                         f"{tokens(1, 1)} tokens ((2r+1)^2 patches and its class token)")
    side = 1
    while side < max(gh, gw) and tokens(min(side + 1, gh), min(side + 1, gw)) <= max_tokens:
        side += 1
    bh, bw = min(side, gh), min(side, gw)
    while bw < gw and tokens(bh, bw + 1) <= max_tokens:
        bw += 1
    while bh < gh and tokens(bh + 1, bw) <= max_tokens:
        bh += 1
    return [(t, b, le, ri) for t, b in _split(gh, bh) for le, ri in _split(gw, bw)]


def _neighbourhood_mask(
    patch_rows: range, patch_cols: range, cls_rows: range, cls_cols: range, r: int, device: torch.device
) -> Tensor:
    """Boolean attention mask (True = attend) over [halo patches..., core class tokens...]."""

    def coords(rows: range, cols: range) -> tuple[Tensor, Tensor]:
        y = torch.arange(rows.start, rows.stop, device=device).repeat_interleave(len(cols))
        x = torch.arange(cols.start, cols.stop, device=device).repeat(len(rows))
        return y, x

    py, px = coords(patch_rows, patch_cols)
    cy, cx = coords(cls_rows, cls_cols)
    qy, qx = torch.cat([py, cy]), torch.cat([px, cx])
    sees_patch = ((qy[:, None] - py[None, :]).abs() <= r) & ((qx[:, None] - px[None, :]).abs() <= r)
    # Class tokens see themselves and nothing else of their kind; patch tokens see no class token.
    n_cls = len(cy)
    sees_cls = torch.zeros(len(qy), n_cls, dtype=torch.bool, device=device)
    sees_cls[len(py):] = torch.eye(n_cls, dtype=torch.bool, device=device)
    return torch.cat([sees_patch, sees_cls], dim=1)


def _local_class_features(visual: VisionTower, x: Tensor, r: int, max_tokens: int) -> Tensor:
    """Normalised images (n,3,gh*p,gw*p) -> per-cell class-token embeddings (n, gh, gw, D), model dtype."""
    n = x.shape[0]
    p = visual.patch_size
    gh, gw = x.shape[-2] // p, x.shape[-1] // p
    width = visual.width
    # ln_pre is per token, so normalising the streams separately equals CLIP's joint [cls, patches] call.
    patches = visual.ln_pre(visual.embed_patches(x)).view(n, gh, gw, width)
    cls_token = visual.ln_pre((visual.cls_token + visual.pos_embed[0]).to(patches.dtype))
    classes = cls_token.expand(n, gh, gw, width)
    tiles = _tiles(gh, gw, r, max_tokens)
    masks: dict[tuple[int, int, int, int, int, int], Tensor] = {}
    for block in visual.transformer.blocks:
        next_patches, next_classes = torch.empty_like(patches), torch.empty_like(patches)
        for top, bottom, left, right in tiles:
            rows = range(max(0, top - r), min(gh, bottom + r))
            cols = range(max(0, left - r), min(gw, right + r))
            # Tiles of the same shape and border position share one mask: key it by shape relative to the halo.
            key = (len(rows), len(cols), top - rows.start, bottom - top, left - cols.start, right - left)
            if key not in masks:
                masks[key] = _neighbourhood_mask(
                    range(len(rows)), range(len(cols)), range(key[2], key[2] + key[3]),
                    range(key[4], key[4] + key[5]), r, x.device,
                )
            halo = patches[:, rows.start : rows.stop, cols.start : cols.stop].reshape(n, -1, width)
            core = classes[:, top:bottom, left:right].reshape(n, -1, width)
            out = block(torch.cat([halo, core], dim=1), attn_mask=masks[key])
            # Only the core's patch outputs are complete: halo patches miss neighbours outside the halo.
            out_patches = out[:, : halo.shape[1]].view(n, len(rows), len(cols), width)
            next_patches[:, top:bottom, left:right] = out_patches[
                :, top - rows.start : bottom - rows.start, left - cols.start : right - cols.start
            ]
            next_classes[:, top:bottom, left:right] = out[:, halo.shape[1] :].view(n, bottom - top, right - left, width)
        patches, classes = next_patches, next_classes
    return visual.ln_post(classes) @ visual.proj


@torch.no_grad()
def dense_features(
    clip: CLIP,
    preprocess: Preprocess,
    images: Tensor,
    *,
    radius: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = 8,
) -> Tensor:
    """[0,1] images (N,3,H,W) or (3,H,W) -> normalised fp32 joint-space embeddings (N, D, ceil(H/p), ceil(W/p)).

    Native resolution: the image is only padded (mirrored) at the bottom and right to a multiple of the patch
    size p. ``radius`` is the neighbourhood in cells each embedding pools (default :func:`default_radius`).
    """
    _check_pairing(clip, preprocess)
    x = check_image_batch(images, "images")
    r = default_radius(clip) if radius is None else radius
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"radius must be an integer >= 1 (cells), got {radius!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise ValueError(f"max_tokens must be an integer >= 2, got {max_tokens!r}")
    x = pad_to_multiple(x, clip.visual.patch_size)  # the grid covers every pixel
    chunks = []
    for start in range(0, x.shape[0], batch_size):
        # Normalised in fp32, then cast: normalising in bf16 would round the input twice.
        chunk = preprocess.normalize(x[start : start + batch_size].to(clip.device, torch.float32))
        feats = _local_class_features(clip.visual, chunk.to(clip.dtype), r, max_tokens)
        chunks.append(F.normalize(feats.float(), dim=-1).permute(0, 3, 1, 2))
    return torch.cat(chunks)


@torch.no_grad()
def pair_probabilities(clip: CLIP, features: Tensor, pairs: PairSpec | Sequence[PairSpec]) -> Tensor:
    """Dense features (N,D,gh,gw) -> per-cell probability of each pair's negative prompt (N, K, gh, gw), fp32."""
    text = pair_text_features(clip, pairs)
    if features.ndim != 4 or features.shape[1] != text.shape[-1]:
        raise ValueError(f"features must be (N, {text.shape[-1]}, gh, gw) from dense_features, "
                         f"got {tuple(features.shape)}")
    # The softmax runs in fp32: low-precision logits at CLIP's logit scale (about 100) lose the ranking.
    scale = clip.logit_scale.float().exp()
    logits = scale * torch.einsum("ndhw,kjd->nkjhw", features.float(), text.to(features.device))
    return logits.softmax(dim=2)[:, :, 1]


@torch.no_grad()
def dense_maps(
    clip: CLIP,
    preprocess: Preprocess,
    images: Tensor,
    pairs: PairSpec | Sequence[PairSpec] = ("quality",),
    *,
    size: MapSize = "image",
    radius: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = 8,
) -> DenseMaps:
    """Per-patch probability of each pair's negative prompt ("Bad photo.", "Blurry photo.", ...) as maps.

    ``size``: "image" (H, W) of the input, "grid" (the patch grid itself) or an explicit (height, width).
    The grid is upsampled bilinearly with each cell's value at its patch centre.
    """
    names, resolved = resolve_pairs(pairs)
    if not (size in ("image", "grid") or (isinstance(size, tuple) and len(size) == 2
                                         and all(isinstance(s, int) and s > 0 for s in size))):
        raise ValueError(f"size must be 'image', 'grid' or (height, width) of positive ints, got {size!r}")
    batch = check_image_batch(images, "images")
    feats = dense_features(clip, preprocess, batch, radius=radius, max_tokens=max_tokens, batch_size=batch_size)
    grid = pair_probabilities(clip, feats, resolved)
    p = clip.visual.patch_size
    if size == "grid":
        maps = grid
    else:
        h, w = batch.shape[-2:]
        covered = (grid.shape[-2] * p, grid.shape[-1] * p)
        maps = F.interpolate(grid, size=covered, mode="bilinear", align_corners=False)[..., :h, :w]
        if isinstance(size, tuple) and size != (h, w):
            shrink = size[0] < h or size[1] < w
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        maps = maps.clamp(0.0, 1.0)
    return DenseMaps(maps=maps, grid=grid, names=names, pairs=resolved, patch_size=p)


__all__ = [
    "DenseMaps",
    "PairSpec",
    "default_radius",
    "dense_features",
    "dense_maps",
    "pair_probabilities",
    "pair_text_features",
    "resolve_pairs",
]
