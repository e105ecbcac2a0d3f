"""``clipiq train grmp-pretrain``: GRMP-IQA's meta-prompt pre-training (Reptile over distortion types).

Each meta-task is one distortion type, split 80/20 (by content) into a support and a query part, with
targets min-max normalised within the task (1 = best). An outer step adapts a copy of the prompts to each of
``meta.meta_batch`` tasks with Adam (``meta.inner_lr``, ``meta.inner_steps`` batches of the support part),
then moves the prompts towards the adapted ones:
``theta <- theta - lr * mean_tasks(theta - theta_task)``. The outer step runs in the shared
:class:`~clipiq.train.engine.Trainer` as plain SGD (no momentum) on the pseudo-gradient
``mean(theta - theta_task)``, so checkpoints, resume, logging and model selection are the trainer's.
Only the prompts train (CoOp context, VPT-deep tokens and their projection); the backbone is frozen.

Tasks come from labelled datasets with distortion types (``data.source: labels``; KADID-10k, TID2013 or a
``clipiq make-dataset`` folder, several at once) or from ``clipiq.degrade`` applied on the fly to crops of
clean photos (``data.source: synthetic``; McMaster18 is left out by default, for held-out evaluation).
Validation (model selection) is the mean over tasks of the SRCC on each task's query part, scored by the
meta-prompts directly. The result is ``meta_init.safetensors`` in the run folder (the best validation
state), a grmp-iqa checkpoint holding only the prompts, for ``clipiq train grmp-finetune --meta-init``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from clipiq.clip.checkpoint import read_method_checkpoint, save_method_checkpoint
from clipiq.data.io import list_images, load_image
from clipiq.data.labels import IQALabels
from clipiq.data.runner import prefetch
from clipiq.data.splits import split_by_group
from clipiq.eval.correlation import srcc
from clipiq.iqa.grmp_iqa import MODEL_DEFAULTS, GRMPIQAModel, build_model
from clipiq.train import parallel
from clipiq.train.engine import ReptileOuterStep, Trainer, epoch_batch, seed_everything, train_defaults
from clipiq.train.protocol import ImageCache, load_iqa_labels, normalised_targets

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "method": "grmp-iqa",
    # The paper's augmentation for pre-training: resize 256, random crop 224, horizontal flip.
    "model": {**MODEL_DEFAULTS, "train_resize": 256},
    "data": {
        "source": "synthetic",  # synthetic | labels
        "photos": "../shared/data/photos",  # synthetic: clean photos under these sub-folders
        "photo_dirs": ["kodak24", "sunhays80"],  # McMaster18 is held out for evaluation
        "degradations": None,  # synthetic: clipiq.degrade names (None = all), one task each
        "levels": [0, 1, 2, 3, 4, 5],  # synthetic: 0 is the clean crop
        "max_photos": None,  # synthetic: keep the first N photos (sorted paths), for quick runs
        "datasets": [],  # labels: [{labels: FILE, format: kadid10k | tid2013 | ..., root: DIR}, ...]
        "cache_mb": 4096,
        "workers": 2,
    },
    "meta": {
        "support_fraction": 0.8,
        "inner_lr": 1e-4,
        "inner_steps": 0,  # Adam steps per task; 0 = one pass over the task's support part
        "inner_batch": 75,
        "meta_batch": 0,  # tasks per outer step; 0 = every task (one outer step per epoch)
        "eval_max_per_task": 64,  # query images per task scored at each validation
        "eval_batch": 32,
    },
    # epochs > 0: steps = epochs x outer steps per epoch; lr is the outer (Reptile) step size.
    "train": train_defaults(epochs=50, steps=0, optimizer="sgd", momentum=0.0, lr=0.01, schedule="constant",
                            log_every=1, monitor="srcc"),
}


class MetaTask(Protocol):
    """One distortion type: support samples on demand and a fixed query part."""

    name: str

    @property
    def support_size(self) -> int:
        """Images in the support part (the length of one pass)."""

    def sample_batch(self, rng: np.random.Generator, n: int) -> list[tuple[Tensor, float]]:
        """``n`` support images (3,H,W) in [0,1] with their targets in [0,1]."""

    def query(self) -> tuple[list[Tensor], np.ndarray]:
        """The query images used for validation and their targets."""


class LabelledTask:
    """The records of one distortion type of a labelled dataset, split by content into support and query.

    ``images`` maps a record index to its (3,H,W) [0,1] image (an :class:`~clipiq.train.protocol.ImageCache`).
    """

    def __init__(self, name: str, labels: IQALabels, indices: Sequence[int], images: Callable[[int], Tensor],
                 support_fraction: float, seed: int, eval_max: int | None):
        self.name, self.labels, self.images = name, labels, images
        sub = labels.subset(indices)
        split = split_by_group(sub, (support_fraction, 1 - support_fraction), seed=seed)
        if not split.train or not split.test:
            raise ValueError(f"meta-task {name!r} has too few content groups ({len(set(sub.groups()))}) to split "
                             "into support and query parts")
        targets = normalised_targets(sub)  # min-max within the task, 1 = best
        self.support = [(int(indices[i]), float(targets[i])) for i in split.train]
        query = [(int(indices[i]), float(targets[i])) for i in split.test]
        if eval_max and len(query) > eval_max:
            keep = np.random.default_rng([seed, 1]).choice(len(query), eval_max, replace=False)
            query = [query[i] for i in sorted(keep)]
        self._query = query

    @property
    def support_size(self) -> int:
        """Images in the support part."""
        return len(self.support)

    def sample_batch(self, rng: np.random.Generator, n: int) -> list[tuple[Tensor, float]]:
        """``n`` random support images (with replacement) and their targets."""
        picks = [self.support[int(rng.integers(len(self.support)))] for _ in range(n)]
        return [(self.images(i), t) for i, t in picks]

    def query(self) -> tuple[list[Tensor], np.ndarray]:
        """The query images and targets."""
        return [self.images(i) for i, _ in self._query], np.array([t for _, t in self._query])


class SyntheticTask:
    """One ``clipiq.degrade`` type on random native-scale crops of clean photos, degraded on the fly.

    A sample is a ``crop`` x ``crop`` crop of a support photo at a random level (0 = clean), with target
    ``(max_level - level) / (max_level - min_level)``. The query part is fixed: centre crops of the query
    photos at every level, with seeds that depend only on (seed, level). Crops of one level are degraded
    together (batched), which is several times faster than one by one.
    """

    def __init__(self, name: str, photos: Sequence[Tensor], support_ids: Sequence[int], query_ids: Sequence[int],
                 levels: Sequence[int], crop: int, seed: int, eval_max: int | None):
        from clipiq.synth.degraded import level_count

        n = level_count(name)
        bad = [lv for lv in levels if not 0 <= int(lv) <= n]
        if bad or len(set(levels)) < 2:
            raise ValueError(f"data.levels must hold at least two distinct levels in 0..{n} for {name!r}, "
                             f"got {list(levels)}")
        self.name, self.photos, self.crop, self.seed = name, photos, int(crop), int(seed)
        self.support_ids, self.query_ids = list(support_ids), list(query_ids)
        self.levels = sorted(int(lv) for lv in levels)
        self.eval_max = eval_max
        self._query: tuple[list[Tensor], np.ndarray] | None = None

    def target(self, level: int) -> float:
        """The [0,1] target of a level (1 = clean or the mildest level)."""
        lo, hi = self.levels[0], self.levels[-1]
        return (hi - level) / (hi - lo)

    @property
    def support_size(self) -> int:
        """Support photos times levels."""
        return len(self.support_ids) * len(self.levels)

    def _degrade(self, spots: Sequence[tuple[int, int, int, int]], seeds: Mapping[int, int]) -> list[Tensor]:
        """Crops at (photo, top, left, level), each level's crops degraded in one batch with seeds[level]."""
        from clipiq.degrade import apply

        out: list[Tensor | None] = [None] * len(spots)
        for level in sorted({s[3] for s in spots}):
            idx = [i for i, s in enumerate(spots) if s[3] == level]
            x = torch.stack([self.photos[spots[i][0]][:, spots[i][1] : spots[i][1] + self.crop,
                                                       spots[i][2] : spots[i][2] + self.crop] for i in idx])
            x = x.float().div_(255)
            if level:
                x = apply(x, self.name, level, seed=seeds[level]).clamp_(0, 1)
            for j, i in enumerate(idx):
                out[i] = x[j]
        return out  # type: ignore[return-value]

    def sample_batch(self, rng: np.random.Generator, n: int) -> list[tuple[Tensor, float]]:
        """``n`` random crops of random support photos at random levels, with their targets."""
        spots = []
        for _ in range(n):
            photo = self.support_ids[int(rng.integers(len(self.support_ids)))]
            level = self.levels[int(rng.integers(len(self.levels)))]
            h, w = self.photos[photo].shape[-2:]
            spots.append((photo, int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1)),
                          level))
        seeds = {lv: int(rng.integers(2**31)) for lv in self.levels}
        return list(zip(self._degrade(spots, seeds), [self.target(s[3]) for s in spots]))

    def query(self) -> tuple[list[Tensor], np.ndarray]:
        """Centre crops of the query photos at every level (computed once)."""
        if self._query is None:
            items = [(p, lv) for p in self.query_ids for lv in self.levels]
            if self.eval_max and len(items) > self.eval_max:
                keep = np.random.default_rng([self.seed, 1]).choice(len(items), self.eval_max, replace=False)
                items = [items[i] for i in sorted(keep)]
            spots = [(p, (self.photos[p].shape[-2] - self.crop) // 2, (self.photos[p].shape[-1] - self.crop) // 2,
                      lv) for p, lv in items]
            seeds = {lv: int(np.random.SeedSequence([self.seed, lv]).generate_state(1)[0]) for lv in self.levels}
            self._query = (self._degrade(spots, seeds), np.array([self.target(lv) for _, lv in items]))
        return self._query


