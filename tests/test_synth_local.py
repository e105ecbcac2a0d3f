"""Synthetic local-distortion IQA data: layout, masks, composites and labels on disk, caching, and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq.synth.local as local_mod
from clipiq.cli.main import main
from clipiq.data.io import load_image
from clipiq.data.labels import read_labels
from clipiq.degrade import apply
from clipiq.eval import ssim
from clipiq.synth.degraded import _seed_for, distortion_type_ids
from clipiq.synth.local import REGION_KINDS, synthetic_local_labels, write_synthetic_local_dataset
from clipiq.train.protocol import load_iqa_labels

COLUMNS = ["image", "mos", "scene", "ref", "distortion", "level", "region", "mask", "area", "psnr", "ssim"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTOS = ("kodak-kodim05.png", "kodak-kodim23.png")
KW = {"degradations": ["gaussian_blur", "jpeg", "gaussian_noise"], "levels": (1, 5), "seed": 7, "crop": 40}


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """Two small real photos: 64x48 centre crops of the repo's Kodak examples."""
    missing = [n for n in PHOTOS if not (EXAMPLES / n).is_file()]
    if missing:
        pytest.skip(f"example photos {missing} not found in {EXAMPLES}")
    d = tmp_path / "photos"
    d.mkdir()
    for name in PHOTOS:
        im = Image.open(EXAMPLES / name).convert("RGB")
        w, h = im.size
        im.crop((w // 2 - 32, h // 2 - 24, w // 2 + 32, h // 2 + 24)).save(d / name)
    return d


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _mask(path: Path) -> np.ndarray:
    arr = np.asarray(Image.open(path))
    assert arr.ndim == 2 and set(np.unique(arr).tolist()) <= {0, 255}, path
    return arr == 255


def test_layout_masks_composites_and_labels(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "local"
    labels = write_synthetic_local_dataset(photos, out, **KW)
    assert len(labels) == 2 * 3 * 2 * 3
    rows = _rows(out)
    assert list(rows[0]) == COLUMNS
    type_ids = distortion_type_ids(KW["degradations"])
    expected_files = {"S001.png", "S002.png", "labels.csv", "dataset.json"}
    for r in rows:
        stem = f"{r['scene']}_{type_ids[r['distortion']]:02d}_{int(r['level']):02d}_{r['region']}"
        assert (r["image"], r["mask"], r["ref"]) == (f"{stem}.png", f"{stem}_mask.png", f"{r['scene']}.png")
        assert r["mos"] == r["ssim"]
        expected_files |= {r["image"], r["mask"]}
    assert {p.name for p in out.iterdir()} == expected_files
    assert {r["region"] for r in rows} == set(REGION_KINDS)
    # references: photos in sorted path order, centre-cropped
    assert load_image(out / "S001.png").shape == (3, 40, 40)
    torch.testing.assert_close(load_image(out / "S002.png"), load_image(photos / PHOTOS[1])[:, 4:44, 12:52])
    for s in labels:
        mask = _mask(out / s.extra["mask"])
        assert s.extra["area"] == pytest.approx(mask.mean(), abs=1e-6)
        assert 0 < s.extra["area"] < 1
        if s.extra["region"] in ("half", "quadrant"):
            assert s.extra["area"] == {"half": 0.5, "quadrant": 0.25}[s.extra["region"]]
        img, ref = load_image(s.path), load_image(s.ref)
        m = torch.from_numpy(mask).expand_as(img)
        assert torch.equal(img[~m], ref[~m]), s.path.name  # outside the mask: the clean photo, exactly
        assert not torch.equal(img[m], ref[m]), s.path.name  # inside: degraded
        # inside (no feathering): the whole-image degradation with make-dataset's seed, at 8-bit levels
        deg = apply(ref, s.distortion, s.level, seed=_seed_for(7, int(s.scene[1:]), type_ids[s.distortion], s.level))
        torch.testing.assert_close(img[m], deg.clamp(0, 1).mul(255).round().div(255)[m], atol=1e-6, rtol=0)
        # the label is the SSIM of the saved composite against the saved reference
        assert s.score == pytest.approx(float(ssim(img.double(), ref.double())), abs=2e-6)
        assert s.score == s.extra["ssim"] and s.extra["psnr"] > 10
    # a stronger level gives a lower score on average, for every distortion and region kind
    for d in KW["degradations"]:
        for kind in REGION_KINDS:
            mean = {
                lv: np.mean([s.score for s in labels if (s.distortion, s.level, s.extra["region"]) == (d, lv, kind)])
                for lv in (1, 5)
            }
            assert mean[5] < mean[1], (d, kind, mean)
    # the generic CSV reader (format guessed) sees the same records; masks are reachable from each sample
    back = read_labels(out / "labels.csv")
    assert back.name == "custom" and not back.lower_is_better
    assert [(b.path, b.score, b.ref, b.scene, b.level, b.distortion, b.extra) for b in back] == [
        (s.path, s.score, s.ref, s.scene, s.level, s.distortion, s.extra) for s in labels
    ]
    assert all((b.path.parent / b.extra["mask"]).is_file() for b in back)
    assert sorted(set(back.groups())) == ["S001", "S002"]
    record = json.loads((out / "dataset.json").read_text())
    assert record["kind"] == "local" and record["regions"] == list(REGION_KINDS) and record["feather"] == 0


def test_superpixel_regions_are_irregular_and_connected(photos: Path, tmp_path: Path) -> None:
    from scipy.ndimage import label

    labels = write_synthetic_local_dataset(photos, tmp_path / "sp", **{**KW, "regions": ["superpixel"]})
    assert {s.extra["region"] for s in labels} == {"superpixel"}
    areas = [s.extra["area"] for s in labels]
    assert len(set(areas)) > 3 and min(areas) >= 0.15 and max(areas) < 1
    for s in labels:
        mask = _mask(s.path.parent / s.extra["mask"])
        assert label(mask)[1] == 1, s.path.name  # one connected region
        rows, cols = mask.any(1), mask.any(0)
        assert mask.sum() < rows.sum() * cols.sum()  # not a rectangle


def test_feather_stays_inside_the_mask(photos: Path, tmp_path: Path) -> None:
    from scipy.ndimage import distance_transform_edt

    kw = {**KW, "degradations": ["gaussian_noise"], "levels": (5,), "max_photos": 1}
    hard = write_synthetic_local_dataset(photos, tmp_path / "hard", **kw)
    soft = write_synthetic_local_dataset(photos, tmp_path / "soft", feather=3, **kw)
    assert json.loads((tmp_path / "soft" / "dataset.json").read_text())["feather"] == 3
    for h, s in zip(hard, soft, strict=True):
        assert h.path.name == s.path.name
        # the same region and the same binary mask; outside it the clean photo, exactly
        hard_mask = (h.path.parent / h.extra["mask"]).read_bytes()
        assert hard_mask == (s.path.parent / s.extra["mask"]).read_bytes()
        mask_np = _mask(s.path.parent / s.extra["mask"])
        mask = torch.from_numpy(mask_np).expand(3, -1, -1)
        img_h, img_s, ref = load_image(h.path), load_image(s.path), load_image(s.ref)
        assert torch.equal(img_s[~mask], ref[~mask])
        # the fade is a band of 3 pixels inside the mask; deeper inside, the full degradation
        dist = torch.from_numpy(distance_transform_edt(mask_np)).expand(3, -1, -1)
        deep, band = dist >= 4, (dist > 0) & (dist < 4)
        assert deep.any() and torch.equal(img_s[deep], img_h[deep])
        assert (img_s[band] - ref[band]).abs().mean() < 0.75 * (img_h[band] - ref[band]).abs().mean()
        assert s.score > h.score


def test_deterministic_and_overwrite(photos: Path, tmp_path: Path) -> None:
    kw = {**KW, "degradations": ["jpeg"], "levels": (3,)}
    write_synthetic_local_dataset(photos, tmp_path / "a", **kw)
    write_synthetic_local_dataset(photos, tmp_path / "b", **kw)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with pytest.raises(FileExistsError, match="labels.csv exists"):
        write_synthetic_local_dataset(photos, tmp_path / "a", **kw)
    before = {n: (tmp_path / "a" / n).read_bytes() for n in files if n.endswith("_mask.png")}
    write_synthetic_local_dataset(photos, tmp_path / "a", overwrite=True, **{**kw, "seed": 8})
    after = {n: (tmp_path / "a" / n).read_bytes() for n in before}
    assert after != before  # another seed draws other regions


def test_cache_reuses_and_regenerates(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    kw = {**KW, "degradations": ["gaussian_blur"], "levels": (2,)}
    first = synthetic_local_labels(photos, cache, **kw)
    assert len(first) == 2 * 3
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}

    def _no_write(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a dataset that should have been reused")

    with monkeypatch.context() as m:
        m.setattr(local_mod, "write_synthetic_local_dataset", _no_write)
        reused = synthetic_local_labels(photos, cache, workers=2, **kw)  # workers do not change the data
    assert [(s.path, s.score, s.extra) for s in reused] == [(s.path, s.score, s.extra) for s in first]
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes  # nothing rewritten
    # other arguments: regenerated, and the old set's images and masks are gone
    other = synthetic_local_labels(photos, cache, **{**kw, "regions": ["half"]})
    assert {s.extra["region"] for s in other} == {"half"} and len(other) == 2
    assert not (cache / "S001_01_02_quadrant.png").exists() and not (cache / "S001_01_02_quadrant_mask.png").exists()
    assert (cache / "S001_01_02_half_mask.png").is_file()
    # a missing mask also regenerates
    (cache / "S002_01_02_half_mask.png").unlink()
    assert len(synthetic_local_labels(photos, cache, **{**kw, "regions": ["half"]})) == 2
    assert (cache / "S002_01_02_half_mask.png").is_file()


def test_protocol_source(photos: Path, tmp_path: Path) -> None:
    opts = {"degradations": ["jpeg"], "levels": [1, 5], "regions": ["quadrant"], "crop": 32}
    dcfg = {"source": "synthetic-local", "photos": str(photos), "cache_dir": str(tmp_path / "data"), "options": opts}
    labels = load_iqa_labels(dcfg)
    assert len(labels) == 4 and (tmp_path / "data" / "local-photos" / "labels.csv").is_file()
    assert all(s.extra["region"] == "quadrant" and s.extra["area"] == 0.25 for s in labels)
    with pytest.raises(FileNotFoundError, match="synthetic-local needs it"):
        load_iqa_labels({**dcfg, "photos": str(tmp_path / "nowhere")})


def test_argument_errors(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(ValueError, match=r"unknown region kind\(s\) \['blob'\]; known: \['half'"):
        write_synthetic_local_dataset(photos, out, regions=["blob"])
    with pytest.raises(ValueError, match="regions must be a sequence of names"):
        write_synthetic_local_dataset(photos, out, regions="half")
    with pytest.raises(ValueError, match="duplicates"):
        write_synthetic_local_dataset(photos, out, regions=["half", "half"])
    with pytest.raises(ValueError, match="regions is empty"):
        write_synthetic_local_dataset(photos, out, regions=[])
    with pytest.raises(ValueError, match="segments must be at least 2"):
        write_synthetic_local_dataset(photos, out, segments=1)
    with pytest.raises(ValueError, match="feather must be a non-negative"):
        write_synthetic_local_dataset(photos, out, feather=-1)
    with pytest.raises(ValueError, match=r"level\(s\) \[6\] out of range"):
        write_synthetic_local_dataset(photos, out, levels=(1, 6))
    with pytest.raises(ValueError, match=r"unknown degradation\(s\) \['fog'\]"):
        write_synthetic_local_dataset(photos, out, degradations=["fog"])
    with pytest.raises(FileNotFoundError, match="photos folder not found"):
        synthetic_local_labels(tmp_path / "none", out)
    assert not out.exists()


def test_cli_make_dataset_local(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["make-dataset", str(photos), str(out), "--kind", "local", "--degradations", "jpeg,gaussian_blur",
            "--levels", "2,4", "--regions", "half,superpixel", "--segments", "12", "--feather", "2",
            "--crop", "32", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 16 locally degraded images with masks (2 references x 2 distortions x 2 levels x 2 region kinds)" in (
        printed
    )
    labels = read_labels(out / "labels.csv")
    assert len(labels) == 16 and {s.extra["region"] for s in labels} == {"half", "superpixel"}
    assert all((out / s.extra["mask"]).is_file() for s in labels)
    record = json.loads((out / "dataset.json").read_text())
    assert (record["segments"], record["feather"], record["seed"], record["crop"]) == (12, 2, 3, 32)
    # errors: a message and exit code 2, nothing written
    assert main(argv) == 2
    assert "labels.csv exists" in capsys.readouterr().err
    bad = ["make-dataset", str(photos), str(tmp_path / "y"), "--kind", "local"]
    for extra, message in [
        (["--regions", "blob"], "unknown region kind(s) ['blob']"),
        (["--segments", "1"], "segments must be at least 2"),
        (["--feather", "-2"], "feather must be a non-negative"),
        (["--dehazers", "dcp"], "--dehazers applies to --kind dehazed only"),
    ]:
        assert main([*bad, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    for kind in ("degraded", "dehazed"):
        assert main(["make-dataset", str(photos), str(tmp_path / "z"), "--kind", kind, "--regions", "half"]) == 2
        assert "--regions applies to --kind local only" in capsys.readouterr().err
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
