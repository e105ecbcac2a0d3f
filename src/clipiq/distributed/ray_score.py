"""Batch scoring on Ray Data: the local runner's rows, fingerprints and resume, from an actor pool.

The pipeline reads the paths still to score, decodes them in Ray tasks (as the local runner decodes: same
reader, same limits, same error texts), and scores them in an actor pool with ``map_batches``, so each actor
loads the model once. The driver turns what comes back into rows with the local runner's own
:func:`~clipiq.data.results.result_row` and writes them as they arrive through the same
:class:`~clipiq.data.results.ResultWriter`, so a file written by either engine is resumed by either.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from clipiq.core.device import resolve_precision
from clipiq.core.errors import ClipIQError
from clipiq.core.image import pil_to_tensor
from clipiq.data.io import DEFAULT_MAX_PIXELS, is_uri, read_image
from clipiq.data.results import ResultWriter, plan_scoring, result_row, unique_inputs
from clipiq.data.runner import RunResult, error_text
from clipiq.data.sources import resolve_inputs
from clipiq.iqa import create_metric

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'clipiq[ray]'"
# Logical CPUs a decoding task asks of Ray's scheduler: small, so decoding never waits for actors to free theirs.
DECODE_CPUS = 0.25
DECODE_BATCH = 8


class RayNotInstalledError(ClipIQError, ImportError):
    """Ray (with Ray Data) is needed for this and is not installed."""


def require_ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or RayNotInstalledError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is a separate extra of ray)
    except ImportError as e:
        raise RayNotInstalledError(f"the Ray engine needs Ray Data, which is not installed ({e}); "
                                   f"install it with: {INSTALL_HINT}") from None
    return ray


@dataclass
class RayScoreSummary:
    """What a run did: inputs named, scored before this run, scored now, failed now, and its wall time."""

    inputs: int
    already: int
    scored: int
    failed: int
    seconds: float
    output: Path

    @property
    def images_per_second(self) -> float:
        """Inputs processed by this run per second of wall time."""
        done = self.scored + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0


def decode_batch(batch: Mapping[str, Any], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Ray task: decode a batch of paths to 8-bit RGB arrays, with the decoder's note, or the error row's text."""
    images, notes, errors = [], [], []
    for path in batch["path"]:
        try:
            decoded = read_image(str(path), max_pixels=max_pixels)
            images.append(np.asarray(decoded.image, dtype=np.uint8))
            notes.append(decoded.note or "")
            errors.append("")
        except Exception as e:  # one bad file is one error row, never the end of the batch
            images.append(np.zeros((1, 1, 3), np.uint8))
            notes.append("")
            errors.append(error_text(e))
    return {"path": list(batch["path"]), "image": images, "note": notes, "error": errors}


class MetricActor:
    """Ray actor: loads the metric once, then scores the decoded batches it is given."""

    def __init__(self, metric: str, model: str | None, weights: str | None, device: str | None, precision: str,
                 batch_size: int, threads: int | None, options: Mapping[str, Any]):
        if threads:
            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self.metric = create_metric(metric, model=model, weights=weights, device=device, precision=precision,
                                    batch_size=batch_size, **options)
        self.names = list(self.metric.output_names)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """One output column per metric output (NaN where no score), the error and the note, per path."""
        n = len(batch["path"])
        errors = [str(e) for e in batch["error"]]
        values = {name: np.full(n, np.nan) for name in self.names}
        ok = [i for i in range(n) if not errors[i]]
        # The local runner's decoding ends in pil_to_tensor; the same call gives the same floats here.
        tensors = [pil_to_tensor(Image.fromarray(np.asarray(batch["image"][i], dtype=np.uint8))) for i in ok]
        # Limits were checked while decoding, as the local runner does; workers=1: the tensors are ready.
        for result in self.metric.iter_results(tensors, batch_size=self.batch_size, workers=1, max_pixels=None):
            i = ok[result.index]
            if result.ok:
                for name in self.names:
                    values[name][i] = float(result.output[name])
            else:
                errors[i] = result.error or "failed"
        return {"path": list(batch["path"]), "note": [str(x) for x in batch["note"]], "error": errors, **values}


