"""Pieces shared by CLI subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from clipiq.core.config import parse_value
from clipiq.core.errors import ConfigError
from clipiq.data.io import DEFAULT_MAX_PIXELS


def add_model_args(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """--model, --weights, --device, --precision."""
    p.add_argument("--model", default=default_model,
                   help="CLIP weights or architecture name (see `clipiq models`); default: the metric's own")
    p.add_argument("--weights", help="local weights file or Hugging Face folder (no download)")
    add_device_args(p)


def add_folder_args(p: argparse.ArgumentParser) -> None:
    """--workers, --recursive, --max-pixels: how a command reads a folder of images."""
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads (default 2)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS})")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device, --precision."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default), bf16 (CPU or CUDA), fp16 (CUDA only)")


# Namespace entries that are not flags a user could mean with --option KEY=VALUE.
_NOT_FLAGS = {"func", "command", "verbose", "option", "paths"}


def metric_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options for create_metric from --attributes, --checkpoint, --patch-stride and --option KEY=VALUE.

    An --option without ``=``, with an empty key, or naming one of the command's own flags (``batch_size``:
    use --batch-size) is a ConfigError, which the CLI reports as a usage error.
    """
    opts: dict[str, Any] = {}
    if getattr(args, "attributes", ""):
        opts["attributes"] = args.attributes
    if getattr(args, "checkpoint", None):
        opts["checkpoint"] = args.checkpoint
    if getattr(args, "patch_stride", None) is not None:
        opts["patch_stride"] = args.patch_stride
    flags = set(vars(args)) - _NOT_FLAGS
    for item in getattr(args, "option", []) or []:
        k, eq, v = item.partition("=")
        k = k.strip().replace("-", "_")
        if not eq or not k:
            raise ConfigError(f"--option expects KEY=VALUE, got {item!r}")
        if k in flags:
            raise ConfigError(f"--option {item!r}: {k} has its own flag, --{k.replace('_', '-')}")
        opts[k] = parse_value(v)
    return opts


def make_restorer(name: str, weights: str | None, device: str | None, precision: str,
                  options: dict[str, Any]) -> Any:
    """create_restorer for the CLI: an option value of the wrong type is a ConfigError naming it, not a traceback."""
    from clipiq.restore import create_restorer

    try:
        return create_restorer(name, weights=weights, device=device, precision=precision, **options)
    except TypeError as e:
        # The options are the user's --option values: restorers check each and raise TypeError naming it.
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
        raise ConfigError(f"restorer {name}: {e} (options given: {given})") from e


def positive_int(text: str) -> int:
    """An argparse type for a count that must be at least 1 (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    def cell(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep] + ["  ".join(v.ljust(w) for v, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(out)
