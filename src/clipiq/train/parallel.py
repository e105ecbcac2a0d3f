"""Data-parallel training on ``torch.distributed``: which process this is, and the few collectives the Trainer needs.

``clipiq train ... --nproc N`` (or ``torchrun ... -m clipiq train ...``) starts N processes; each calls
:func:`init_from_env` (gloo on CPU, NCCL on CUDA, one GPU per process) and trains on its shard of every global
batch. :func:`average_gradients` then makes every process's gradient the one a single process would get from the
whole batch, so the optimizer steps stay identical everywhere. Without an initialised process group everything
here is a no-op for one process (:func:`current` is rank 0 of 1), so single-process runs take no other path.

Batches are deterministic per (seed, step) in clipiq, so no sampler is needed: every process knows the global
batch, and :func:`shard_positions` says which contiguous part of it this process takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from clipiq.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ParallelContext",
    "average_gradients",
    "average_values",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "current",
    "init_from_env",
    "is_main_process",
    "main_first",
    "shard_positions",
    "shutdown",
    "take_shard",
]

#: How long a process waits in a collective. Only rank 0 evaluates and writes checkpoints while the others wait
#: at the next collective, and a validation pass over a large set on a CPU can outlast torch's 30-minute default.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class ParallelContext:
    """This process's place in a data-parallel run (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes files, logs metrics and evaluates (rank 0)."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where this process's collective buffers live: the current GPU under NCCL, else the CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


_context: ParallelContext | None = None


def current() -> ParallelContext:
    """This process's context: set by :func:`init_from_env`, read from an initialised process group, or 0 of 1."""
    if _context is not None:
        return _context
    if dist.is_available() and dist.is_initialized():  # a process group made by the caller (its own launcher)
        return ParallelContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                               str(dist.get_backend()))
    return ParallelContext()


def is_main_process() -> bool:
    """True on rank 0 (and in every single-process run): the process that writes files."""
    return current().is_main


def _distributed() -> bool:
    return current().world_size > 1


def init_from_env(device_hint: str | torch.device | None = None) -> tuple[ParallelContext, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    The backend is NCCL when the device is CUDA (``device_hint`` of type cuda, or None with a GPU visible), each
    process on ``cuda:LOCAL_RANK``; else gloo on the CPU. Returns the context and the device to train on.
    """
    global _context
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"not started by torchrun: {', '.join(missing)} unset (use clipiq train --nproc N)")
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    hint = torch.device(device_hint) if device_hint is not None else None
    use_cuda = hint.type == "cuda" if hint is not None else torch.cuda.is_available()
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process {local} of this machine has no GPU: {torch.cuda.device_count()} visible "
                               "(start at most one process per GPU)")
        if hint is not None and hint.index is not None and hint.index != local:
            log.warning("device %s ignored: process %d trains on cuda:%d (one GPU per process)", hint, rank, local)
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    _context = ParallelContext(rank, world, local, backend)
    log.info("process %d of %d (%s) on %s", rank, world, backend, device)
    return _context, device


def shutdown() -> None:
    """Leave the process group (if this module joined one); safe to call twice."""
    global _context
    if _context is not None and dist.is_initialized():
        dist.destroy_process_group()
    _context = None


def barrier() -> None:
    """Wait until every process gets here (no-op for one process)."""
    if _distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first(when: bool = True) -> Iterator[None]:
    """Rank 0 runs the block first, the others after it: for caches and data sets on disk that rank 0 writes and
    the others then read instead of making them again (every process passes one barrier; ``when`` False, e.g.
    with the cache off, runs the block everywhere at once). Give every process the same ``when``."""
    main = is_main_process()
    if when and not main:
        barrier()
    yield
    if when and main:
        barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (any picklable value) on every process; the value itself for one process."""
    if not _distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=current().device)
    return box[0]