def score(inputs: str | os.PathLike | Iterable[str | os.PathLike], output: str | os.PathLike, *,
          metric: str = "clipiqa", model: str | None = None, weights: str | None = None,
          precision: str = "fp32", options: Mapping[str, Any] | None = None, batch_size: int = 16,
          actors: int = 1, cpus_per_actor: float = 1.0, threads_per_actor: int | None = None,
          gpus_per_actor: float = 0.0, address: str | None = None, recursive: bool = False,
          max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool | None = None) -> RayScoreSummary:
    """Score folders, globs, manifests or files on Ray Data into ``output`` (.parquet, .csv, .jsonl, .json).

    Rows, fingerprints and resume are the local runner's (a rerun skips what the file already scored). Ray is
    started with ``address`` (``"auto"``: a running cluster) unless this process already joined one; each of
    ``actors`` actors reserves ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs and runs
    ``threads_per_actor`` torch threads (default: its CPUs, rounded up).
    """
    if batch_size < 1 or actors < 1 or cpus_per_actor <= 0 or gpus_per_actor < 0:
        raise ValueError("batch_size and actors must be at least 1, cpus_per_actor above 0, gpus_per_actor >= 0; "
                         f"got {batch_size}, {actors}, {cpus_per_actor}, {gpus_per_actor}")
    device = "cuda" if gpus_per_actor > 0 else "cpu"
    # Checked here, not first in an actor: fp16 on CPU actors would fail only after Ray and the pool had started.
    resolve_precision(precision, torch.device(device))
    ray = require_ray()
    specs = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    paths = unique_inputs(resolve_inputs(specs, recursive=recursive))
    if not paths:
        raise ValueError("no images found in: " + " ".join(map(str, specs)))
    options = dict(options or {})
    out = Path(output)
    t0 = time.perf_counter()
    with ResultWriter(out, flush_rows=batch_size) as writer:
        # The record comes from a driver-side copy of the metric (on the CPU): the file is checked, and
        # the options validated, before any Ray work starts.
        probe = create_metric(metric, model=model, weights=weights, device="cpu", precision="fp32",
                              batch_size=batch_size, **options)
        plan = plan_scoring(probe, precision, options, paths, writer)
        names = list(probe.output_names)
        del probe
        failed = scored = 0
        if plan.todo:
            if not ray.is_initialized():
                # Without an address, a new local Ray ("local": never a cluster that RAY_ADDRESS or a running
                # `ray start` would join) with at least the logical CPUs the pool and one decoding task reserve.
                need = _pool_cpus(actors, cpus_per_actor)
                local = {} if address else {"num_cpus": max(os.cpu_count() or 1, math.ceil(need))}
                ray.init(address=address or "local", log_to_driver=False, include_dashboard=False,
                         logging_level=logging.WARNING, **local)
            _check_resources(ray.cluster_resources(), actors, cpus_per_actor, gpus_per_actor)
            # This run shows its own progress bar; Ray Data's would interleave with it.
            ray.data.DataContext.get_current().enable_progress_bars = False
            threads = threads_per_actor or max(1, math.ceil(cpus_per_actor))
            bar = tqdm(total=len(plan.todo), desc=f"scoring on ray ({metric})", unit="img", disable=progress is False
                       if progress is not None else None)
            # Ray's tables hold UTF-8 text: a name that is not (possible on POSIX) gets its error row here.
            todo, not_utf8 = [], []
            for p in plan.todo:
                (todo if _is_utf8(p) else not_utf8).append(p)
            for name in not_utf8:
                writer.add(result_row(RunResult(-1, name, error="the file name is not UTF-8, which the Ray engine "
                                                "cannot carry: score it with --engine local"), plan.base))
                failed += 1
            try:
                for result in _ray_results(ray, todo, names, metric, model, weights, device, precision,
                                           batch_size, threads, options, actors, cpus_per_actor, gpus_per_actor,
                                           max_pixels):
                    row = result_row(result, plan.base)
                    failed += bool(row["error"])
                    scored += not row["error"]
                    writer.add(row)
                    bar.update(1)
            finally:
                bar.close()  # the writer's close writes the rows still queued
    return RayScoreSummary(len(paths), plan.already, scored, failed, time.perf_counter() - t0, out)


def _pool_cpus(actors: int, cpus_per_actor: float) -> float:
    """Logical CPUs the actor pool and one decoding task reserve."""
    return actors * cpus_per_actor + DECODE_CPUS


def _check_resources(have: Mapping[str, float], actors: int, cpus_per_actor: float, gpus_per_actor: float) -> None:
    """Refuse a pool the cluster cannot place: Ray Data would wait for its actors forever."""
    cpus, gpus = _pool_cpus(actors, cpus_per_actor), actors * gpus_per_actor
    if float(have.get("CPU", 0)) < cpus:
        raise ValueError(f"{actors} actors x {cpus_per_actor} CPUs plus decoding ({DECODE_CPUS}) need {cpus} of Ray's "
                         f"logical CPUs; the cluster has {have.get('CPU', 0)}: lower --actors or --cpus-per-actor")
    if gpus and float(have.get("GPU", 0)) < gpus:
        raise ValueError(f"{actors} actors x {gpus_per_actor} GPUs need {gpus} GPUs; the Ray cluster has "
                         f"{have.get('GPU', 0)}: lower --actors or --num-gpus, or score on the CPU")


def _ray_results(ray: Any, todo: list[str], names: list[str], metric: str, model: str | None, weights: str | None,
                 device: str, precision: str, batch_size: int, threads: int, options: Mapping[str, Any], actors: int,
                 cpus_per_actor: float, gpus_per_actor: float, max_pixels: int | None) -> Iterator[RunResult]:
    """One RunResult per input, as the actor pool finishes batches."""
    # Blocks of one scoring batch: the actors' rows then reach the driver (and the file) a batch at a time; with
    # a few large blocks they came in bursts of a block each (250 rows for 1000 images), and the first only after
    # a whole block was decoded and scored.
    blocks = max(1, math.ceil(len(todo) / max(batch_size, DECODE_BATCH)))
    # Workers do not share the driver's working directory (on a cluster, nor its machine): they get absolute
    # paths, and rows keep each path as it was given.
    given = {_absolute(p): p for p in todo}
    ds = ray.data.from_items([{"path": p} for p in given], override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"max_pixels": max_pixels}, batch_size=DECODE_BATCH,
                        num_cpus=DECODE_CPUS, batch_format="numpy")
    ds = ds.map_batches(MetricActor, fn_constructor_kwargs={
        "metric": metric, "model": model, "weights": weights, "device": device, "precision": precision,
        "batch_size": batch_size, "threads": threads, "options": dict(options)},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None, batch_format="numpy")
    index = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, path in enumerate(batch["path"]):
            error = str(batch["error"][i])
            output = None if error else {name: float(batch[name][i]) for name in names}
            yield RunResult(index, given[str(path)], output=output, error=error or None,
                            note=str(batch["note"][i]) or None)
            index += 1


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _absolute(path: str) -> str:
    return path if is_uri(path) else os.path.abspath(path)


__all__ = ["INSTALL_HINT", "MetricActor", "RayNotInstalledError", "RayScoreSummary", "decode_batch", "require_ray",
           "score"]
