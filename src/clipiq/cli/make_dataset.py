"""``clipiq make-dataset``: turn a folder of clean photos into a synthetic IQA set.

``--kind degraded`` (default) degrades the photos in the KADID-10k layout; ``--kind dehazed`` hazes them and
runs classic dehazers, labelling each result with its SSIM against the photo (a full-reference proxy);
``--kind local`` degrades one region of each photo (a half, a quadrant or a group of superpixels), saves the
region's mask next to each image and labels it with its SSIM against the photo.
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)

__all__ = ["register", "run"]

KINDS = ("degraded", "dehazed", "local")


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
        raise argparse.ArgumentTypeError("expected at least one name")
    return names


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``make-dataset`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "make-dataset",
        help="degrade (or haze and dehaze, or degrade locally) clean photos into a synthetic IQA dataset",
        description=(
            "--kind degraded: write I01.png.. (references), I01_TT_LL.png (distorted), dmos.csv and "
            "distortions.json to OUT_DIR (KADID-10k layout); dmos is levels+1-level (higher is better, as in "
            "KADID-10k). --kind dehazed: write S001.png.. (references), S001_hL_DEHAZER.png (hazed at level "
            "L, then dehazed), dataset.json and labels.csv; mos is the SSIM against the reference. "
            "--kind local: write S001.png.., S001_TT_LL_REGION.png (degraded inside a region only) with its "
            "mask S001_TT_LL_REGION_mask.png (0/255), dataset.json and labels.csv; mos is the SSIM against the "
            "reference. None of these is a human score."
        ),
    )
    p.add_argument("photos_dir", metavar="PHOTOS_DIR", help="folder of clean photos (searched recursively)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    p.add_argument("--kind", choices=KINDS, default="degraded",
                   help="degraded: KADID-style distortions (default); dehazed: hazed then dehazed images; "
                        "local: one region degraded, with its mask")  # fmt: skip
    p.add_argument("--degradations", type=_name_list, default=None,
                   help="comma-separated degradation names (--kind degraded or local; default: all)")  # fmt: skip
    p.add_argument("--levels", type=_int_list, default=None,
                   help="comma-separated severity levels (default: 1,2,3,4,5); with --kind dehazed, the haze "
                        "levels (default: 2,3,4,5)")  # fmt: skip
    p.add_argument("--dehazers", type=_name_list, default=None,
                   help="comma-separated dehazer names (--kind dehazed; default: all of "
                        "none,gamma,contrast,dcp-weak,dcp,dcp-strong)")  # fmt: skip
    p.add_argument("--regions", type=_name_list, default=None,
                   help="comma-separated region kinds (--kind local; default: all of "
                        "half,quadrant,superpixel)")  # fmt: skip
    p.add_argument("--segments", type=int, default=None,
                   help="SLIC superpixels per photo for superpixel regions (--kind local; default: 24)")  # fmt: skip
    p.add_argument("--feather", type=int, default=None,
                   help="fade the pasted region over this many pixels inside its mask "
                        "(--kind local; default: 0)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--crop", type=int, default=None, help="centre-crop photos to this size in pixels")
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N photos (sorted)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: 0, in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT_DIR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the dataset described by ``args``; returns the process exit code."""
    kind = getattr(args, "kind", "degraded")
    try:
        if kind != "local":
            for opt in ("regions", "segments", "feather"):
                if getattr(args, opt, None) is not None:
                    raise ValueError(f"--{opt} applies to --kind local only")
        if kind == "dehazed":
            return _run_dehazed(args)
        if getattr(args, "dehazers", None) is not None:
            raise ValueError(f"--dehazers applies to --kind dehazed only, not --kind {kind}")
        if kind == "local":
            return _run_local(args)
        return _run_degraded(args)
    except (ValueError, OSError) as e:
        print(f"clipiq make-dataset: error: {e}", file=sys.stderr)
        return 2


def _shared_options(args: argparse.Namespace) -> dict[str, object]:
    """The writer arguments every kind takes, from the command line."""
    return {"seed": args.seed, "crop": args.crop, "max_photos": args.max_photos, "workers": args.workers,
            "overwrite": args.overwrite}


def _run_degraded(args: argparse.Namespace) -> int:
    from clipiq.synth.degraded import DEFAULT_LEVELS, write_synthetic_dataset

    labels = write_synthetic_dataset(
        args.photos_dir,
        args.out_dir,
        degradations=args.degradations,
        levels=args.levels if args.levels is not None else DEFAULT_LEVELS,
        **_shared_options(args),
    )
    n_refs = len({s.ref for s in labels})
    n_types = len({s.distortion for s in labels})
    print(f"wrote {len(labels)} distorted images ({n_refs} references x {n_types} distortions) "
          f"to {labels.source}")  # fmt: skip
    return 0


def _run_dehazed(args: argparse.Namespace) -> int:
    from clipiq.synth.dehazed import DEFAULT_HAZE_LEVELS, write_synthetic_dehazed_dataset

    if args.degradations is not None:
        raise ValueError("--degradations applies to --kind degraded only (use --dehazers)")
    labels = write_synthetic_dehazed_dataset(
        args.photos_dir,
        args.out_dir,
        levels=args.levels if args.levels is not None else DEFAULT_HAZE_LEVELS,
        dehazers=args.dehazers,
        **_shared_options(args),
    )
    n_refs = len({s.ref for s in labels})
    n_levels = len({s.level for s in labels})
    n_dehazers = len({s.distortion for s in labels})
    print(f"wrote {len(labels)} dehazed images ({n_refs} references x {n_levels} haze levels x "
          f"{n_dehazers} dehazers) to {labels.source}")  # fmt: skip
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from clipiq.synth.degraded import DEFAULT_LEVELS
    from clipiq.synth.local import DEFAULT_SEGMENTS, write_synthetic_local_dataset

    labels = write_synthetic_local_dataset(
        args.photos_dir,
        args.out_dir,
        degradations=args.degradations,
        levels=args.levels if args.levels is not None else DEFAULT_LEVELS,
        regions=args.regions,
        segments=args.segments if args.segments is not None else DEFAULT_SEGMENTS,
        feather=args.feather if args.feather is not None else 0,
        **_shared_options(args),
    )
    n_refs = len({s.ref for s in labels})
    n_types = len({s.distortion for s in labels})
    n_levels = len({s.level for s in labels})
    n_regions = len({s.extra["region"] for s in labels})
    print(f"wrote {len(labels)} locally degraded images with masks ({n_refs} references x {n_types} distortions x "
          f"{n_levels} levels x {n_regions} region kinds) to {labels.source}")  # fmt: skip
    return 0
