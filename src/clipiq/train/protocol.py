"""IQA training protocol shared by every learned quality method.

* Data: a label file (any reader of ``clipiq.data``) or a synthetic source made here from clean photos.
* Splits by content group (scene, else reference): train / val / test per round, with the validation
  part carved from the training scenes (never model selection on the test part), and optional
  few-shot draws of k labelled images from the training part.
* Each round trains with :class:`~clipiq.train.engine.Trainer` (early stopping on validation SRCC),
  reloads the best validation checkpoint, and scores the test part once.
* n rounds: per-round results in ``rounds.csv``, and the median, mean and std of SRCC/PLCC in
  ``summary.json``. Finished rounds are skipped on a rerun, so a long protocol resumes.
* Data-parallel (``clipiq train --nproc N``): each process makes its shard of every batch, each view seeded by its
  position in the global batch, so the shards are the single-process batch; rank 0 scores the test parts and
  writes the files.

A method supplies a model with the small :class:`IQAModel` interface and a ``build(cfg, device)``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import logging
import math
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from clipiq.clip.checkpoint import read_method_checkpoint, save_method_checkpoint
from clipiq.clip.stem_cache import StemCache, use_stem_cache
from clipiq.core.config import merge
from clipiq.core.registry import Registry
from clipiq.core.tensors import load_trainable_state
from clipiq.data.io import load_image
from clipiq.data.labels import IQALabels, read_labels
from clipiq.data.runner import BatchRunner, prefetch
from clipiq.data.splits import Split, few_shot, split_by_group
from clipiq.eval.correlation import krcc, plcc, rmse, srcc
from clipiq.train import parallel
from clipiq.train.engine import Trainer, epoch_batch, seed_everything, train_defaults

log = logging.getLogger(__name__)

#: Defaults every IQA method's config starts from (a method merges its own sections over these).
IQA_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "source": "labels",  # labels | synthetic-dehazed | synthetic-degraded | synthetic-local
        "labels": None,  # label file (source: labels)
        "format": None,  # reader name (csv, koniq10k, live_challenge, kadid10k, tid2013, dhd, exbedde...)
        "root": None,  # image folder (default: the reader's)
        "photos": "../shared/data/photos/kodak24",  # clean photos for synthetic sources
        "cache_dir": "runs/data",  # where synthetic sets are written (reused when unchanged)
        "options": {},  # passed to the synthetic writer (levels, crop, max_photos, ...)
        "cache_mb": 4096,  # decoded images kept in memory
        "stem_cache_mb": 4096,  # a frozen hybrid stem's maps kept per view (clipiq.clip.stem_cache); 0 = off
        "workers": 2,  # decoding threads
    },
    "protocol": {
        "rounds": 10,
        "ratios": [0.8, 0.2],  # train, test (by content group)
        "val_fraction": 0.1,  # of the training groups, for early stopping and model selection
        "group": "auto",  # auto | scene | ref | path
        "shots": None,  # few-shot: k labelled images drawn from the training part
        "only_round": None,  # run one round (e.g. to spread rounds over machines)
        "keep_checkpoints": False,  # keep a round's last/best.safetensors (its checkpoint.safetensors stays)
        "eval_batch": 16,
        "train_eval": 0,  # training images also scored at each evaluation (logged as train_srcc); 0: none
    },
    # epochs > 0: steps = epochs x ceil(n_train / batch_size); 0: use steps. Early stopping on validation SRCC,
    # after `patience` evaluations without a new best, and never before `min_epochs`.
    "train": train_defaults(epochs=25, steps=0, batch_size=64, optimizer="adam", lr=1e-4, schedule="constant",
                            monitor="srcc", patience=5, min_epochs=0),
}


class IQAModel(Protocol):
    """What a learned quality method provides to the protocol."""

    method: str

    def train_views(self, image: Tensor, rng: np.random.Generator) -> Tensor | tuple[Tensor, ...]:
        """One (3,H,W) [0,1] image -> fixed-size training input(s), on CPU (random crop, flip...)."""

    def training_losses(self, views: Any, target: Tensor) -> dict[str, Tensor]:
        """Losses for a batch of stacked views and targets in [0,1]; must include 'loss'."""

    def predict(self, images: Sequence[Tensor], phase: str = "test") -> Tensor:
        """Quality scores (N,) of [0,1] images (full inference); ``phase`` is 'val' or 'test'."""

    def checkpoint_payload(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The small method checkpoint (see ``clipiq.clip.checkpoint.payload``)."""


