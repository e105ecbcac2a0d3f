"""Synthetic local-distortion IQA data: clean photos degraded inside a region only, with the region's mask.

For each clean photo (scene ``S001``, ``S002``.. in sorted path order), each chosen degradation of
:mod:`clipiq.degrade`, each level and each region kind, the writer degrades the **whole** photo, then pastes
the degraded pixels inside a region mask onto the clean photo (so blur and JPEG near the region's border
look as they would in a real photo). Region kinds:

* ``half``: the left, right, top or bottom half (drawn at random);
* ``quadrant``: one of the four quadrants (drawn at random);
* ``superpixel``: a connected group of SLIC superpixels of the clean photo (scikit-image's ``slic``,
  ``segments`` of them per photo), grown from a random superpixel through random neighbours until it
  covers at least a random 15-50 % of the image: an irregular region that follows the photo's edges.

``feather > 0`` fades the paste over that many pixels *inside* the mask (the weight rises linearly with the
distance to the nearest clean pixel), so pixels outside the mask are always exactly the clean photo's.
The mask (PNG, 0 or 255; 255 = degraded, before feathering) is saved next to each image.

What ``mos`` holds: there are no human scores, so ``mos`` is the SSIM of the composite against the clean
photo (RGB, the mean over the three channels; Gaussian 11x11 window, no border crop; both images at 8-bit
levels, as saved), as in :mod:`clipiq.synth.dehazed`. It is a full-reference fidelity proxy, higher is better,
**not** a human opinion score. PSNR and the degraded area fraction are stored too.

Every image is reproducible on its own: the degraded photo's seed is derived from (seed, photo number, type
number, level) exactly as :func:`clipiq.synth.degraded.write_synthetic_dataset` derives it (with ``feather=0``
the pixels inside the mask equal ``make-dataset``'s ``I01_TT_LL.png``), and the region from (seed, photo
number, type number, level, region kind), so the output does not depend on the order of work or the number of
workers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipiq.data.io import load_image, save_image
from clipiq.data.labels import IQALabels, LabelFileError, read_csv_labels
from clipiq.synth.degraded import (
    DEFAULT_LEVELS,
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
    "DEFAULT_REGIONS",
    "REGION_KINDS",
    "region_mask",
    "synthetic_local_labels",
    "write_synthetic_local_dataset",
]

PathLike = str | os.PathLike
REGION_KINDS = ("half", "quadrant", "superpixel")
DEFAULT_REGIONS = REGION_KINDS
DEFAULT_SEGMENTS = 24
LABEL_FILE = "labels.csv"
ARGS_FILE = "dataset.json"
CSV_COLUMNS = (
    "image", "mos", "scene", "ref", "distortion", "level", "region", "mask", "area", "psnr", "ssim",
)  # fmt: skip
# Bump when the images or labels for the same arguments change, so cached folders are rebuilt.
FORMAT_VERSION = 1
# superpixel regions cover a random fraction of the image in this range
_SUPERPIXEL_AREA = (0.15, 0.5)


def _check_regions(regions: Sequence[str] | None) -> tuple[str, ...]:
    names = check_names("regions", DEFAULT_REGIONS if regions is None else regions, REGION_KINDS, "region kind")
    return tuple(n for n in REGION_KINDS if n in names)


def _superpixels(image: torch.Tensor, segments: int) -> np.ndarray:
    """SLIC superpixel labels (H,W), 0..K-1, of a (3,H,W) [0,1] image."""
    try:
        from skimage.segmentation import slic
    except ImportError:  # pragma: no cover - scikit-image is a dev dependency
        raise ImportError("superpixel regions need scikit-image (pip install scikit-image)") from None
    arr = image.permute(1, 2, 0).double().numpy()
    labels = slic(arr, n_segments=segments, compactness=10.0, start_label=0, channel_axis=-1)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def _grow_superpixels(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A connected group of superpixels covering a random fraction of the image, as a bool mask."""
    n = int(labels.max()) + 1
    if n < 2:
        raise ValueError("the photo has fewer than 2 superpixels; use a larger crop or more segments")
    sizes = np.bincount(labels.ravel(), minlength=n)
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
    ])  # fmt: skip
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in np.unique(np.sort(pairs, axis=1), axis=0).tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    target = rng.uniform(*_SUPERPIXEL_AREA) * labels.size
    chosen = [int(rng.integers(n))]
    area = int(sizes[chosen[0]])
    while area < target:
        frontier = sorted(set().union(*(neighbours[c] for c in chosen)) - set(chosen))
        if not frontier or area + sizes[frontier].min() >= labels.size:
            break
        nxt = int(frontier[rng.integers(len(frontier))])
        if area + sizes[nxt] >= labels.size:  # never the whole image
            break
        chosen.append(nxt)
        area += int(sizes[nxt])
    return np.isin(labels, chosen)


