"""Synthetic dehazed-image IQA data: clean photos hazed at graded levels, then dehazed by classic methods.

For each clean photo (scene ``S001``, ``S002``.. in sorted path order) the writer hazes the photo with
:mod:`clipiq.degrade`'s ``haze`` at each chosen level, runs every chosen dehazer of
:data:`clipiq.restore.DEHAZERS` on the hazy image (``"none"`` keeps it hazy) and labels each result.

What ``mos`` holds: there are no human scores, so ``mos`` is the SSIM of the dehazed image against the
haze-free photo (RGB, the mean over the three channels; Gaussian 11x11 window, no border crop; both images
at 8-bit levels, as saved). It is a full-reference fidelity proxy, higher is better, **not** a human
opinion score: it rewards staying close to the original photo, so it punishes over-enhancement and colour
shifts and does not reward a pleasing but unfaithful result the way a viewer might. PSNR is stored too.

Every hazy image is reproducible on its own: its seed is derived from (seed, photo number, level) exactly as
:func:`clipiq.synth.degraded.write_synthetic_dataset` derives the seed of its ``haze`` images (so with the
same seed and crop, ``S001_h3_none.png`` equals ``make-dataset``'s ``I01_<haze>_03.png``), and the
dehazers are deterministic, so the output does not depend on the order of work or the number of workers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipiq.data.io import load_image, save_image
from clipiq.data.labels import IQALabels, LabelFileError, read_csv_labels
from clipiq.synth.degraded import (
    _center_crop,
    _check_levels,
    _run_jobs,
    _seed_for,
    _write_labels,
    check_names,
    distortion_type_ids,
    list_photos,
    photo_entries,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HAZE_LEVELS",
    "synthetic_dehazed_labels",
    "write_synthetic_dehazed_dataset",
]

PathLike = str | os.PathLike
DEFAULT_HAZE_LEVELS = (2, 3, 4, 5)
LABEL_FILE = "labels.csv"
ARGS_FILE = "dataset.json"
CSV_COLUMNS = ("image", "mos", "scene", "ref", "haze_level", "dehazer", "psnr", "ssim")
# Bump when the images or labels for the same arguments change, so cached folders are rebuilt.
FORMAT_VERSION = 1


def _check_dehazers(dehazers: Sequence[str] | None) -> tuple[str, ...]:
    from clipiq.restore import DEHAZERS

    return check_names("dehazers", dehazers, list(DEHAZERS), "dehazer")


def _scene_name(image_id: int) -> str:
    return f"S{image_id:03d}"


_Job = tuple[Path, int, Path, tuple[str, ...], tuple[int, ...], int, int, int | None]


def _process_photo(job: _Job) -> list[dict[str, Any]]:
    """Write one reference and all its dehazed versions; return their CSV rows."""
    # Imported here: clipiq.degrade, clipiq.eval and clipiq.restore are optional to the rest of clipiq.data.
    from clipiq.degrade import apply
    from clipiq.eval import psnr, ssim
    from clipiq.restore import dehaze

    photo, image_id, out_dir, dehazers, levels, haze_type, seed, crop = job
    ref = _center_crop(load_image(photo), crop)
    scene = _scene_name(image_id)
    ref_file = f"{scene}.png"
    save_image(ref, out_dir / ref_file)
    # float64 throughout: float32 sums vary with the thread count, and the files must not vary with workers
    ref64 = ref.double()
    rows = []
    for level in levels:
        s = _seed_for(seed, image_id, haze_type, level)
        hazy = apply(ref, "haze", level, seed=s).clamp(0, 1).mul(255).round().div(255)
        for name in dehazers:
            out = dehaze(hazy.double(), name).mul(255).round().div(255)
            file = f"{scene}_h{level}_{name}.png"
            save_image(out, out_dir / file)
            q = float(ssim(out, ref64))
            rows.append({
                "image": file, "mos": f"{q:.6f}", "scene": scene, "ref": ref_file, "haze_level": level,
                "dehazer": name, "psnr": f"{float(psnr(out, ref64)):.4f}", "ssim": f"{q:.6f}",
            })  # fmt: skip
    return rows


def _plan(
    photos_dir: PathLike,
    out_dir: PathLike,
    levels: Sequence[int],
    dehazers: Sequence[str] | None,
    seed: int,
    crop: int | None,
    max_photos: int | None,
) -> tuple[list[Path], tuple[int, ...], tuple[str, ...], int, dict[str, Any]]:
    """Validate the arguments; return the photos, levels, dehazers, haze type id and the dataset record."""
    src, out = Path(photos_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: photos folder not found")
    if crop is not None and crop < 1:
        raise ValueError(f"crop must be a positive size in pixels or None, got {crop}")
    if max_photos is not None and max_photos < 1:
        raise ValueError(f"max_photos must be positive or None, got {max_photos}")
    haze_ids = distortion_type_ids(["haze"])
    lv = _check_levels(levels, haze_ids)
    names = _check_dehazers(dehazers)
    photos = list_photos(src, out, max_photos)
    record = {
        "kind": "dehazed",
        "format_version": FORMAT_VERSION,
        "photos_dir": str(src.resolve()),
        "photos": photo_entries(src, photos),
        "levels": list(lv),
        "dehazers": list(names),
        "seed": int(seed),
        "crop": crop,
        "max_photos": max_photos,
    }
    return photos, lv, names, haze_ids["haze"], record


def write_synthetic_dehazed_dataset(
    photos_dir: PathLike,
    out_dir: PathLike,
    levels: Sequence[int] = DEFAULT_HAZE_LEVELS,
    dehazers: Sequence[str] | None = None,
    seed: int = 0,
    crop: int | None = None,
    max_photos: int | None = None,
    workers: int = 0,
    overwrite: bool = False,
) -> IQALabels:
    """Haze and dehaze the photos under ``photos_dir`` into ``out_dir``; return the labels (mos = SSIM).

    ``levels`` are severity levels (1..5) of :mod:`clipiq.degrade`'s ``haze``; ``dehazers`` are names in
    :data:`clipiq.restore.DEHAZERS` (default: all, in that order). Writes ``S001.png``.. (references,
    centre-cropped to ``crop`` when given), ``S001_h3_dcp.png``.. (``<scene>_h<level>_<dehazer>``),
    ``dataset.json`` (the arguments) and, last, ``labels.csv``
    (``image,mos,scene,ref,haze_level,dehazer,psnr,ssim``; see the module docstring for what ``mos``
    means). Photos are taken in sorted path order (recursively); ``max_photos`` keeps the first N.
    ``workers > 0`` runs that many spawned processes (in a script, call from under
    ``if __name__ == "__main__":``); the output is identical either way.
    """
    out = Path(out_dir)
    if (out / LABEL_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / LABEL_FILE} exists; pass overwrite=True to replace the dataset")
    photos, lv, names, haze_type, record = _plan(photos_dir, out, levels, dehazers, seed, crop, max_photos)
    out.mkdir(parents=True, exist_ok=True)
    # Remove the old labels first: a rewrite that fails half-way must not leave them describing new files.
    for stale in (LABEL_FILE, ARGS_FILE):
        (out / stale).unlink(missing_ok=True)
    jobs = [(p, i + 1, out, names, lv, haze_type, int(seed), crop) for i, p in enumerate(photos)]
    logger.info("writing %d photos x %d haze levels x %d dehazers to %s", len(jobs), len(lv), len(names), out)
    results = _run_jobs(_process_photo, jobs, workers)
    (out / ARGS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _write_labels(out / LABEL_FILE, CSV_COLUMNS, results)
    return read_csv_labels(out / LABEL_FILE, out, name="synthetic_dehazed")


def _stored_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / ARGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def synthetic_dehazed_labels(
    photos_dir: PathLike,
    cache_dir: PathLike,
    levels: Sequence[int] = DEFAULT_HAZE_LEVELS,
    dehazers: Sequence[str] | None = None,
    seed: int = 0,
    crop: int | None = None,
    max_photos: int | None = None,
    workers: int = 0,
) -> IQALabels:
    """The labels of a synthetic dehazed dataset in ``cache_dir``, made (or remade) only when needed.

    The folder is reused when its ``dataset.json`` records the same arguments and photo files (names and
    sizes) and every image it lists exists; otherwise it is regenerated with
    :func:`write_synthetic_dehazed_dataset` (``workers`` only sets how, not what, so it is not compared).
    """
    cache = Path(cache_dir)
    _, _, _, _, record = _plan(photos_dir, cache, levels, dehazers, seed, crop, max_photos)
    stored = _stored_record(cache)
    if stored == record and (cache / LABEL_FILE).is_file():
        labels = read_csv_labels(cache / LABEL_FILE, cache, name="synthetic_dehazed")
        if not labels.missing_files():
            logger.info("reusing the synthetic dehazed dataset in %s", cache)
            return labels
        logger.info("%s lists missing images; regenerating", cache / LABEL_FILE)
    elif stored is not None:
        logger.info("%s was made with other arguments; regenerating", cache)
    if stored is not None and stored.get("kind") == "dehazed" and (cache / LABEL_FILE).is_file():
        # Images of the old set that the new one may not rewrite (other dehazers, fewer photos) would
        # otherwise linger; only files the old label file lists, inside the folder, are removed.
        try:
            old = read_csv_labels(cache / LABEL_FILE, cache)
        except LabelFileError:
            old = IQALabels([])
        for p in {q for s in old for q in (s.path, s.ref) if q is not None}:
            if p.parent == cache:
                p.unlink(missing_ok=True)
    return write_synthetic_dehazed_dataset(
        photos_dir, cache, levels=levels, dehazers=dehazers, seed=seed, crop=crop, max_photos=max_photos,
        workers=workers, overwrite=True,
    )  # fmt: skip
