"""A small step-based trainer shared by every method: seeds, precision, checkpoints, resume, logs."""

from __future__ import annotations

import csv
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from clipiq.core.config import config_json, dump_config
from clipiq.core.device import autocast
from clipiq.core.errors import CheckpointError
from clipiq.core.tensors import (
    join_tensors,
    load_tensors,
    load_trainable_state,
    save_tensors,
    split_tensors,
    trainable_state,
)
from clipiq.train import parallel

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """An RNG that depends only on (seed, step), so a resumed run draws the same batches."""
    return np.random.default_rng([seed, step])


def epoch_batch(seed: int, step: int, n: int, batch: int) -> list[int]:
    """Indices 0..n-1 of batch ``step``: a fresh seeded permutation every epoch of ceil(n/batch) batches."""
    epoch, b = divmod(step, math.ceil(n / batch))
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[b * batch : (b + 1) * batch].tolist()


class TrainTask(Protocol):
    """What a method provides to the trainer."""

    model: nn.Module

    def batches(self, start_step: int) -> Iterator[Any]:
        """Training batches from ``start_step`` on (deterministic for the seed)."""

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Losses for one batch; must include 'loss'."""

    def evaluate(self) -> dict[str, float]:
        """Validation figures (higher is better for the one named by cfg['train']['monitor'])."""

    def checkpoint_payload(self) -> dict[str, Any]:
        """What a checkpoint must hold to rebuild the trained model: tensors anywhere in nested dicts and lists,
        everything else JSON-able (it is stored as safetensors plus JSON metadata)."""

    # Optional: ``backward(losses)`` replaces ``losses['loss'].backward()`` (e.g. gradient surgery);
    # ``after_step()`` runs after each optimizer step (e.g. an EMA of the weights); ``restore_payload(payload)``
    # gets the resumed checkpoint's payload, so state kept outside the model (an EMA) resumes exactly;
    # ``builds_shards = True`` says ``batches()`` already yields only this process's shard of each global batch in
    # a data-parallel run (see :class:`Trainer`), and ``batch_size`` is the global batch the Trainer shards if not.


class MetricsLog:
    """Append-only CSV of (step, phase, name, value): one file that survives resumes."""

    def __init__(self, path: Path, fresh: bool = False):
        self.path = path
        new = fresh or not path.exists()
        self._fh = path.open("w" if new else "a", newline="", encoding="utf-8")
        self._w = csv.writer(self._fh)
        if new:
            self._w.writerow(["step", "phase", "name", "value", "time"])

    def log(self, step: int, phase: str, values: Mapping[str, float]) -> None:
        """Write one row per value and flush."""
        now = f"{time.time():.1f}"
        for k, v in values.items():
            self._w.writerow([step, phase, k, f"{float(v):.6g}", now])
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics CSV with numeric step and value."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{**r, "step": int(r["step"]), "value": float(r["value"])} for r in csv.DictReader(f)]


#: The ``format`` metadata of the trainer's ``last.safetensors`` / ``best.safetensors``.
TRAINER_FORMAT = "clipiq-trainer/1"


def save_trainer_checkpoint(path: Path, content: Mapping[str, Any]) -> Path:
    """Write a trainer checkpoint atomically: its tensors as safetensors, everything else as JSON metadata."""
    skeleton, tensors = split_tensors({"format": TRAINER_FORMAT, **content})
    return save_tensors(path, tensors, skeleton)


def read_trainer_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a :func:`save_trainer_checkpoint` file (nothing in it can run code); checks ``required`` keys."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != TRAINER_FORMAT:
        raise CheckpointError(f"{path}: not a clipiq trainer checkpoint (no {TRAINER_FORMAT!r} format metadata)")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {', '.join(missing)}")
    return join_tensors(meta, tensors, str(path))


#: Every ``train`` key the Trainer reads, with its default. Task configs start from :func:`train_defaults`,
#: so a default lives here once and strict config merging still knows every key.
TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 1000,
    "batch_size": 32,
    "optimizer": "adamw",  # adamw | adam | sgd
    "lr": 1e-3,
    "weight_decay": 0.0,
    "momentum": 0.9,  # sgd only
    "schedule": "cosine",  # cosine | constant | plateau
    "warmup": 0,
    "plateau_factor": 0.3,
    "plateau_patience": 2,
    "grad_clip": 0.0,
    "precision": "fp32",
    "log_every": 10,
    "eval_every": 0,  # 0: at the end only
    "ckpt_every": 0,  # 0: at every evaluation
    "monitor": None,  # a key of evaluate()'s result, higher is better
    "patience": 0,  # evaluations without a new best before stopping; 0 never stops early
    "min_steps": 0,  # no early stop before this step (a slow start is not a plateau)
    # Seconds of training (0: none). With a limit the run ends at `steps` or when the time is spent, whichever
    # comes first, and the cosine decay follows the larger of the two fractions done (the warm-up stays in
    # steps), so a run cut by the clock still ends with its learning rate decayed. For lent machines with a
    # fixed allowance; the number of steps then depends on the machine, so it is not step-for-step reproducible.
    "time_limit": 0,
}

#: Config keys that change how a run is watched or paced, not what it computes; a resume ignores them.
RUN_CONTROL_KEYS: tuple[tuple[str, str], ...] = (("train", "log_every"), ("train", "ckpt_every"),
                                                 ("train", "time_limit"), ("data", "workers"),
                                                 ("data", "cache_photos"))


def resume_config_json(cfg: Mapping[str, Any]) -> str:
    """The config as a resume compares it: :func:`config_json` without :data:`RUN_CONTROL_KEYS`."""
    trimmed = {k: dict(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}
    if not trimmed.get("init"):  # an empty init= (restoration tasks) is the same run as none, older runs had none
        trimmed.pop("init", None)
    for section, key in RUN_CONTROL_KEYS:
        if isinstance(trimmed.get(section), dict):
            trimmed[section].pop(key, None)
    return config_json(trimmed)


def train_defaults(**changes: Any) -> dict[str, Any]:
    """The ``train`` section of a task's defaults: TRAIN_DEFAULTS with the task's own choices."""
    unknown = set(changes) - set(TRAIN_DEFAULTS) - {"epochs", "min_epochs"}
    if unknown:
        raise KeyError(f"train_defaults: unknown train keys {sorted(unknown)}")
    return {**TRAIN_DEFAULTS, **changes}


def build_optimizer(params: list[nn.Parameter], tcfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW (default), Adam or SGD (with momentum) from the ``train`` config section."""
    tcfg = {**TRAIN_DEFAULTS, **tcfg}
    name = str(tcfg["optimizer"]).lower()
    lr, wd = float(tcfg["lr"]), float(tcfg["weight_decay"] or 0.0)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(tcfg["momentum"]))
    raise ValueError(f"train.optimizer must be adamw, adam or sgd, got {name!r}")


