"""``clipiq bench``: correlation against labels, or the synthetic ranking benchmark on clean photos."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm import tqdm

from clipiq.cli.common import add_model_args, format_table, make_restorer, metric_options
from clipiq.core.files import atomic_write, csv_text
from clipiq.core.registry import Registry
from clipiq.data.io import list_images
from clipiq.data.results import input_key, result_row
from clipiq.eval import correlation_report, psnr, ssim
from clipiq.iqa import create_metric
from clipiq.synth.ranking import synthetic_ranking

log = logging.getLogger(__name__)

# Full-reference anchors for the synthetic benchmark (they see the clean photo).
FULL_REFERENCE: Registry[Callable[..., Tensor]] = Registry("full-reference metric")
FULL_REFERENCE.register("psnr", psnr)
FULL_REFERENCE.register("ssim", ssim)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser(
        "bench", help="correlation with labels (SRCC/KRCC/PLCC/RMSE), or the synthetic ranking benchmark",
        description="With --labels: score the labelled images and report SRCC, KRCC, PLCC and RMSE (raw and "
        "after the 4-parameter logistic mapping) with a bootstrap CI for SRCC. With --synthetic: degrade clean "
        "photos at levels 1-5 and report, per degradation type, the SRCC between score and severity. With "
        "--restore NAME --pairs DIR: restore the degraded images and report PSNR and SSIM on Y (border cropped), "
        "seconds and peak memory per megapixel.")
    p.add_argument("--metric", default="clipiqa", help="metric name; with --synthetic also psnr or ssim")
    p.add_argument("--labels", type=Path, help="label file (generic CSV or an official IQA label file)")
    p.add_argument("--root", type=Path, help="image root for the paths in --labels")
    p.add_argument("--format", default=None, help="label format (default: detected)")
    p.add_argument("--synthetic", type=Path, metavar="PHOTOS_DIR", help="folder of clean photos")
    p.add_argument("--degradations", help="comma list of degradation types (default: all)")
    p.add_argument("--levels", default="1,2,3,4,5", help="severity levels (default 1,2,3,4,5)")
    p.add_argument("--crop", type=int, default=256, help="synthetic: centre crop of each photo (default 256)")
    p.add_argument("--max-photos", type=int, help="synthetic: use only the first N photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the SRCC CI")
    p.add_argument("--restore", metavar="RESTORER", help="benchmark a restorer on --pairs (see `clipiq restorers`)")
    p.add_argument("--pairs", type=Path, metavar="DIR",
                   help="restore: degraded/target pairs (Set5/Set14 *_SRF_<scale>_LR/HR or DIV2K layout)")
    p.add_argument("--crop-border", type=int, default=None,
                   help="restore: pixels cut from each side before PSNR/SSIM on Y (default: the restorer's scale)")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--checkpoint", help="trained checkpoint, for metrics that need one")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", "-o", type=Path, help="write per-image scores (CSV)")
    p.add_argument("--json", type=Path, help="write the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the labelled, synthetic or restoration benchmark."""
    if args.restore or args.pairs:
        if not (args.restore and args.pairs) or args.labels or args.synthetic:
            raise ValueError("a restoration benchmark takes --restore NAME with --pairs DIR (and no --labels "
                             "or --synthetic)")
        return _restoration(args)
    if bool(args.labels) == bool(args.synthetic):
        raise ValueError("give exactly one of --labels CSV (with --root) or --synthetic PHOTOS_DIR")
    return _synthetic(args) if args.synthetic else _labelled(args)


def _labelled(args: argparse.Namespace) -> int:
    from clipiq.data.labels import read_labels

    labels = read_labels(args.labels, image_root=args.root, format=args.format)
    _refuse_duplicates(args.labels, [s.path for s in labels])
    metric = create_metric(args.metric, model=args.model, weights=args.weights, device=args.device,
                           precision=args.precision, batch_size=args.batch_size, **metric_options(args))
    paths = [s.path for s in labels]
    target = {str(s.path): s.score for s in labels}
    by_index = {}
    with tqdm(total=len(paths), desc="bench", unit="img", disable=None, file=sys.stderr) as bar:
        for result in metric.iter_results(paths, batch_size=args.batch_size, workers=args.workers):
            by_index[result.index] = result_row(result)
            bar.update(1)
    # Label-file order, whatever order batches finished in: the bootstrap CI and --out do not depend on timing.
    rows = [by_index[i] for i in sorted(by_index)]
    ok = [r for r in rows if not r.get("error")]
    failed = len(rows) - len(ok)
    for r in rows:
        r["label"] = target[r["path"]]
    _report_failed([(r["path"], r["error"]) for r in rows if r.get("error")])
    if args.out:
        _write_csv(args.out, rows, ["path", "score", "label", "error"])
    if len(ok) < 3:
        raise RuntimeError(f"only {len(ok)} of {len(rows)} images could be scored; need at least 3")
    pred = np.array([r["score"] for r in ok], dtype=np.float64)
    mos = np.array([r["label"] for r in ok], dtype=np.float64)
    # Agreement is reported as positive whatever the directions of the metric and the labels.
    if metric.lower_better != labels.lower_is_better:
        pred = -pred
    rep = correlation_report(pred, mos, bootstrap=args.bootstrap, seed=args.seed)
    d = rep.as_dict()
    table = [{"statistic": k, "value": f"{d[k]:.4f}"} for k in
             ("srcc", "srcc_ci_low", "srcc_ci_high", "krcc", "plcc", "rmse", "plcc_raw", "rmse_raw")]
    print(f"{metric.name} on {args.labels} ({len(ok)} images, {failed} failed)")
    print(format_table(table, ["statistic", "value"]))
    if args.json:
        atomic_write(args.json, json.dumps({"metric": metric.name, "labels": str(args.labels), "failed": failed,
                                            **d}, indent=1))
    return 1 if failed else 0


