"""``clipiq train cdasr``: CDASR's source training on the 291 images (T91 + BSD200), validated on Set5.

LR patches are made by clipiq's MATLAB-exact ``imresize`` from random crops of the photos, with flips and
90-degree rotations (:class:`clipiq.data.paired.SyntheticPairDataset`). The CLIP guidance of a crop is the
embedding of the whole LR photo it came from (computed once per photo, :meth:`CDASRTask.photo_guidance`), as at
inference every tile is guided by the whole image's embedding. Loss: Charbonnier pixel loss plus
``loss.semantic`` times the semantic-consistency loss (1 - cosine of the frozen CLIP embeddings of the SR output
and the HR patch, :func:`clipiq.train.restoration.clip_embedding_loss`); no perceptual (VGG) term, as clipiq ships
no VGG and the semantic term is the paper's CLIP-side counterpart. EMA of the weights, resume, and selection on
Set5 PSNR (Y, border cropped by the scale) come from :mod:`clipiq.train.restoration`. The result,
``run_dir/checkpoint.safetensors``, loads with ``create_restorer("cdasr", scale=S, weights=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clipiq.clip.checkpoint import backbone_record
from clipiq.clip.load import load_clip
from clipiq.core.errors import ConfigError
from clipiq.data.io import load_image
from clipiq.data.paired import mod_crop
from clipiq.degrade import make_lr
from clipiq.restore.cdasr import MODEL_DEFAULTS, build_net, clip_guidance_embedding
from clipiq.train.restoration import (
    PairedRestorationTask,
    clip_embedding_loss,
    freeze_clip,
    restoration_defaults,
    run_restoration,
)

SR_DATA = "../shared/data/sr"

DEFAULTS: dict[str, Any] = restoration_defaults(
    "cdasr", MODEL_DEFAULTS, scale=2, ema=0.999,
    data={"train": [f"{SR_DATA}/train/T91", f"{SR_DATA}/train/BSD200"], "patch_size": 32,
          "val": f"{SR_DATA}/Set5", "val_format": "pairs"},
    # semantic: weight of the CLIP consistency term (0: off); semantic_images: how many images of each batch it
    # uses (0: all): a backward pass through CLIP costs as much as the SR network's on CPU, so a few suffice
    loss={"pixel": "charbonnier", "semantic": 0.05, "semantic_images": 4},
    # the CPU recipe of configs/cdasr/x2.yaml (see there for the measured speed)
    train={"steps": 900, "batch_size": 8, "optimizer": "adam", "lr": 5e-4, "schedule": "cosine", "warmup": 20,
           "eval_every": 150, "ckpt_every": 50, "monitor": "psnr"},
)


def whole_lr(photo: str | Path | Tensor, scale: int) -> Tensor:
    """The LR image (3,h,w) of a whole training photo as :class:`~clipiq.data.paired.SyntheticPairDataset` makes
    LR: cropped to a multiple of the scale, MATLAB ``imresize`` by 1/scale, rounded to 8-bit levels."""
    return make_lr(mod_crop(load_image(photo) if isinstance(photo, str | Path) else photo, scale), "bicubic", scale)


class CDASRTask(PairedRestorationTask):
    """CDASR's network on the frozen CLIP: guidance from the LR embedding, semantic consistency on the output."""

    method = "cdasr"

    def __init__(self, cfg: Mapping[str, Any], device: torch.device | str = "cpu"):
        if cfg["kind"] != "sr":
            raise ConfigError(f"cdasr trains super-resolution: kind must be sr, got {cfg['kind']!r}")
        w = cfg["loss"].get("semantic", 0.0)
        if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
            raise ConfigError(f"loss.semantic must be a non-negative weight, got {w!r}")
        self.backbone_name = str(cfg["model"].get("backbone") or MODEL_DEFAULTS["backbone"])
        clip, self.preprocess = load_clip(self.backbone_name, device=device)
        self.clip = freeze_clip(clip)  # never trained, never saved: the checkpoint records its name and sha256
        self.use_clip = bool(cfg["model"].get("clip", True))
        self.semantic = float(w)
        k = cfg["loss"].get("semantic_images", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"loss.semantic_images must be a number of images >= 0 (0: all), got {k!r}")
        self.semantic_images = k or None
        self._photo_guidance: dict[int, Tensor] = {}  # photo index -> guidance (derived, see photo_guidance)
        super().__init__(cfg, device)

    def build_model(self) -> nn.Module:
        """The CDASR network for the configured scale and the backbone's embedding width."""
        return build_net(self.cfg["model"], self.scale, self.clip.cfg.embed_dim)

    def predict(self, lq: Tensor) -> Tensor:
        """SR output of whole LR images guided by their CLIP embeddings (validation, as at inference; none for the
        --no-clip ablation)."""
        emb = clip_guidance_embedding(self.clip, self.preprocess, lq) if self.use_clip else None
        return self.model(lq, emb)

    def predict_batch(self, batch: Mapping[str, Tensor]) -> Tensor:
        """SR output of training crops guided by the embedding of the whole LR photo each crop came from (the
        batch's ``guidance`` when it carries one, else :meth:`photo_guidance` of its ``index``), as the restorer
        guides every tile with the whole image's embedding."""
        emb = None
        if self.use_clip:
            emb = batch.get("guidance")
            if emb is None:
                emb = self.photo_guidance(batch["index"])
        return self.model(batch["lq"], emb)

    def photo_guidance(self, indices: Tensor | Sequence[int]) -> Tensor:
        """(N, embed_dim) guidance of training photos by index: :func:`clip_guidance_embedding` of the whole photo's
        LR (mod-cropped to the scale, MATLAB ``imresize`` by 1/scale, 8-bit levels: how the training set makes its
        LR). Each is computed once, alone, and cached for the run. The cache is derived data, not training state:
        it depends only on the photo and the frozen CLIP, so a resumed run recomputes the same vectors. A crop's
        flips and 90-degree rotations are ignored: the guidance is the photo's, as at inference it is the image's."""
        out = []
        for i in map(int, indices):
            if i not in self._photo_guidance:
                lr = whole_lr(self.train_set.photo(i), self.scale)[None].to(self.device)
                self._photo_guidance[i] = clip_guidance_embedding(self.clip, self.preprocess, lr)[0]
            out.append(self._photo_guidance[i])
        return torch.stack(out)

    def extra_losses(self, pred: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The weighted semantic-consistency term."""
        if not self.semantic:
            return {}
        gt = batch["gt"]
        return {"semantic": self.semantic * self.head_mean(
            batch, self.semantic_images, lambda part: clip_embedding_loss(self.clip, pred[part], gt[part]))}

    def backbone_record(self) -> dict[str, Any]:
        """The frozen CLIP's name and fingerprint (refused at load time if another backbone is given)."""
        return backbone_record(self.clip, self.backbone_name)


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Train CDASR; writes run_dir/checkpoint.safetensors and summary.json, returns the summary."""
    return run_restoration(CDASRTask, cfg, run_dir, device, resume=resume, progress=progress)


__all__ = ["DEFAULTS", "CDASRTask", "run", "whole_lr"]
