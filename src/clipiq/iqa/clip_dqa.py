"""CLIP-DQA (Zeng et al., ISCAS 2025, arXiv 2502.01707): blind quality of dehazed images.

A frozen CLIP sees a global view (the whole image resized to the model's input size) and a local
view (one input-size patch of the full-resolution image) as one merged token stream behind a single
class token, through the backbone's ``forward_tokens`` hook. Multimodal deep prompts are the only trained
tensors, structured as in the authors' code: per layer, ``n_ctx`` text prompt tokens (layer 0's are the
context in front of "bad photo" / "good photo") and ``n_ctx`` vision prompt tokens, each layer's through
its own linear projection. The score is the softmax probability of "good photo".

Inference scores every input-size patch of the full-resolution image on a stride grid, each with the
global view, and averages: the global view's patch tokens are computed once per image and the local
patches run in batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip.checkpoint import CheckpointError, backbone_record, open_with_backbone, payload
from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.clip.prompts import TextFeatureCache, TextPrompts, prompt_probabilities
from clipiq.core.hub import HubFile
from clipiq.core.tensors import load_trainable_state, trainable_state
from clipiq.iqa.registry import get_metric_spec
from clipiq.iqa.trained import TrainedMetric

log = logging.getLogger(__name__)

METHOD = "clip-dqa"

#: The backbone whose shipped checkpoint scores when neither a model nor a checkpoint is named.
DEFAULT_BACKBONE = "degradation-clip-v2"

#: Checkpoints shipped inside the package, by the backbone they were trained on (see docs/models/clip-dqa.md).
SHIPPED: dict[str, HubFile] = {
    "degradation-clip-v2": HubFile(
        name="clip-dqa-degradation-clip-v2",
        package_file="weights/clip-dqa-degradation-clip-v2.safetensors",
        sha256="e1964e290f8c01be55599e200971f17d1f0d3ab831e601848f86a7d919834616",
        size=564344,
        license="MIT",  # this project's own checkpoint, under the project's licence
        description="CLIP-DQA prompts for degradation-clip-v2, trained on synthetic dehazed images of Sun-Hays photos "
                    "(configs/clip-dqa/synthetic-v2.yaml, round 0).",
    ),
}

COUPLINGS = ("independent", "maple")

#: The model section of a CLIP-DQA config (what a checkpoint needs to rebuild the prompts).
MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "ViT-B-32/openai",
    "weights": None,
    "n_ctx": 8,
    "classnames": ["bad photo", "good photo"],
    # The text context starts from this phrase of n_ctx tokens (or "random"): "{phrase} bad photo." then
    # reads as a zero-shot prompt, and training starts at that zero-shot model.
    "ctx_init": "this is a photo that looks like a",
    "prompt_coupling": "independent",  # independent (the authors' code) | maple (vision prompts from text ones)
    "depth": None,  # prompted layers; None = every layer both towers have
    "patch_stride": 64,  # inference grid stride in pixels (the paper's unfold)
    "val_stride": None,  # grid stride during validation (None = patch_stride); larger is faster
    "patch_batch": 64,  # local patches per forward pass at inference
    # random: the paper's random full-resolution patch; grid: a random patch of the inference grid (patch_stride),
    # a finite set of views, so a frozen hybrid stem's maps are computed once and cached (clipiq.clip.stem_cache)
    "local_patches": "random",
    # A hybrid backbone's stem statistics (of the global view, the whole image) go on the class token, as in
    # the backbone's own forward (checkpoints that predate this setting were trained without them: False)
    "stem_stats": True,
}

LOCAL_PATCHES = ("random", "grid")


def _identity_linear(width: int) -> nn.Linear:
    lin = nn.Linear(width, width)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(width))
        lin.bias.zero_()
    return lin


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class CLIPDQAModel(nn.Module):
    """Frozen CLIP plus CLIP-DQA's multimodal deep prompts; implements the IQA protocol's model interface.

    Text prompts: ``n_ctx`` tokens per layer (layer 0's is the CoOp context, later layers' replace the slot),
    each layer's through its own ``Linear(text width, text width)``. Vision prompts (``independent``, the
    authors' structure): ``n_ctx`` tokens per layer, each layer's through its own ``Linear(vision width, vision
    width)``; layer 0's go in before ``ln_pre``. With ``maple`` the vision prompts of layer i are instead a
    ``Linear(text width, vision width)`` of layer i's projected text prompts.

    Initialisation starts training at the zero-shot model: the text projections are identities, the context
    is the phrase ``ctx_init`` and the later text prompts are that phrase's own hidden states, so the text
    side is exactly the zero-shot prompt "{ctx_init} {class}."; the vision projections start at zero, so the
    vision prompts start as zero tokens (their only effect is taking part in attention).
    """

    method = METHOD

    def __init__(self, clip: CLIP, preprocess: Preprocess, n_ctx: int = 8,
                 classnames: Sequence[str] = ("bad photo", "good photo"), depth: int | None = None,
                 patch_stride: int = 64, val_stride: int | None = None, patch_batch: int = 64,
                 ctx_init: str = MODEL_DEFAULTS["ctx_init"], prompt_coupling: str = "independent",
                 local_patches: str = "random", stem_stats: bool = True, backbone: str | None = None,
                 weights: str | None = None):
        super().__init__()
        if len(classnames) != 2:
            raise ValueError(f"CLIP-DQA needs two class names (bad, good), got {list(classnames)!r}")
        if patch_stride < 1 or (val_stride is not None and val_stride < 1):
            raise ValueError(f"strides must be positive pixels, got patch_stride={patch_stride}, "
                             f"val_stride={val_stride}")
        if prompt_coupling not in COUPLINGS:
            raise ValueError(f"prompt_coupling must be one of {', '.join(COUPLINGS)}, got {prompt_coupling!r}")
        if local_patches not in LOCAL_PATCHES:
            raise ValueError(f"local_patches must be one of {', '.join(LOCAL_PATCHES)}, got {local_patches!r}")
        layers = min(len(clip.visual.transformer.blocks), len(clip.text.transformer.blocks))
        depth = layers if depth is None else int(depth)
        if not 1 <= depth <= layers:
            raise ValueError(f"depth must be between 1 and {layers} (the towers' shared depth), got {depth}")
        self.clip = clip.requires_grad_(False)
        self.preprocess = preprocess
        self.size = preprocess.image_size
        self.patch_stride, self.val_stride, self.patch_batch = int(patch_stride), val_stride, int(patch_batch)
        self.local_patches = local_patches
        self.stem_stats = bool(stem_stats)
        self.backbone_name, self.backbone_weights = backbone, weights
        # What a checkpoint must name to rebuild these prompts (see checkpoint_payload).
        self.structure = {"n_ctx": int(n_ctx), "classnames": list(classnames), "ctx_init": ctx_init,
                          "prompt_coupling": prompt_coupling, "depth": depth, "stem_stats": bool(stem_stats)}
        wt, wv = clip.text.width, clip.visual.width
        self.text_prompts = TextPrompts(clip, list(classnames), n_ctx=n_ctx, init=ctx_init)
        self.text_deep = nn.Parameter(self._text_deep_init(depth, ctx_init))
        self.text_proj = nn.ModuleList(_identity_linear(wt) for _ in range(depth))
        self.vision_ctx: nn.Parameter | None = None
        self.vision_proj: nn.ModuleList | None = None
        self.couple: nn.ModuleList | None = None
        if prompt_coupling == "independent":
            self.vision_ctx = nn.Parameter(torch.randn(depth, n_ctx, wv) * 0.02)
            self.vision_proj = nn.ModuleList(_zero_linear(wv, wv) for _ in range(depth))
        else:
            self.couple = nn.ModuleList(_zero_linear(wt, wv) for _ in range(depth))
        self._text_cache = TextFeatureCache()

    def _text_deep_init(self, depth: int, ctx_init: str) -> Tensor:
        """Text prompts of layers 1..depth-1: the context's hidden states there (phrase init), else N(0, 0.02)."""
        n_ctx, wt = self.text_prompts.ctx.shape
        if ctx_init == "random" or depth == 1:
            return torch.randn(depth - 1, n_ctx, wt) * 0.02
        # Causal attention: the context slot's hidden states do not depend on the class name after it.
        with torch.no_grad():
            tp = self.text_prompts
            x = tp.embeddings()[:1].to(self.clip.device, self.clip.dtype)
            out = self.clip.text.forward_embeds(x, tp.eot_index[:1], n_prompts=n_ctx, return_hidden=True)
        return torch.stack([h[0, 1 : 1 + n_ctx].float().cpu() for h in out.hidden[: depth - 1]])

    def train(self, mode: bool = True) -> CLIPDQAModel:
        """Train mode for the prompts; the backbone stays in eval mode (it is frozen)."""
        super().train(mode)
        self.clip.eval()
        return self

    def _text_layers(self) -> list[Tensor]:
        """Per-layer text prompt tokens (n_ctx, text width), each through its layer's projection."""
        raw = [self.text_prompts.ctx, *self.text_deep.unbind(0)]
        return [proj(t) for proj, t in zip(self.text_proj, raw)]

    def vision_prompts(self) -> list[Tensor]:
        """Per-layer vision prompt tokens (n_ctx, vision width)."""
        if self.vision_proj is not None:
            return [proj(t) for proj, t in zip(self.vision_proj, self.vision_ctx.unbind(0))]
        return [proj(t) for proj, t in zip(self.couple, self._text_layers())]

    def text_features(self) -> Tensor:
        """Normalised embeddings of the two prompted classes (2, embed_dim)."""
        return self._text_cache.get(self.training, self.parameters(), self._compute_text_features)

    def _compute_text_features(self) -> Tensor:
        first, *deep = self._text_layers()
        return self.text_prompts(self.clip, deep_prompts=[None, *deep], ctx=first)

    def _encode(self, x: Tensor) -> Tensor:
        return self.preprocess.normalize(x.to(self.clip.device, self.clip.dtype))

    def _embed(self, views: Tensor) -> tuple[Tensor, Tensor | None]:
        """Tokens of [0,1] views and their class-token addition (None unless stem_stats on a hybrid backbone)."""
        tokens, stats = self.clip.visual.embed_images(self._encode(views))
        return tokens, stats if self.stem_stats else None

    def quality(self, global_tokens: Tensor, local_tokens: Tensor, text: Tensor | None = None,
                cls_extra: Tensor | None = None) -> Tensor:
        """P(good photo) for merged [global, local] token streams (N,G,W) and (N,L,W); ``cls_extra`` (N,W)."""
        out = self.clip.visual.forward_tokens([global_tokens, local_tokens], deep_prompts=self.vision_prompts(),
                                              prompts_before_ln_pre=True, cls_extra=cls_extra)
        text = self.text_features() if text is None else text
        return prompt_probabilities(out.pooled, text, self.clip.logit_scale)[:, 1]

    # ---- IQA protocol interface -------------------------------------------------------------------------

    def global_view(self, image: Tensor) -> Tensor:
        """The whole (3,H,W) or (N,3,H,W) image resized to the input size (aspect not kept)."""
        out = self.preprocess.resize(image, "resize", self.size)
        return out[0] if image.ndim == 3 else out

    def local_view(self, image: Tensor, rng: np.random.Generator) -> Tensor:
        """One random input-size patch of the full-resolution (3,H,W) image (upscaled first when smaller)."""
        s = self.size
        if self.local_patches == "grid":
            grid = self.preprocess.patches(image[None], s, self.patch_stride)[0]
            return grid[int(rng.integers(len(grid)))]
        if min(image.shape[-2:]) < s:
            image = self.preprocess.resize(image, "shortest", s)[0]
        h, w = image.shape[-2:]
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        return image[:, top : top + s, left : left + s]

    def train_views(self, image: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """The paper's training input: the global view and one random full-resolution local patch."""
        return self.global_view(image), self.local_view(image, rng)

    def forward(self, global_view: Tensor, local_view: Tensor) -> Tensor:
        """Scores (N,) for batches of [0,1] global views and local patches, each (N,3,S,S)."""
        g, stats = self._embed(global_view)
        return self.quality(g, self._embed(local_view)[0], cls_extra=stats)

    def training_losses(self, views: tuple[Tensor, Tensor], target: Tensor) -> dict[str, Tensor]:
        """MSE between P(good photo) and the MOS scaled to [0,1]."""
        pred = self(*views)
        return {"loss": F.mse_loss(pred.float(), target.float())}

    @torch.no_grad()
    def score_image(self, image: Tensor, stride: int | None = None) -> Tensor:
        """Average P(good photo) over every local patch on the stride grid of one (3,H,W) image."""
        stride = stride or self.patch_stride
        g, stats = self._embed(self.global_view(image[None]))
        patches = self.preprocess.patches(image[None], self.size, stride)[0]
        text = self.text_features()
        total = torch.zeros((), dtype=torch.float32, device=g.device)
        for i in range(0, len(patches), self.patch_batch):
            chunk = patches[i : i + self.patch_batch]
            local = self._embed(chunk)[0]
            extra = None if stats is None else stats.expand(len(chunk), -1)
            total += self.quality(g.expand(len(chunk), -1, -1), local, text, extra).float().sum()
        return total / len(patches)

    def predict(self, images: Sequence[Tensor], phase: str = "test") -> Tensor:
        """Scores (N,) of [0,1] images by the full patch-grid inference (val_stride during validation)."""
        stride = (self.val_stride or self.patch_stride) if phase == "val" else self.patch_stride
        return torch.stack([self.score_image(img, stride) for img in images]).cpu()

    def checkpoint_payload(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Only the prompts and projections, with the config (the prompts' own structure in it) and the backbone."""
        state = {k: v for k, v in trainable_state(self).items() if not k.startswith("clip.")}
        cfg = {**dict(config), "model": {**dict(config.get("model", {})), **self.structure}}
        return payload(METHOD, state, cfg, backbone_record(self.clip, self.backbone_name, self.backbone_weights))


def build_model(model_cfg: Mapping[str, Any], device: torch.device | str | None = None, precision: str = "fp32",
                clip: CLIP | None = None, preprocess: Preprocess | None = None) -> CLIPDQAModel:
    """A CLIP-DQA model with fresh prompts on the backbone named in ``model_cfg``."""
    cfg = {**MODEL_DEFAULTS, **dict(model_cfg)}
    if clip is None or preprocess is None:
        clip, preprocess = load_clip(cfg["backbone"], weights=cfg["weights"], device=device, precision=precision)
    model = CLIPDQAModel(clip, preprocess, n_ctx=int(cfg["n_ctx"]), classnames=cfg["classnames"],
                         depth=cfg["depth"], patch_stride=int(cfg["patch_stride"]), val_stride=cfg["val_stride"],
                         patch_batch=int(cfg["patch_batch"]), ctx_init=str(cfg["ctx_init"]),
                         prompt_coupling=str(cfg["prompt_coupling"]), local_patches=str(cfg["local_patches"]),
                         stem_stats=bool(cfg["stem_stats"]),
                         backbone=cfg["backbone"],
                         weights=cfg["weights"])
    return model.to(clip.device)


def load_model(checkpoint: str | os.PathLike, model: str | None = None, weights: str | None = None,
               device: torch.device | str | None = None, precision: str = "fp32") -> CLIPDQAModel:
    """Rebuild a trained CLIP-DQA from its checkpoint (refusing a backbone other than its own)."""
    ck, clip, preprocess, name, w = open_with_backbone(checkpoint, METHOD, model, weights, device, precision)
    mcfg = dict(ck.config.get("model", {}))
    if "prompt_coupling" not in mcfg:
        raise CheckpointError(f"{checkpoint}: this CLIP-DQA checkpoint predates the authors' prompt structure "
                              "(independent per-layer projections, no model.prompt_coupling); retrain it")
    m = build_model({"stem_stats": False, **mcfg, "backbone": name, "weights": w}, clip=clip, preprocess=preprocess)
    load_trainable_state(m, ck.state, str(checkpoint))
    return m.eval()


class CLIPDQA(TrainedMetric):
    """The ``clip-dqa`` metric: a trained CLIP-DQA checkpoint behind the shared inference wrapper."""

    spec = get_metric_spec(METHOD)
    load_net = staticmethod(load_model)
    train_command = "clipiq train clip-dqa --config configs/clip-dqa/synthetic-v2.yaml"
    shipped = SHIPPED
    default_backbone = DEFAULT_BACKBONE

    def __init__(self, model: str | None = None, weights: str | None = None, device: torch.device | None = None,
                 precision: str = "fp32", checkpoint: str | os.PathLike | None = None,
                 patch_stride: int | None = None, patch_batch: int | None = None, batch_size: int = 8):
        super().__init__(checkpoint, model=model, weights=weights, device=device, precision=precision,
                         batch_size=batch_size)
        if patch_stride is not None:
            if int(patch_stride) < 1:
                raise ValueError(f"patch_stride must be a positive number of pixels, got {patch_stride}")
            self.net.patch_stride = int(patch_stride)
        if patch_batch is not None:
            self.net.patch_batch = int(patch_batch)

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """Patch-grid CLIP-DQA score of each image of the batch."""
        return {"score": self.net.predict(list(batch))}


__all__ = ["CLIPDQA", "CLIPDQAModel", "DEFAULT_BACKBONE", "MODEL_DEFAULTS", "SHIPPED", "build_model", "load_model"]
