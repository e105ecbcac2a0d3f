"""CLIP-IQA+ (Wang et al., AAAI 2023): CLIP-IQA with CoOp-learned antonym prompts on a frozen image tower.

The score is zero-shot CLIP-IQA's quality score (same views, same head: :mod:`clipiq.iqa.clipiqa`), with the
text features of the antonym pair computed from learned context vectors. Each side of the pair has its own
context (CoOp's class-specific context) in front of its class word, initialised from the words of its
zero-shot phrase ("good" | "photo." and "bad" | "photo."), so an untrained model scores exactly as zero-shot
``clipiqa``. Only the context vectors train. (pyiqa's CLIP-IQA+ learns one context shared by both prompts in
front of "Good photo" / "Bad photo", which cannot start at the zero-shot score.)

Because the image tower is frozen, training computes each image's view features once
(:class:`FeatureCache`) and then only runs the text tower. The package ships prompts for the offline
backbone (``SHIPPED``); ``checkpoint=`` scores with others.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip.checkpoint import backbone_record, open_with_backbone, payload
from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.clip.prompts import TextFeatureCache, phrase_prompts
from clipiq.clip.vocabulary import ATTRIBUTE_PROMPTS
from clipiq.core.hub import HubFile
from clipiq.core.tensors import load_trainable_state, trainable_state
from clipiq.iqa.clipiqa import check_view, encode_views, pair_probabilities, prepare_view
from clipiq.iqa.registry import get_metric_spec
from clipiq.iqa.trained import TrainedMetric

METHOD = "clipiqa+"

#: The model section of a CLIP-IQA+ config (what a checkpoint needs to rebuild the prompts).
MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "degradation-clip-v2",
    "weights": None,
    "pair": list(ATTRIBUTE_PROMPTS["quality"]),  # (positive, negative) zero-shot phrases the contexts start from
    "view": "tiles",  # clipiqa's views and settings
    "max_side": 1024,
    "max_tiles": 16,
    "loss": "mse",  # mse | fidelity (see CLIPIQAPlusModel.training_losses)
}

#: The backbone whose shipped prompts score when neither a model nor a checkpoint is named.
DEFAULT_BACKBONE = "degradation-clip-v2"

#: Prompts shipped inside the package, by the backbone they were trained on (see docs/models/clipiqa-plus.md).
SHIPPED: dict[str, HubFile] = {
    "degradation-clip-v2": HubFile(
        name="clipiqa-plus-degradation-clip-v2",
        package_file="weights/clipiqa-plus-degradation-clip-v2.safetensors",
        sha256="f02a2d39d3d8952d262d9b4abb76e8409a88923b56832c2a9060e2b9905d6a08",
        size=2856,
        license="MIT",  # this project's own prompts, under the project's licence
        description="CLIP-IQA+ prompts for degradation-clip-v2, trained on the 400 LIVE Challenge development "
                    "images (configs/clipiqa-plus/livec-all.yaml).",
    ),
    "degradation-clip": HubFile(
        name="clipiqa-plus-degradation-clip",
        package_file="weights/clipiqa-plus-degradation-clip.safetensors",
        sha256="577de3a7dc238b6857dbe3e7fdd9a6519bd03a053e41b8e8ececff92465fe37a",
        size=2840,
        license="MIT",  # this project's own prompts, under the project's licence
        description="CLIP-IQA+ prompts for degradation-clip, trained on the 400 LIVE Challenge development "
                    "images (configs/clipiqa-plus/livec-all.yaml model.backbone=degradation-clip).",
    ),
}


def shipped_checkpoint(model: str | None = None) -> Path:
    """The verified path of the prompts shipped for backbone ``model`` (default: DEFAULT_BACKBONE)."""
    return CLIPIQAPlus.shipped_checkpoint(model)


class FeatureCache:
    """Image-tower features of each image's views, kept while the image tensor lives (the tower is frozen).

    Keyed by the tensor's identity, not its content: the protocol's image cache hands out the same decoded
    tensor for a record while it holds it (and decoded images are never changed in place), so a lookup costs
    nothing; a tensor's entry goes when the tensor does. One cache serves models of one backbone and view
    setting (a training run's rounds).
    """

    def __init__(self) -> None:
        self._items: dict[int, Tensor] = {}
        self._lock = threading.Lock()  # the batch-prefetch thread and evaluation share it

    def get(self, image: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """The cached features of ``image``, else ``compute(image)``, stored until ``image`` is freed."""
        key = id(image)
        with self._lock:
            hit = self._items.get(key)
        if hit is None:
            hit = compute(image)
            with self._lock:
                if key not in self._items:
                    self._items[key] = hit
                    # Runs when the tensor is freed, before its id can be reused.
                    weakref.finalize(image, self._items.pop, key, None)
        return hit

    def __len__(self) -> int:
        """Number of images with cached features."""
        return len(self._items)


class CLIPIQAPlusModel(nn.Module):
    """A frozen CLIP plus a learned context per side of the antonym pair; implements the IQA protocol's model."""

    method = METHOD

    def __init__(self, clip: CLIP, preprocess: Preprocess, pair: Sequence[str] = ATTRIBUTE_PROMPTS["quality"],
                 view: str = "tiles", max_side: int | None = 1024, max_tiles: int = 16, loss: str = "mse",
                 backbone: str | None = None, weights: str | None = None, features: FeatureCache | None = None):
        super().__init__()
        if len(pair) != 2:
            raise ValueError(f"CLIP-IQA+ needs one (positive, negative) phrase pair, got {list(pair)!r}")
        check_view(view, max_tiles)
        if loss not in ("mse", "fidelity"):
            raise ValueError(f"loss must be 'mse' or 'fidelity', got {loss!r}")
        self.clip = clip.requires_grad_(False)
        self.preprocess = preprocess
        self.view, self.max_side, self.max_tiles, self.loss = view, max_side, int(max_tiles), loss
        self.backbone_name, self.backbone_weights = backbone, weights
        self.prompts = nn.ModuleList(phrase_prompts(clip, p) for p in pair)
        self.features = features if features is not None else FeatureCache()
        self._text_cache = TextFeatureCache()

    def train(self, mode: bool = True) -> CLIPIQAPlusModel:
        """Train mode for the prompts; the backbone stays in eval mode (it is frozen)."""
        super().train(mode)
        self.clip.eval()
        return self

    def text_features(self) -> Tensor:
        """Normalised (positive, negative) text features (2, embed_dim), cached outside training."""
        return self._text_cache.get(self.training, self.parameters(),
                                    lambda: torch.cat([p(self.clip) for p in self.prompts]))

    def quality(self, image_features: Tensor, mask: Tensor | None = None) -> Tensor:
        """P(positive) (N,) from view features (N, V, D), averaged over the views ``mask`` marks."""
        return pair_probabilities(image_features, self.text_features(), self.clip.logit_scale, mask)[:, 0]

    def prepare(self, image: Tensor) -> Tensor:
        """One (3,H,W) image -> its CLIP-IQA view (CPU)."""
        return prepare_view(image, self.preprocess, self.view, self.max_side, self.max_tiles)

    def score_prepared(self, batch: Tensor) -> Tensor:
        """Scores (N,) of a batch of prepared views, as clipiqa scores them but with the learned prompts."""
        return self.quality(encode_views(self.clip, self.preprocess, batch))

    @torch.no_grad()
    def _view_features(self, image: Tensor) -> Tensor:
        return encode_views(self.clip, self.preprocess, self.prepare(image)[None])[0].cpu()

    def view_features(self, image: Tensor) -> Tensor:
        """The (V, D) view features of one image, computed once per image content."""
        return self.features.get(image, self._view_features)

    # ---- IQA protocol interface -------------------------------------------------------------------------

    @property
    def max_views(self) -> int:
        """Views per image at most (training batches pad to this)."""
        return self.max_tiles if self.view == "tiles" else 1

    def train_views(self, image: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """The image's cached view features padded to ``max_views``, and the mask of the real ones."""
        f = self.view_features(image)
        pad = self.max_views - len(f)
        mask = torch.arange(self.max_views) < len(f)
        return F.pad(f, (0, 0, 0, pad)), mask

    def training_losses(self, views: tuple[Tensor, Tensor], target: Tensor) -> dict[str, Tensor]:
        """``mse``: P(positive) against the [0,1] target; ``fidelity``: pairwise ranking within the batch.

        The fidelity loss (Tsai et al.'s, as in UNIQUE/LIQE) compares, for every pair of the batch, the
        Bradley-Terry probability that image i beats image j, from the odds of the positive prompt
        (sigmoid of the log-odds difference), with 1, 0 or 1/2 from the targets' order.
        """
        q = self.quality(*views).float()
        target = target.float()
        if self.loss == "mse":
            return {"loss": F.mse_loss(q, target)}
        odds = torch.logit(q, eps=1e-6)
        p = torch.sigmoid(odds[:, None] - odds[None, :])
        want = (torch.sign(target[:, None] - target[None, :]) + 1) / 2
        fid = 1 - torch.sqrt(p * want + 1e-8) - torch.sqrt((1 - p) * (1 - want) + 1e-8)
        off = ~torch.eye(len(q), dtype=torch.bool, device=q.device)
        return {"loss": fid[off].mean() if off.any() else fid.sum() * 0}

    def predict(self, images: Sequence[Tensor], phase: str = "test") -> Tensor:
        """Scores (N,) of [0,1] images (any sizes), from their cached view features."""
        with torch.no_grad():
            return torch.cat([self.quality(self.view_features(img)[None].to(self.clip.device))
                              for img in images]).cpu()

    def checkpoint_payload(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Only the context vectors, with the config and the backbone's identity."""
        state = {k: v for k, v in trainable_state(self).items() if not k.startswith("clip.")}
        return payload(METHOD, state, dict(config), backbone_record(self.clip, self.backbone_name,
                                                                    self.backbone_weights))


def build_model(model_cfg: Mapping[str, Any], device: torch.device | str | None = None, precision: str = "fp32",
                clip: CLIP | None = None, preprocess: Preprocess | None = None,
                features: FeatureCache | None = None) -> CLIPIQAPlusModel:
    """A CLIP-IQA+ model with zero-shot-initialised prompts on the backbone named in ``model_cfg``."""
    cfg = {**MODEL_DEFAULTS, **dict(model_cfg)}
    if clip is None or preprocess is None:
        clip, preprocess = load_clip(cfg["backbone"], weights=cfg["weights"], device=device, precision=precision)
    model = CLIPIQAPlusModel(clip, preprocess, pair=cfg["pair"], view=cfg["view"], max_side=cfg["max_side"],
                             max_tiles=int(cfg["max_tiles"]), loss=cfg["loss"], backbone=cfg["backbone"],
                             weights=cfg["weights"], features=features)
    return model.to(clip.device)


def load_model(checkpoint: str | os.PathLike, model: str | None = None, weights: str | None = None,
               device: torch.device | str | None = None, precision: str = "fp32") -> CLIPIQAPlusModel:
    """Rebuild trained CLIP-IQA+ prompts from their checkpoint (refusing a backbone other than their own)."""
    ck, clip, preprocess, name, w = open_with_backbone(checkpoint, METHOD, model, weights, device, precision)
    m = build_model({**ck.config.get("model", {}), "backbone": name, "weights": w}, clip=clip, preprocess=preprocess)
    load_trainable_state(m, ck.state, str(checkpoint))
    return m.eval()


class CLIPIQAPlus(TrainedMetric):
    """The ``clipiqa+`` metric: learned prompts (the shipped ones by default) behind the shared inference wrapper."""

    spec = get_metric_spec(METHOD)
    load_net = staticmethod(load_model)
    train_command = "clipiq train clipiqa-plus --config configs/clipiqa-plus/livec-all.yaml"
    shipped = SHIPPED
    default_backbone = DEFAULT_BACKBONE

    def __init__(self, model: str | None = None, weights: str | None = None, device: torch.device | None = None,
                 precision: str = "fp32", checkpoint: str | os.PathLike | None = None, batch_size: int = 32):
        super().__init__(checkpoint, model=model, weights=weights, device=device, precision=precision,
                         batch_size=batch_size)

    def prepare(self, image: Tensor) -> Tensor:
        """Resize or tile to the checkpoint's view (clipiqa's)."""
        return self.net.prepare(image)

    def score_prepared(self, batch: Tensor) -> dict[str, Tensor]:
        """The CLIP-IQA quality score with the learned prompts."""
        return {"score": self.net.score_prepared(batch)}


__all__ = [
    "CLIPIQAPlus",
    "CLIPIQAPlusModel",
    "FeatureCache",
    "MODEL_DEFAULTS",
    "SHIPPED",
    "build_model",
    "load_model",
    "shipped_checkpoint",
]
