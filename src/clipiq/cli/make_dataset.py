"""``clipiq make-dataset``: degrade a folder of clean photos into a synthetic IQA set (KADID-10k layout)."""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)

__all__ = ["register", "run"]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _name_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one degradation name")
    return names


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``make-dataset`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "make-dataset",
        help="degrade clean photos into a synthetic IQA dataset (KADID-10k layout)",
        description=(
            "Write I01.png.. (references), I01_TT_LL.png (distorted), dmos.csv and distortions.json to "
            "OUT_DIR. dmos is levels+1-level (higher is better, as in KADID-10k), not a human score."
        ),
    )
    p.add_argument("photos_dir", metavar="PHOTOS_DIR", help="folder of clean photos (searched recursively)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    p.add_argument("--degradations", type=_name_list, default=None,
                   help="comma-separated degradation names (default: all)")  # fmt: skip
    p.add_argument("--levels", type=_int_list, default=[1, 2, 3, 4, 5],
                   help="comma-separated severity levels (default: 1,2,3,4,5)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--crop", type=int, default=None, help="centre-crop photos to this size in pixels")
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N photos (sorted)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: 0, in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT_DIR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the dataset described by ``args``; returns the process exit code."""
    from clipiq.data.synthetic import write_synthetic_dataset

    try:
        labels = write_synthetic_dataset(
            args.photos_dir,
            args.out_dir,
            degradations=args.degradations,
            levels=args.levels,
            seed=args.seed,
            crop=args.crop,
            max_photos=args.max_photos,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as e:
        print(f"clipiq make-dataset: error: {e}", file=sys.stderr)
        return 2
    n_refs = len({s.ref for s in labels})
    n_types = len({s.distortion for s in labels})
    print(f"wrote {len(labels)} distorted images ({n_refs} references x {n_types} distortions) "
          f"to {labels.source}")  # fmt: skip
    return 0
