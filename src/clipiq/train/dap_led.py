"""``clipiq train dap-led``: the DAP-LED network (:mod:`clipiq.restore.dap_led`) on LOL-Blur-style pairs.

Pairs are made on the fly by :func:`clipiq.degrade.lowlight_blur_pair` (blur along a random trajectory, darkened
in linear light, shot and read noise) from clean photos (Kodak24, Sun-Hays80, T91, BSD200; McMaster18 is held
out for the benchmark and refused here). A seeded fraction of the training photos (``data.val_fraction``, only
photos at least ``data.val_patch`` pixels on their shorter side) is carved out as the validation part: fixed
seeded crops degraded once with ``data.val_seed``, scored by PSNR/SSIM on RGB with the EMA weights.

Losses (weights in ``loss``):

* Charbonnier between the restored patch and the sharp target (:func:`clipiq.train.restoration.charbonnier_loss`);
* identity (``identity_weight``): ``1 - cos`` of the frozen CLIP's image embeddings of the restored and the sharp
  image (:func:`clipiq.train.restoration.clip_embedding_loss`);
* CLIP term (``clip_weight``): :func:`clip_prior_loss`, the cross-entropy of the restored image's global
  antonym-pair probabilities against "Bright photo." and "Sharp photo." (``prior_pairs``), at the patch's native
  scale, differentiable with respect to the image, no gradient into CLIP. (The paper's CLIP term reads the
  degradation maps; the global probabilities are the same prompts pooled over the patch, and clipiq's dense maps
  are computed without gradients.)

Both CLIP terms see the first ``loss.clip_images`` images of each randomly drawn batch (default 2 of 8): a
backward pass through the frozen CLIP costs more than the network's on a CPU (1.2 instead of 2.0 CPU-s a step).

The CLIP guidance of the network (dense degradation maps of the *input*) is computed under ``no_grad`` in
:func:`clipiq.restore.dap_led.clip_guidance`; CLIP is frozen throughout and never saved in a checkpoint (its name
and sha256 are recorded). Everything else (EMA, batches from (seed, step), resume, validation, the exported
``checkpoint.safetensors``) is :class:`clipiq.train.restoration.PairedRestorationTask`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from clipiq.clip import CLIP, Preprocess, load_clip
from clipiq.clip.checkpoint import backbone_record
from clipiq.clip.dense import pair_text_features, resolve_pairs
from clipiq.core.errors import ConfigError, UnknownNameError
from clipiq.data.io import list_images
from clipiq.data.paired import ImagePair, PairedImageDataset, SyntheticPairDataset
from clipiq.restore.dap_led import (
    METHOD,
    MODEL_DEFAULTS,
    DAPLEDNet,
    build_network,
    check_model_config,
    clip_guidance,
)
from clipiq.train.restoration import (
    PairedRestorationTask,
    check_frozen,
    clip_embedding_loss,
    clip_preprocess,
    first_items,
    freeze_clip,
    restoration_defaults,
    run_restoration,
)

__all__ = ["DEFAULTS", "DAPLEDTask", "clip_prior_loss", "find_mirrored_pairs", "run"]

#: Photo folders that are the benchmark's held-out set and may never be trained on.
HELD_OUT = ("mcmaster18", "mcmaster")

DEFAULTS: dict[str, Any] = restoration_defaults(
    METHOD,
    MODEL_DEFAULTS,
    kind="lowlight_blur",
    scale=1,
    ema=0.999,
    data={
        "train": ["../shared/data/photos/kodak24", "../shared/data/photos/sunhays80",
                  "../shared/data/sr/train/T91", "../shared/data/sr/train/BSD200"],
        "patch_size": 128,  # a multiple of 16 (the network's pad multiple)
        "val_fraction": 0.08,  # of the training photos (those at least val_patch pixels), carved out by a seeded draw
        "val_format": "photos",
        "val_patch": 256,
        "val_limit": 0,
        # Pairs on disk instead (LOL-Blur): data.train holds the sharp targets and train_lq the degraded inputs
        # under the same relative paths; val / val_lq likewise. "" synthesises the pairs.
        "train_lq": "",
        "val_lq": "",
    },
    val={"y_channel": False, "crop_border": 0},  # RGB, as LOL-Blur papers report
    # clip_images: the CLIP terms see the first N images of each (randomly drawn) batch, 0 all of them: a
    # backward pass through the frozen CLIP costs several times the network's on a CPU.
    loss={"identity_weight": 0.1, "clip_weight": 0.02, "prior_pairs": ["brightness", "sharpness"],
          "clip_images": 2},
    # The CPU recipe of configs/dap-led/synthetic.yaml (about 48 min on free cores; timing in that file).
    train={"steps": 2400, "batch_size": 8, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup": 100,
           "grad_clip": 1.0, "eval_every": 400, "ckpt_every": 100, "monitor": "psnr"},
)


def clip_prior_loss(clip: CLIP, pred: Tensor, pairs: Sequence[str] = ("brightness", "sharpness"),
                    preprocess: Preprocess | None = None) -> Tensor:
    """Cross-entropy of the image's global antonym-pair probabilities toward each pair's positive prompt.

    With the default pairs it falls as CLIP reads ``pred`` as brighter and sharper. Differentiable with respect
    to ``pred``; the backbone must be frozen (no gradient reaches it).
    """
    check_frozen(clip, "clip_prior_loss")
    pre = preprocess or clip_preprocess(clip)
    # "native": at the image's own scale (cropped to whole patches). Upscaling a 128 px training patch to CLIP's
    # 224 px input would itself look blurry to CLIP, which is what this term is to judge; it is 3x cheaper too.
    x = pre.prepare(pred.float().clamp(0, 1), "native").to(clip.dtype)
    img = clip.encode_image(x, normalize=True).float()
    text = pair_text_features(clip, list(pairs)).to(img.device)  # (K, 2, D), positive first, no gradient
    logits = clip.logit_scale.float().exp() * torch.einsum("nd,kjd->nkj", img, text)
    return -F.log_softmax(logits, dim=-1)[..., 0].mean()


def find_mirrored_pairs(lq_root: str | Path, gt_roots: Sequence[str | Path] | str | Path) -> list[ImagePair]:
    """(degraded, target) pairs with the same path relative to their roots: LOL-Blur's ``low_blur_noise/0012/
    0040.png`` and ``high_sharp_scaled/0012/0040.png``. A target without its degraded partner is an error."""
    roots = [gt_roots] if isinstance(gt_roots, str | Path) else list(gt_roots)
    lq = Path(lq_root)
    if not lq.is_dir():
        raise FileNotFoundError(f"{lq}: the degraded-image folder does not exist")
    pairs = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: the target folder does not exist")
        for gt in list_images([root], recursive=True):
            partner = lq / gt.relative_to(root)
            if not partner.is_file():
                raise FileNotFoundError(f"{partner}: the degraded partner of {gt} is missing")
            pairs.append(ImagePair(lq=partner, gt=gt))
    if not pairs:
        raise FileNotFoundError(f"no target images under {[str(r) for r in roots]}")
    return pairs


def _check_loss(cfg: Mapping[str, Any]) -> None:
    lc = cfg["loss"]
    for key in ("identity_weight", "clip_weight"):
        v = lc[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ConfigError(f"dap-led: loss.{key} must be a number >= 0, got {v!r}")
    k = lc["clip_images"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"dap-led: loss.clip_images must be an integer >= 0 (0: the whole batch), got {k!r}")
    pairs = lc["prior_pairs"]
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or not pairs:
        raise ConfigError(f"dap-led: loss.prior_pairs must list attribute pairs such as [brightness, sharpness], "
                          f"got {pairs!r}")
    try:
        resolve_pairs(list(pairs))
    except (UnknownNameError, ValueError) as e:
        raise ConfigError(f"dap-led: loss.prior_pairs: {e}") from None


def _check_data(cfg: Mapping[str, Any]) -> None:
    d = cfg["data"]
    for folder in d["train"]:
        if any(h in Path(str(folder)).name.lower() for h in HELD_OUT):
            raise ConfigError(f"dap-led: data.train includes {folder}: McMaster18 is the held-out benchmark set")
    p = d["patch_size"]
    if isinstance(p, int) and not isinstance(p, bool) and p % DAPLEDNet.pad_multiple:
        raise ConfigError(f"dap-led: data.patch_size must be a multiple of {DAPLEDNet.pad_multiple}, got {p}")
    f = d["val_fraction"]
    if isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f < 1:
        raise ConfigError(f"dap-led: data.val_fraction must be a fraction in [0, 1), got {f!r}")
    v = d["val_patch"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % DAPLEDNet.pad_multiple:
        raise ConfigError(f"dap-led: data.val_patch must be 0 or a multiple of {DAPLEDNet.pad_multiple}, got {v!r}")


class DAPLEDTask(PairedRestorationTask):
    """DAP-LED on synthetic low-light + blur pairs: CLIP-guided network, Charbonnier + two CLIP prior terms."""

    method = METHOD
    pad_multiple = DAPLEDNet.pad_multiple

    def __init__(self, cfg: Mapping[str, Any], device: torch.device | str = "cpu"):
        self.mcfg = check_model_config(cfg["model"])
        _check_loss(cfg)
        _check_data(cfg)
        self._val_photos: list[Path] = []
        super().__init__(cfg, device)
        d = self.cfg["data"]
        if d["train_lq"]:  # pairs on disk replace the synthesised ones (same crops, flips and seeding)
            self.train_set = PairedImageDataset(find_mirrored_pairs(d["train_lq"], d["train"]), scale=1,
                                                patch_size=int(d["patch_size"]), augment=bool(d["augment"]),
                                                seed=self.seed)

    # --- the model and its frozen CLIP ---------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The network for the configured backbone; loads the frozen CLIP (kept outside the trained model)."""
        self.clip, self.preprocess = load_clip(self.mcfg["backbone"], weights=self.mcfg["backbone_weights"],
                                               device=self.device)
        freeze_clip(self.clip)
        return build_network(self.mcfg, self.clip.cfg.embed_dim)

    def predict(self, lq: Tensor) -> Tensor:
        """The network's output, guided by CLIP's maps of ``lq`` (learned constants for the ablation)."""
        maps = feats = None
        if self.mcfg["clip"]:
            maps, feats = clip_guidance(self.clip, self.preprocess, lq, self.mcfg["clip_size"])
        return self.model(lq, maps, feats)

    def extra_losses(self, pred: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The identity and CLIP prior terms, weighted (a zero weight skips the term's CLIP pass)."""
        lc = self.cfg["loss"]
        k = int(lc["clip_images"]) or None
        gt = batch["gt"]
        out: dict[str, Tensor] = {}
        if lc["identity_weight"]:
            out["identity"] = float(lc["identity_weight"]) * self.head_mean(
                batch, k, lambda part: clip_embedding_loss(self.clip, pred[part], gt[part]))
        if lc["clip_weight"]:
            out["clip_prior"] = float(lc["clip_weight"]) * self.head_mean(
                batch, k, lambda part: clip_prior_loss(self.clip, pred[part], lc["prior_pairs"], self.preprocess))
        return out

    def backbone_record(self) -> dict[str, Any]:
        """The frozen CLIP's load name, weights file, sha256 and embedding width (the network depends on it)."""
        record = backbone_record(self.clip, self.mcfg["backbone"], self.mcfg["backbone_weights"])
        return {**record, "embed_dim": self.clip.cfg.embed_dim}

    # --- data: validation carved from the training photos --------------------------------------------------------

    def _training_photos(self) -> list[Path]:
        d = self.cfg["data"]
        if d["train_lq"]:  # the targets of the pairs on disk (see __init__); validation comes from val / val_lq
            return [p.gt for p in find_mirrored_pairs(d["train_lq"], d["train"])]
        photos = super()._training_photos()
        fraction, side = float(d["val_fraction"]), int(d["val_patch"])
        if fraction <= 0 or d["val"]:
            return photos
        big = []
        for p in photos:
            with Image.open(p) as im:  # the header only
                if min(im.size) >= side:
                    big.append(p)
        n_val = max(1, round(fraction * len(photos)))
        if len(big) <= n_val or len(photos) - n_val < 1:
            raise ConfigError(f"dap-led: data.val_fraction={fraction} asks for {n_val} validation photos of at "
                              f"least {side} px, but only {len(big)} of {len(photos)} photos are that large")
        order = np.random.default_rng([self.seed, 7]).permutation(len(big))
        self._val_photos = sorted(big[int(i)] for i in order[:n_val])
        held = set(self._val_photos)
        return [p for p in photos if p not in held]

    def _validation_set(self) -> torch.utils.data.Dataset | None:
        d = self.cfg["data"]
        ds: torch.utils.data.Dataset
        if d["val_lq"]:
            if not d["val"]:
                raise ConfigError("dap-led: data.val_lq needs data.val (the validation targets)")
            # A fixed crop per pair (drawn from val_seed), so validation stays affordable on a CPU.
            ds = PairedImageDataset(find_mirrored_pairs(d["val_lq"], [d["val"]]), scale=1,
                                    patch_size=int(d["val_patch"]) or None, seed=int(d["val_seed"]))
        elif self._val_photos:
            ds = SyntheticPairDataset(self._val_photos, task=self.kind, patch_size=int(d["val_patch"]) or None,
                                      seed=int(d["val_seed"]))
        else:
            return super()._validation_set()
        return first_items(ds, int(d["val_limit"] or 0))


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Train; writes run_dir/checkpoint.safetensors (best EMA weights, loads with ``create_restorer('dap-led',
    weights=...)``) and summary.json."""
    return run_restoration(DAPLEDTask, cfg, run_dir, device, resume=resume, progress=progress)
