"""``clipiq explain``: a static HTML report of why images score as they do, streamed and resumable.

``REPORT/explain.json`` records what makes the pages what they are (metric, backbone, segmenter, describer,
restorer, size); ``REPORT/explain.jsonl`` holds one line per finished input (its page and index row, or its
error), appended as each finishes. A rerun with the same settings skips inputs already explained, retries
the failed ones and rewrites ``index.html``; other settings are refused. A page file the run did not write is
never overwritten: that input gets an error row instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipiq.cli.common import add_folder_args, add_model_args, metric_options, positive_int
from clipiq.core.files import atomic_write, exclusive_lock
from clipiq.data.io import list_images
from clipiq.data.results import input_key, unique_inputs
from clipiq.data.runner import BatchRunner

MANIFEST = "explain.json"
LOG = "explain.jsonl"
LOCK = ".explain.lock"
MANIFEST_VERSION = 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain`` subcommand."""
    p = sub.add_parser("explain", help="write an HTML report explaining image quality (maps, regions, restoration)",
                       description="Explain image files or folders: score, attributes, quality and degradation "
                                   "maps, regions worst first, optionally a restoration; one page per image and "
                                   "an index.html. Bad files get an error row; a rerun resumes.")
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder (created; a rerun resumes)")
    p.add_argument("--metric", default="clipiqa", help="metric for the score (see `clipiq metrics`)")
    p.add_argument("--checkpoint", help="trained checkpoint, for metrics that need one")
    add_model_args(p)
    p.add_argument("--segmenter", default="slic", help="region segmenter: slic (default), felzenszwalb, grid, sam")
    p.add_argument("--describer", default="clip", help="region describer: clip (default), mllm, or none")
    p.add_argument("--restore", default=None, metavar="RESTORER",
                   help="also restore each image with this restorer (e.g. dap-led, cdasr) and show both")
    p.add_argument("--restore-option", action="append", default=[], metavar="KEY=VALUE",
                   help="restorer option (repeatable), e.g. scale=2")
    p.add_argument("--max-side", type=positive_int, default=None,
                   help="explain a copy at most this many pixels on its longer side (default 768)")
    p.add_argument("--worst-best", type=int, default=6, help="images in the worst and best galleries (default 6)")
    add_folder_args(p)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra metric option (repeatable)")
    p.set_defaults(func=run)


def _options(items: list[str]) -> dict[str, Any]:
    return metric_options(argparse.Namespace(option=items))


