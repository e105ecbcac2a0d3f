"""Synthetic IQA data: clean photos degraded at graded levels, with PSNR/SSIM, in the KADID-10k layout.

Every distorted image is reproducible on its own: its seed is derived from (seed, photo number, type
number, level), so results do not depend on the order of work or the number of worker processes.

What ``dmos`` holds: there are no human scores, so ``dmos`` is a rank proxy on KADID-10k's scale, where
higher is better: ``n_levels + 1 - level`` (5 for the mildest of 5 levels, 1 for the strongest). It
orders the versions of one photo under one distortion; it says nothing across distortions or photos.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipiq.data.io import list_images, load_image, save_image
from clipiq.data.labels import IQALabels, read_kadid10k

logger = logging.getLogger(__name__)

__all__ = [
    "DistortedImage",
    "distortion_type_ids",
    "level_count",
    "synthesize",
    "write_synthetic_dataset",
]

PathLike = str | os.PathLike
DEFAULT_LEVELS = (1, 2, 3, 4, 5)
LABEL_FILE = "dmos.csv"
TYPES_FILE = "distortions.json"
CSV_COLUMNS = ("dist_img", "ref_img", "dmos", "var", "distortion", "level", "psnr", "ssim")


@dataclass(frozen=True)
class DistortedImage:
    """One distorted version of a reference: the image (8-bit levels), what was done, and its fidelity."""

    image: torch.Tensor
    distortion: str
    type_id: int
    level: int
    score: float
    psnr: float
    ssim: float
    seed: int


def level_count(name: str) -> int:
    """How many severity levels the degradation ``name`` has (levels are numbered 1..count)."""
    from clipiq.degrade import get_degradation

    return len(get_degradation(name).levels)


def check_names(what: str, names: Sequence[str] | None, known: Sequence[str], item: str) -> tuple[str, ...]:
    """The chosen names of a writer option (``None``: all of ``known``); ValueError if empty, unknown or repeated."""
    if isinstance(names, str):
        raise ValueError(f"{what} must be a sequence of names, got the string {names!r}")
    chosen = tuple(known) if names is None else tuple(names)
    if not chosen:
        raise ValueError(f"{what} is empty")
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"unknown {item}(s) {unknown}; known: {list(known)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{what} has duplicates: {list(chosen)}")
    return chosen


def list_photos(src: Path, out: Path, max_photos: int | None) -> list[Path]:
    """The photos under ``src`` in sorted path order (recursively), never any inside the output folder ``out``,
    the first ``max_photos`` of them; FileNotFoundError when there are none."""
    photos = [p for p in list_images([src], recursive=True) if out.resolve() not in p.resolve().parents]
    if max_photos is not None:
        photos = photos[:max_photos]
    if not photos:
        raise FileNotFoundError(f"{src}: no images found")
    return photos


def photo_entries(src: Path, photos: list[Path]) -> list[list[Any]]:
    """Names and sizes of the photos, for a dataset record: a changed photo set is noticed even when the
    arguments are the same."""
    return [[p.relative_to(src).as_posix(), p.stat().st_size] for p in photos]


def distortion_type_ids(degradations: Sequence[str] | None = None) -> dict[str, int]:
    """Type numbers (1-based, in registry order, so stable across subsets) of the chosen degradations."""
    from clipiq.degrade import DEGRADATIONS

    order = {name: i + 1 for i, name in enumerate(DEGRADATIONS)}
    names = check_names("degradations", degradations, list(DEGRADATIONS), "degradation")
    return {n: order[n] for n in sorted(names, key=order.__getitem__)}


def _check_levels(levels: Sequence[int], type_ids: dict[str, int]) -> tuple[int, ...]:
    lv = tuple(int(x) for x in levels)
    if not lv or len(set(lv)) != len(lv):
        raise ValueError(f"levels must be a non-empty list of distinct integers, got {levels!r}")
    for name in type_ids:
        n = level_count(name)
        bad = [x for x in lv if not 1 <= x <= n]
        if bad:
            raise ValueError(f"level(s) {bad} out of range for {name!r}, which has levels 1..{n}")
    return tuple(sorted(lv))


def _seed_for(seed: int, image_id: int, type_id: int, level: int) -> int:
    return int(np.random.SeedSequence([seed, image_id, type_id, level]).generate_state(1)[0])


def synthesize(
    reference: torch.Tensor,
    degradations: Sequence[str] | None = None,
    levels: Sequence[int] = DEFAULT_LEVELS,
    seed: int = 0,
    image_id: int = 0,
) -> list[DistortedImage]:
    """Degrade one (3,H,W) reference at every (degradation, level); deterministic for (seed, image_id).

    Distorted images are rounded to 8-bit levels before PSNR/SSIM (RGB, no border crop) are measured,
    so the numbers describe the PNG files :func:`write_synthetic_dataset` saves.
    """
    # Imported here: clipiq.degrade and clipiq.eval are optional to everything else in clipiq.data.
    from clipiq.degrade import apply
    from clipiq.eval import psnr, ssim

    if not isinstance(reference, torch.Tensor) or reference.ndim != 3 or reference.shape[0] != 3:
        shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
        raise ValueError(f"reference must be a (3,H,W) tensor, got {shape}")
    type_ids = distortion_type_ids(degradations)
    lv = _check_levels(levels, type_ids)
    ref = reference.float()
    ref64 = ref.double()
    out = []
    for name, type_id in type_ids.items():
        n_levels = level_count(name)
        for level in lv:
            s = _seed_for(seed, image_id, type_id, level)
            img = apply(ref, name, level, seed=s)
            if img.shape != ref.shape:
                sizes = f"{tuple(ref.shape)} -> {tuple(img.shape)}"
                raise ValueError(f"degradation {name!r} changed the image size {sizes}")
            img = img.clamp(0, 1).mul(255).round().div(255)
            # float64 metrics: float32 sums vary with the thread count; the CSV must not vary with workers
            img64 = img.double()
            out.append(
                DistortedImage(
                    image=img,
                    distortion=name,
                    type_id=type_id,
                    level=level,
                    score=float(n_levels + 1 - level),
                    psnr=float(psnr(img64, ref64)),
                    ssim=float(ssim(img64, ref64)),
                    seed=s,
                )
            )
    return out


def _center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None:
        return x
    h, w = x.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def _ref_name(image_id: int) -> str:
    return f"I{image_id:02d}"


_Job = tuple[Path, int, Path, list[str], tuple[int, ...], int, int | None]


def _process_photo(job: _Job) -> list[dict[str, Any]]:
    """Write one reference and all its distorted versions; return their CSV rows."""
    photo, image_id, out_dir, names, levels, seed, crop = job
    ref = _center_crop(load_image(photo), crop)
    ref_file = f"{_ref_name(image_id)}.png"
    save_image(ref, out_dir / ref_file)
    rows = []
    for d in synthesize(ref, names, levels, seed=seed, image_id=image_id):
        dist_file = f"{_ref_name(image_id)}_{d.type_id:02d}_{d.level:02d}.png"
        save_image(d.image, out_dir / dist_file)
        rows.append({
            "dist_img": dist_file, "ref_img": ref_file, "dmos": f"{d.score:g}", "var": "0",
            "distortion": d.distortion, "level": d.level, "psnr": f"{d.psnr:.4f}", "ssim": f"{d.ssim:.6f}",
        })  # fmt: skip
    return rows


def _init_worker() -> None:
    torch.set_num_threads(1)


def _run_jobs(fn: Callable[[Any], list[dict[str, Any]]], jobs: Sequence[Any], workers: int) -> list[Any]:
    """``fn`` over ``jobs`` in order, in-process or in ``workers`` spawned processes (same results)."""
    if workers > 0:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            return list(pool.map(fn, jobs))
    return [fn(job) for job in jobs]


def _write_labels(path: Path, columns: Sequence[str], results: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Write the per-photo row lists as one CSV; it appears (atomically) only once every image is written."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for rows in results:
            writer.writerows(rows)
    tmp.replace(path)


def write_synthetic_dataset(
    photos_dir: PathLike,
    out_dir: PathLike,
    degradations: Sequence[str] | None = None,
    levels: Sequence[int] = DEFAULT_LEVELS,
    seed: int = 0,
    crop: int | None = None,
    max_photos: int | None = None,
    workers: int = 0,
    overwrite: bool = False,
) -> IQALabels:
    """Degrade the photos under ``photos_dir`` into ``out_dir`` in the KADID-10k layout; return the labels.

    Writes ``I01.png``.. (references, centre-cropped to ``crop`` when given),
    ``I01_{type:02d}_{level:02d}.png`` (distorted), ``dmos.csv``
    (``dist_img,ref_img,dmos,var,distortion,level,psnr,ssim``; see the module docstring for what
    ``dmos`` means) and ``distortions.json`` (type number -> degradation name).
    Photos are taken in sorted path order (recursively); ``max_photos`` keeps the first N. ``workers > 0``
    runs that many spawned processes (in a script, call from under ``if __name__ == "__main__":``); the
    output is identical either way.
    """
    src, out = Path(photos_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: photos folder not found")
    if (out / LABEL_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / LABEL_FILE} exists; pass overwrite=True to replace the dataset")
    if crop is not None and crop < 1:
        raise ValueError(f"crop must be a positive size in pixels or None, got {crop}")
    if max_photos is not None and max_photos < 1:
        raise ValueError(f"max_photos must be positive or None, got {max_photos}")
    type_ids = distortion_type_ids(degradations)
    lv = _check_levels(levels, type_ids)
    photos = list_photos(src, out, max_photos)
    out.mkdir(parents=True, exist_ok=True)
    names = list(type_ids)
    jobs = [(p, i + 1, out, names, lv, int(seed), crop) for i, p in enumerate(photos)]
    logger.info("writing %d photos x %d distortions x %d levels to %s", len(jobs), len(names), len(lv), out)
    results = _run_jobs(_process_photo, jobs, workers)
    (out / TYPES_FILE).write_text(json.dumps({str(t): n for n, t in type_ids.items()}, indent=2) + "\n")
    _write_labels(out / LABEL_FILE, CSV_COLUMNS, results)
    return read_kadid10k(out / LABEL_FILE, out)
