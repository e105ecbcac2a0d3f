"""CDASR's few-shot domain adaptation and its meta-learned initialisation (``clipiq train cdasr-meta``).

**Adaptation** (:func:`adapt`, ``clipiq adapt cdasr``): a trained CDASR checkpoint is fine-tuned on K (LR, HR)
pairs of one target domain (an LR formation process it never saw, :mod:`clipiq.degrade.sr_domains`): each step
draws ``batch_size`` random aligned crops (with flips and 90-degree rotations) from the pairs, seeded by
``(seed, step)``, and takes one Adam step on the training loss of ``clipiq train cdasr`` (the configured pixel
loss plus ``loss.semantic`` times the CLIP semantic-consistency term). A crop's CLIP guidance is the embedding of
its pair's whole LR image (each computed once), as at inference. The frozen CLIP is never trained. The result
is a ``clipiq-method/1`` checkpoint loadable as restorer ``cdasr``; its config is the source's plus an ``adapt``
section recording the source checkpoint (path and sha256), the K pair names, the settings, and the pixel loss on
the whole support pairs before and after.

**Meta-learning** (:class:`CDASRMetaTask`, ``clipiq train cdasr-meta``): Reptile (Nichol et al. 2018; first
order) starting from a source checkpoint (``meta.source``), over source domains = the recipes of
:data:`clipiq.degrade.SR_DOMAINS` (``meta.domains``) applied on the fly to random crops of the 291 training photos.
An outer step adapts a copy of the weights to each of ``meta.meta_batch`` domains with ``meta.inner_steps`` Adam
steps at ``meta.inner_lr`` (the adaptation's own optimiser, so the initialisation is tuned for :func:`adapt`; a
crop's guidance is the embedding of its whole photo's LR in that domain, with the crop's degradation draws), then
moves the weights towards the adapted ones: ``theta <- theta - lr * mean(theta - theta_domain)``. The outer step
runs in the shared :class:`~clipiq.train.engine.Trainer` as plain SGD on that pseudo-gradient (as
``clipiq train grmp-pretrain`` does), and everything else (data, losses, checkpoints, resume, Set5 logging) is
:class:`~clipiq.train.cdasr.CDASRTask`'s and :func:`~clipiq.train.restoration.run_restoration`'s. The model section
and scale come from the source checkpoint. Nothing is selected on the Set5 (bicubic) PSNR, which meta-training is
not meant to raise: the last weights are the result, ``run_dir/checkpoint.safetensors``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import math
import os
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clipiq.clip.checkpoint import (
    MethodCheckpoint,
    check_backbone,
    open_with_backbone,
    read_method_checkpoint,
    save_method_checkpoint,
)
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.core.errors import ConfigError
from clipiq.core.tensors import trainable_state
from clipiq.data.io import is_image_file, load_image
from clipiq.data.paired import draw_augment, mod_crop, paired_augment, paired_random_crop
from clipiq.degrade.sr_domains import SR_DOMAINS, get_sr_domain
from clipiq.restore.cdasr import CDASRNet, build_net, clip_guidance_embedding
from clipiq.train.cdasr import DEFAULTS as SOURCE_DEFAULTS
from clipiq.train.cdasr import CDASRTask
from clipiq.train.engine import ReptileOuterStep
from clipiq.train.restoration import clip_embedding_loss, freeze_clip, pixel_loss, run_restoration

log = logging.getLogger(__name__)

__all__ = [
    "ADAPT_DEFAULTS",
    "DEFAULTS",
    "CDASRMetaTask",
    "SRPair",
    "adapt",
    "check_pairs",
    "load_pair_folder",
    "run",
    "support_loss",
]

#: The adaptation's settings when not given (the meta task's inner loop uses the same optimiser and rate).
ADAPT_DEFAULTS: dict[str, Any] = {"steps": 100, "lr": 2e-4, "batch_size": 4, "patch_size": 32, "seed": 0}

#: Folder layouts ``--pairs DIR`` accepts: (LR folder, HR folder).
PAIR_LAYOUTS = (("lr", "hr"), ("lq", "gt"))

# --- pairs ----------------------------------------------------------------------------------------------------


@dataclass
class SRPair:
    """One support pair: its name, the LR image (3,h,w) and the HR image (3,h*scale,w*scale), in [0,1]."""

    name: str
    lr: Tensor
    hr: Tensor


def check_pairs(pairs: Sequence[SRPair], scale: int) -> list[SRPair]:
    """Check every pair is (3,h,w) / (3,h*scale,w*scale); an HR up to scale-1 pixels larger is cropped."""
    if not pairs:
        raise ValueError("adaptation needs at least one (LR, HR) pair, got none")
    out = []
    for p in pairs:
        if p.lr.ndim != 3 or p.hr.ndim != 3 or p.lr.shape[0] != 3 or p.hr.shape[0] != 3:
            raise ValueError(f"pair {p.name!r}: LR and HR must be (3,H,W) images, got {tuple(p.lr.shape)} and "
                             f"{tuple(p.hr.shape)}")
        h, w = p.lr.shape[-2:]
        gh, gw = p.hr.shape[-2:]
        if not (h * scale <= gh < (h + 1) * scale and w * scale <= gw < (w + 1) * scale):
            raise ValueError(f"pair {p.name!r}: HR is {gw}x{gh} but LR is {w}x{h}; expected {scale}x "
                             f"({w * scale}x{h * scale})")
        out.append(SRPair(p.name, p.lr.float(), p.hr[..., : h * scale, : w * scale].float()))
    return out


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_image_file(p):
            if p.stem in found:
                raise ValueError(f"{folder}: two images named {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found


def load_pair_folder(folder: str | os.PathLike, scale: int, shots: int | None = None, domain: str | None = None,
                     seed: int = 0) -> list[SRPair]:
    """The first ``shots`` pairs (by name) of a folder holding ``lr/`` and ``hr/`` (or ``lq/`` and ``gt/``) with
    matching names, or, with ``domain``, HR images only (``hr/``, ``gt/`` or the folder itself): their LR is made by
    that domain's recipe (pair i's generator seeded by ``(seed, i)``; the HR cropped to a multiple of the scale)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--pairs {root}: not a folder")
    layout = next(((root / a, root / b) for a, b in PAIR_LAYOUTS if (root / b).is_dir()), None)
    if domain is not None:
        recipe = get_sr_domain(domain)
        if layout is not None and layout[0].is_dir():
            raise ValueError(f"--pairs {root}: has LR images ({layout[0].name}/) and --domain {domain} makes them; "
                             "give one or the other")
        hr_dir = layout[1] if layout is not None else root
        hrs = _images_by_stem(hr_dir)
        if not hrs:
            raise FileNotFoundError(f"--pairs {root}: no HR images in {hr_dir}")
        names = sorted(hrs)[:shots] if shots else sorted(hrs)
        _check_shots(root, shots, len(hrs))
        pairs = []
        for i, name in enumerate(names):
            hr = load_image(hrs[name])
            h, w = hr.shape[-2:]
            hr = mod_crop(hr, scale)
            if min(hr.shape[-2:]) < scale:
                raise ValueError(f"--pairs {hrs[name]}: {w}x{h} is too small for scale {scale}")
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
            pairs.append(SRPair(name, recipe(hr, scale, gen), hr))
        return pairs
    if layout is None or not layout[0].is_dir():
        raise FileNotFoundError(f"--pairs {root}: expected sub-folders lr/ and hr/ (or lq/ and gt/) with matching "
                                "names, or HR images with --domain NAME")
    lrs, hrs = _images_by_stem(layout[0]), _images_by_stem(layout[1])
    missing = sorted(set(lrs) ^ set(hrs))
    if missing:
        raise ValueError(f"--pairs {root}: {len(missing)} image(s) without a partner in {layout[0].name}/ and "
                         f"{layout[1].name}/: {', '.join(missing[:5])}")
    if not lrs:
        raise FileNotFoundError(f"--pairs {root}: no images in {layout[0]}")
    _check_shots(root, shots, len(lrs))
    names = sorted(lrs)[:shots] if shots else sorted(lrs)
    pairs = [SRPair(n, load_image(lrs[n]), load_image(hrs[n])) for n in names]
    try:
        return check_pairs(pairs, scale)
    except ValueError as e:
        raise ValueError(f"--pairs {root}: {e}") from None