def _rng_state() -> dict[str, Any]:
    # JSON lists for Python's and NumPy's generators, a byte tensor for torch's.
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
            "torch": torch.get_rng_state()}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    sd = optimizer.state_dict()
    return {"state": {str(k): v for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any]) -> None:
    # JSON turned the parameter ids into strings and tuples (Adam's betas) into lists: restore both.
    groups = []
    for have, got in zip(optimizer.param_groups, saved["param_groups"]):
        groups.append({k: tuple(v) if isinstance(have.get(k), tuple) and isinstance(v, list) else v
                       for k, v in got.items()})
    optimizer.load_state_dict({"state": {int(k): v for k, v in saved["state"].items()}, "param_groups": groups})


class ReptileOuterStep:
    """Reptile on the shared :class:`Trainer`: one training step is one outer step.

    :meth:`reptile_step` adapts ``params`` to each task from the same start with a fresh inner Adam, puts the
    start back, and keeps the mean displacement ``mean(theta - theta_task)``; :meth:`backward` sets it as the
    gradient, so the Trainer's plain SGD (learning rate = the outer step) takes the Reptile step. Tasks mix it in
    and call :meth:`reptile_step` from their ``training_step``.
    """

    _reptile: tuple[list[nn.Parameter], list[Tensor]] | None = None

    def reptile_step(self, params: Sequence[nn.Parameter], n_tasks: int, inner_lr: float,
                     inner_losses: Callable[[int], Iterator[Tensor]]) -> dict[str, Tensor]:
        """Adapt to tasks ``0..n_tasks-1``; ``inner_losses(j)`` yields task j's inner losses, each computed after
        the previous inner step. Returns the mean inner loss and the mean first inner loss of the tasks."""
        params = list(params)
        theta = [p.detach().clone() for p in params]
        shift = [torch.zeros_like(p) for p in params]
        first, every = [], []
        for j in range(n_tasks):
            inner = torch.optim.Adam(params, lr=inner_lr)
            for i, loss in enumerate(inner_losses(j)):
                inner.zero_grad(set_to_none=True)
                loss.backward()
                inner.step()
                every.append(float(loss.detach()))
                if i == 0:
                    first.append(every[-1])
            with torch.no_grad():
                for d, p, th in zip(shift, params, theta):
                    d.add_(th - p)
                    p.copy_(th)
        self._reptile = (params, [d / n_tasks for d in shift])
        return {"loss": torch.tensor(statistics.fmean(every)), "first_loss": torch.tensor(statistics.fmean(first))}

    def backward(self, losses: Mapping[str, Tensor]) -> None:
        """Set each adapted tensor's gradient to the mean displacement: SGD then takes the Reptile step."""
        if self._reptile is None:
            raise RuntimeError("backward() before training_step()")
        for p, g in zip(*self._reptile):
            p.grad = g.clone()


