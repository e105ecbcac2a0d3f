"""Pieces shared by CLI subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from clipiq.core.config import parse_value


def add_model_args(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """--model, --weights, --device, --precision."""
    p.add_argument("--model", default=default_model,
                   help="CLIP weights or architecture name (see `clipiq models`); default: the metric's own")
    p.add_argument("--weights", help="local weights file or Hugging Face folder (no download)")
    add_device_args(p)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device, --precision."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default), bf16 (CPU or CUDA), fp16 (CUDA only)")


def metric_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options for create_metric from --attributes, --checkpoint, --patch-stride and --option KEY=VALUE."""
    opts: dict[str, Any] = {}
    if getattr(args, "attributes", ""):
        opts["attributes"] = args.attributes
    if getattr(args, "checkpoint", None):
        opts["checkpoint"] = args.checkpoint
    if getattr(args, "patch_stride", None) is not None:
        opts["patch_stride"] = args.patch_stride
    for item in getattr(args, "option", []) or []:
        if "=" not in item:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = parse_value(v)
    return opts


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
