"""``clipiq score``: batch scoring that never dies on one bad file and never loses finished rows."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipiq.cli.common import add_model_args, format_table, metric_options
from clipiq.cli.results import ResultWriter, completed_paths, read_results, result_row
from clipiq.data.io import DEFAULT_MAX_PIXELS, list_images
from clipiq.iqa import create_metric

log = logging.getLogger(__name__)

# Rows are written (and fsynced) a batch's worth at a time, and no later than this once more rows arrive.
WRITE_EVERY_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``score`` subcommand."""
    p = sub.add_parser("score", help="score images with a quality metric",
                       description="Score image files or folders; bad files get an error row, the run goes on.")
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    p.add_argument("--metric", default="clipiqa", help="metric name (see `clipiq metrics`)")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads (default 2)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("-o", "--output", type=Path, help="write rows to .csv/.jsonl/.json as they finish; "
                   "a rerun with the same file skips what is already scored")
    p.add_argument("--attributes", default="", help="clipiqa: extra attribute outputs, comma list or 'all'")
    p.add_argument("--checkpoint", help="trained checkpoint, for metrics that need one")
    p.add_argument("--patch-stride", type=int, default=None,
                   help="clip-dqa: stride of the local-patch grid in pixels (default: the checkpoint's, 64)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra metric option (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score everything; exit 0 when all were scored, 1 when some failed."""
    options = metric_options(args)
    if args.batch_size < 1 or args.workers < 1:
        raise ValueError("--batch-size and --workers must be at least 1")
    paths = list(list_images(args.paths, recursive=args.recursive))
    if not paths:
        print("no images found in: " + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    metric = create_metric(args.metric, model=args.model, weights=args.weights, device=args.device,
                           precision=args.precision, batch_size=args.batch_size, **options)
    model_name = getattr(getattr(metric, "clip", None), "weights_name", None) or args.model or ""
    random_weights = bool(getattr(getattr(metric, "clip", None), "cfg", None) and metric.clip.cfg.random)
    # A trained checkpoint is part of what produced a score, so resuming with another one is refused.
    base = {"metric": metric.name, "model": getattr(metric, "model_id", None) or args.model or ""}
    columns = ["path", *metric.output_names, "error", "metric", "model"]

    previous = read_results(args.output) if args.output else []
    others = {(r.get("metric"), r.get("model")) for r in previous} - {(base["metric"], base["model"])}
    if others:
        raise ValueError(f"{args.output} already holds scores from {sorted(others)}; "
                         f"use another output file for metric {base['metric']} with model {base['model']}")
    done = completed_paths(previous)
    todo = [p for p in paths if str(p) not in done]
    if done:
        print(f"resuming: {len(paths) - len(todo)} of {len(paths)} images already scored in {args.output}",
              file=sys.stderr)
    writer = ResultWriter(args.output, columns, previous) if args.output else None
    rows: list[dict[str, Any]] = [r for r in previous if str(r.get("path")) in done]
    failed = 0
    t0 = last_write = time.perf_counter()
    unwritten: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc=f"scoring ({metric.name})", unit="img", disable=None, file=sys.stderr)
    try:
        for result in metric.iter_results(todo, batch_size=args.batch_size, workers=args.workers,
                                          max_pixels=args.max_pixels):
            row = result_row(result, base)
            failed += not result.ok
            rows.append(row)
            unwritten.append(row)
            bar.update(1)
            # One fsync per batch's worth of rows, not per image; an interrupted run loses at most that many.
            if writer and (len(unwritten) >= args.batch_size or time.perf_counter() - last_write > WRITE_EVERY_S):
                writer.write(unwritten)
                unwritten, last_write = [], time.perf_counter()
    finally:
        bar.close()
        if writer:
            if unwritten:
                writer.write(unwritten)
            writer.close()
    dt = time.perf_counter() - t0
    if not args.output:
        order = {str(p): i for i, p in enumerate(paths)}
        rows.sort(key=lambda r: order.get(str(r.get("path")), len(order)))
        print(format_table(rows, columns[: len(metric.output_names) + 2]))
    if random_weights:
        print(f"NOTE: these scores come from {model_name}: RANDOM weights, so they mean nothing "
              "(for tests and smoke runs only).")
    scored = sum(1 for r in rows if not r.get("error"))
    speed = f", {len(todo) / dt:.1f} img/s" if todo and dt > 0 else ""
    print(f"scored {scored}/{len(paths)} images, {failed} failed{speed}"
          + (f"; results in {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if failed else 0
