"""``clipiq restore``: restore image files into a folder, resumably, never overwriting a file it did not write.

Output names mirror the inputs: ``OUT/<path under the input folder>.png`` for folders, ``OUT/<stem>.png``
for files given one by one. Before any work, the run is refused (exit 2) when OUT is an input folder (or
inside one given with ``-r``), when an output path is an input path, or when two inputs would get the same
output.

``OUT/restore.json`` records what makes the images what they are: method, weights, precision and the
method's options (run options such as ``--tile``, ``memory_budget`` and ``--batch-size`` may change between
runs). ``OUT/restore_log.csv`` gets one row per processed input (``input,output,status,error``), appended
and flushed as results finish. A rerun with the same record skips every input whose output the log lists
as written and that still exists, and retries the rest; a rerun with another record is refused (use
another folder). An existing output the log does not list was not written by this tool and is never
replaced: that input fails with a row saying so. Exit code: 0 when every input is restored (or already
was), 1 when some failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipiq.cli.common import (
    add_device_args,
    add_folder_args,
    format_table,
    make_restorer,
    metric_options,
    positive_int,
)
from clipiq.core.files import atomic_write, csv_cell, csv_uncell, exclusive_lock
from clipiq.core.hub import sha256_file
from clipiq.data.io import list_images, save_image
from clipiq.restore import RUN_OPTIONS, get_restorer_spec, list_restorers

MANIFEST = "restore.json"
LOG = "restore_log.csv"
LOCK = ".restore.lock"
LOG_COLUMNS = ("input", "output", "status", "error")
# Bump when the manifest's meaning changes, so an old folder is not taken for a finished one.
MANIFEST_VERSION = 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``restore`` and ``restorers`` subcommands."""
    p = sub.add_parser("restore", help="restore images with a restoration method into a folder",
                       description="Restore image files or folders into OUT_DIR as PNG (names mirror the "
                       "inputs); resumable, never overwrites an input or a file it did not write.")
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    p.add_argument("--method", required=True, help="restorer name (see `clipiq restorers`)")
    p.add_argument("-o", "--out-dir", type=Path, required=True, help="output folder (not an input folder)")
    p.add_argument("--weights", help="weights file, for restorers that take weights")
    add_device_args(p)
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in pixels for large images (default: from the memory budget; 0: never tile)")
    p.add_argument("--scale", type=positive_int, default=None,
                   help="upscaling factor of restorers that take one (cdasr: 2, 3, 4, 8 or 16; x8/x16 need "
                        "--weights); same as --option scale=N")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="restorer option (repeatable), e.g. omega=0.8 or memory_budget=2048 (MiB)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    add_folder_args(p)
    p.set_defaults(func=run)
    p = sub.add_parser("restorers", help="list restoration methods")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    """Print the restorer registry."""
    rows = [{"restorer": s.name, "task": s.task, "scale": s.scale, "tileable": "yes" if s.tileable else "no",
             "weights": "yes" if s.has_weights else "", "description": s.description}
            for s in map(get_restorer_spec, list_restorers())]
    print(format_table(rows, list(rows[0])))
    return 0