class _Unlogged:
    """Stands in for the :class:`MetricsLog` on the processes of a data-parallel run other than rank 0."""

    def log(self, step: int, phase: str, values: Mapping[str, float]) -> None:
        """Nothing: rank 0 writes metrics.csv."""

    def close(self) -> None:
        """Nothing to close."""


class Trainer:
    """Runs a TrainTask for cfg['train']['steps'] steps with evaluation, checkpoints and auto-resume.

    The ``train`` section's keys and defaults are :data:`TRAIN_DEFAULTS`.
    Checkpoints hold only what trains (see :func:`trainable_state`), so frozen backbones cost nothing.

    Data-parallel (:mod:`clipiq.train.parallel`, more than one process): the model starts as rank 0's (after a
    resume, which every process reads from the shared run folder); each process takes its shard of the global
    batch (the task's own when it ``builds_shards``, else :func:`~clipiq.train.parallel.take_shard` of the batch
    of ``task.batch_size``; a batch with nothing of that many items, such as a step number, is trained whole by
    every process); gradients are averaged before clipping and the optimizer step, so those see what one process
    would with the whole batch. Rank 0 alone evaluates, writes metrics.csv, config.yaml and the checkpoints and
    shows progress; the evaluation and its decisions (best, plateau, early stop) and, with a time limit, the clock
    are rank 0's on every process, and logged losses are the processes' mean. Losses that compare the items of
    a batch (contrastive, pairwise ranking) see only the process's shard (nothing is gathered), and a task's
    custom ``backward`` (gradient surgery) acts on each shard's gradient before the averaging: such runs are
    not the single-process run.
    """

    def __init__(self, task: TrainTask, cfg: Mapping[str, Any], run_dir: str | Path, device: torch.device,
                 resume: bool = True, progress: bool | None = None):
        self.task, self.cfg, self.device = task, dict(cfg), device
        self.tcfg = {**TRAIN_DEFAULTS, **cfg["train"]}
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.progress = progress
        params = [p for p in task.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the task's model has no trainable parameters")
        self.params = params
        self.ctx = parallel.current()
        self.optimizer = build_optimizer(params, self.tcfg)
        steps, warm = int(self.tcfg["steps"]), int(self.tcfg["warmup"])
        schedule = str(self.tcfg["schedule"]).lower()
        if schedule not in ("cosine", "constant", "plateau"):
            raise ValueError(f"train.schedule must be cosine, constant or plateau, got {schedule!r}")

        self.time_limit = float(self.tcfg["time_limit"] or 0)
        if self.time_limit < 0:
            raise ValueError(f"train.time_limit must be >= 0 seconds, got {self.time_limit}")
        self.elapsed = 0.0  # seconds of training so far, carried across resumes
        self._clock: float | None = None
        self._shared_fraction: float | None = None  # rank 0's time fraction in a data-parallel run

        def lr_lambda(step: int) -> float:  # linear warm-up, then cosine decay or constant
            if step < warm:
                return (step + 1) / max(1, warm)
            if schedule != "cosine":
                return 1.0
            t = max((step - warm) / max(1, steps - warm), self.time_fraction())
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        # Plateau decay acts on the validation metric at each evaluation, on top of the warm-up.
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=float(self.tcfg["plateau_factor"]),
            patience=int(self.tcfg["plateau_patience"])) if schedule == "plateau" else None
        self.step = 0
        self.best: float | None = None
        self.since_best = 0
        self.stopped_early = False
        self.history: list[dict[str, float]] = []

    def seconds_spent(self) -> float:
        """Seconds of training so far: earlier sessions' and the running one's."""
        return self.elapsed + (time.perf_counter() - self._clock if self._clock is not None else 0.0)

    def time_fraction(self) -> float:
        """The fraction of ``train.time_limit`` spent (0 without a limit); rank 0's in a data-parallel run."""
        if self._shared_fraction is not None:
            return self._shared_fraction
        return self.seconds_spent() / self.time_limit if self.time_limit else 0.0

    def _sync_clock(self) -> None:
        # With a time limit the learning rate and the end of the run follow the clock: every process must read
        # the same one (rank 0's), or their weights drift apart and one stops while the others wait for it.
        if self.time_limit and self.ctx.world_size > 1:
            self._shared_fraction = None
            self._shared_fraction = float(parallel.broadcast_object(self.time_fraction()))

    def _done(self, steps: int) -> bool:
        return self.step >= steps or self.time_fraction() >= 1.0

    @property
    def last_path(self) -> Path:
        """The resume checkpoint (see :meth:`_save` for what it holds)."""
        return self.run_dir / "last.safetensors"

    @property
    def best_path(self) -> Path:
        """The best-on-validation checkpoint: step, config, monitor value and the task's payload."""
        return self.run_dir / "best.safetensors"

    def _save(self) -> None:
        """Write last.safetensors: trainable tensors, optimizer state, RNG states, counters and the payload."""
        if self.ctx.is_main:
            self._write_last()
        parallel.barrier()  # the others may read what rank 0 wrote once they pass

    def _write_last(self) -> None:
        save_trainer_checkpoint(self.last_path, {
            "step": self.step,
            "elapsed": self.seconds_spent(),
            "best": self.best,
            "since_best": self.since_best,
            "stopped_early": self.stopped_early,
            "history": [{k: v if isinstance(v, int) else float(v) for k, v in h.items()} for h in self.history],
            "config": self.cfg,
            "model": trainable_state(self.task.model),
            "optimizer": _optimizer_state(self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
            "rng": _rng_state(),
            "payload": self.task.checkpoint_payload(),
        })

    def _try_resume(self) -> None:
        stray = self.run_dir / "last.pt"
        if stray.exists():
            # Pickled checkpoints can run code when loaded; only last.safetensors is ever read.
            log.warning("ignoring %s: clipiq never loads pickled checkpoints; resume reads %s only", stray,
                        self.last_path.name)
        if not (self.resume and self.last_path.exists()):
            return
        ck = read_trainer_checkpoint(self.last_path, ("step", "best", "config", "model", "optimizer", "scheduler",
                                                      "rng"))
        if resume_config_json(ck["config"]) != resume_config_json(self.cfg):
            raise ValueError(f"{self.last_path} was written with a different config; resume refused "
                             "(use another run directory, or --no-resume to start over)")
        load_trainable_state(self.task.model, ck["model"], str(self.last_path))
        _load_optimizer_state(self.optimizer, ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.plateau is not None and ck.get("plateau"):
            self.plateau.load_state_dict(ck["plateau"])
        _set_rng_state(ck["rng"])
        restore = getattr(self.task, "restore_payload", None)
        if restore is not None:
            restore(ck.get("payload"))
        self.step, self.best = int(ck["step"]), ck["best"]
        self.elapsed = float(ck.get("elapsed", 0.0))
        self.since_best, self.stopped_early = int(ck.get("since_best", 0)), bool(ck.get("stopped_early", False))
        self.history = list(ck.get("history", []))
        log.info("resumed from %s at step %d", self.last_path, self.step)

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of steps (resuming if a checkpoint exists); returns a summary."""
        main = self.ctx.is_main
        if main:
            dump_config(self.cfg, self.run_dir / "config.yaml")
        self._try_resume()
        steps = int(self.tcfg["steps"])
        log_every = int(self.tcfg["log_every"])
        eval_every = int(self.tcfg["eval_every"]) or steps
        ckpt_every = int(self.tcfg["ckpt_every"]) or eval_every
        monitor = self.tcfg["monitor"]
        precision = self.tcfg["precision"]
        clip = float(self.tcfg["grad_clip"] or 0)
        metrics = MetricsLog(self.run_dir / "metrics.csv", fresh=self.step == 0) if main else _Unlogged()
        self.task.model.to(self.device).train()
        parallel.broadcast_module(self.task.model)
        # Slice the global batch here unless the task made only this process's shard.
        shard_size = (int(getattr(self.task, "batch_size", self.tcfg["batch_size"]))
                      if self.ctx.world_size > 1 and not getattr(self.task, "builds_shards", False) else 0)
        t0, first = time.perf_counter(), self.step
        self._clock = t0
        bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", disable=not main or (
            self.progress is False if self.progress is not None else None))
        running: dict[str, float] = {}
        backward = getattr(self.task, "backward", None)
        after_step = getattr(self.task, "after_step", None)
        finished_at = -1  # the step whose final evaluation and checkpoint were written
        try:
            for batch in self.task.batches(self.step):
                if self.step >= steps or self.stopped_early:
                    break
                self._sync_clock()
                if self.time_fraction() >= 1.0:
                    # The time ran out between steps (fetching this batch, an evaluation, a save): finish the run
                    # as its last step would have, so no step is left unevaluated and unsaved.
                    if self.step > first and finished_at != self.step:
                        self._evaluate(metrics, monitor)
                        self._save()
                    break
                if shard_size:
                    batch = parallel.take_shard(batch, shard_size)
                with autocast(self.device, precision):
                    losses = self.task.training_step(batch)
                loss = losses["loss"]
                finite = bool(torch.isfinite(loss))
                if self.ctx.world_size > 1:
                    # Every process must stop together: one that raised alone would leave the others waiting in
                    # the gradient all-reduce.
                    finite = parallel.average_values({"finite": float(finite)})["finite"] == 1.0
                if not finite:
                    where = f" on one of the processes (this one's: {loss.item()})" if self.ctx.world_size > 1 else ""
                    raise FloatingPointError(f"loss became {loss.item() if not where else 'non-finite'} at step "
                                             f"{self.step}{where}")
                self.optimizer.zero_grad(set_to_none=True)
                if backward is not None:
                    backward(losses)
                else:
                    loss.backward()
                parallel.average_gradients(self.params)
                if clip > 0:
                    nn.utils.clip_grad_norm_(self.task.model.parameters(), clip)
                self.optimizer.step()
                if after_step is not None:
                    after_step()
                self._sync_clock()
                self.scheduler.step()
                self.step += 1
                for k, v in losses.items():
                    running[k] = running.get(k, 0.0) + float(v.detach())
                done = self._done(steps)
                if self.step % log_every == 0 or done:
                    n = log_every if self.step % log_every == 0 else self.step % log_every
                    avg = parallel.average_values({k: v / n for k, v in running.items()})
                    avg["lr"] = self.scheduler.get_last_lr()[0]
                    metrics.log(self.step, "train", avg)
                    bar.set_postfix(loss=f"{avg['loss']:.4f}")
                    running = {}
                bar.update(1)
                if self.step % eval_every == 0 or done:
                    self._evaluate(metrics, monitor)
                if self.step % ckpt_every == 0 or done or self.stopped_early:
                    self._save()
                if done:
                    finished_at = self.step
        finally:
            bar.close()
            metrics.close()
            self.elapsed += time.perf_counter() - t0
            self._clock = None
            self._shared_fraction = None
        parallel.barrier()  # rank 0's files are complete for every process that returns
        dt = time.perf_counter() - t0
        return {"steps": self.step, "seconds": dt, "steps_per_s": (self.step - first) / dt if dt else 0.0,
                "best": self.best, "stopped_early": self.stopped_early,
                "last_eval": self.history[-1] if self.history else {}}

    def _evaluate(self, metrics: MetricsLog | _Unlogged, monitor: str | None) -> None:
        res: dict[str, float] = {}
        if self.ctx.is_main:
            self.task.model.eval()
            with torch.no_grad():
                res = self.task.evaluate()
            self.task.model.train()
        # Every process takes rank 0's figures, so the decisions below (best, plateau, early stop) agree.
        res = parallel.broadcast_object(res)
        metrics.log(self.step, "val", res)
        self.history.append({"step": self.step, **res})
        log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in res.items()))
        if monitor and monitor not in res:
            raise KeyError(f"train.monitor={monitor!r} is not among the evaluation results {sorted(res)}")
        if not monitor:
            return
        value = float(res[monitor])
        if math.isnan(value):  # e.g. SRCC of constant predictions: never a new best
            value = -math.inf
        if self.plateau is not None:
            self.plateau.step(value)
        if self.best is None or value > self.best:
            self.best, self.since_best = value, 0
            if self.ctx.is_main:
                save_trainer_checkpoint(self.best_path, {"step": self.step, "config": self.cfg, "monitor": monitor,
                                                         "best": self.best,
                                                         "payload": self.task.checkpoint_payload()})
            parallel.barrier()
        else:
            self.since_best += 1
            patience = int(self.tcfg["patience"] or 0)
            if patience and self.since_best >= patience and self.step >= int(self.tcfg["min_steps"] or 0):
                self.stopped_early = True
                log.info("early stop at step %d: no new best %s for %d evaluations (best %.4f)",
                         self.step, monitor, patience, self.best)
