"""``clipiq train TASK --config FILE [key=value ...] [--nproc N]``.

``--nproc N`` trains data-parallel on N local processes started by torch's own launcher (``torch.distributed.run``,
as ``torchrun --standalone --nproc_per_node N -m clipiq train ...`` would); a ``clipiq train`` started by torchrun
(WORLD_SIZE set) is one of those processes. See :mod:`clipiq.train.parallel`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from clipiq.cli.common import positive_int
from clipiq.core.config import load_config
from clipiq.core.device import resolve_device
from clipiq.train import TRAINING_TASKS, parallel

log = logging.getLogger(__name__)

#: The options a launched process gets back as given (flag, attribute); ``--no-resume`` and ``-v`` too, and
#: ``--nproc`` is the launcher's own.
PASSED_ON: tuple[tuple[str, str], ...] = (("--config", "config"), ("--run-dir", "run_dir"), ("--device", "device"),
                                          ("--shots", "shots"), ("--meta-init", "meta_init"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train a model from a YAML config (auto-resumes)",
                       description="Train from a config plus seed; key=value arguments override config keys "
                       "(nested with dots, e.g. train.steps=100). A run directory with last.safetensors is resumed.")
    p.add_argument("task", choices=TRAINING_TASKS.names(), help="what to train")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", type=Path, help="YAML experiment config")
    p.add_argument("--run-dir", type=Path, help="output folder (default runs/<task>/<config name>)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has a checkpoint")
    p.add_argument("--shots", type=int, metavar="K",
                   help="few-shot IQA tasks: k labelled training images per round (sets protocol.shots)")
    p.add_argument("--meta-init", metavar="CKPT",
                   help="tasks that start from a meta-learned initialisation (sets model.meta_init)")
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="data-parallel training on N local processes (gloo on CPU, NCCL with one GPU each; "
                   "train.batch_size is the total over them); ignored under torchrun, which starts its own")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train in this process, as one process of a torchrun job, or launch ``--nproc`` processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _run_worker(args)
    if args.nproc > 1:
        return _launch(args)
    summary = _train(args)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``clipiq`` arguments of a launched process: this command without ``--nproc``."""
    out = ["-v"] * int(getattr(args, "verbose", 0) or 0) + ["train", args.task]
    for flag, attr in PASSED_ON:
        value = getattr(args, attr)
        if value is not None:
            out += [flag, str(value)]
    if args.no_resume:
        out.append("--no-resume")
    return out + list(args.overrides)


def _launch(args: argparse.Namespace) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    # Share the CPU between the processes (torchrun would give each one thread); an explicit setting wins.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = None if "OMP_NUM_THREADS" in os.environ else str(max(1, cpus // args.nproc))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = threads
    log.info("launching %d processes (%s threads each)", args.nproc, os.environ["OMP_NUM_THREADS"])
    try:
        torchrun(parse_args(["--standalone", "--nproc_per_node", str(args.nproc), "-m", "clipiq",
                             *worker_argv(args)]))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        log.error("training process %d failed with exit code %s", rank, failure.exitcode)
        return failure.exitcode if failure.exitcode > 0 else 1
    finally:
        if threads is not None:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0


def _run_worker(args: argparse.Namespace) -> int:
    ctx, device = parallel.init_from_env(resolve_device(args.device))
    try:
        if not ctx.is_main:  # one voice: the other processes report only problems
            root = logging.getLogger()
            root.setLevel(max(root.getEffectiveLevel(), logging.WARNING))
        summary = _train(args, device)
        if ctx.is_main:
            print(json.dumps(summary, indent=1, default=str))
    finally:
        parallel.shutdown()
    return 0


def _train(args: argparse.Namespace, device: torch.device | None = None) -> dict[str, Any]:
    """Resolve the config, then hand over to the task's run() on ``device`` (default: ``--device``'s)."""
    mod = TRAINING_TASKS.get(args.task)
    cfg = load_config(args.config, args.overrides, defaults=mod.DEFAULTS)
    # Shortcut options set config keys directly (no YAML parsing of paths); a task without the key refuses them.
    for flag, (section, key), value in (("--shots", ("protocol", "shots"), args.shots),
                                        ("--meta-init", ("model", "meta_init"), args.meta_init)):
        if value is None:
            continue
        if not isinstance(cfg.get(section), dict) or key not in cfg[section]:
            raise ValueError(f"{flag}: task {args.task} has no {section}.{key} setting")
        if flag == "--shots" and value < 1:
            raise ValueError(f"--shots must be a positive number of images, got {value}")
        if flag == "--meta-init" and not Path(value).is_file():
            raise FileNotFoundError(f"--meta-init {value}: checkpoint file not found")
        cfg[section][key] = value
    run_dir = args.run_dir or Path("runs") / args.task / (args.config.stem if args.config else "default")
    return mod.run(cfg, run_dir, device or resolve_device(args.device), resume=not args.no_resume)
