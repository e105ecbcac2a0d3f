"""Synthetic ranking benchmark: does a quality score fall as a known degradation gets stronger?

Each clean photo is degraded with every type in ``clipiq.degrade`` at increasing severity levels; within
each (photo, type) the Spearman correlation between the score and the *negative* level is computed, so a
higher-is-better metric that ranks the levels perfectly gets +1. Per-type results are averaged over photos.
This needs no human opinion scores, which makes it a sanity check for blind IQA models and an ablation tool,
not a replacement for MOS-based benchmarks.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from clipiq.core.files import atomic_write, csv_text
from clipiq.eval.correlation import srcc

logger = logging.getLogger(__name__)

__all__ = ["SyntheticResult", "SyntheticRow", "synthetic_ranking"]

ScoreFn = Callable[..., Any]
PhotoLike = str | os.PathLike | torch.Tensor


@dataclass(frozen=True)
class SyntheticRow:
    """One scored image: which photo, which degradation, at what level, and its score."""

    photo: str
    degradation: str
    level: int
    score: float


@dataclass
class SyntheticResult:
    """Outcome of `synthetic_ranking`: per-image rows and per-(type, photo) SRCC against severity."""

    rows: list[SyntheticRow]
    photo_srcc: dict[str, dict[str, float]]
    levels: tuple[int, ...]
    lower_better: bool = False
    photos: list[str] = field(default_factory=list)

    @property
    def degradations(self) -> list[str]:
        """Degradation types in evaluation order."""
        return list(self.photo_srcc)

    @property
    def per_type(self) -> dict[str, float]:
        """Mean SRCC over photos for each degradation type (photos with an undefined SRCC are skipped)."""
        return {name: _nanmean(list(vals.values())) for name, vals in self.photo_srcc.items()}

    @property
    def per_type_std(self) -> dict[str, float]:
        """Standard deviation over photos of the per-photo SRCC, for each degradation type."""
        out = {}
        for name, vals in self.photo_srcc.items():
            arr = np.asarray([v for v in vals.values() if not math.isnan(v)])
            out[name] = float(arr.std()) if arr.size else math.nan
        return out

    @property
    def mean(self) -> float:
        """Mean over degradation types of the per-type SRCC."""
        return _nanmean(list(self.per_type.values()))

    def as_dict(self) -> dict[str, Any]:
        """Summary numbers: per-type mean SRCC, the overall mean, and the per-photo SRCC."""
        return {
            "mean_srcc": self.mean,
            "per_type": self.per_type,
            "photo_srcc": {k: dict(v) for k, v in self.photo_srcc.items()},
            "levels": list(self.levels),
            "lower_better": self.lower_better,
        }

    def table(self, digits: int = 4) -> str:
        """Plain-text table: per degradation type the mean and std of SRCC over photos, then the mean."""
        header = ("degradation", "SRCC", "std", "photos")
        body = []
        for name, vals in self.photo_srcc.items():
            n_ok = sum(not math.isnan(v) for v in vals.values())
            std = _fmt(self.per_type_std[name], digits, signed=False)
            body.append((name, _fmt(self.per_type[name], digits), std, str(n_ok)))
        footer = ("mean", _fmt(self.mean, digits), "", str(len(self.photos)))
        widths = [max(len(r[i]) for r in (header, *body, footer)) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
            return "  ".join([first, *rest]).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(header), rule, *(line(r) for r in body), rule, line(footer)])

    def __str__(self) -> str:
        return self.table()

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the per-image rows (photo, degradation, level, score) to a CSV file (formula-safe, atomic)."""
        atomic_write(path, csv_text([asdict(r) for r in self.rows], ["photo", "degradation", "level", "score"]))


def _fmt(x: float, digits: int, signed: bool = True) -> str:
    if math.isnan(x):
        return "nan"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _nanmean(vals: Sequence[float]) -> float:
    ok = [v for v in vals if not math.isnan(v)]
    return float(np.mean(ok)) if ok else math.nan


def _photo_names(photos: Sequence[PhotoLike]) -> list[str]:
    names = []
    for i, p in enumerate(photos):
        names.append(f"image_{i:03d}" if isinstance(p, torch.Tensor) else Path(p).stem)
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    # Photos from different folders may share a file stem; keep every name unique in the CSV.
    return [f"{n}#{i}" if seen[n] > 1 else n for i, n in enumerate(names)]