def plan_outputs(paths: list[str | Path], out_dir: Path, recursive: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) pairs with mirrored names; raises ValueError for any plan that could overwrite an input."""
    out_res = out_dir.resolve()
    jobs: list[tuple[Path, Path]] = []
    for item in map(Path, paths):
        if item.is_dir():
            here = item.resolve()
            if here == out_res:
                raise ValueError(f"the output folder {out_dir} is the input folder {item}; choose another folder")
            if recursive and here in out_res.parents:
                raise ValueError(f"the output folder {out_dir} is inside the input folder {item} given with -r; "
                                 "a rerun would restore the outputs; choose a folder outside it")
            jobs.extend((q, out_dir / q.relative_to(item).with_suffix(".png"))
                        for q in list_images([item], recursive=recursive))
        else:
            jobs.append((item, out_dir / f"{item.stem}.png"))
    inputs = {src.resolve(): src for src, _ in jobs}
    holder = next((src for res, src in inputs.items() if res.parent == out_res), None)
    if holder is not None:
        raise ValueError(f"the output folder {out_dir} holds the input {holder}; choose another folder")
    claimed: dict[Path, Path] = {}
    for src, out in jobs:
        key = out.resolve()
        if key in inputs:
            raise ValueError(f"the output {out} of {src} would overwrite the input {inputs[key]}; "
                             "choose another output folder")
        if key in claimed and claimed[key] != src:
            raise ValueError(f"{claimed[key]} and {src} would both be written to {out}; restore them separately")
        claimed[key] = src
    return jobs


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _written(out_dir: Path) -> set[str]:
    """Outputs (relative to ``out_dir``) that the log lists as written by this tool."""
    log = out_dir / LOG
    if not log.is_file():
        return set()
    with log.open(encoding="utf-8", newline="") as f:
        return {csv_uncell(r["output"]) for r in csv.DictReader(f) if r.get("status") == "ok" and r.get("output")}


def _save_new(image: Any, out: Path) -> None:
    """Write a PNG that is not there yet (save_image writes through a fresh temporary file)."""
    if out.exists():  # appeared since the run was planned: not ours to replace
        raise FileExistsError(f"{out} appeared during the run; not overwritten")
    save_image(image, out)


class _Log:
    """The append-only run log: one flushed CSV row per processed input."""

    def __init__(self, path: Path):
        new = not path.is_file() or path.stat().st_size == 0
        self._fh = path.open("a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=LOG_COLUMNS)
        if new:
            self._csv.writeheader()

    def row(self, source: Path, output: str, error: str = "") -> None:
        row = {"input": str(source), "output": output, "status": "failed" if error else "ok", "error": error}
        self._csv.writerow({k: csv_cell(v) for k, v in row.items()})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def run(args: argparse.Namespace) -> int:
    """Restore everything; exit 0 when all were restored, 1 when some failed."""
    if args.batch_size < 1 or args.workers < 1:
        raise ValueError("--batch-size and --workers must be at least 1")
    out_dir: Path = args.out_dir
    jobs = plan_outputs(args.paths, out_dir, recursive=args.recursive)
    if not jobs:
        print("no images found in: " + " ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    options = metric_options(args)
    if args.tile is not None:
        options["tile"] = args.tile
    if args.scale is not None:
        if "scale" in options and options["scale"] != args.scale:
            raise ValueError(f"--scale {args.scale} and --option scale={options['scale']} disagree; give one")
        options["scale"] = args.scale
    spec = get_restorer_spec(args.method)
    # What makes the images what they are; run options only change how (and how fast) they are made.
    record = {"tool": "clipiq restore", "version": MANIFEST_VERSION, "method": spec.name, "weights": args.weights,
              "precision": args.precision,
              "options": {k: v for k, v in sorted(options.items()) if k not in RUN_OPTIONS}}
    restorer = make_restorer(spec.name, args.weights, args.device, args.precision, options)
    # The file actually used (a restorer's shipped weights when none were given), by content: a resumed run
    # must not mix outputs of two different weights files of the same name.
    used = getattr(restorer, "weights", None) or args.weights
    record["weights_sha256"] = sha256_file(used) if used else None
    record = json.loads(json.dumps(record))
    stored = _read_json(out_dir / MANIFEST)
    if stored is not None and stored != record:
        raise ValueError(f"{out_dir} holds images restored with {json.dumps(stored)}; use another output folder "
                         f"for {json.dumps(record)}")
    # One run per output folder at a time: a second is refused rather than racing for the same files.
    with exclusive_lock(out_dir / LOCK, str(out_dir)):
        return _restore(args, out_dir, jobs, spec.name, restorer, record)


def _restore(args: argparse.Namespace, out_dir: Path, jobs: list[tuple[Path, Path]], method: str,
             restorer: Any, record: dict[str, Any]) -> int:
    atomic_write(out_dir / MANIFEST, json.dumps(record, indent=1) + "\n")

    written = _written(out_dir)
    todo: list[tuple[Path, Path]] = []
    failed = skipped = 0
    log = _Log(out_dir / LOG)
    try:
        for src, out in jobs:
            rel = out.relative_to(out_dir).as_posix()
            if out.exists() and rel in written:
                skipped += 1
            elif out.exists():
                failed += 1
                log.row(src, rel, f"{out} exists and was not written by clipiq restore; not overwritten")
            else:
                todo.append((src, out))
        if skipped:
            print(f"resuming: {skipped} of {len(jobs)} images already restored in {out_dir}", file=sys.stderr)
        t0 = time.perf_counter()
        with tqdm(total=len(todo), desc=f"restoring ({method})", unit="img", disable=None,
                  file=sys.stderr) as bar:
            results = restorer.iter_results([src for src, _ in todo], batch_size=args.batch_size,
                                            workers=args.workers, max_pixels=args.max_pixels)
            for result in results:
                src, out = todo[result.index]
                error = result.error or ""
                if result.ok:
                    try:
                        _save_new(result.output, out)
                    except OSError as e:
                        error = f"could not write {out}: {e}"
                failed += bool(error)
                log.row(src, out.relative_to(out_dir).as_posix(), error)
                bar.update(1)
        dt = time.perf_counter() - t0
    finally:
        log.close()
    done = len(jobs) - failed
    speed = f", {len(todo) / dt:.2f} img/s" if todo and dt > 0 else ""
    print(f"restored {done}/{len(jobs)} images ({skipped} already done), {failed} failed{speed}; "
          f"outputs in {out_dir}, log in {out_dir / LOG}", file=sys.stderr)
    return 1 if failed else 0