def _synthetic(args: argparse.Namespace) -> int:
    photos = list(list_images([args.synthetic]))
    if not photos:
        raise ValueError(f"no images found in {args.synthetic}")
    if args.max_photos:
        photos = photos[: args.max_photos]
    levels = tuple(int(v) for v in args.levels.split(","))
    names = [d.strip() for d in args.degradations.split(",")] if args.degradations else None
    if args.metric in FULL_REFERENCE:
        result = synthetic_ranking(FULL_REFERENCE[args.metric], photos, names, levels, seed=args.seed,
                                   crop=args.crop, full_reference=True, batch_size=args.batch_size)
        name = args.metric
    else:
        metric = create_metric(args.metric, model=args.model, weights=args.weights, device=args.device,
                               precision=args.precision, batch_size=args.batch_size, **metric_options(args))
        result = synthetic_ranking(metric, photos, names, levels, seed=args.seed, crop=args.crop,
                                   batch_size=args.batch_size, lower_better=metric.lower_better)
        name = metric.name
    print(f"synthetic ranking: {name} on {len(photos)} photos from {args.synthetic}")
    print(result.table())
    if args.out:
        result.to_csv(args.out)
    if args.json:
        atomic_write(args.json, json.dumps({"metric": name, **result.as_dict()}, indent=1))
    return 0


def _restoration(args: argparse.Namespace) -> int:
    """PSNR/SSIM on Y with the border crop, seconds and peak memory per megapixel, of one restorer on pairs."""
    from clipiq.data.paired import find_pairs
    from clipiq.restore.evaluate import evaluate_restorer

    options = metric_options(args)
    restorer = make_restorer(args.restore, args.weights, args.device, args.precision, options)
    pairs = find_pairs(args.pairs, restorer.scale)
    with tqdm(total=len(pairs), desc=f"bench ({restorer.name})", unit="pair", disable=None, file=sys.stderr) as bar:
        report = evaluate_restorer(restorer, pairs, crop_border=args.crop_border, on_row=lambda _: bar.update(1))
    summary = report.summary()
    print(f"{restorer.name} on {args.pairs} ({len(pairs)} pairs, {summary['failed']} failed); PSNR/SSIM on Y of "
          f"8-bit outputs, border {summary['crop_border']}; memory: {summary['memory']}")
    keys = ("psnr_y", "ssim_y", "seconds_per_mp", "peak_mib_per_mp", "peak_mib")
    print(format_table([{"statistic": k, "value": f"{summary[k]:.4f}"} for k in keys], ["statistic", "value"]))
    _report_failed([(r["lq"], r["error"]) for r in report.rows if r["error"]])
    if args.out:
        _write_csv(args.out, report.rows, ["lq", "gt", "psnr", "ssim", "megapixels", "seconds", "peak_mib", "error"])
    if args.json:
        atomic_write(args.json, json.dumps({**summary, "pairs_dir": str(args.pairs)}, indent=1))
    if not report.ok_rows:
        raise RuntimeError(f"none of the {len(pairs)} pairs could be restored")
    return 1 if summary["failed"] else 0


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Per-image rows, formula-safe and replaced atomically (a concurrent or interrupted write never tears it)."""
    atomic_write(path, csv_text(rows, columns))


def _refuse_duplicates(label_file: Path, paths: list[Path]) -> None:
    """A label file listing one image twice is ambiguous (which label?): refuse it, naming the images."""
    seen: dict[str, int] = {}
    for p in paths:
        key = input_key(p)
        seen[key] = seen.get(key, 0) + 1
    dups = [k for k, n in seen.items() if n > 1]
    if dups:
        shown = ", ".join(f"{k} ({seen[k]} rows)" for k in dups[:5]) + (f" and {len(dups) - 5} more"
                                                                      if len(dups) > 5 else "")
        raise ValueError(f"{label_file} lists {len(dups)} image(s) more than once: {shown}; keep one row per image")


def _report_failed(failures: list[tuple[str, str]]) -> None:
    """One stderr line per input that failed: its path and why."""
    for path, error in failures:
        print(f"failed: {path}: {error}", file=sys.stderr)