def _read_log(path: Path) -> dict[str, dict[str, Any]]:
    """The finished lines by input key (a torn last line from an interrupted run is dropped)."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "key" in row:
            done[row["key"]] = row
    return done


def run(args: argparse.Namespace) -> int:
    """Explain everything; exit 0 when all were explained, 1 when some failed, 2 for usage errors."""
    # Imported here: listing commands (`clipiq --help`, `clipiq metrics`) must not load the metrics and segmenters.
    from clipiq.explain import DEFAULT_MAX_SIDE, Explainer

    if args.max_side is None:
        args.max_side = DEFAULT_MAX_SIDE
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    out: Path = args.output
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} exists and is not a folder")
    paths = unique_inputs(list_images(args.paths, recursive=args.recursive))
    if not paths:
        print("no images found in: " + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    metric_opts = _options(args.option)
    if args.checkpoint:
        metric_opts["checkpoint"] = args.checkpoint
    restore_opts = _options(args.restore_option)
    describer = None if str(args.describer).lower() == "none" else args.describer
    record = json.loads(json.dumps({
        "tool": "clipiq explain", "version": MANIFEST_VERSION, "metric": args.metric, "model": args.model,
        "weights": args.weights, "metric_options": metric_opts, "segmenter": args.segmenter,
        "describer": describer, "restore": args.restore, "restore_options": restore_opts,
        "max_side": args.max_side}, default=str))
    out.mkdir(parents=True, exist_ok=True)
    # One run per report folder at a time: a second is refused rather than racing for the same files.
    with exclusive_lock(out / LOCK, str(out)):
        stored = json.loads((out / MANIFEST).read_text(encoding="utf-8")) if (out / MANIFEST).exists() else None
        if stored is None and (out / "index.html").exists():
            raise ValueError(f"{out / 'index.html'} exists and was not written by clipiq explain; use another folder")
        if stored is not None and stored != record:
            raise ValueError(f"{out} holds a report made with {json.dumps(stored)}; use another folder for "
                             f"{json.dumps(record)}")
        atomic_write(out / MANIFEST, json.dumps(record, indent=1) + "\n")
        explainer = Explainer(args.metric, segmenter=args.segmenter, describer=describer, restore=args.restore,
                              restore_options=restore_opts or None, device=args.device, max_side=args.max_side,
                              model=args.model, metric_options={**metric_opts, **({"weights": args.weights}
                                                                                  if args.weights else {})})
        return _explain(args, out, paths, explainer)


def _explain(args: argparse.Namespace, out: Path, paths: list[Path], explainer: Any) -> int:
    from clipiq.report import IndexEntry, index_entry, write_image_page, write_index
    from clipiq.report.checks import unique_names

    log_path = out / LOG
    done = _read_log(log_path)
    keys = [input_key(p) for p in paths]
    # Page names: kept for inputs already in the report; new ones unique against every name taken.
    taken = [row["name"] for row in done.values() if row.get("name")]
    todo = [(p, k) for p, k in zip(paths, keys) if k not in done or done[k].get("error")]
    fresh = [p for p, _ in todo]
    new_names = unique_names([str(p) for p in fresh], reserved=("index", *taken))
    name_of = {k: done.get(k, {}).get("name") or n for (_, k), n in zip(todo, new_names)}
    skipped = len(paths) - len(fresh)
    if skipped:
        print(f"resuming: {skipped} of {len(paths)} images already explained in {out}", file=sys.stderr)

    def process(batch: list[Any]) -> list[Any]:
        return [explainer(image) for image in batch]

    runner = BatchRunner(process, batch_size=1, workers=args.workers, max_pixels=args.max_pixels)
    t0 = time.perf_counter()
    with log_path.open("a", encoding="utf-8") as log, \
            tqdm(total=len(fresh), desc=f"explaining ({args.metric})", unit="img", disable=None,
                 file=sys.stderr) as bar:
        for result in runner.run(fresh):
            src, key = todo[result.index]
            name = name_of[key]
            row: dict[str, Any] = {"key": key, "source": str(src), "name": name, "error": ""}
            ours = done.get(key, {}).get("written") == name  # this command wrote that page before
            if ours:  # and it stays ours whatever happens now
                row["written"] = name
            try:
                ex = result.unwrap()
                ex.source = str(src)
                for mine in (out / f"{name}.html", out / f"{name}_files"):
                    if mine.exists() and not ours:
                        raise FileExistsError(f"{mine} exists and was not written by clipiq explain; not overwritten")
                write_image_page(ex, out, name, index_href="index.html")
                row["written"] = name
                row["entry"] = dataclasses.asdict(index_entry(ex, name))
            except Exception as e:  # one bad image is a row, never the end of the run
                row["error"] = str(e) or type(e).__name__
            log.write(json.dumps(row) + "\n")
            log.flush()
            os.fsync(log.fileno())
            done[key] = row
            bar.update(1)
    dt = time.perf_counter() - t0
    rows = [done[k] for k in keys if k in done]
    entries = [IndexEntry(**r["entry"]) for r in rows if not r.get("error") and r.get("entry")]
    failures = [(r["source"], r["error"]) for r in rows if r.get("error")]
    index = write_index(entries, out, failures=failures, worst_best_k=max(0, args.worst_best))
    speed = f", {len(fresh) / dt:.2f} img/s" if fresh and dt > 0 else ""
    print(f"explained {len(entries)}/{len(paths)} images ({skipped} already done), {len(failures)} failed{speed}; "
          f"report: {index}", file=sys.stderr)
    return 1 if failures else 0
