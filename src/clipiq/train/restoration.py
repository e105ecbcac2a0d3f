"""Shared machinery for paired-restoration training (super-resolution, low-light deblurring, ...).

Public API (every paired-restoration training task builds on it; nothing here is method-specific):

* :class:`ModelEMA` -- an exponential moving average of a model's weights. ``update(model)`` after each optimizer
  step (the Trainer calls the task's ``after_step`` hook), ``applied(model)`` a context that swaps the averaged
  weights in (evaluation, export) and back, ``state_dict()`` / ``load_state_dict()`` for exact resume.
  The effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so short runs are not dominated
  by the random initialisation.
* :func:`charbonnier_loss` ``(pred, target, eps=1e-3)`` -- ``mean(sqrt((pred-target)^2 + eps^2) - eps)``, 0 for
  identical inputs.
* :func:`clip_embedding_loss` ``(clip_model, pred, target)`` -- ``1 - cos`` of the frozen CLIP image embeddings
  of ``pred`` and ``target`` (the target's without gradient); gradients reach ``pred`` only.
  :func:`freeze_clip` puts a backbone in the state it requires (eval mode, no gradients), :func:`check_frozen`
  checks it, and :func:`clip_preprocess` is the backbone's preprocessing (built once per model).
* :func:`restoration_defaults` -- the config every task starts from: ``seed``, ``kind`` (``sr`` |
  ``lowlight_blur`` | ``lowlight`` | ``deblur``, :data:`clipiq.data.paired.PAIR_KINDS`), ``scale``, ``ema``
  (decay, 0 = off), ``data`` (training photo folders, patch size, augmentation, validation set), ``val``
  (Y channel, border crop), ``loss`` (the pixel loss), ``model`` (the method's own) and ``train`` (the Trainer's keys).
* :class:`PairedRestorationTask` -- a :class:`~clipiq.train.engine.TrainTask`. A method subclasses it and sets
  ``method`` (the checkpoint's method name) and implements ``build_model()``; optionally overrides
  ``predict(lq)`` (the forward pass, e.g. adding a CLIP guidance; validation uses it), ``predict_batch(batch)``
  (the training forward pass, given the batch with the photos' ``index``), ``extra_losses(pred, batch)`` (weighted terms
  added to the pixel loss) and ``backbone_record()`` (the frozen backbone the checkpoint depends on).
  Training pairs are synthesised from clean photos by :class:`~clipiq.data.paired.SyntheticPairDataset`
  (SR: MATLAB-exact bicubic ``imresize``; random crops, flips and 90-degree rotations), drawn per step from
  ``(seed, step)``, so a resumed run sees the same batches. Validation is PSNR/SSIM (:mod:`clipiq.eval.fr`, the
  outputs rounded to 8-bit levels; SR: on Y with the border cropped by the scale) with the EMA weights;
  ``psnr`` is what ``train.monitor`` selects on.
* :func:`run_restoration` ``(task_factory, cfg, run_dir, device, resume, progress)`` -- seeds, builds the task
  (``task_factory(cfg, device)``, e.g. the subclass itself), trains (auto-resume) and writes
  ``run_dir/checkpoint.safetensors`` (the best weights as a ``clipiq-method/1`` checkpoint, see
  :mod:`clipiq.clip.checkpoint`) and ``summary.json``. A task module is then ``DEFAULTS = restoration_defaults(...)``
  and ``def run(cfg, run_dir, device, resume=True, progress=None): return run_restoration(MyTask, cfg, ...)``.

Data-parallel runs (``clipiq train --nproc N``, :mod:`clipiq.train.parallel`): :meth:`PairedRestorationTask.cpu_batch`
makes only the process's shard of each batch, and :meth:`PairedRestorationTask.head_mean` keeps a term computed on
the first k items of a batch (a CLIP loss on a few images) the single-process term, so N processes train the weights
one process does (to float rounding).

The EMA rides on two optional TrainTask hooks of :class:`~clipiq.train.engine.Trainer`: ``after_step()`` (after each
optimizer step) and ``restore_payload(payload)`` (on resume). It is not a ``train.ema`` key because a new key in
``TRAIN_DEFAULTS`` would change every task's config and so refuse to resume every run already on disk.

Checkpoints: the payload is a method checkpoint whose ``state`` is the weights to restore with (the EMA when on),
plus ``ema`` (decay and update count); everything is safetensors plus JSON, nothing pickled.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from clipiq.clip.checkpoint import payload as method_payload
from clipiq.clip.checkpoint import read_method_checkpoint, save_method_checkpoint
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.core.config import config_json
from clipiq.core.errors import ConfigError
from clipiq.core.image import pad_to_multiple
from clipiq.core.tensors import load_trainable_state, trainable_state
from clipiq.data.io import list_images
from clipiq.data.paired import PAIR_KINDS, SR_SCALES, PairedImageDataset, SyntheticPairDataset, find_pairs
from clipiq.data.runner import prefetch
from clipiq.eval import psnr, ssim
from clipiq.restore.cdasr import clip_image_embedding
from clipiq.train import parallel
from clipiq.train.engine import Trainer, epoch_batch, seed_everything, train_defaults

log = logging.getLogger(__name__)

__all__ = [
    "ModelEMA",
    "PairedRestorationTask",
    "charbonnier_loss",
    "check_frozen",
    "clip_embedding_loss",
    "clip_preprocess",
    "first_items",
    "freeze_clip",
    "pixel_loss",
    "restoration_defaults",
    "run_restoration",
]


# --- EMA -------------------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of a model's trained tensors (parameters that train, and buffers)."""

    def __init__(self, model: nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.0 <= float(decay) < 1.0:
            raise ConfigError(f"ema must be a decay in [0, 1) (0 turns the EMA off), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in trainable_state(model).items()}

    def current_decay(self) -> float:
        """The decay the next update uses: ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * weights (integer buffers are copied)."""
        d = self.current_decay()
        for k, v in trainable_state(model).items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach().to(s.dtype), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's trained tensors with the averaged ones."""
        live = model.state_dict(keep_vars=True)
        for k, s in self.shadow.items():
            live[k].copy_(s)  # not .data: the copy must bump versions, which caches key on

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged weights; its own come back afterwards."""
        saved = {k: v.detach().clone() for k, v in trainable_state(model).items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                live = model.state_dict(keep_vars=True)
                for k, v in saved.items():
                    live[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """Decay, update count and the averaged tensors (for a checkpoint)."""
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.detach().cpu() for k, v in
                                                                         self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s content (the tensors must match the model's)."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            odd = sorted(set(shadow) ^ set(self.shadow))[:5]
            raise ValueError(f"EMA state holds other tensors than the model: {odd}")
        for k, v in shadow.items():
            self.shadow[k] = v.detach().to(self.shadow[k].device, self.shadow[k].dtype).clone()
        self.updates = int(state["updates"])


# --- losses ----------------------------------------------------------------------------------------------------


def charbonnier_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier (smooth L1): mean of sqrt(d^2 + eps^2) - eps, so identical inputs give exactly 0."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    d = (pred.float() - target.float()).pow(2)
    return (d + eps * eps).sqrt().sub(eps).mean()


def freeze_clip(clip_model: CLIP) -> CLIP:
    """Put a CLIP backbone in eval mode with no gradients (the state :func:`clip_embedding_loss` requires)."""
    clip_model.requires_grad_(False)
    return clip_model.eval()


def clip_preprocess(clip_model: CLIP) -> Preprocess:
    """The preprocessing of a frozen CLIP's training-time uses (its weights' own normalisation and interpolation),
    built once per model and kept on it."""
    pre = getattr(clip_model, "_restoration_preprocess", None)
    if pre is None:
        pre = Preprocess(clip_model.cfg.preprocess, clip_model.cfg.vision.patch_size)
        clip_model._restoration_preprocess = pre
    return pre


def check_frozen(clip_model: CLIP, who: str) -> None:
    """Raise a ValueError naming ``who`` unless the backbone is frozen (eval mode, no parameter needing gradients)."""
    if clip_model.training or any(p.requires_grad for p in clip_model.parameters()):
        raise ValueError(f"{who} needs a frozen CLIP (eval mode, requires_grad False): "
                         "pass it through clipiq.train.restoration.freeze_clip")


def pixel_loss(loss_cfg: Mapping[str, Any], pred: Tensor, gt: Tensor) -> Tensor:
    """The pixel loss a config's ``loss`` section names: ``pixel`` charbonnier (with ``charbonnier_eps``), l1 or l2."""
    kind = loss_cfg.get("pixel", "charbonnier")
    if kind == "charbonnier":
        return charbonnier_loss(pred, gt, float(loss_cfg.get("charbonnier_eps", 1e-3)))
    return F.l1_loss(pred.float(), gt.float()) if kind == "l1" else F.mse_loss(pred.float(), gt.float())


def clip_embedding_loss(clip_model: CLIP, pred: Tensor, target: Tensor) -> Tensor:
    """1 - cosine similarity of the frozen CLIP image embeddings of ``pred`` and ``target`` (batch mean).

    Gradients reach ``pred`` only: the target's embedding is computed without them, and the backbone must be
    frozen (see :func:`freeze_clip`), which is checked.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    check_frozen(clip_model, "clip_embedding_loss")
    pre = clip_preprocess(clip_model)
    # Outputs may overshoot [0,1] a little while training; the preprocessing expects images.
    with torch.no_grad():
        want = clip_image_embedding(clip_model, pre, target.detach().clamp(0, 1))
    have = clip_image_embedding(clip_model, pre, pred.clamp(0, 1))
    return (1.0 - (have * want).sum(-1)).mean()


# --- config ----------------------------------------------------------------------------------------------------


def restoration_defaults(method: str, model: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    """The config of a paired-restoration task: the shared keys, the method's ``model`` section, and changes.

    ``sections`` replaces top-level values or updates sections (e.g. ``train={"lr": 5e-4}``, ``kind="lowlight_blur"``).
    """
    cfg: dict[str, Any] = {
        "method": method,
        "seed": 0,
        "kind": "sr",  # sr | lowlight_blur | lowlight | deblur (clipiq.data.paired.PAIR_KINDS)
        "scale": 2,  # SR only: 2, 3, 4, 8 or 16 (1 for same-size restoration)
        "ema": 0.999,  # decay of the weights' moving average; 0 turns it off
        "init": "",  # a method checkpoint of the same network to start from (BasicSR's pretrain_network_g)
        "data": {
            "train": [],  # folders of clean photos; pairs are synthesised per data kind
            "patch_size": 48,  # training patch side in lq pixels (gt: patch_size * scale)
            "augment": True,  # flips and 90-degree rotations
            "val": "",  # validation: a pairs folder (val_format pairs: Set5/Set14 or DIV2K layout) or photos
            "val_format": "pairs",  # pairs | photos (photos: pairs synthesised once, with seed val_seed)
            "val_patch": 0,  # photos only: a fixed crop of this many lq pixels per side (0: the whole photo)
            "val_limit": 0,  # use only the first N validation items (0: all)
            "val_seed": 1234,
            "workers": 2,  # threads preparing the next batches while the network trains (0: none)
            "cache_photos": True,  # keep training photos decoded (8-bit) after their first use
        },
        "val": {"y_channel": True, "crop_border": -1},  # -1: crop the scale (SR papers' convention)
        "loss": {"pixel": "charbonnier", "charbonnier_eps": 1e-3},  # pixel: charbonnier | l1 | l2
        "model": dict(model),
        "train": train_defaults(steps=1000, batch_size=16, optimizer="adam", lr=5e-4, schedule="cosine",
                                monitor="psnr", log_every=10, grad_clip=0.0),
    }
    for k, v in sections.items():
        if k not in cfg:
            raise KeyError(f"restoration_defaults: unknown section {k!r}")
        cfg[k] = {**cfg[k], **v} if isinstance(cfg[k], dict) and isinstance(v, Mapping) else v
    return cfg


def _check_cfg(cfg: Mapping[str, Any]) -> None:
    kind = cfg["kind"]
    if kind not in PAIR_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(PAIR_KINDS)}, got {kind!r}")
    scale = cfg["scale"]
    if kind == "sr" and scale not in SR_SCALES:
        raise ConfigError(f"scale must be one of {', '.join(map(str, SR_SCALES))} for kind sr, got {scale!r}")
    d = cfg["data"]
    if isinstance(d["patch_size"], bool) or not isinstance(d["patch_size"], int) or d["patch_size"] < 8:
        raise ConfigError(f"data.patch_size must be an integer >= 8 (lq pixels), got {d['patch_size']!r}")
    if d["val_format"] not in ("pairs", "photos"):
        raise ConfigError(f"data.val_format must be pairs or photos, got {d['val_format']!r}")
    if cfg["loss"]["pixel"] not in ("charbonnier", "l1", "l2"):
        raise ConfigError(f"loss.pixel must be charbonnier, l1 or l2, got {cfg['loss']['pixel']!r}")
    if isinstance(d["train"], str):
        raise ConfigError("data.train must be a list of folders, got a string (write [folder])")
    if not d["train"]:
        raise ConfigError("data.train: no training photo folders configured")


def first_items(ds: torch.utils.data.Dataset, limit: int) -> torch.utils.data.Dataset:
    """The first ``limit`` items of ``ds`` (``data.val_limit``; 0: all of them)."""
    return torch.utils.data.Subset(ds, range(min(limit, len(ds)))) if limit else ds


# --- the task ----------------------------------------------------------------------------------------------------


class PairedRestorationTask:
    """Base :class:`~clipiq.train.engine.TrainTask` for paired restoration; see the module docstring."""

    #: The method name recorded in checkpoints (``clipiq-method/1``'s ``method``).
    method: str = ""
    #: Inputs are padded (reflect) to a multiple of this for validation.
    pad_multiple: int = 1
    #: In a data-parallel run :meth:`cpu_batch` makes only this process's part of each batch (the Trainer's hook).
    builds_shards: bool = True

    def __init__(self, cfg: Mapping[str, Any], device: torch.device | str = "cpu"):
        _check_cfg(cfg)
        self.cfg = copy.deepcopy(dict(cfg))
        self.device = torch.device(device)
        self.kind = str(cfg["kind"])
        self.scale = int(cfg["scale"]) if self.kind == "sr" else 1
        self.seed = int(cfg["seed"])
        self.batch_size = int(cfg["train"]["batch_size"])
        self.model = self.build_model().to(self.device)
        if cfg.get("init"):
            self._load_init(Path(cfg["init"]))
        decay = cfg["ema"]
        self.ema = ModelEMA(self.model, decay) if decay else None
        d = cfg["data"]
        self.train_set = SyntheticPairDataset(self._training_photos(), task=self.kind, scale=self.scale,
                                              patch_size=int(d["patch_size"]), augment=bool(d["augment"]),
                                              seed=self.seed, cache_photos=bool(d.get("cache_photos", False)))
        self.val_set = self._validation_set()

    # --- what a method provides ------------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The network to train, built from ``self.cfg`` (on the CPU; the task moves it)."""
        raise NotImplementedError

    def predict(self, lq: Tensor) -> Tensor:
        """The network's output for a (N,3,h,w) batch (override to add guidance, e.g. a CLIP embedding)."""
        return self.model(lq)

    def predict_batch(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The network's output for a training batch (``lq``, ``gt`` and ``index``, the photos' indices in the
        training set): :meth:`predict` of ``lq`` unless overridden (e.g. to use guidance of the whole photos)."""
        return self.predict(batch["lq"])

    def extra_losses(self, pred: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Weighted loss terms added to the pixel loss (logged under their names)."""
        return {}

    def backbone_record(self) -> dict[str, Any]:
        """The frozen backbone the weights depend on (see :func:`clipiq.clip.checkpoint.backbone_record`)."""
        return {}

    def _load_init(self, path: Path) -> None:
        """Start from a checkpoint's weights (any float dtype) trained with this config's network."""
        ck = read_method_checkpoint(path, self.method)
        theirs = {k: ck.config.get(k) for k in ("model", "kind", "scale")}
        ours = {k: self.cfg.get(k) for k in ("model", "kind", "scale")}
        if config_json(theirs) != config_json(ours):
            raise ConfigError(f"init: {path} holds another network or task ({config_json(theirs)}) than this "
                              f"config ({config_json(ours)})")
        load_trainable_state(self.model, ck.state, str(path))
        log.info("init: started from the weights of %s", path)

    # --- data ---------------------------------------------------------------------------------------------------

    def _training_photos(self) -> list[Path]:
        folders = [Path(f) for f in self.cfg["data"]["train"]]
        for f in folders:
            if not f.is_dir():
                raise FileNotFoundError(f"data.train: {f} is not a folder")
        need = int(self.cfg["data"]["patch_size"]) * self.scale
        keep, small = [], 0
        for p in list_images([str(f) for f in folders], recursive=True):
            with Image.open(p) as im:  # the header only: no decoding
                w, h = im.size
            if min(w, h) >= need:
                keep.append(Path(p))
            else:
                small += 1
        if small:
            log.info("data.train: %d photos smaller than the %d-pixel gt patch left out", small, need)
        if not keep:
            raise FileNotFoundError(f"data.train: no photo of at least {need}x{need} pixels in {folders}")
        return keep

    def _validation_set(self) -> torch.utils.data.Dataset | None:
        d = self.cfg["data"]
        if not d["val"]:
            return None
        if d["val_format"] == "pairs":
            if self.kind != "sr":
                raise ConfigError("data.val_format pairs reads super-resolution pairs; use photos for "
                                  f"kind {self.kind}")
            ds: torch.utils.data.Dataset = PairedImageDataset(find_pairs(d["val"], self.scale), scale=self.scale)
        else:
            ds = SyntheticPairDataset(d["val"], task=self.kind, scale=self.scale,
                                      patch_size=int(d["val_patch"]) or None, seed=int(d["val_seed"]))
        return first_items(ds, int(d["val_limit"] or 0))

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over the training photos."""
        return math.ceil(len(self.train_set) / self.batch_size)

    def cpu_batch(self, step: int) -> dict[str, Tensor]:
        """Batch ``step`` on the CPU: photos drawn by (seed, step), crops and degradations by (seed, epoch, index).

        In a data-parallel run, only this process's shard of it (each item depends only on its photo and epoch,
        so the shards together are the single-process batch), plus ``shard``: (start, stop, size) of the global
        batch, which :meth:`head_mean` needs."""
        epoch = step // self.steps_per_epoch
        chosen = epoch_batch(self.seed, step, len(self.train_set), self.batch_size)
        shard: dict[str, Tensor] = {}
        if parallel.current().world_size > 1:
            # An epoch's last, smaller batch that does not split is made whole by every process.
            part = parallel.shard_positions(len(chosen), "train.batch_size", whole_if_uneven=True)
            shard["shard"] = torch.tensor([part.start, part.stop, len(chosen)])
            chosen = chosen[part]
        items = [self.train_set.item(i, epoch) for i in chosen]
        return {"lq": torch.stack([it["lq"] for it in items]), "gt": torch.stack([it["gt"] for it in items]),
                "index": torch.tensor([int(it["index"]) for it in items]), **shard}

    def batches(self, start_step: int) -> Iterator[dict[str, Tensor]]:
        """The batches from ``start_step`` on, on the task's device; ``data.workers`` threads prepare the next ones
        while the network trains (the same batches with any number of workers: each depends only on its step)."""
        parallel.shard_positions(self.batch_size, "train.batch_size")  # refuse a batch that never splits, up front
        workers = int(self.cfg["data"].get("workers", 0) or 0)
        steps = itertools.count(start_step)
        if workers < 1:
            made: Iterator[tuple[int, Any, BaseException | None]] = ((k, self.cpu_batch(k), None) for k in steps)
        else:
            made = prefetch(self.cpu_batch, steps, workers=workers, ahead=2 * workers)
        for step, batch, err in made:
            if err is not None:
                raise RuntimeError(f"preparing training batch {step} failed: {err}") from err
            yield {k: v.to(self.device, non_blocking=True) if k not in ("index", "shard") else v
                   for k, v in batch.items()}

    # --- training -----------------------------------------------------------------------------------------------

    def pixel_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        """The configured pixel loss (charbonnier, l1 or l2)."""
        return pixel_loss(self.cfg["loss"], pred, gt)

    def training_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Pixel loss plus the method's extra terms; 'loss' is their sum."""
        pred = self.predict_batch(batch)
        losses = {"pixel": self.pixel_loss(pred, batch["gt"]), **self.extra_losses(pred, batch)}
        losses["loss"] = sum(losses.values(), torch.zeros((), device=pred.device))
        return losses

    def head_mean(self, batch: Mapping[str, Tensor], k: int | None, term: Callable[[slice], Tensor]) -> Tensor:
        """A loss term over the first ``k`` items of the batch (None or 0: all), for terms too costly for every item.

        ``term(part)`` is the term's mean over the items ``part`` of this process's batch. In a single process it
        is ``term(slice(0, k))``. In a data-parallel run the first ``k`` items of the global batch may lie on some
        processes only: each process takes those it holds, weighted so that the processes' averaged gradient (and
        logged value) is the single-process term's, and a process holding none of them returns 0.
        """
        if "shard" not in batch:
            return term(slice(0, k or None))
        start, stop, n = (int(v) for v in batch["shard"])
        k = min(k or n, n)
        if stop - start == n:  # every process holds the whole batch: the single-process term
            return term(slice(0, k))
        held = max(0, min(stop, k) - start)
        if held == 0:
            return torch.zeros((), device=self.device)
        return term(slice(0, held)) * (held * parallel.current().world_size / k)

    def after_step(self) -> None:
        """Update the EMA (the Trainer calls this after each optimizer step)."""
        if self.ema is not None:
            self.ema.update(self.model)

    def _weights_context(self) -> contextlib.AbstractContextManager:
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def restore_padded(self, lq: Tensor) -> Tensor:
        """The model's output for a batch of any size: reflect-padded to ``pad_multiple``, cropped back, in [0,1]."""
        h, w = lq.shape[-2:]
        out = self.predict(pad_to_multiple(lq, self.pad_multiple))
        return out[..., : h * self.scale, : w * self.scale].clamp(0, 1)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean PSNR and SSIM over the validation set with the EMA weights (8-bit outputs; SR: Y, border cropped)."""
        if self.val_set is None:
            return {}
        v = self.cfg["val"]
        crop = self.scale if int(v["crop_border"]) < 0 else int(v["crop_border"])
        y = bool(v["y_channel"])
        ps, ss = [], []
        with self._weights_context():
            for i in range(len(self.val_set)):
                item = self.val_set[i]
                lq, gt = item["lq"][None].to(self.device), item["gt"][None].to(self.device)
                out = self.restore_padded(lq).mul(255).round().div(255)  # as a saved image would be
                ps.append(float(psnr(out, gt, crop_border=crop, y_channel=y)[0]))
                ss.append(float(ssim(out, gt, crop_border=crop, y_channel=y)[0]))
        return {"psnr": sum(ps) / len(ps), "ssim": sum(ss) / len(ss)}

    # --- checkpoints --------------------------------------------------------------------------------------------

    def checkpoint_payload(self) -> dict[str, Any]:
        """A ``clipiq-method/1`` checkpoint of the weights to restore with (the EMA when on) and the EMA's counters."""
        if self.ema is not None:
            state = self.ema.shadow
            ema: dict[str, Any] = {"decay": self.ema.decay, "updates": self.ema.updates}
        else:
            state, ema = trainable_state(self.model), {"decay": 0.0, "updates": 0}
        return {**method_payload(self.method, state, self.cfg, self.backbone_record()), "ema": ema}

    def restore_payload(self, payload: Mapping[str, Any] | None) -> None:
        """On resume: the EMA's averaged weights and update count come back from the last checkpoint."""
        if self.ema is None:
            return
        if not payload or "state" not in payload or "ema" not in payload:
            raise ValueError("the checkpoint being resumed has no EMA state; resume with the config it was written "
                             "with, or start over (--no-resume)")
        self.ema.load_state_dict({"shadow": payload["state"], "updates": payload["ema"]["updates"]})


