"""GRMP-IQA (Li et al., arXiv 2409.05381; ICCV 2025 as "Few-Shot Image Quality Assessment via Adaptation
of Vision-Language Models"): CLIP with CoOp text prompts and VPT-deep vision prompts, scored as the softmax
probability of "high quality" against "low quality".

Two training stages use this model (``clipiq.train.grmp_pretrain`` and ``clipiq.train.grmp_finetune``):

* ``stage="pretrain"``: only the prompts (text context, VPT tokens and their projection) train
  (meta-prompt pre-training with Reptile over distortion types).
* ``stage="finetune"``: as in the authors' code, the text context, the last ``tune_blocks`` blocks of both
  towers, their final layer norms and ``prompt_norm`` (a layer norm on the vision tokens before ``ln_post``)
  train, and the VPT tokens stay frozen (``train_vpt=True`` trains them too); the quality loss's gradient is
  regularised against a scene-classification KL term (below).

VPT initialisation as in VPT: tokens uniform in +-sqrt(6 / (3 * patch^2 + dim)), the projection's weight
Kaiming-normal (fan-out) with a zero bias (:class:`~clipiq.clip.prompts.DeepPrompts` ``init="vpt"``).

Quality-aware gradient regularisation: ``Gd`` is the gradient of the quality loss, ``Gg`` the gradient of
``KL(p_zs || p_model)`` between the frozen zero-shot CLIP's and the model's softmax over the scene prompts
"a photo of a {scene}" (the KL direction of the authors' code and of ProGrad). As in the authors' code, the
projection acts when the two agree: when ``Gd . Gg > 0`` the update is ``Gd - lambda (Gd . Gg / |Gg|^2) Gg``
(:func:`project_gradient`), so with lambda 5 its component along ``Gg`` is -4 times ``Gd``'s and the step
moves away from the zero-shot scene distribution; otherwise it is ``Gd``. (ProGrad instead projects only on
conflict, ``Gd . Gg < 0``, removing the conflicting component.) Computed over all trainable tensors at once
(``reg_per_tensor`` for one projection per tensor, as the authors' code). The zero-shot reference keeps
frozen copies of only what fine-tuning changes: the tuned vision blocks and ``ln_post`` (run through the
backbone with ``torch.func.functional_call``, without prompts or ``prompt_norm``); its scene text
embeddings are computed once before training.

Views: training takes a random crop at the model's input size S after resizing to ``train_resize`` (in
pixels of a 224 input, scaled to S), with a random horizontal flip; inference takes the centre crop
(``test_crops=1``) or the mean over the four corner crops and the centre (``test_crops=5``) after resizing
to ``test_resize``. ``resize_mode`` is ``shorter`` (shorter side, aspect kept) or ``squash`` (the whole
image to R x R, as the authors' data preparation does).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip.checkpoint import (
    CheckpointError,
    backbone_record,
    check_backbone,
    open_with_backbone,
    payload,
    read_method_checkpoint,
)
from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess, check_aspect_ratio, interpolate, shorter_side_to
from clipiq.clip.prompts import DeepPrompts, TextFeatureCache, TextPrompts, prompt_probabilities
from clipiq.clip.tokenizer import tokenize
from clipiq.core.hub import HubFile
from clipiq.core.tensors import load_trainable_state, trainable_state
from clipiq.iqa.registry import get_metric_spec
from clipiq.iqa.trained import TrainedMetric

log = logging.getLogger(__name__)

METHOD = "grmp-iqa"

#: The backbone whose shipped checkpoint scores when neither a model nor a checkpoint is named.
DEFAULT_BACKBONE = "degradation-clip-v2"

#: Checkpoints shipped inside the package, by the backbone they were trained on (see docs/models/grmp-iqa.md).
SHIPPED: dict[str, HubFile] = {
    "degradation-clip-v2": HubFile(
        name="grmp-iqa-degradation-clip-v2",
        package_file="weights/grmp-iqa-degradation-clip-v2.safetensors",
        sha256="d2fcaa31ae06e94bab3a14374c893021af34810ad5a21e1eb62363ec4b70a21b",
        size=1880584,
        license="MIT",  # this project's own checkpoint, under the project's licence
        description="GRMP-IQA for degradation-clip-v2: 50 shots of the LIVE Challenge development part, fresh "
                    "prompts, with the gradient regulariser (configs/grmp-iqa/livec-all.yaml).",
    ),
}
STAGES = ("pretrain", "finetune")
RESIZE_MODES = ("shorter", "squash")
TRAIN_CROPS = ("random", "test")

#: The nine scene classes of the regulariser, as in the authors' public code (LIQE's scene categories).
SCENES: tuple[str, ...] = ("animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still life",
                           "others")
SCENE_TEMPLATE = "a photo of a {}"  # no full stop, as in the authors' code

#: The ``model`` section of a GRMP-IQA config: what a checkpoint needs to rebuild the model.
MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "ViT-B-16/openai",
    "weights": None,
    "classnames": ["high quality", "low quality"],
    "n_ctx": 4,
    "ctx_init": "random",  # or a phrase of exactly n_ctx tokens, e.g. "a photo of a"
    "vpt_length": 100,
    "vpt_depth": None,  # prompted vision layers from the input on; None = every layer
    "vpt_proj_dim": None,  # prompt size before the linear projection to the tower width; None = width, 0 = none
    "vpt_dropout": 0.1,
    "tune_blocks": 4,  # last blocks of both towers trained in fine-tuning (with ln_post / ln_final)
    "train_vpt": False,  # fine-tuning also trains the VPT tokens and projection (the authors' code: frozen)
    "train_resize": 244,  # in pixels of a 224 input (scaled to the backbone's input size)
    "test_resize": 244,
    "resize_mode": "shorter",  # shorter | squash
    "test_crops": 1,  # 1: centre crop; 5: four corners and centre, averaged
    # random: the authors' random crop; test: one of the test crops at random (a finite set of views, so a
    # frozen hybrid stem's maps are computed once per crop and cached: clipiq.clip.stem_cache)
    "train_crops": "random",
    "hflip": True,
    # A hybrid backbone's stem statistics go on the class token, as in the backbone's own forward (checkpoints
    # that predate this setting were trained without them and load with False)
    "stem_stats": True,
    "meta_init": None,  # a grmp-pretrain checkpoint whose prompts start fine-tuning
}

#: The ``regularization`` section of a fine-tuning config.
REG_DEFAULTS: dict[str, Any] = {
    "lambda": 5.0,  # 0 disables the regulariser (and its zero-shot reference)
    "scenes": list(SCENES),
    "template": SCENE_TEMPLATE,
    "per_tensor": False,  # project each tensor's gradient on its own (the authors' code) instead of jointly
}


# ---------------------------------------------------------------------------------------------------------
# gradient projection


def project_gradient(gd: Tensor | Sequence[Tensor], gg: Tensor | Sequence[Tensor],
                     lam: float) -> Tensor | list[Tensor]:
    """``gd - lam (gd.gg / |gg|^2) gg`` when ``gd.gg > 0``, else ``gd``; dot and norm over all tensors jointly.

    ``gd`` and ``gg`` are flat tensors or matching lists of per-parameter tensors; the result has the
    form of ``gd`` (new tensors, the inputs are not modified).
    """
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    single = isinstance(gd, Tensor)
    if single != isinstance(gg, Tensor):
        raise TypeError("gd and gg must both be tensors or both be sequences of tensors")
    gds = [gd] if single else list(gd)
    ggs = [gg] if single else list(gg)
    if len(gds) != len(ggs):
        raise ValueError(f"gd has {len(gds)} tensors but gg has {len(ggs)}")
    for i, (a, b) in enumerate(zip(gds, ggs)):
        if a.shape != b.shape:
            raise ValueError(f"gd[{i}] has shape {tuple(a.shape)} but gg[{i}] has {tuple(b.shape)}")
    out = [a.clone() for a in gds]
    if lam > 0 and gds:
        # Accumulated in float64: the sign of the dot product decides whether to project at all.
        dot = sum((a.double() * b.double()).sum() for a, b in zip(gds, ggs))
        norm2 = sum(b.double().pow(2).sum() for b in ggs)
        if float(dot) > 0 and float(norm2) > 0:
            coef = lam * dot / norm2
            out = [a - (coef * b.double()).to(a.dtype) for a, b in zip(gds, ggs)]
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------------------
# views


def resize_image(image: Tensor, size: int, mode: str = "shorter") -> Tensor:
    """A (3,H,W) or (N,3,H,W) [0,1] image with its shorter side (``shorter``) or both sides (``squash``) at size.

    Images more elongated than :data:`clipiq.clip.preprocess.MAX_ASPECT_RATIO` are refused (ValueError).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    x = image.unsqueeze(0) if image.ndim == 3 else image
    h, w = x.shape[-2:]
    if mode == "squash":
        check_aspect_ratio(h, w)
        y = interpolate(x.float(), (size, size))
    else:
        y = interpolate(x.float(), shorter_side_to(h, w, size))
    return y[0] if image.ndim == 3 else y