# ---------------------------------------------------------------------------------------------------------
# data


def _labels_source(dcfg: Mapping[str, Any]) -> IQALabels:
    if not dcfg.get("labels"):
        raise ValueError("data.source=labels needs data.labels=FILE (a label file of any supported format)")
    return read_labels(dcfg["labels"], image_root=dcfg.get("root"), format=dcfg.get("format"))


def _synthetic_dehazed(dcfg: Mapping[str, Any]) -> IQALabels:
    from clipiq.synth.dehazed import synthetic_dehazed_labels

    photos = Path(dcfg["photos"])
    if not photos.is_dir():
        raise FileNotFoundError(f"data.photos={photos}: clean-photo folder not found (synthetic-dehazed needs it)")
    out = Path(dcfg["cache_dir"]) / f"dehazed-{photos.name}"
    return synthetic_dehazed_labels(photos, out, **dict(dcfg.get("options") or {}))


def _synthetic_local(dcfg: Mapping[str, Any]) -> IQALabels:
    from clipiq.synth.local import synthetic_local_labels

    photos = Path(dcfg["photos"])
    if not photos.is_dir():
        raise FileNotFoundError(f"data.photos={photos}: clean-photo folder not found (synthetic-local needs it)")
    out = Path(dcfg["cache_dir"]) / f"local-{photos.name}"
    return synthetic_local_labels(photos, out, **dict(dcfg.get("options") or {}))


def _synthetic_degraded(dcfg: Mapping[str, Any]) -> IQALabels:
    from clipiq.synth.degraded import write_synthetic_dataset

    photos = Path(dcfg["photos"])
    if not photos.is_dir():
        raise FileNotFoundError(f"data.photos={photos}: clean-photo folder not found (synthetic-degraded needs it)")
    opts = dict(dcfg.get("options") or {})
    tag = json.dumps(opts, sort_keys=True)
    out = Path(dcfg["cache_dir"]) / f"degraded-{photos.name}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"
    stamp = out / "dataset.json"
    if stamp.is_file() and stamp.read_text() == tag:
        return read_labels(out / "dmos.csv", format="kadid10k")
    labels = write_synthetic_dataset(photos, out, overwrite=True, **opts)
    stamp.write_text(tag)
    return labels


#: name -> function(data config) -> IQALabels
DATA_SOURCES: Registry[Callable[[Mapping[str, Any]], IQALabels]] = Registry("IQA data source")
DATA_SOURCES.register("labels", _labels_source)
DATA_SOURCES.register("synthetic-dehazed", _synthetic_dehazed)
DATA_SOURCES.register("synthetic-degraded", _synthetic_degraded)
DATA_SOURCES.register("synthetic-local", _synthetic_local)


def load_iqa_labels(dcfg: Mapping[str, Any]) -> IQALabels:
    """The records named by a ``data`` config section."""
    # Synthetic sources write their data set on first use: in a data-parallel run rank 0 writes it alone.
    with parallel.main_first():
        labels = DATA_SOURCES.get(dcfg.get("source", "labels"))(dcfg)
    missing = labels.missing_files(check_refs=False)
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled images are missing (first: {missing[0]})")
    return labels