def region_mask(
    kind: str, height: int, width: int, rng: np.random.Generator, superpixels: np.ndarray | None = None
) -> np.ndarray:
    """A random (H,W) bool region mask of one kind; ``superpixel`` needs the photo's superpixel labels."""
    mask = np.zeros((height, width), dtype=bool)
    h2, w2 = height // 2, width // 2
    if kind == "half":
        side = int(rng.integers(4))
        sl = [np.s_[:, :w2], np.s_[:, w2:], np.s_[:h2, :], np.s_[h2:, :]][side]
        mask[sl] = True
    elif kind == "quadrant":
        q = int(rng.integers(4))
        mask[(np.s_[:h2] if q < 2 else np.s_[h2:]), (np.s_[:w2] if q % 2 == 0 else np.s_[w2:])] = True
    elif kind == "superpixel":
        if superpixels is None:
            raise ValueError("superpixel regions need the photo's superpixel labels")
        mask = _grow_superpixels(superpixels, rng)
    else:
        raise ValueError(f"unknown region kind {kind!r}; known: {list(REGION_KINDS)}")
    if not mask.any() or mask.all():
        raise ValueError(f"the image ({height}x{width}) is too small for a {kind} region")
    return mask


def _alpha(mask: np.ndarray, feather: int) -> torch.Tensor:
    """Paste weights (1,H,W): 1 inside the mask, fading to 0 over ``feather`` pixels at its inner edge."""
    if feather <= 0:
        return torch.from_numpy(mask.astype(np.float64))[None]
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(mask)  # 1 next to a clean pixel, 0 outside
    return torch.from_numpy(np.clip(dist / (feather + 1), 0.0, 1.0))[None]


def _region_seed(seed: int, image_id: int, type_id: int, level: int, kind: str) -> np.random.Generator:
    kind_id = 1 + REGION_KINDS.index(kind)
    return np.random.default_rng(np.random.SeedSequence([seed, image_id, type_id, level, kind_id]))


def _scene_name(image_id: int) -> str:
    return f"S{image_id:03d}"


_Job = tuple[Path, int, Path, dict[str, int], tuple[int, ...], tuple[str, ...], int, int, int, int | None]


def _process_photo(job: _Job) -> list[dict[str, Any]]:
    """Write one reference and all its locally degraded versions with their masks; return their CSV rows."""
    # Imported here: clipiq.degrade and clipiq.eval are optional to the rest of clipiq.data.
    from clipiq.degrade import apply
    from clipiq.eval import psnr, ssim

    photo, image_id, out_dir, type_ids, levels, regions, segments, feather, seed, crop = job
    ref = _center_crop(load_image(photo), crop)
    scene = _scene_name(image_id)
    ref_file = f"{scene}.png"
    save_image(ref, out_dir / ref_file)
    _, h, w = ref.shape
    sp = _superpixels(ref, segments) if "superpixel" in regions else None
    # float64 throughout: float32 sums vary with the thread count, and the files must not vary with workers
    ref64 = ref.double()
    rows = []
    for name, type_id in type_ids.items():
        for level in levels:
            deg = apply(ref, name, level, seed=_seed_for(seed, image_id, type_id, level))
            if deg.shape != ref.shape:
                sizes = f"{tuple(ref.shape)} -> {tuple(deg.shape)}"
                raise ValueError(f"degradation {name!r} changed the image size {sizes}")
            deg64 = deg.double().clamp(0, 1)
            for kind in regions:
                mask = region_mask(kind, h, w, _region_seed(seed, image_id, type_id, level, kind), sp)
                alpha = _alpha(mask, feather)
                blend = (ref64 + alpha * (deg64 - ref64)).mul(255).round().div(255)
                out = torch.where(alpha > 0, blend, ref64)
                stem = f"{scene}_{type_id:02d}_{level:02d}_{kind}"
                save_image(out.float(), out_dir / f"{stem}.png")
                save_image(torch.from_numpy(mask.astype(np.float32))[None], out_dir / f"{stem}_mask.png")  # 0/255
                q = float(ssim(out, ref64))
                rows.append({
                    "image": f"{stem}.png", "mos": f"{q:.6f}", "scene": scene, "ref": ref_file, "distortion": name,
                    "level": level, "region": kind, "mask": f"{stem}_mask.png", "area": f"{mask.mean():.6f}",
                    "psnr": f"{float(psnr(out, ref64)):.4f}", "ssim": f"{q:.6f}",
                })  # fmt: skip
    return rows