def _load_photo(photo: PhotoLike, index: int, crop: int | tuple[int, int] | None) -> torch.Tensor:
    if isinstance(photo, torch.Tensor):
        img = photo
        if img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
            raise ValueError(
                f"photos[{index}] must be a float (3,H,W) tensor in [0,1], "
                f"got shape {tuple(img.shape)} dtype {img.dtype}"
            )
    else:
        from clipiq.data.io import load_image

        img = load_image(photo)
    if crop is None:
        return img
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    h, w = img.shape[-2:]
    ch, cw = min(ch, h), min(cw, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[:, top : top + ch, left : left + cw]


def _derive_seed(seed: int, photo_index: int, name: str) -> int:
    # A stable per-(photo, type) seed (crc32, not hash(), which is salted per process); the same seed is
    # used for every level so that levels differ in strength, not in the noise realisation.
    return int(np.random.SeedSequence([seed, photo_index, zlib.crc32(name.encode())]).generate_state(1)[0])


def _scores_to_numpy(out: Any, n: int) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        out = out.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.size != n or (arr.ndim > 1 and arr.shape[0] != n):
        raise ValueError(
            f"score_fn must return one score per image ({n}), got an output of shape {arr.shape}"
        )
    return arr.reshape(n)


def _batches(
    items: Iterable[tuple[str, int, torch.Tensor]], batch_size: int
) -> Iterator[list[tuple[str, int, torch.Tensor]]]:
    """Consecutive runs of at most `batch_size` items whose images share a shape."""
    batch: list[tuple[str, int, torch.Tensor]] = []
    for item in items:
        if batch and (len(batch) == batch_size or batch[0][2].shape != item[2].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def synthetic_ranking(
    score_fn: ScoreFn,
    photos: Sequence[PhotoLike],
    degradations: Sequence[str] | None = None,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    crop: int | tuple[int, int] | None = None,
    full_reference: bool = False,
    batch_size: int = 16,
    progress: bool = True,
    lower_better: bool = False,
    device: str | torch.device | None = None,
) -> SyntheticResult:
    """Score every photo under every degradation type and level; SRCC of score vs. severity per type.

    Args:
        score_fn: ``score_fn(batch)`` (or ``score_fn(batch, reference)`` with ``full_reference=True``)
            mapping (N,3,H,W) images in [0,1] to N scores; called under ``torch.no_grad()``.
        photos: clean images, as file paths or float (3,H,W) tensors in [0,1].
        degradations: names from ``clipiq.degrade.DEGRADATIONS``; all of them by default.
        levels: severity levels passed to ``clipiq.degrade.apply`` (at least 3 distinct values).
        seed: base seed; each (photo, type) gets a derived seed shared by all its levels.
        crop: centre crop (size or (h, w)) applied to each photo before degrading, to bound the cost.
        full_reference: pass the clean photo as a second argument to ``score_fn``.
        batch_size: images per ``score_fn`` call.
        progress: show a tqdm bar over photos.
        lower_better: the score is a distortion measure (lower is better); flips the SRCC sign so that
            a perfect ranking still gives +1.
        device: where to degrade and score the images (default: where the photos are, the CPU for paths).
    """
    from clipiq import degrade

    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
    if isinstance(photos, torch.Tensor):
        photos = list(photos.unbind(0)) if photos.ndim == 4 else [photos]
    if isinstance(photos, (str, os.PathLike)):
        raise TypeError("photos must be a sequence of paths or tensors, not a single path")
    photos = list(photos)
    if not photos:
        raise ValueError("photos is empty")
    available = list(degrade.DEGRADATIONS)
    names = available if degradations is None else list(degradations)
    unknown = [n for n in names if n not in degrade.DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown degradation(s) {unknown}; available: {available}")
    if not names:
        raise ValueError("degradations is empty")
    levels = tuple(levels)
    if len(set(levels)) != len(levels) or len(levels) < 3:
        raise ValueError(f"levels must hold at least 3 distinct values, got {levels}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    photo_names = _photo_names(photos)
    sign = 1.0 if lower_better else -1.0
    target = np.asarray([sign * float(lv) for lv in levels])
    rows: list[SyntheticRow] = []
    photo_srcc: dict[str, dict[str, float]] = {n: {} for n in names}

    for pi, (photo, pname) in enumerate(
        tqdm(list(zip(photos, photo_names)), desc="synthetic ranking", unit="photo", disable=not progress)
    ):
        clean = _load_photo(photo, pi, crop)
        if device is not None:
            clean = clean.to(device)  # degradations run on the tensor's device too
        # A generator keeps at most one batch of degraded images in memory.
        items = (
            (name, lv, degrade.apply(clean, name, lv, seed=_derive_seed(seed, pi, name)))
            for name in names
            for lv in levels
        )
        scores: dict[tuple[str, int], float] = {}
        with torch.no_grad():
            for batch in _batches(items, batch_size):
                x = torch.stack([im for _, _, im in batch])
                if full_reference:
                    if x.shape[1:] != clean.shape:
                        raise ValueError(
                            f"full_reference=True needs degraded images of the photo's size; "
                            f"{batch[0][0]!r} gave {tuple(x.shape[1:])} from {tuple(clean.shape)}"
                        )
                    ref = clean.unsqueeze(0).expand_as(x)
                    out = score_fn(x, ref)
                else:
                    out = score_fn(x)
                for (name, lv, _), sc in zip(batch, _scores_to_numpy(out, len(batch))):
                    scores[(name, lv)] = float(sc)
        for name in names:
            vals = np.asarray([scores[(name, lv)] for lv in levels])
            rows.extend(SyntheticRow(pname, name, lv, float(v)) for lv, v in zip(levels, vals))
            if np.isnan(vals).any():
                raise ValueError(f"score_fn returned NaN for photo {pname!r}, degradation {name!r}")
            if np.ptp(vals) == 0:
                logger.warning("score is constant over levels for %s / %s; SRCC undefined", pname, name)
                photo_srcc[name][pname] = math.nan
                continue
            # Ranks make +-inf scores (e.g. PSNR of an unchanged image) usable; SRCC is rank-based anyway.
            photo_srcc[name][pname] = srcc(stats.rankdata(vals), target)
    return SyntheticResult(
        rows=rows, photo_srcc=photo_srcc, levels=levels, lower_better=lower_better, photos=photo_names
    )