def broadcast_module(module: nn.Module) -> None:
    """Overwrite every process's parameters and buffers with rank 0's (in place)."""
    if not _distributed():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over the processes, in one all-reduce.

    A missing gradient counts as zeros, so every process makes the same call; a parameter without a gradient on
    every process keeps none (as in a single process, the optimizer then skips it rather than decaying it).
    """
    if not _distributed():
        return
    params = list(params)
    if not params:
        return
    world = current().world_size
    dev = current().device
    dtype = torch.float64 if any(p.grad is not None and p.grad.dtype == torch.float64 for p in params) \
        else torch.float32
    # One flat buffer: the gradients, then one "has a gradient" count per parameter.
    parts = [(p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device))
             .to(dev, dtype) for p in params]
    parts.append(torch.tensor([p.grad is not None for p in params], dtype=dtype, device=dev))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    counts = flat[-len(params):].tolist()  # one device sync, not one per parameter
    offset = 0
    for i, p in enumerate(params):
        n = p.numel()
        if counts[i] > 0:
            g = flat[offset : offset + n].div_(world).view_as(p).to(p.device, p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        offset += n


def average_values(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over the processes of each value (every process must pass the same keys, in any order)."""
    if not _distributed():
        return dict(values)
    keys = sorted(values)  # the same order on every process
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=current().device)
    dist.all_reduce(t)
    mean = {k: float(v) / current().world_size for k, v in zip(keys, t.tolist())}
    return {k: mean[k] for k in values}


def shard_positions(n: int, what: str = "the batch", *, whole_if_uneven: bool = False,
                    ctx: ParallelContext | None = None) -> slice:
    """The positions of a global batch of ``n`` items (0..n-1) this process takes: contiguous equal shards.

    ``n`` not divisible by the number of processes is a ConfigError naming ``what`` (e.g. ``train.batch_size``);
    with ``whole_if_uneven`` every process takes the whole batch instead (for an epoch's last, smaller batch:
    the processes' gradients are then the same, and averaging them changes nothing).
    """
    ctx = ctx or current()
    if ctx.world_size == 1:
        return slice(0, n)
    if n % ctx.world_size:
        if whole_if_uneven:
            return slice(0, n)
        raise ConfigError(f"{what}={n} does not split evenly over {ctx.world_size} processes: use a multiple of "
                          f"{ctx.world_size}, or another number of processes")
    size = n // ctx.world_size
    return slice(ctx.rank * size, (ctx.rank + 1) * size)


def _batched(obj: Any, n: int) -> bool:
    """Whether ``obj`` is, or holds, something with ``n`` items along its first axis."""
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj.ndim >= 1 and obj.shape[0] == n
    if isinstance(obj, Mapping):
        return any(_batched(v, n) for v in obj.values())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(_batched(getattr(obj, f.name), n) for f in dataclasses.fields(obj))
    if isinstance(obj, list | tuple):
        return len(obj) == n or any(_batched(v, n) for v in obj)
    return False


def take_shard(batch: Any, n: int, what: str = "train.batch_size", ctx: ParallelContext | None = None) -> Any:
    """This process's shard of a batch of ``n`` items (see :func:`shard_positions`), whatever its structure.

    Tensors and arrays with ``n`` rows are sliced; so are lists of ``n`` items (per-item data such as texts) and
    plain tuples of ``n`` items none of which holds batched data. Dicts, dataclasses, NamedTuples and other tuples
    are structure: their members are sliced. Anything else (numbers, strings, a step number) is left as it is, so
    a batch with nothing of ``n`` items reaches every process whole.
    """
    ctx = ctx or current()
    if ctx.world_size == 1:
        return batch
    shard: slice | None = None

    def positions() -> slice:
        nonlocal shard
        if shard is None:  # only when something is sliced: a batch that is a step number has no batch size
            shard = shard_positions(n, what, ctx=ctx)
        return shard

    def walk(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor | np.ndarray):
            return obj[positions()] if obj.ndim >= 1 and obj.shape[0] == n else obj
        if isinstance(obj, Mapping):
            return type(obj)({k: walk(v) for k, v in obj.items()})  # type: ignore[call-arg]
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.replace(obj, **{f.name: walk(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                               if f.init})
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
            return type(obj)(*(walk(v) for v in obj))
        if isinstance(obj, list) and len(obj) == n:
            return obj[positions()]
        if isinstance(obj, tuple) and len(obj) == n and not any(_batched(v, n) for v in obj):
            return obj[positions()]
        if isinstance(obj, list | tuple):
            return type(obj)(walk(v) for v in obj)
        return obj

    return walk(batch)