def _check_shots(root: Path, shots: int | None, have: int) -> None:
    if shots is not None and (isinstance(shots, bool) or shots < 1):
        raise ValueError(f"--shots must be a positive number of pairs, got {shots}")
    if shots is not None and shots > have:
        raise ValueError(f"--shots {shots}: {root} holds only {have} pair(s)")


# --- the model being adapted ------------------------------------------------------------------------------------


class _Adaptable:
    """A checkpoint's network on its frozen CLIP, with the training loss of ``clipiq train cdasr``."""

    def __init__(self, ck: MethodCheckpoint, clip: CLIP, preprocess: Preprocess, device: torch.device,
                 semantic: float | None):
        self.ck, self.device = ck, device
        self.scale = int(ck.config["scale"])
        self.clip, self.preprocess = freeze_clip(clip.to(device)), preprocess
        self.net: CDASRNet = build_net(ck.config["model"], self.scale, clip.cfg.embed_dim)
        self.net.load_state_dict(ck.state, strict=True)
        self.net.to(device)
        self.loss_cfg = dict(ck.config.get("loss", {}))
        self.semantic = float(self.loss_cfg.get("semantic", 0.0) if semantic is None else semantic)
        self.semantic_images = int(self.loss_cfg.get("semantic_images", 0) or 0) or None

    def predict(self, lr: Tensor, emb: Tensor | None = None) -> Tensor:
        """SR output guided by ``emb`` (default: the embeddings of ``lr``, whole images)."""
        if self.net.use_clip and emb is None:
            emb = clip_guidance_embedding(self.clip, self.preprocess, lr)
        return self.net(lr, emb if self.net.use_clip else None)

    def pair_guidance(self, pairs: Sequence[SRPair]) -> Tensor | None:
        """(K, embed_dim) embeddings of the pairs' whole LR images, one at a time (None without CLIP): a crop is
        guided by its pair's, as at inference every tile is by its whole image's."""
        if not self.net.use_clip:
            return None
        return torch.cat([clip_guidance_embedding(self.clip, self.preprocess, p.lr[None].to(self.device))
                          for p in pairs])

    def losses(self, lr: Tensor, hr: Tensor, emb: Tensor | None = None) -> dict[str, Tensor]:
        pred = self.predict(lr, emb)
        out = {"pixel": pixel_loss(self.loss_cfg, pred, hr)}
        if self.semantic:
            k = self.semantic_images
            out["semantic"] = self.semantic * clip_embedding_loss(self.clip, pred[:k], hr[:k])
        out["loss"] = sum(out.values(), torch.zeros((), device=pred.device))
        return out

    @torch.no_grad()
    def support_pixel_loss(self, pairs: Sequence[SRPair]) -> float:
        self.net.eval()
        vals = [float(pixel_loss(self.loss_cfg, self.predict(p.lr[None].to(self.device)), p.hr[None].to(self.device)))
                for p in pairs]
        return statistics.fmean(vals)