class ImageCache:
    """Decoded images by record index, kept up to a memory budget (least recently used out first)."""

    def __init__(self, labels: IQALabels, budget_mb: float = 4096):
        self.labels = labels
        self.budget = int(budget_mb * 2**20)
        self._items: OrderedDict[int, Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the batch-prefetch thread and evaluation share the cache

    def __call__(self, index: int) -> Tensor:
        """The decoded (3,H,W) [0,1] image of record ``index``."""
        with self._lock:
            if index in self._items:
                self._items.move_to_end(index)
                return self._items[index]
        img = load_image(self.labels[index].path)
        size = img.numel() * img.element_size()
        with self._lock:
            if size <= self.budget and index not in self._items:
                self._items[index] = img
                self._bytes += size
                while self._bytes > self.budget:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.numel() * old.element_size()
        return img


def normalised_targets(labels: IQALabels) -> np.ndarray:
    """Scores min-max scaled to [0,1] with 1 the best (DMOS-style labels are flipped).

    The range is the whole label set's: a fixed affine map of the rating scale, which carries no
    ranking information across parts.
    """
    s = labels.scores()
    lo, hi = float(s.min()), float(s.max())
    t = (s - lo) / (hi - lo) if hi > lo else np.full_like(s, 0.5)
    return 1.0 - t if labels.lower_is_better else t


def correlations(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """SRCC, PLCC, KRCC and RMSE (on [0,1] targets) of predictions against targets."""
    if len(pred) < 3:
        raise ValueError(f"need at least 3 images to correlate, got {len(pred)}")
    return {"srcc": srcc(pred, target), "plcc": plcc(pred, target), "krcc": krcc(pred, target),
            "rmse": rmse(pred, target)}


def predict_indices(model: IQAModel, images: ImageCache, indices: Sequence[int], batch: int = 16,
                    phase: str = "test", workers: int = 2) -> np.ndarray:
    """Scores of the records at ``indices``, decoding the next batch in threads while one is scored."""

    @torch.no_grad()
    def process(imgs: list[Tensor]) -> Tensor:
        return model.predict(imgs, phase=phase).float().cpu()

    # ``predict`` takes images of any size, so batches are consecutive runs of ``batch`` indices (one key),
    # as they always were: a prediction must not depend on thread timing. One batch is decoded ahead, not
    # all of them: a large test part must not be held in memory at once.
    runner = BatchRunner(process, load=images, batch_size=batch, workers=max(1, workers), ahead=batch + 1,
                         batch_key=lambda _: None, raise_errors=True)
    scores = [r.output for r in runner.run_ordered(indices)]
    return torch.stack(scores).numpy() if scores else np.zeros(0)


# ---------------------------------------------------------------------------------------------------------
# the per-round training task


class IQATask:
    """A Trainer task: random batches of training views with [0,1] targets, validation SRCC/PLCC."""

    #: In a data-parallel run :meth:`batches` makes only this process's part of each batch (the Trainer's hook).
    builds_shards = True

    def __init__(self, model: Any, labels: IQALabels, train_idx: Sequence[int], val_idx: Sequence[int],
                 cfg: Mapping[str, Any], seed: int, images: ImageCache | None = None,
                 device: torch.device | None = None):
        if len(train_idx) == 0:
            raise ValueError("the training part is empty")
        if len(val_idx) < 3:
            raise ValueError(f"the validation part has {len(val_idx)} images; at least 3 are needed "
                             "(raise protocol.val_fraction or use more data)")
        self.model, self.labels, self.cfg, self.seed = model, labels, cfg, int(seed)
        self.train_idx, self.val_idx = list(train_idx), list(val_idx)
        self.images = images or ImageCache(labels, cfg["data"].get("cache_mb", 4096))
        self.targets = normalised_targets(labels)
        self.device = device or torch.device("cpu")
        self.batch_size = min(int(cfg["train"]["batch_size"]), len(self.train_idx))
        self.workers = int(cfg["data"].get("workers", 2))
        # A fixed, seeded subset of the training part scored like the validation part: underfitting shows.
        n_eval = min(int(cfg["protocol"].get("train_eval", 0) or 0), len(self.train_idx))
        pick = np.random.default_rng([self.seed, 1]).permutation(len(self.train_idx))[:n_eval]
        self.train_eval_idx = [self.train_idx[i] for i in sorted(pick)] if n_eval >= 3 else []

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over the training part."""
        return math.ceil(len(self.train_idx) / self.batch_size)

    def _batch_indices(self, step: int) -> list[int]:
        return [self.train_idx[j] for j in epoch_batch(self.seed, step, len(self.train_idx), self.batch_size)]

    def _make_batch(self, step: int) -> tuple[Any, Tensor]:
        idx = self._batch_indices(step)
        # This process's positions of the global batch (all of it in one process; an epoch's last, smaller batch
        # that does not split is made whole by every process). Each view is seeded by its global position k, so
        # the shards together are the single-process batch.
        part = parallel.shard_positions(len(idx), "train.batch_size", whole_if_uneven=True)
        ks = range(len(idx))[part]
        idx = idx[part]
        views = [self.model.train_views(self.images(i), np.random.default_rng([self.seed, step, k]))
                 for k, i in zip(ks, idx)]
        if isinstance(views[0], tuple):
            stacked: Any = tuple(torch.stack(v) for v in zip(*views))
        else:
            stacked = torch.stack(views)
        return stacked, torch.tensor(self.targets[idx], dtype=torch.float32)

    def batches(self, start_step: int) -> Iterator[tuple[Any, Tensor]]:
        """Batches from ``start_step`` on; one is prepared in a thread while the model trains."""
        if self.batch_size == int(self.cfg["train"]["batch_size"]):  # (a smaller training part is one batch)
            parallel.shard_positions(self.batch_size, "train.batch_size")  # refuse a batch that never splits
        # ahead=2: while batch s is being trained on, batch s+1 is being made (each is seeded by its step).
        for _, batch, err in prefetch(self._make_batch, itertools.count(start_step), workers=1, ahead=2):
            if err is not None:
                raise err
            yield batch

    def training_step(self, batch: tuple[Any, Tensor]) -> dict[str, Tensor]:
        """The method's losses on one batch."""
        views, target = batch
        views = tuple(v.to(self.device) for v in views) if isinstance(views, tuple) else views.to(self.device)
        return self.model.training_losses(views, target.to(self.device))

    def backward(self, losses: dict[str, Tensor]) -> None:
        """The method's own backward when it has one (gradient surgery), else plain backprop of 'loss'."""
        custom = getattr(self.model, "backward", None)
        if custom is not None:
            custom(losses)
        else:
            losses["loss"].backward()

    def _correlations(self, indices: Sequence[int]) -> dict[str, float]:
        pred = predict_indices(self.model, self.images, indices, int(self.cfg["protocol"]["eval_batch"]), "val",
                               self.workers)
        return correlations(pred, self.targets[list(indices)])

    def evaluate(self) -> dict[str, float]:
        """SRCC/PLCC/KRCC/RMSE on the validation part, and train_srcc when ``protocol.train_eval`` is set."""
        out = self._correlations(self.val_idx)
        if self.train_eval_idx:
            out["train_srcc"] = self._correlations(self.train_eval_idx)["srcc"]
        return out

    def checkpoint_payload(self) -> dict[str, Any]:
        """The method checkpoint of the current state."""
        return self.model.checkpoint_payload(self.cfg)


# ---------------------------------------------------------------------------------------------------------
# rounds


def round_split(labels: IQALabels, pcfg: Mapping[str, Any], split_seed: int) -> Split:
    """Train/val/test by content group; val is ``val_fraction`` of the training share."""
    ratios = [float(r) for r in pcfg["ratios"]]
    if len(ratios) != 2:
        raise ValueError(f"protocol.ratios must be [train, test], got {pcfg['ratios']!r}")
    tr, te = ratios
    vf = float(pcfg["val_fraction"])
    if not 0 < vf < 1:
        raise ValueError(f"protocol.val_fraction must be in (0, 1), got {vf}")
    return split_by_group(labels, (tr * (1 - vf), tr * vf, te), seed=split_seed, group=pcfg.get("group", "auto"))


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(rows)}
    for k in ("srcc", "plcc", "krcc", "rmse", "val_srcc"):
        vals = [float(r[k]) for r in rows if r.get(k) is not None]
        if vals:
            out[f"{k}_median"] = statistics.median(vals)
            out[f"{k}_mean"] = statistics.fmean(vals)
            out[f"{k}_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    return out


def run_protocol(cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device,
                 build: Callable[[Mapping[str, Any], torch.device], Any], resume: bool = True,
                 progress: bool | None = None, labels: IQALabels | None = None,
                 images: ImageCache | None = None, stem_cache: StemCache | None = None) -> dict[str, Any]:
    """Run the n-round protocol of ``cfg`` for the method ``build`` makes; returns the summary.

    ``labels`` and ``images`` (their decoded-image cache) may be passed in, so a task can reuse them, and so
    may ``stem_cache`` (otherwise one of ``data.stem_cache_mb`` serves every round of this run).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pcfg, tcfg = cfg["protocol"], cfg["train"]
    labels = labels if labels is not None else load_iqa_labels(cfg["data"])
    images = images if images is not None else ImageCache(labels, cfg["data"].get("cache_mb", 4096))
    targets = normalised_targets(labels)
    if stem_cache is None and float(cfg["data"].get("stem_cache_mb", 0) or 0) > 0:
        stem_cache = StemCache(float(cfg["data"]["stem_cache_mb"]))
    n_rounds = int(pcfg["rounds"])
    which = range(n_rounds) if pcfg.get("only_round") is None else [int(pcfg["only_round"])]
    log.info("%s: %d records, %d groups, rounds %s", labels.name, len(labels), len(set(labels.groups())),
             list(which))
    rows = []
    for r in which:
        rdir = run_dir / f"round{r:02d}"
        done = rdir / "result.json"
        # Rank 0 decides, so every process skips (or trains) the same rounds.
        if parallel.broadcast_object(resume and done.is_file()):
            rows.append(json.loads(done.read_text()))
            log.info("round %d already done: test srcc %s", r, rows[-1].get("srcc"))
            continue
        seed = int(cfg["seed"]) + r
        started = time.perf_counter()
        split = round_split(labels, pcfg, seed)
        train_idx = list(split.train)
        if pcfg.get("shots"):
            train_idx = list(few_shot(train_idx, int(pcfg["shots"]), seed=seed))
        seed_everything(seed)
        model = build(cfg, device)
        if stem_cache is not None:
            use_stem_cache(model, stem_cache)
        task = IQATask(model, labels, train_idx, split.val, cfg, seed, images, device)
        rcfg = copy.deepcopy(dict(cfg))
        spe = task.steps_per_epoch
        if int(tcfg.get("epochs", 0) or 0) > 0:
            rcfg["train"]["steps"] = int(tcfg["epochs"]) * spe
        if int(rcfg["train"]["steps"]) <= 0:
            raise ValueError("set train.epochs or train.steps to a positive number")
        if int(tcfg.get("min_epochs", 0) or 0) > 0:
            rcfg["train"]["min_steps"] = int(tcfg["min_epochs"]) * spe
        if not int(tcfg.get("eval_every", 0) or 0):
            rcfg["train"]["eval_every"] = spe
        trainer = Trainer(task, rcfg, rdir, device, resume=resume, progress=progress)
        fit = trainer.fit()
        if not parallel.is_main_process():  # rank 0 scores the test part and writes the round's files
            continue
        best = read_method_checkpoint(trainer.best_path)
        load_trainable_state(model, best.state, str(trainer.best_path))
        ck = save_method_checkpoint(rdir / "checkpoint.safetensors", best.method, best.state, best.config,
                                    best.backbone)
        model.eval()
        res: dict[str, float] = {}
        if split.test:  # ratios [1, 0] train a model to ship on everything: there is no test part
            pred = predict_indices(model, images, split.test, int(pcfg["eval_batch"]), "test",
                                   int(cfg["data"].get("workers", 2)))
            res = correlations(pred, targets[list(split.test)])
        row = {"round": r, "seed": seed, "n_train": len(train_idx), "n_val": len(split.val),
               "n_test": len(split.test), "steps": fit["steps"], "stopped_early": fit["stopped_early"],
               "val_srcc": trainer.best, **res, "seconds": round(time.perf_counter() - started, 3),
               "checkpoint": str(ck)}
        done.write_text(json.dumps(row, indent=1))
        if not pcfg.get("keep_checkpoints"):
            # A finished round is never resumed; with a tuned ViT-B-16 these hold hundreds of MB each.
            for f in (trainer.last_path, trainer.best_path):
                f.unlink(missing_ok=True)
        log.info("round %d: test srcc %s (val srcc %.4f)", r, f"{res['srcc']:.4f}" if res else "none (no test part)",
                 trainer.best)
        rows.append(row)
    if not parallel.is_main_process():
        return {"method": cfg.get("method"), "dataset": labels.name, "run_dir": str(run_dir)}
    with (run_dir / "rounds.csv").open("w", newline="", encoding="utf-8") as f:
        # Rounds finished by an older version may lack newer columns: every key of every row, in first-seen order.
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        w.writeheader()
        w.writerows(rows)
    summary = {"method": cfg.get("method"), "dataset": labels.name, "n_images": len(labels), **_summary(rows),
               "checkpoint": rows[0]["checkpoint"], "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if "srcc_median" in summary:
        log.info("over %d rounds: SRCC median %.4f mean %.4f; PLCC median %.4f mean %.4f", len(rows),
                 summary["srcc_median"], summary["srcc_mean"], summary["plcc_median"], summary["plcc_mean"])
    return summary


def iqa_defaults(method_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A method's full defaults: the IQA protocol's, with the method's sections merged over them."""
    return merge(IQA_DEFAULTS, method_defaults)


__all__ = [
    "DATA_SOURCES",
    "IQATask",
    "IQA_DEFAULTS",
    "IQAModel",
    "ImageCache",
    "correlations",
    "iqa_defaults",
    "load_iqa_labels",
    "normalised_targets",
    "predict_indices",
    "round_split",
    "run_protocol",
]