def _crop(x: Tensor, top: int, left: int, s: int) -> Tensor:
    return x[..., top : top + s, left : left + s]


def random_view(image: Tensor, resize: int, size: int, rng: np.random.Generator, mode: str = "shorter",
                hflip: bool = True) -> Tensor:
    """Resize, random size x size crop and (with probability 1/2) horizontal flip of a (3,H,W) image."""
    x = resize_image(image, resize, mode)
    h, w = x.shape[-2:]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    x = _crop(x, top, left, size)
    if hflip and rng.random() < 0.5:
        x = x.flip(-1)
    return x.contiguous()


def eval_views(image: Tensor, resize: int, size: int, crops: int = 1, mode: str = "shorter") -> Tensor:
    """The inference crops (crops,3,size,size) of a (3,H,W) image: the centre, or the corners and the centre."""
    if crops not in (1, 5):
        raise ValueError(f"test_crops must be 1 (centre) or 5 (corners and centre), got {crops}")
    x = resize_image(image, resize, mode)
    h, w = x.shape[-2:]
    ct, cl = (h - size) // 2, (w - size) // 2
    if crops == 1:
        return _crop(x, ct, cl, size)[None]
    spots = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (ct, cl)]
    return torch.stack([_crop(x, t, left, size) for t, left in spots])


