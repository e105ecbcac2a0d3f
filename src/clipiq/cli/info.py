"""``clipiq metrics`` and ``clipiq models``: what is available and what is cached."""

from __future__ import annotations

import argparse

from clipiq.cli.common import format_table
from clipiq.clip import weights as wreg
from clipiq.clip.config import ARCHITECTURES
from clipiq.iqa import get_metric_spec, list_metrics


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``metrics`` and ``models`` subcommands."""
    p = sub.add_parser("metrics", help="list quality metrics")
    p.set_defaults(func=run_metrics)
    p = sub.add_parser("models", help="list CLIP architectures and named weights (and whether cached)")
    p.set_defaults(func=run_models)


def run_metrics(args: argparse.Namespace) -> int:
    """Print the metric registry from the specs (imports no method module)."""
    rows = [
        {
            "metric": s.name,
            "better": "lower" if s.lower_better else "higher",
            "range": f"{s.score_range[0]:g}..{s.score_range[1]:g}",
            "default model": s.default_model or ("the checkpoint's" if s.needs_checkpoint else ""),
            "checkpoint": "required" if s.needs_checkpoint else "",
            "description": s.description,
        }
        for s in map(get_metric_spec, list_metrics())
    ]
    print(format_table(rows, list(rows[0])))
    return 0


def run_models(args: argparse.Namespace) -> int:
    """Print architectures and the weights registry."""
    arch_rows = []
    for a in ARCHITECTURES.values():
        n = a.vision
        arch_rows.append({
            "architecture": a.name + (" (RANDOM weights, tests only)" if a.random else ""),
            "image": f"{n.image_size}px patch {n.patch_size}",
            "vision": f"{n.layers}x{n.width}",
            "text": f"{a.text.layers}x{a.text.width}",
            "embed": str(a.embed_dim),
        })
    print(format_table(arch_rows, list(arch_rows[0])))
    print()
    w_rows = [
        {
            "weights": w.name,
            "architecture": w.arch,
            "source": w.source,
            "sha256": (w.sha256 or "unverified")[:12],
            "cached": "yes" if wreg.is_cached(w) else "no",
        }
        for w in map(wreg.get_weights, wreg.list_weights())
    ]
    print(format_table(w_rows, list(w_rows[0])))
    print(f"\ncache: {wreg.cache_dir()} (set CLIPIQ_HOME to move it)")
    return 0
