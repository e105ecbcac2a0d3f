"""``clipiq train TASK --config FILE [key=value ...]``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from clipiq.core.config import load_config
from clipiq.core.device import resolve_device
from clipiq.train import TRAINING_TASKS

log = logging.getLogger(__name__)


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, then hand over to the task's run()."""
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
    device = resolve_device(args.device)
    summary = mod.run(cfg, run_dir, device, resume=not args.no_resume)
    print(json.dumps(summary, indent=1, default=str))
    return 0