# ---------------------------------------------------------------------------------------------------------
# the model


class _ZeroShotVisual(nn.Module):
    """Frozen copies of the vision blocks and ``ln_post`` that fine-tuning changes: the zero-shot reference."""

    def __init__(self, visual: nn.Module, n_blocks: int):
        super().__init__()
        blocks = visual.transformer.blocks
        self.first = len(blocks) - n_blocks
        self.blocks = nn.ModuleList(copy.deepcopy(b) for b in blocks[self.first :])
        self.ln_post = copy.deepcopy(visual.ln_post)
        self.requires_grad_(False)

    def overrides(self) -> dict[str, Tensor]:
        """Parameter names of the vision tower -> the original tensors."""
        out = {f"transformer.blocks.{self.first + i}.{n}": p
               for i, b in enumerate(self.blocks) for n, p in b.named_parameters()}
        out.update({f"ln_post.{n}": p for n, p in self.ln_post.named_parameters()})
        return out


class GRMPIQAModel(nn.Module):
    """CLIP with CoOp text prompts and VPT-deep vision prompts; implements the IQA protocol's model interface."""

    method = METHOD

    def __init__(self, clip: CLIP, preprocess: Preprocess, *, classnames: Sequence[str] = ("high quality",
                 "low quality"), n_ctx: int = 4, ctx_init: str = "random", vpt_length: int = 100,
                 vpt_depth: int | None = None, vpt_proj_dim: int | None = None, vpt_dropout: float = 0.1,
                 tune_blocks: int = 4, train_vpt: bool = False, stage: str = "finetune", train_resize: int = 244,
                 test_resize: int = 244, resize_mode: str = "shorter", test_crops: int = 1,
                 train_crops: str = "random", hflip: bool = True, stem_stats: bool = True,
                 reg_lambda: float = 0.0, scenes: Sequence[str] = SCENES, scene_template: str = SCENE_TEMPLATE,
                 reg_per_tensor: bool = False, backbone: str | None = None, weights: str | None = None):
        super().__init__()
        if len(classnames) != 2:
            raise ValueError(f"classnames must be two names (high, low quality), got {list(classnames)!r}")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
        if test_crops not in (1, 5):
            raise ValueError(f"test_crops must be 1 (centre) or 5 (corners and centre), got {test_crops}")
        if train_crops not in TRAIN_CROPS:
            raise ValueError(f"train_crops must be one of {', '.join(TRAIN_CROPS)}, got {train_crops!r}")
        for key, value in (("train_resize", train_resize), ("test_resize", test_resize)):
            if not isinstance(value, int | float) or value < 224:
                raise ValueError(f"{key} must be at least 224 (pixels of a 224 input), got {value!r}")
        vis_layers, txt_layers = len(clip.visual.transformer.blocks), len(clip.text.transformer.blocks)
        depth = vis_layers if vpt_depth is None else int(vpt_depth)
        if not 1 <= depth <= vis_layers:
            raise ValueError(f"vpt_depth must be between 1 and {vis_layers} (the vision layers), got {vpt_depth}")
        if not 0 <= int(tune_blocks) <= min(vis_layers, txt_layers):
            raise ValueError(f"tune_blocks must be between 0 and {min(vis_layers, txt_layers)} (the towers' "
                             f"depth), got {tune_blocks}")
        if not (math.isfinite(float(reg_lambda)) and float(reg_lambda) >= 0):
            raise ValueError(f"regularization lambda must be >= 0, got {reg_lambda!r}")
        # The fingerprint is taken before any block is tuned, so checkpoints name the pristine backbone.
        self.backbone = backbone_record(clip, backbone, weights)
        self.clip = clip.requires_grad_(False)
        self.preprocess = preprocess
        self.size = preprocess.image_size
        self.train_resize = round(self.size * float(train_resize) / 224)
        self.test_resize = round(self.size * float(test_resize) / 224)
        self.resize_mode, self.test_crops, self.hflip = resize_mode, int(test_crops), bool(hflip)
        self.train_crops = train_crops
        self.stem_stats = bool(stem_stats)
        self.stage, self.tune_blocks = stage, int(tune_blocks) if stage == "finetune" else 0
        width = clip.visual.width
        proj = width if vpt_proj_dim is None else int(vpt_proj_dim)
        self.text_prompts = TextPrompts(clip, list(classnames), n_ctx=int(n_ctx), init=ctx_init)
        self.vision_prompts = DeepPrompts(depth, int(vpt_length), width, proj_dim=proj or None,
                                          dropout=float(vpt_dropout), init="vpt", patch_size=clip.visual.patch_size)
        # The authors' trainable norm on the vision tokens before ln_post; it starts as the identity norm, and a
        # norm before a norm changes nothing, so an untrained model is the plain prompted one.
        self.prompt_norm = nn.LayerNorm(width, eps=clip.cfg.ln_eps)
        self.train_vpt = bool(train_vpt)
        if stage == "finetune":
            self.vision_prompts.requires_grad_(self.train_vpt)
        else:
            self.prompt_norm.requires_grad_(False)
        if self.tune_blocks:
            k = self.tune_blocks
            for tower, final in ((clip.visual, clip.visual.ln_post), (clip.text, clip.text.ln_final)):
                for blk in tower.transformer.blocks[-k:]:
                    blk.requires_grad_(True)
                final.requires_grad_(True)
        self.reg_lambda = float(reg_lambda) if stage == "finetune" else 0.0
        self.reg_per_tensor = bool(reg_per_tensor)
        self.zero_shot: _ZeroShotVisual | None = None
        self._text_cache = TextFeatureCache()
        if self.reg_lambda > 0:
            if not scenes:
                raise ValueError("the regulariser needs at least one scene prompt (regularization.scenes)")
            tokens = tokenize([scene_template.format(s) for s in scenes]).to(clip.device)
            self.register_buffer("scene_tokens", tokens, persistent=False)
            with torch.no_grad():
                zs_text = clip.encode_text(tokens, normalize=True).float()
            self.register_buffer("zs_scene_text", zs_text, persistent=False)
            self.zero_shot = _ZeroShotVisual(clip.visual, self.tune_blocks)
        self.to(clip.device)

    # ---- pieces ----------------------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every tensor that trains in this stage, in a fixed order."""
        return [p for p in self.parameters() if p.requires_grad]

    def _normalize(self, x: Tensor) -> Tensor:
        return self.preprocess.normalize(x.to(self.clip.device, self.clip.dtype))

    def image_features(self, x: Tensor) -> Tensor:
        """Pooled image embeddings (N, D) of normalised images through the prompted vision tower."""
        visual = self.clip.visual
        tokens, stats = visual.embed_images(x)
        return visual.forward_tokens(tokens, deep_prompts=self.vision_prompts(), pre_ln_post=self.prompt_norm,
                                     cls_extra=stats if self.stem_stats else None).pooled

    def class_features(self) -> Tensor:
        """Normalised text embeddings of the two prompted classes (2, D); cached while nothing they use changes."""
        return self._text_cache.get(self.training, (*self.text_prompts.parameters(), *self.clip.text.parameters()),
                                    lambda: self.text_prompts(self.clip))

    def _logits(self, img: Tensor, txt: Tensor) -> Tensor:
        # fp32 head, as prompt_probabilities: bf16 rounding of the logits costs ranking fidelity.
        scale = self.clip.logit_scale.float().exp()
        return scale * F.normalize(img.float(), dim=-1) @ F.normalize(txt.float(), dim=-1).t()

    @torch.no_grad()
    def zero_shot_image_features(self, x: Tensor) -> Tensor:
        """Image embeddings of the zero-shot backbone (no prompts, the tuned blocks' original weights)."""
        if self.zero_shot is None:
            raise RuntimeError("this model has no zero-shot reference (the regulariser is off)")
        return torch.func.functional_call(self.clip.visual, self.zero_shot.overrides(), (x,)).pooled

    def scene_kl(self, x: Tensor, img: Tensor) -> Tensor:
        """KL(p_zero-shot || p_model) over the scene prompts, batch mean; ``img`` = the model's features of x."""
        scene_txt = self.clip.text(self.scene_tokens).pooled
        model_logits = self._logits(img, scene_txt)
        zs_logits = self._logits(self.zero_shot_image_features(x), self.zs_scene_text)
        return F.kl_div(model_logits.log_softmax(-1), zs_logits.log_softmax(-1), log_target=True,
                        reduction="batchmean")

    # ---- IQA protocol interface -----------------------------------------------------------------------

    def train_views(self, image: Tensor, rng: np.random.Generator) -> Tensor:
        """Resize to train_resize, a random crop at the input size (or one of the test crops), random flip (CPU)."""
        if self.train_crops == "random":
            return random_view(image.cpu(), self.train_resize, self.size, rng, self.resize_mode, self.hflip)
        crops = eval_views(image.cpu(), self.test_resize, self.size, self.test_crops, self.resize_mode)
        x = crops[int(rng.integers(len(crops)))]
        if self.hflip and rng.random() < 0.5:
            x = x.flip(-1)
        return x.contiguous()

    def forward(self, views: Tensor) -> Tensor:
        """P(high quality) (N,) of [0,1] views (N,3,S,S)."""
        x = self._normalize(views)
        return prompt_probabilities(self.image_features(x), self.class_features(), self.clip.logit_scale)[:, 0]

    def training_losses(self, views: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Binary cross-entropy of softmax(high, low) against the [0,1] target, plus the scene KL when regularising."""
        x = self._normalize(views)
        img = self.image_features(x)
        logp = self._logits(img, self.class_features()).log_softmax(-1)
        t = target.to(logp.device).float()
        out = {"loss": -(t * logp[:, 0] + (1 - t) * logp[:, 1]).mean()}
        if self.reg_lambda > 0 and self.training:
            out["kl"] = self.scene_kl(x, img)
        return out

    def backward(self, losses: Mapping[str, Tensor]) -> None:
        """Gradient of 'loss', projected against the gradient of 'kl' (when present) on every trainable tensor."""
        params = self.trainable_parameters()
        if self.reg_lambda <= 0 or "kl" not in losses:
            losses["loss"].backward()
            return
        gd = torch.autograd.grad(losses["loss"], params, retain_graph=True, allow_unused=True)
        gg = torch.autograd.grad(losses["kl"], params, allow_unused=True)
        gd = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gd)]
        gg = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gg)]
        if self.reg_per_tensor:
            update = [project_gradient(a, b, self.reg_lambda) for a, b in zip(gd, gg)]
        else:
            update = project_gradient(gd, gg, self.reg_lambda)
        for p, g in zip(params, update):
            p.grad = g if p.grad is None else p.grad + g
        if isinstance(losses, dict):  # logged by the trainer: how often and how strongly the two conflict
            dot = sum((a.double() * b.double()).sum() for a, b in zip(gd, gg))
            norms = math.sqrt(sum(float(a.double().pow(2).sum()) for a in gd) *
                              sum(float(b.double().pow(2).sum()) for b in gg))
            losses["grad_cos"] = torch.tensor(float(dot) / norms if norms > 0 else 0.0)

    def eval_views(self, image: Tensor) -> Tensor:
        """The inference crops (C,3,S,S) of one (3,H,W) [0,1] image."""
        return eval_views(image.cpu(), self.test_resize, self.size, self.test_crops, self.resize_mode)

    def score_views(self, views: Tensor) -> Tensor:
        """Mean P(high quality) over the crops of each image: (N,C,3,S,S) or (N,3,S,S) -> (N,)."""
        if views.ndim == 4:
            views = views.unsqueeze(1)
        n, c = views.shape[:2]
        x = self._normalize(views.flatten(0, 1))
        probs = prompt_probabilities(self.image_features(x), self.class_features(), self.clip.logit_scale)[:, 0]
        return probs.view(n, c).mean(dim=1)

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor], phase: str = "test") -> Tensor:
        """Scores (N,) of [0,1] images; the same crops for validation and test."""
        if not len(images):
            return torch.zeros(0)
        return self.score_views(torch.stack([self.eval_views(im) for im in images])).float().cpu()

    def checkpoint_payload(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The tensors that trained in this stage plus the prompts (frozen ones too), the config, the backbone."""
        prompts = self.state_dict()
        state = {**{k: prompts[k].detach() for k in self.prompt_keys()}, **trainable_state(self)}
        # What the network needs to score as it trained is recorded whatever config the caller passes.
        model_cfg = {**dict(config.get("model", {})), "stem_stats": self.stem_stats}
        return payload(METHOD, state, {**dict(config), "model": model_cfg, "stage": self.stage}, self.backbone)

    # ---- meta-initialisation ----------------------------------------------------------------------------

    def prompt_keys(self) -> list[str]:
        """State keys of the prompts (what meta-prompt pre-training produces)."""
        return [k for k in self.state_dict() if k.startswith(("text_prompts.", "vision_prompts."))]

    def load_prompts(self, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
        """Copy the prompt tensors of ``state`` into the model (shapes must match); other tensors are ignored."""
        own = self.state_dict()
        keys = self.prompt_keys()
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"{source}: prompt tensors missing: {', '.join(missing)} (is it a grmp-iqa "
                                  "checkpoint with the same prompt settings: vpt_proj_dim?)")
        for k in keys:
            if tuple(state[k].shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"{source}: {k} has shape {tuple(state[k].shape)} but this model's is {tuple(own[k].shape)}; "
                    "the prompt settings (n_ctx, vpt_length, vpt_depth, vpt_proj_dim) must match the checkpoint's")
        ignored = [k for k in state if k not in keys]
        if ignored:
            log.info("%s: using the prompts only; %d other tensors ignored", source, len(ignored))
        self.load_state_dict({k: state[k] for k in keys}, strict=False)


def build_model(model_cfg: Mapping[str, Any], reg_cfg: Mapping[str, Any] | None = None, *, stage: str = "finetune",
                device: torch.device | str | None = None, precision: str = "fp32", clip: CLIP | None = None,
                preprocess: Preprocess | None = None) -> GRMPIQAModel:
    """A GRMP-IQA model on the backbone named in ``model_cfg`` (fresh prompts; meta-init loaded when named)."""
    cfg = {**MODEL_DEFAULTS, **dict(model_cfg)}
    unknown = sorted(set(cfg) - set(MODEL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model setting(s) {unknown}; known: {', '.join(MODEL_DEFAULTS)}")
    reg = {**REG_DEFAULTS, **dict(reg_cfg or {"lambda": 0.0})}
    if clip is None or preprocess is None:
        clip, preprocess = load_clip(cfg["backbone"], weights=cfg["weights"], device=device, precision=precision)
    model = GRMPIQAModel(
        clip, preprocess, classnames=cfg["classnames"], n_ctx=int(cfg["n_ctx"]), ctx_init=cfg["ctx_init"],
        vpt_length=int(cfg["vpt_length"]), vpt_depth=cfg["vpt_depth"], vpt_proj_dim=cfg["vpt_proj_dim"],
        vpt_dropout=float(cfg["vpt_dropout"]), tune_blocks=int(cfg["tune_blocks"]),
        train_vpt=bool(cfg["train_vpt"]), stage=stage,
        train_resize=cfg["train_resize"], test_resize=cfg["test_resize"], resize_mode=cfg["resize_mode"],
        test_crops=int(cfg["test_crops"]), train_crops=str(cfg["train_crops"]), hflip=bool(cfg["hflip"]),
        stem_stats=bool(cfg["stem_stats"]),
        reg_lambda=float(reg["lambda"]),
        scenes=list(reg["scenes"]), scene_template=reg["template"], reg_per_tensor=bool(reg["per_tensor"]),
        backbone=cfg["backbone"], weights=cfg["weights"])
    if cfg.get("meta_init"):
        load_meta_init(model, cfg["meta_init"])
    return model


def load_meta_init(model: GRMPIQAModel, path: str | os.PathLike) -> None:
    """Start ``model``'s prompts from a grmp-iqa checkpoint (normally grmp-pretrain's meta_init.safetensors)."""
    ck = read_method_checkpoint(path, METHOD)
    check_backbone(ck, model.clip)
    model.load_prompts(ck.state, str(path))
    log.info("prompts initialised from %s", path)


def load_model(checkpoint: str | os.PathLike, model: str | None = None, weights: str | None = None,
               device: torch.device | str | None = None, precision: str = "fp32") -> GRMPIQAModel:
    """Rebuild a trained GRMP-IQA from its checkpoint on its own backbone (a different one is refused)."""
    ck, clip, preprocess, name, w = open_with_backbone(checkpoint, METHOD, model, weights, device, precision)
    mcfg = {"stem_stats": False, **{k: v for k, v in dict(ck.config.get("model", {})).items() if k in MODEL_DEFAULTS}}
    stage = str(ck.config.get("stage", "finetune"))
    net = build_model({**mcfg, "backbone": name, "weights": w, "meta_init": None}, None, stage=stage,
                      clip=clip, preprocess=preprocess)
    load_trainable_state(net, ck.state, str(checkpoint))
    # Frozen VPT tokens are not trainable tensors, so load_trainable_state would not miss them.
    missing = [k for k in net.prompt_keys() if k not in ck.state]
    if missing:
        raise CheckpointError(f"{checkpoint}: prompt tensors missing: {', '.join(missing)}")
    return net.eval()


class GRMPIQA(TrainedMetric):
    """The ``grmp-iqa`` metric: a trained GRMP-IQA checkpoint behind the shared inference wrapper."""

    spec = get_metric_spec(METHOD)
    load_net = staticmethod(load_model)
    train_command = "clipiq train grmp-finetune --config configs/grmp-iqa/livec-all.yaml"
    shipped = SHIPPED
    default_backbone = DEFAULT_BACKBONE

    def __init__(self, model: str | None = None, weights: str | None = None, device: torch.device | None = None,
                 precision: str = "fp32", checkpoint: str | os.PathLike | None = None, test_crops: int | None = None,
                 batch_size: int = 16):
        super().__init__(checkpoint, model=model, weights=weights, device=device, precision=precision,
                         batch_size=batch_size)
        if test_crops is not None:
            if int(test_crops) not in (1, 5):
                raise ValueError(f"test_crops must be 1 (centre) or 5 (corners and centre), got {test_crops}")
            self.net.test_crops = int(test_crops)

    def prepare(self, image: Tensor) -> Tensor:
        """The inference crops (C,3,S,S) of one image, on CPU."""
        return self.net.eval_views(image)

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """P(high quality), averaged over each image's crops."""
        return {"score": self.net.score_views(batch)}


__all__ = [
    "GRMPIQA",
    "DEFAULT_BACKBONE",
    "GRMPIQAModel",
    "MODEL_DEFAULTS",
    "REG_DEFAULTS",
    "SCENES",
    "SHIPPED",
    "build_model",
    "eval_views",
    "load_meta_init",
    "load_model",
    "project_gradient",
    "random_view",
    "resize_image",
]