def _open(checkpoint: str | os.PathLike, device: torch.device,
          backbone: tuple[CLIP, Preprocess] | None) -> tuple[MethodCheckpoint, CLIP, Preprocess]:
    if backbone is None:
        ck, clip, pre, _, _ = open_with_backbone(checkpoint, "cdasr", device=device)
        return ck, clip, pre
    ck = read_method_checkpoint(checkpoint, "cdasr")
    check_backbone(ck, backbone[0])
    return ck, backbone[0], backbone[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _crop_batch(pairs: Sequence[SRPair], n: int, patch: int, scale: int, seed: int, step: int
                ) -> tuple[Tensor, Tensor, list[int]]:
    """``n`` aligned random crops (with flips and transposes) of random pairs, drawn from (seed, step), and the
    index of the pair each came from."""
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    lrs, hrs, which = [], [], []
    for _ in range(n):
        k = int(torch.randint(0, len(pairs), (), generator=gen))
        lr, hr = paired_random_crop(pairs[k].lr, pairs[k].hr, patch, scale, gen)
        lr, hr = paired_augment([lr, hr], *draw_augment(gen))
        lrs.append(lr)
        hrs.append(hr)
        which.append(k)
    return torch.stack(lrs), torch.stack(hrs), which


def support_loss(checkpoint: str | os.PathLike, pairs: Sequence[SRPair], device: torch.device | str = "cpu",
                 backbone: tuple[CLIP, Preprocess] | None = None) -> float:
    """The checkpoint's mean pixel loss (its training config's kind) over whole support pairs."""
    device = torch.device(device)
    ck, clip, pre = _open(checkpoint, device, backbone)
    model = _Adaptable(ck, clip, pre, device, None)
    return model.support_pixel_loss(check_pairs(pairs, model.scale))


def adapt(checkpoint: str | os.PathLike, pairs: Sequence[SRPair], steps: int = ADAPT_DEFAULTS["steps"],
          lr: float = ADAPT_DEFAULTS["lr"], *, batch_size: int = ADAPT_DEFAULTS["batch_size"],
          patch_size: int = ADAPT_DEFAULTS["patch_size"], seed: int = ADAPT_DEFAULTS["seed"],
          semantic: float | None = None, device: torch.device | str = "cpu", out: str | os.PathLike | None = None,
          backbone: tuple[CLIP, Preprocess] | None = None, note: Mapping[str, Any] | None = None
          ) -> MethodCheckpoint:
    """Fine-tune a CDASR checkpoint on K support pairs for ``steps`` Adam steps; returns (and writes to ``out``)
    the adapted checkpoint. ``semantic`` overrides the source's semantic-loss weight; ``note`` is recorded too."""
    for name, v, low in (("steps", steps, 1), ("batch_size", batch_size, 1), ("patch_size", patch_size, 4)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"adapt: {name} must be an integer >= {low}, got {v!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < 1:
        raise ConfigError(f"adapt: lr must be in (0, 1), got {lr!r}")
    if semantic is not None and (isinstance(semantic, bool) or not isinstance(semantic, int | float) or semantic < 0):
        raise ConfigError(f"adapt: semantic must be a weight >= 0 (0: no CLIP term), got {semantic!r}")
    device = torch.device(device)
    ck, clip, pre = _open(checkpoint, device, backbone)
    model = _Adaptable(ck, clip, pre, device, semantic)
    pairs = check_pairs(pairs, model.scale)
    # one batch holds one crop size: a support image smaller than the patch sets it for all
    patch = min(patch_size, *(min(p.lr.shape[-2:]) for p in pairs))
    before = model.support_pixel_loss(pairs)
    model.net.train()
    params = [p for p in model.net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=float(lr))
    guidance = model.pair_guidance(pairs)  # the frozen CLIP's view of each whole LR, computed once
    first = last = math.nan
    for step in range(steps):
        lq, gt, which = _crop_batch(pairs, batch_size, patch, model.scale, seed, step)
        emb = guidance[which] if guidance is not None else None
        losses = model.losses(lq.to(device), gt.to(device), emb)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"adaptation loss became {float(losses['loss'])} at step {step}")
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        last = float(losses["loss"].detach())
        first = last if step == 0 else first
    after = model.support_pixel_loss(pairs)
    log.info("adapted on %d pairs, %d steps: support pixel loss %.5f -> %.5f", len(pairs), steps, before, after)
    cfg = copy.deepcopy(ck.config)
    src = Path(ck.source)
    record: dict[str, Any] = {
        "source": str(src), "source_sha256": _sha256(src), "pairs": [p.name for p in pairs], "shots": len(pairs),
        "steps": steps, "lr": float(lr), "batch_size": batch_size, "patch_size": patch, "seed": seed,
        "optimizer": "adam", "semantic": model.semantic, "support_pixel_loss": [before, after],
        "train_loss": [first, last], **dict(note or {}),
    }
    if "adapt" in cfg:  # adapting an adapted checkpoint: keep the chain
        record["previous"] = cfg["adapt"]
    cfg["adapt"] = record
    state = {k: v.detach().cpu().clone() for k, v in trainable_state(model.net).items()}
    result = MethodCheckpoint("cdasr", state, cfg, ck.backbone, str(out) if out else "")
    if out is not None:
        save_method_checkpoint(out, "cdasr", state, cfg, ck.backbone)
    return result


# --- meta-learning ----------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    **copy.deepcopy(SOURCE_DEFAULTS),
    "scale": 4,
    "ema": 0.0,  # the outer steps already average adapted weights
    "data": {**SOURCE_DEFAULTS["data"], "patch_size": 32},
    # train: the outer loop (lr is Reptile's step size on mean(theta - theta_domain)); batch_size is the inner batch
    "train": {**SOURCE_DEFAULTS["train"], "steps": 100, "batch_size": ADAPT_DEFAULTS["batch_size"],
              "optimizer": "sgd", "momentum": 0.0, "lr": 1.0, "schedule": "cosine", "warmup": 0, "eval_every": 50,
              "ckpt_every": 10, "monitor": None},
    "meta": {
        "source": "",  # the trained CDASR checkpoint to start from (its model section and scale are used)
        "domains": list(SR_DOMAINS.names()),  # clipiq.degrade.SR_DOMAINS names; each is a meta-task
        "meta_batch": 3,  # domains per outer step
        "inner_steps": 5,  # Adam steps per domain
        "inner_lr": ADAPT_DEFAULTS["lr"],
    },
}


