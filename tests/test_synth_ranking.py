"""clipiq.synth.ranking_ranking on real photo crops with clipiq.degrade."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from clipiq.data.io import list_images, load_image
from clipiq.eval import psnr
from clipiq.synth.ranking import SyntheticResult, synthetic_ranking

degrade = pytest.importorskip("clipiq.degrade")
CROP = 128


@pytest.fixture(scope="module")
def photo_paths(photos_dir: Path) -> list[Path]:
    """Three photos from two collections (varied content)."""
    kodak = sorted(list_images([photos_dir / "kodak24"]))
    mcm = sorted(list_images([photos_dir / "mcmaster18"]))
    return [kodak[2], kodak[14], mcm[5]]


@pytest.fixture(scope="module")
def crops(photo_paths: list[Path]) -> list[torch.Tensor]:
    """Centre 128x128 crops of the photos, as tensors."""
    out = []
    for p in photo_paths:
        img = load_image(p)
        h, w = img.shape[-2:]
        top, left = (h - CROP) // 2, (w - CROP) // 2
        out.append(img[:, top : top + CROP, left : left + CROP].contiguous())
    return out


@pytest.fixture(scope="module")
def psnr_result(crops: list[torch.Tensor]) -> SyntheticResult:
    """PSNR against the clean crop as a full-reference score, over every degradation type."""
    return synthetic_ranking(psnr, crops, full_reference=True, seed=0, progress=False)


def test_psnr_ranks_severity(psnr_result: SyntheticResult) -> None:
    names = list(degrade.DEGRADATIONS)
    assert psnr_result.degradations == names
    assert set(psnr_result.per_type) == set(names)
    assert psnr_result.mean >= 0.95, psnr_result.table()
    assert len(psnr_result.rows) == 3 * len(names) * 5


def test_per_photo_srcc_matches_scipy_on_rows(psnr_result: SyntheticResult) -> None:
    # Recompute every per-photo SRCC from the exported rows with scipy, independently of the module.
    by_key: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in psnr_result.rows:
        by_key.setdefault((r.degradation, r.photo), []).append((r.level, r.score))
    for (name, photo), pairs in by_key.items():
        levels, scores = np.array(pairs).T
        assert sorted(levels.tolist()) == [1, 2, 3, 4, 5]
        expected = stats.spearmanr(scores, -levels).statistic
        got = psnr_result.photo_srcc[name][photo]
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)
    for name, per_photo in psnr_result.photo_srcc.items():
        assert psnr_result.per_type[name] == pytest.approx(np.nanmean(list(per_photo.values())))
    assert psnr_result.mean == pytest.approx(np.mean(list(psnr_result.per_type.values())))


def test_inverse_score_gives_negative_srcc(crops: list[torch.Tensor]) -> None:
    names = list(degrade.DEGRADATIONS)[:3]
    inverse = synthetic_ranking(lambda x, r: -psnr(x, r), crops[:2], degradations=names, full_reference=True,
                                progress=False)
    assert inverse.mean <= -0.95, inverse.table()
    flipped = synthetic_ranking(lambda x, r: -psnr(x, r), crops[:2], degradations=names, full_reference=True,
                                lower_better=True, progress=False)
    assert flipped.mean == pytest.approx(-inverse.mean)


def test_table_is_well_formed(psnr_result: SyntheticResult) -> None:
    lines = psnr_result.table().splitlines()
    names = psnr_result.degradations
    assert lines[0].split() == ["degradation", "SRCC", "std", "photos"]
    assert set(lines[1].replace(" ", "")) == {"-"} and set(lines[-2].replace(" ", "")) == {"-"}
    body = lines[2:-2]
    assert len(body) == len(names)
    for line, name in zip(body, names):
        cells = line.split()
        assert cells[0] == name
        assert float(cells[1]) == pytest.approx(psnr_result.per_type[name], abs=1e-4)
        assert int(cells[3]) == 3
    mean_cells = lines[-1].split()
    assert mean_cells[0] == "mean" and float(mean_cells[1]) == pytest.approx(psnr_result.mean, abs=1e-4)
    # Every row has its columns aligned with the header.
    assert len({len(line) for line in lines[:-1] if not line.startswith("-")} | {len(lines[1])}) <= 2


def test_deterministic_for_seed_and_csv_roundtrip(crops: list[torch.Tensor], tmp_path: Path) -> None:
    # The seeded (random) degradation types are the ones where determinism is at stake.
    names = [name for name, rec in degrade.DEGRADATIONS.items() if rec.random][:3]
    assert names

    def run(seed: int) -> SyntheticResult:
        return synthetic_ranking(psnr, crops[:1], degradations=names, full_reference=True, seed=seed,
                                 progress=False)

    a, b, c = run(3), run(3), run(4)
    assert [(r.photo, r.degradation, r.level, r.score) for r in a.rows] == [
        (r.photo, r.degradation, r.level, r.score) for r in b.rows
    ]
    # The degradations are random, so another seed changes the scores.
    assert any(ra.score != rc.score for ra, rc in zip(a.rows, c.rows))
    a.to_csv(tmp_path / "out" / "rows.csv")
    with (tmp_path / "out" / "rows.csv").open() as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(a.rows)
    for row, r in zip(read, a.rows):
        assert (row["photo"], row["degradation"], float(row["level"])) == (r.photo, r.degradation, r.level)
        assert float(row["score"]) == r.score


def test_no_reference_paths_crop_and_batching(photo_paths: list[Path]) -> None:
    shapes: list[tuple[int, ...]] = []

    def mean_brightness(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        assert x.dtype == torch.float32
        return x.mean(dim=(1, 2, 3))

    name = next(iter(degrade.DEGRADATIONS))
    res = synthetic_ranking(mean_brightness, photo_paths[:2], degradations=[name], levels=(1, 3, 5),
                            crop=64, batch_size=2, progress=False)
    assert res.photos == [p.stem for p in photo_paths[:2]]
    assert all(s[0] <= 2 and s[1:] == (3, 64, 64) for s in shapes)
    assert sum(s[0] for s in shapes) == 2 * 3
    assert [r.level for r in res.rows] == [1, 3, 5, 1, 3, 5]


def test_errors(crops: list[torch.Tensor]) -> None:
    name = next(iter(degrade.DEGRADATIONS))
    with pytest.raises(ValueError, match="unknown degradation"):
        synthetic_ranking(psnr, crops[:1], degradations=["no_such_thing"], progress=False)
    with pytest.raises(ValueError, match="at least 3 distinct"):
        synthetic_ranking(psnr, crops[:1], degradations=[name], levels=(1, 2), full_reference=True,
                          progress=False)
    with pytest.raises(ValueError, match="photos is empty"):
        synthetic_ranking(psnr, [], progress=False)
    with pytest.raises(ValueError, match="one score per image"):
        synthetic_ranking(lambda x: x.mean(dim=1), crops[:1], degradations=[name], progress=False)
    with pytest.raises(ValueError, match="NaN"):
        synthetic_ranking(lambda x: torch.full((x.shape[0],), float("nan")), crops[:1], degradations=[name],
                          progress=False)
    with pytest.raises(ValueError, match=r"photos\[0\] must be a float \(3,H,W\)"):
        bad = [torch.zeros(3, 8, 8, dtype=torch.uint8)]
        synthetic_ranking(psnr, bad, degradations=[name], progress=False)