# --- running --------------------------------------------------------------------------------------------------


def run_restoration(task_factory: Callable[[Mapping[str, Any], torch.device], PairedRestorationTask],
                    cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
                    progress: bool | None = None) -> dict[str, Any]:
    """Seed, build the task with ``task_factory(cfg, device)``, train (auto-resume), and write
    ``checkpoint.safetensors`` (the best weights, or the last without a validation set) and ``summary.json``."""
    run_dir = Path(run_dir)
    seed_everything(int(cfg["seed"]))  # before building: the initial weights follow the seed
    task = task_factory(cfg, device)
    cfg = copy.deepcopy(dict(cfg))
    if task.val_set is None:  # nothing to select on: the last weights are the result
        cfg["train"]["monitor"] = None
    trainer = Trainer(task, cfg, run_dir, device, resume=resume, progress=progress)
    fit = trainer.fit()
    if not parallel.is_main_process():  # rank 0 exports the result and writes the summary
        return {"method": task.method, "steps": fit["steps"], "run_dir": str(run_dir)}
    src = trainer.best_path if cfg["train"]["monitor"] else trainer.last_path
    ck = read_method_checkpoint(src, task.method)
    out = save_method_checkpoint(run_dir / "checkpoint.safetensors", ck.method, ck.state, ck.config, ck.backbone)
    summary = {"method": task.method, "steps": fit["steps"], "seconds": fit["seconds"],
               "steps_per_s": fit["steps_per_s"], "best": trainer.best, "monitor": cfg["train"]["monitor"],
               "last_eval": fit["last_eval"], "parameters": sum(p.numel() for p in task.model.parameters()),
               "checkpoint": str(out), "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
