"""``clipiq score``: batch scoring that never dies on one bad file and never loses finished rows."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipiq.cli.common import add_folder_args, add_model_args, format_table, metric_options
from clipiq.cli.results import FINGERPRINT, ResultWriter, input_key, result_row, run_record, unique_inputs
from clipiq.data.io import list_images
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
    add_folder_args(p)
    p.add_argument("-o", "--output", type=Path, help="write rows to .csv/.jsonl/.json as they finish; a rerun "
                   "with the same file and settings skips what is already scored (other settings are refused)")
    p.add_argument("--attributes", default="", help="clipiqa: extra attribute outputs, comma list or 'all'")
    p.add_argument("--checkpoint", help="trained checkpoint, for metrics that need one")
    p.add_argument("--patch-stride", type=int, default=None,
                   help="clip-dqa: stride of the local-patch grid in pixels (default: the checkpoint's, 64)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra metric option (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score everything; exit 0 when all were scored, 1 when some failed (or scored NaN/inf), 2 for usage errors."""
    options = metric_options(args)
    if args.batch_size < 1 or args.workers < 1:
        raise ValueError("--batch-size and --workers must be at least 1")
    # One file named two ways (img.png, ./img.png, its absolute path) is one input, scored once.
    paths = unique_inputs(list_images(args.paths, recursive=args.recursive))
    if not paths:
        print("no images found in: " + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    # Taken before the model loads: a locked or foreign output file fails at once.
    with ResultWriter(args.output) if args.output else contextlib.nullcontext() as writer:
        return _score(args, options, paths, writer)


def _score(args: argparse.Namespace, options: dict[str, Any], paths: list[Path], writer: ResultWriter | None) -> int:
    metric = create_metric(args.metric, model=args.model, weights=args.weights, device=args.device,
                           precision=args.precision, batch_size=args.batch_size, **options)
    record = run_record(metric, args.precision, options)
    random_weights = bool(getattr(getattr(metric, "clip", None), "cfg", None) and metric.clip.cfg.random)
    base = {"metric": record["metric"], "model": record["model"]}
    columns = ["path", *metric.output_names, "error", "note", "metric", "model", FINGERPRINT]

    keys = [input_key(p) for p in paths]
    done = writer.begin(record, columns, keys) if writer else set()
    todo = [p for p, k in zip(paths, keys) if k not in done]
    already = len(paths) - len(todo)
    if already:
        print(f"resuming: {already} of {len(paths)} images already scored in {args.output}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    failed = 0
    t0 = last_write = time.perf_counter()
    unwritten: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc=f"scoring ({metric.name})", unit="img", disable=None, file=sys.stderr)
    try:
        for result in metric.iter_results(todo, batch_size=args.batch_size, workers=args.workers,
                                          max_pixels=args.max_pixels):
            row = result_row(result, base)
            failed += bool(row["error"])
            rows.append(row)
            unwritten.append(row)
            bar.update(1)
            # One fsync per batch's worth of rows, not per image; an interrupted run loses at most that many.
            if writer and (len(unwritten) >= args.batch_size or time.perf_counter() - last_write > WRITE_EVERY_S):
                writer.write(unwritten)
                unwritten, last_write = [], time.perf_counter()
    finally:
        bar.close()
        if writer and unwritten:
            writer.write(unwritten)
    dt = time.perf_counter() - t0
    if not args.output:
        order = {str(p): i for i, p in enumerate(paths)}
        rows.sort(key=lambda r: order.get(str(r.get("path")), len(order)))
        shown = ["path", *metric.output_names, "error"] + (["note"] if any(r.get("note") for r in rows) else [])
        print(format_table(rows, shown))
    if random_weights:
        print(f"NOTE: these scores come from {metric.clip.weights_name}: RANDOM weights, so they mean nothing "
              "(for tests and smoke runs only).")
    # This run's inputs only: rows of other inputs already in the file are not counted.
    scored = already + sum(1 for r in rows if not r["error"])
    speed = f", {len(todo) / dt:.1f} img/s" if todo and dt > 0 else ""
    print(f"scored {scored}/{len(paths)} images, {failed} failed{speed}"
          + (f"; results in {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if failed else 0