def _load_photos(root: Path, dirs: Sequence[str], min_side: int, max_photos: int | None = None) -> list[Tensor]:
    """uint8 photos (3,H,W), upscaled where the shorter side is below ``min_side``."""
    paths = []
    for d in dirs:
        folder = root / d
        if not folder.is_dir():
            raise FileNotFoundError(f"data.photos/{d}: clean-photo folder {folder} not found")
        paths += list(list_images([folder], recursive=True))
    paths = paths[:max_photos] if max_photos else paths
    if len(paths) < 2:
        raise FileNotFoundError(f"need at least 2 clean photos under {root} / {list(dirs)}, found {len(paths)}")
    out = []
    for p in paths:
        img = load_image(p)
        h, w = img.shape[-2:]
        if min(h, w) < min_side:
            s = min_side / min(h, w)
            img = torch.nn.functional.interpolate(img[None], size=(max(min_side, round(h * s)),
                                                  max(min_side, round(w * s))), mode="bicubic",
                                                  align_corners=False).clamp_(0, 1)[0]
        out.append(img.mul(255).round().to(torch.uint8))
    return out


def build_tasks(cfg: Mapping[str, Any], crop: int) -> list[MetaTask]:
    """The meta-tasks of a config: one per distortion type (per dataset for labelled sources)."""
    dcfg, mcfg, seed = cfg["data"], cfg["meta"], int(cfg["seed"])
    frac = float(mcfg["support_fraction"])
    if not 0 < frac < 1:
        raise ValueError(f"meta.support_fraction must be in (0, 1), got {frac}")
    eval_max = int(mcfg.get("eval_max_per_task") or 0) or None
    source = dcfg.get("source", "synthetic")
    tasks: list[MetaTask] = []
    if source == "synthetic":
        from clipiq.degrade import DEGRADATIONS

        names = list(dcfg.get("degradations") or DEGRADATIONS)
        unknown = [n for n in names if n not in DEGRADATIONS]
        if unknown:
            raise ValueError(f"data.degradations: unknown degradation(s) {unknown}; known: {sorted(DEGRADATIONS)}")
        photos = _load_photos(Path(dcfg["photos"]), list(dcfg["photo_dirs"]), crop, dcfg.get("max_photos"))
        perm = np.random.default_rng([seed, 0]).permutation(len(photos))
        n_sup = min(len(photos) - 1, max(1, round(frac * len(photos))))
        support, query = sorted(perm[:n_sup].tolist()), sorted(perm[n_sup:].tolist())
        for i, name in enumerate(names):
            tasks.append(SyntheticTask(name, photos, support, query, list(dcfg["levels"]), crop, seed + i, eval_max))
        log.info("%d synthetic meta-tasks on %d photos (%d support, %d query)", len(tasks), len(photos),
                 len(support), len(query))
    elif source == "labels":
        datasets = list(dcfg.get("datasets") or [])
        if not datasets:
            raise ValueError("data.source=labels needs data.datasets: a list of {labels: FILE, format: NAME, "
                             "root: DIR} (KADID-10k, TID2013 or clipiq make-dataset folders)")
        for d, entry in enumerate(datasets):
            if not isinstance(entry, Mapping) or not entry.get("labels"):
                raise ValueError(f"data.datasets[{d}] must be a mapping with a 'labels' file, got {entry!r}")
            labels = load_iqa_labels({"source": "labels", "labels": entry["labels"], "format": entry.get("format"),
                                      "root": entry.get("root")})
            images = ImageCache(labels, float(dcfg.get("cache_mb", 4096)) / max(1, len(datasets)))
            by_type: dict[str, list[int]] = {}
            for i, s in enumerate(labels):
                if s.distortion is None:
                    raise ValueError(f"{entry['labels']}: record {i} has no distortion type; meta-tasks need "
                                     "KADID-10k, TID2013 or clipiq make-dataset labels")
                by_type.setdefault(str(s.distortion), []).append(i)
            for j, (dist, idx) in enumerate(sorted(by_type.items())):
                tasks.append(LabelledTask(f"{labels.name}:{dist}", labels, idx, images, frac, seed + 1000 * d + j,
                                          eval_max))
            log.info("%s: %d meta-tasks from %d records", labels.name, len(by_type), len(labels))
    else:
        raise ValueError(f"data.source must be synthetic or labels, got {source!r}")
    return tasks


