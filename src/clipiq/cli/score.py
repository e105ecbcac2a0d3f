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

from clipiq.cli.common import add_folder_args, add_model_args, format_table, metric_options, positive_int
from clipiq.data.results import ResultWriter, plan_scoring, result_row, unique_inputs
from clipiq.data.sources import resolve_inputs
from clipiq.iqa import create_metric

log = logging.getLogger(__name__)

def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``score`` subcommand."""
    p = sub.add_parser("score", help="score images with a quality metric",
                       description="Score image files or folders; bad files get an error row, the run goes on.")
    p.add_argument("paths", nargs="+", help="image files, folders, globs, URIs, or CSV/Parquet manifests of paths")
    p.add_argument("--metric", default="clipiqa", help="metric name (see `clipiq metrics`)")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    add_folder_args(p)
    p.add_argument("-o", "--output", type=Path, help="write rows to .csv/.jsonl/.json/.parquet as they finish; a rerun "
                   "with the same file and settings skips what is already scored (other settings are refused)")
    p.add_argument("--attributes", default="", help="clipiqa: extra attribute outputs, comma list or 'all'")
    p.add_argument("--checkpoint", help="trained checkpoint, for metrics that need one")
    p.add_argument("--patch-stride", type=int, default=None,
                   help="clip-dqa: stride of the local-patch grid in pixels (default: the checkpoint's, 64)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra metric option (repeatable)")
    g = p.add_argument_group("scale-out (Ray Data; needs pip install 'clipiq[ray]')")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray Data pipeline with an actor pool (needs -o)")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto': the running one; default: start a local Ray)")
    g.add_argument("--actors", type=positive_int, default=1, help="scoring actors, each loads the model once")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs Ray reserves per actor (default 1)")
    g.add_argument("--threads-per-actor", type=positive_int, default=None,
                   help="torch threads per actor (default: its CPUs, rounded up)")
    g.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (e.g. 1, or 0.5 to share one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score everything; exit 0 when all were scored, 1 when some failed (or scored NaN/inf), 2 for usage errors."""
    options = metric_options(args)
    if args.batch_size < 1 or args.workers < 1:
        raise ValueError("--batch-size and --workers must be at least 1")
    if args.engine == "ray":
        return _score_on_ray(args, options)
    # One file named two ways (img.png, ./img.png, its absolute path) is one input, scored once.
    paths = unique_inputs(resolve_inputs(args.paths, recursive=args.recursive))
    if not paths:
        print("no images found in: " + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    # Taken before the model loads: a locked or foreign output file fails at once.
    with ResultWriter(args.output, flush_rows=args.batch_size) if args.output else contextlib.nullcontext() as writer:
        return _score(args, options, paths, writer)


def _score(args: argparse.Namespace, options: dict[str, Any], paths: list[str], writer: ResultWriter | None) -> int:
    metric = create_metric(args.metric, model=args.model, weights=args.weights, device=args.device,
                           precision=args.precision, batch_size=args.batch_size, **options)
    plan = plan_scoring(metric, args.precision, options, paths, writer)
    random_weights = bool(getattr(getattr(metric, "clip", None), "cfg", None) and metric.clip.cfg.random)
    base, todo, already = plan.base, plan.todo, plan.already
    if already:
        print(f"resuming: {already} of {len(paths)} images already scored in {args.output}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    failed = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"scoring ({metric.name})", unit="img", disable=None, file=sys.stderr)
    try:
        for result in metric.iter_results(todo, batch_size=args.batch_size, workers=args.workers,
                                          max_pixels=args.max_pixels):
            row = result_row(result, base)
            failed += bool(row["error"])
            rows.append(row)
            if writer:
                writer.add(row)
            bar.update(1)
    finally:
        bar.close()
        if writer:
            writer.flush()
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


def _score_on_ray(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``--engine ray``: the same rows in the same output file formats, from a Ray Data pipeline."""
    from clipiq.distributed import score

    if not args.output:
        raise ValueError("--engine ray writes its rows to a file: give -o OUT (.parquet, .csv, .jsonl or .json)")
    if args.device not in (None, "cpu", "cuda"):
        raise ValueError(f"--engine ray places actors itself: --device must be cpu or cuda, got {args.device}")
    gpus = args.num_gpus if args.device != "cpu" else 0.0
    if args.device == "cuda" and not gpus:
        gpus = 1.0
    summary = score(args.paths, args.output, metric=args.metric, model=args.model, weights=args.weights,
                    precision=args.precision, options=options, batch_size=args.batch_size, actors=args.actors,
                    cpus_per_actor=args.cpus_per_actor, threads_per_actor=args.threads_per_actor,
                    gpus_per_actor=gpus, address=args.address, recursive=args.recursive, max_pixels=args.max_pixels)
    if summary.already:
        print(f"resumed: {summary.already} of {summary.inputs} images were already scored in {args.output}",
              file=sys.stderr)
    done = summary.scored + summary.failed
    speed = f", {summary.images_per_second:.1f} img/s" if done else ""
    print(f"scored {summary.already + summary.scored}/{summary.inputs} images, {summary.failed} failed{speed} "
          f"(ray, {args.actors} actor{'s' if args.actors > 1 else ''}); results in {args.output}", file=sys.stderr)
    return 1 if summary.failed else 0