def _plan(
    photos_dir: PathLike,
    out_dir: PathLike,
    degradations: Sequence[str] | None,
    levels: Sequence[int],
    regions: Sequence[str] | None,
    segments: int,
    feather: int,
    seed: int,
    crop: int | None,
    max_photos: int | None,
) -> tuple[list[Path], dict[str, int], tuple[int, ...], tuple[str, ...], dict[str, Any]]:
    """Validate the arguments; return the photos, type ids, levels, region kinds and the dataset record."""
    src, out = Path(photos_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: photos folder not found")
    if crop is not None and crop < 2:
        raise ValueError(f"crop must be a size of at least 2 pixels or None, got {crop}")
    if max_photos is not None and max_photos < 1:
        raise ValueError(f"max_photos must be positive or None, got {max_photos}")
    if int(segments) < 2:
        raise ValueError(f"segments must be at least 2, got {segments}")
    if int(feather) < 0:
        raise ValueError(f"feather must be a non-negative number of pixels, got {feather}")
    type_ids = distortion_type_ids(degradations)
    lv = _check_levels(levels, type_ids)
    kinds = _check_regions(regions)
    photos = list_photos(src, out, max_photos)
    record = {
        "kind": "local",
        "format_version": FORMAT_VERSION,
        "photos_dir": str(src.resolve()),
        "photos": photo_entries(src, photos),
        "degradations": list(type_ids),
        "levels": list(lv),
        "regions": list(kinds),
        "segments": int(segments),
        "feather": int(feather),
        "seed": int(seed),
        "crop": crop,
        "max_photos": max_photos,
    }
    return photos, type_ids, lv, kinds, record


def _read(folder: Path) -> IQALabels:
    return read_csv_labels(folder / LABEL_FILE, folder, name="synthetic_local")


def write_synthetic_local_dataset(
    photos_dir: PathLike,
    out_dir: PathLike,
    degradations: Sequence[str] | None = None,
    levels: Sequence[int] = DEFAULT_LEVELS,
    regions: Sequence[str] | None = None,
    segments: int = DEFAULT_SEGMENTS,
    feather: int = 0,
    seed: int = 0,
    crop: int | None = None,
    max_photos: int | None = None,
    workers: int = 0,
    overwrite: bool = False,
) -> IQALabels:
    """Degrade regions of the photos under ``photos_dir`` into ``out_dir``; return the labels (mos = SSIM).

    ``degradations`` are names in :data:`clipiq.degrade.DEGRADATIONS` (default: all), ``levels`` their
    severity levels (1..5), ``regions`` region kinds of :data:`REGION_KINDS` (default: all); one image is made
    per (photo, degradation, level, region kind). ``segments`` is the number of SLIC superpixels per photo and
    ``feather`` the width in pixels of the paste's fade inside the mask (0: a hard edge). Writes ``S001.png``..
    (references, centre-cropped to ``crop`` when given), ``S001_TT_LL_REGION.png`` (type number, level, region
    kind) with its mask ``S001_TT_LL_REGION_mask.png`` (0/255), ``dataset.json`` (the arguments) and, last,
    ``labels.csv`` (``image,mos,scene,ref,distortion,level,region,mask,area,psnr,ssim``; ``area`` is the
    mask's fraction of the image). Read it with :func:`clipiq.data.labels.read_csv_labels` (``format: csv``):
    ``region``, ``mask`` (the file name, relative to the label file's folder), ``area``, ``psnr`` and ``ssim``
    land in :attr:`IQASample.extra`. Photos are taken in sorted path order (recursively); ``max_photos``
    keeps the first N. ``workers > 0`` runs that many spawned processes (in a script, call from under
    ``if __name__ == "__main__":``); the output is identical either way.
    """
    out = Path(out_dir)
    if (out / LABEL_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / LABEL_FILE} exists; pass overwrite=True to replace the dataset")
    photos, type_ids, lv, kinds, record = _plan(
        photos_dir, out, degradations, levels, regions, segments, feather, seed, crop, max_photos
    )
    out.mkdir(parents=True, exist_ok=True)
    # Remove the old labels first: a rewrite that fails half-way must not leave them describing new files.
    for stale in (LABEL_FILE, ARGS_FILE):
        (out / stale).unlink(missing_ok=True)
    opts = (int(segments), int(feather), int(seed), crop)
    jobs = [(p, i + 1, out, type_ids, lv, kinds, *opts) for i, p in enumerate(photos)]
    logger.info("writing %d photos x %d distortions x %d levels x %d region kinds to %s",
                len(jobs), len(type_ids), len(lv), len(kinds), out)  # fmt: skip
    results = _run_jobs(_process_photo, jobs, workers)
    (out / ARGS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _write_labels(out / LABEL_FILE, CSV_COLUMNS, results)
    return _read(out)


def _stored_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / ARGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _listed_files(folder: Path, labels: IQALabels) -> set[Path]:
    """Every file a label file lists: images, references and masks."""
    files = {q for s in labels for q in (s.path, s.ref) if q is not None}
    return files | {folder / str(s.extra["mask"]) for s in labels if "mask" in s.extra}


def synthetic_local_labels(
    photos_dir: PathLike,
    cache_dir: PathLike,
    degradations: Sequence[str] | None = None,
    levels: Sequence[int] = DEFAULT_LEVELS,
    regions: Sequence[str] | None = None,
    segments: int = DEFAULT_SEGMENTS,
    feather: int = 0,
    seed: int = 0,
    crop: int | None = None,
    max_photos: int | None = None,
    workers: int = 0,
) -> IQALabels:
    """The labels of a synthetic local-distortion dataset in ``cache_dir``, made (or remade) only when needed.

    The folder is reused when its ``dataset.json`` records the same arguments and photo files (names and
    sizes) and every image and mask it lists exists; otherwise it is regenerated with
    :func:`write_synthetic_local_dataset` (``workers`` only sets how, not what, so it is not compared).
    """
    cache = Path(cache_dir)
    *_, record = _plan(photos_dir, cache, degradations, levels, regions, segments, feather, seed, crop, max_photos)
    stored = _stored_record(cache)
    if stored == record and (cache / LABEL_FILE).is_file():
        labels = _read(cache)
        if all(p.is_file() for p in _listed_files(cache, labels)):
            logger.info("reusing the synthetic local-distortion dataset in %s", cache)
            return labels
        logger.info("%s lists missing images or masks; regenerating", cache / LABEL_FILE)
    elif stored is not None:
        logger.info("%s was made with other arguments; regenerating", cache)
    if stored is not None and stored.get("kind") == "local" and (cache / LABEL_FILE).is_file():
        # Images of the old set that the new one may not rewrite would otherwise linger; only files the
        # old label file lists, inside the folder, are removed.
        try:
            old = _read(cache)
        except LabelFileError:
            old = IQALabels([])
        for p in _listed_files(cache, old):
            if p.parent == cache:
                p.unlink(missing_ok=True)
    return write_synthetic_local_dataset(
        photos_dir, cache, degradations=degradations, levels=levels, regions=regions, segments=segments,
        feather=feather, seed=seed, crop=crop, max_photos=max_photos, workers=workers, overwrite=True,
    )  # fmt: skip