class ReptileTask(ReptileOuterStep):
    """A Trainer task whose step is one Reptile outer step; the pseudo-gradient is set by :meth:`backward`."""

    def __init__(self, model: GRMPIQAModel, tasks: Sequence[MetaTask], cfg: Mapping[str, Any],
                 device: torch.device):
        if not tasks:
            raise ValueError("no meta-tasks")
        self.model, self.tasks, self.cfg, self.device = model, list(tasks), cfg, device
        m = cfg["meta"]
        self.seed = int(cfg["seed"])
        self.inner_lr, self.inner_steps = float(m["inner_lr"]), int(m["inner_steps"])
        self.inner_batch = int(m["inner_batch"])
        self.meta_batch = int(m["meta_batch"]) or len(self.tasks)
        if self.inner_batch < 1 or self.inner_steps < 0 or not 1 <= self.meta_batch <= len(self.tasks):
            raise ValueError(f"meta.inner_batch must be >= 1, meta.inner_steps >= 0 and meta.meta_batch in "
                             f"0..{len(self.tasks)}; got {self.inner_batch}, {self.inner_steps}, {m['meta_batch']}")
        self.params = model.trainable_parameters()

    @property
    def steps_per_epoch(self) -> int:
        """Outer steps per pass over every task."""
        return math.ceil(len(self.tasks) / self.meta_batch)

    def step_tasks(self, step: int) -> list[int]:
        """Which tasks the outer step ``step`` adapts to (a fresh task order every epoch)."""
        return epoch_batch(self.seed, step, len(self.tasks), self.meta_batch)

    def batches(self, start_step: int) -> Iterator[int]:
        """Outer step numbers from ``start_step`` on (the data is drawn inside the step, seeded by it)."""
        return itertools.count(start_step)

    def _support_batch(self, task: MetaTask, step: int, j: int, i: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, step, j, i])
        items = task.sample_batch(rng, self.inner_batch)
        views = torch.stack([self.model.train_views(img, rng) for img, _ in items])
        return views, torch.tensor([t for _, t in items], dtype=torch.float32)

    def training_step(self, step: int) -> dict[str, Tensor]:
        """Adapt the prompts to each task of the step from the same start; keep the mean displacement."""
        chosen = self.step_tasks(step)
        workers = max(1, int(self.cfg["data"].get("workers", 2)))

        def inner_losses(j: int) -> Iterator[Tensor]:
            task = self.tasks[chosen[j]]
            n = self.inner_steps or math.ceil(task.support_size / self.inner_batch)
            # Support batches are drawn (decoded, degraded, cropped) in threads, one per worker in flight
            # while the model trains on the current one; each is seeded by (step, task, i), not by timing.
            drawn = prefetch(partial(self._support_batch, task, step, j), range(n), workers=workers,
                             ahead=workers + 1)
            for _, batch, err in drawn:
                if err is not None:
                    raise err
                views, target = batch
                yield self.model.training_losses(views.to(self.device), target.to(self.device))["loss"]

        return self.reptile_step(self.params, len(chosen), self.inner_lr, inner_losses)

    def evaluate(self) -> dict[str, float]:
        """Mean (and worst) over tasks of the query-part SRCC of the current prompts."""
        batch = int(self.cfg["meta"]["eval_batch"])
        per_task = []
        for task in self.tasks:
            imgs, targets = task.query()
            pred = torch.cat([self.model.predict(imgs[i : i + batch], "val") for i in range(0, len(imgs), batch)])
            per_task.append(srcc(pred.numpy(), targets))
        vals = [v for v in per_task if not math.isnan(v)]
        return {"srcc": statistics.fmean(vals) if vals else math.nan, "srcc_min": min(vals) if vals else math.nan}

    def checkpoint_payload(self) -> dict[str, Any]:
        """The prompts' method checkpoint."""
        return self.model.checkpoint_payload(self.cfg)