class CDASRMetaTask(ReptileOuterStep, CDASRTask):
    """A Trainer task whose step is one Reptile outer step over LR domains (:meth:`backward` sets its gradient)."""

    #: Its batches are step numbers: in a data-parallel run every process takes the same whole Reptile step.
    builds_shards = False

    def __init__(self, cfg: Mapping[str, Any], device: torch.device | str = "cpu"):
        m = cfg["meta"]
        self.domains = [get_sr_domain(d).name for d in m["domains"]]
        if not self.domains:
            raise ConfigError("meta.domains: no domains")
        self.meta_batch = int(m["meta_batch"])
        self.inner_steps, self.inner_lr = int(m["inner_steps"]), float(m["inner_lr"])
        if not 1 <= self.meta_batch <= len(self.domains) or self.inner_steps < 1 or not 0 < self.inner_lr < 1:
            raise ConfigError(f"meta.meta_batch must be in 1..{len(self.domains)}, meta.inner_steps >= 1 and "
                              f"meta.inner_lr in (0, 1); got {m['meta_batch']}, {m['inner_steps']}, {m['inner_lr']}")
        self.source = read_method_checkpoint(_source_path(cfg), "cdasr")
        super().__init__(cfg, device)

    def build_model(self) -> CDASRNet:
        """The source checkpoint's network (its backbone must be the loaded one)."""
        check_backbone(self.source, self.clip)
        net = super().build_model()
        net.load_state_dict(self.source.state, strict=True)
        return net

    def batches(self, start_step: int) -> Iterator[int]:
        """Outer step numbers (the domain batches are drawn inside the step, seeded by it)."""
        return itertools.count(start_step)

    def domain_batch(self, domain: str, step: int, j: int, i: int) -> dict[str, Tensor]:
        """Inner batch ``i`` of domain slot ``j`` at outer step ``step``: HR crops of the photos and their LR."""
        ss = np.random.SeedSequence([self.seed, step, j, i])
        epoch, gseed = (int(v) for v in ss.generate_state(2))
        rng = np.random.default_rng(ss)
        n = len(self.train_set)
        idx = rng.choice(n, size=self.batch_size, replace=n < self.batch_size)
        gen = torch.Generator().manual_seed(gseed)
        recipe = get_sr_domain(domain)
        gts = [self.train_set.item(int(k), epoch)["gt"] for k in idx]  # fresh crops and flips per (step, j, i)
        lqs, guidance = [], []
        for k, gt in zip(idx, gts):
            if self.use_clip:
                # The guidance is the embedding of the whole photo's LR in this domain, made with the crop's
                # degradation draws (a copy of the generator: the crop's LR is unchanged), as at inference and in
                # adaptation the whole LR image guides the network.
                fork = torch.Generator().set_state(gen.get_state())
                whole = recipe(mod_crop(self.train_set.photo(int(k)), self.scale), self.scale, fork)
                guidance.append(clip_guidance_embedding(self.clip, self.preprocess, whole[None].to(self.device)))
            lqs.append(recipe(gt, self.scale, gen))
        batch = {"lq": torch.stack(lqs).to(self.device), "gt": torch.stack(gts).to(self.device)}
        if guidance:
            batch["guidance"] = torch.cat(guidance)
        return batch

    def step_domains(self, step: int) -> list[str]:
        """The domains outer step ``step`` adapts to (without repeats)."""
        rng = np.random.default_rng([self.seed, step, 999])
        return [self.domains[k] for k in rng.choice(len(self.domains), size=self.meta_batch, replace=False)]

    def training_step(self, step: int) -> dict[str, Tensor]:  # type: ignore[override]
        """Adapt a copy of the weights to each chosen domain from the same start; keep the mean displacement."""
        chosen = self.step_domains(step)

        def inner_losses(j: int) -> Iterator[Tensor]:
            for i in range(self.inner_steps):
                yield CDASRTask.training_step(self, self.domain_batch(chosen[j], step, j, i))["loss"]

        params = [p for p in self.model.parameters() if p.requires_grad]
        return self.reptile_step(params, len(chosen), self.inner_lr, inner_losses)

def _source_path(cfg: Mapping[str, Any]) -> Path:
    src = cfg["meta"].get("source")
    if not src:
        raise ConfigError("meta.source: set the trained CDASR checkpoint to start from (clipiq train cdasr's "
                          "checkpoint.safetensors)")
    p = Path(src)
    if not p.is_file():
        raise FileNotFoundError(f"meta.source: {p} does not exist")
    return p


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Meta-train from ``meta.source``; writes run_dir/checkpoint.safetensors and summary.json, returns the summary."""
    cfg = copy.deepcopy(dict(cfg))
    source = read_method_checkpoint(_source_path(cfg), "cdasr")
    # The network is the source's: its model section and scale replace the config's (recorded in the result).
    cfg["model"], cfg["scale"] = copy.deepcopy(source.config["model"]), int(source.config["scale"])
    summary = run_restoration(CDASRMetaTask, cfg, run_dir, device, resume=resume, progress=progress)
    return {**summary, "method": "cdasr-meta", "source": str(cfg["meta"]["source"]), "domains": cfg["meta"]["domains"]}