def build(cfg: Mapping[str, Any], device: torch.device) -> GRMPIQAModel:
    """Fresh prompts on the configured backbone; only the prompts train."""
    if cfg["model"].get("meta_init"):
        raise ValueError("model.meta_init is for fine-tuning; meta-prompt pre-training starts from fresh prompts")
    return build_model(cfg["model"], None, stage="pretrain", device=device)


def run(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Meta-train the prompts; writes meta_init.safetensors and summary.json to run_dir, returns the summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg["seed"]))
    model = build(cfg, device)
    tasks = build_tasks(cfg, model.train_resize)
    task = ReptileTask(model, tasks, cfg, device)
    rcfg = copy.deepcopy(dict(cfg))
    tcfg = rcfg["train"]
    if int(tcfg.get("epochs", 0) or 0) > 0:
        tcfg["steps"] = int(tcfg["epochs"]) * task.steps_per_epoch
    if int(tcfg["steps"]) <= 0:
        raise ValueError("set train.epochs or train.steps to a positive number")
    if not int(tcfg.get("eval_every", 0) or 0):
        tcfg["eval_every"] = task.steps_per_epoch
    trainer = Trainer(task, rcfg, run_dir, device, resume=resume, progress=progress)
    fit = trainer.fit()
    if not parallel.is_main_process():  # rank 0 exports the meta-prompts and writes the summary
        return {"method": "grmp-pretrain", "steps": fit["steps"], "run_dir": str(run_dir)}
    best = read_method_checkpoint(trainer.best_path)
    out = save_method_checkpoint(run_dir / "meta_init.safetensors", best.method, best.state, best.config,
                                 best.backbone)
    summary = {"method": "grmp-pretrain", "tasks": [t.name for t in tasks], "steps": fit["steps"],
               "val_srcc": trainer.best, "last_eval": fit["last_eval"], "checkpoint": str(out),
               "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    log.info("meta-prompts: best query SRCC %.4f over %d tasks -> %s", trainer.best, len(tasks), out)
    return summary


__all__ = ["DEFAULTS", "LabelledTask", "ReptileTask", "SyntheticTask", "build", "build_tasks", "run"]
