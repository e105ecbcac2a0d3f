"""Synthetic dehazed-image IQA data: layout and labels on disk, determinism, caching, and the CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq.synth.dehazed as dehazed_mod
from clipiq.cli.make_dataset import register, run
from clipiq.data.io import load_image
from clipiq.data.labels import read_labels
from clipiq.data.splits import split_by_group
from clipiq.eval import ssim
from clipiq.restore import DEHAZERS
from clipiq.synth.degraded import distortion_type_ids, write_synthetic_dataset
from clipiq.synth.dehazed import synthetic_dehazed_labels, write_synthetic_dehazed_dataset

COLUMNS = ["image", "mos", "scene", "ref", "haze_level", "dehazer", "psnr", "ssim"]


def _photo(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A colourful gradient with texture and a near-black channel, as uint8 (H,W,3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, 0.6 * (1 - y / h) + 0.2 * np.sin((x + y) / 4.0 + seed), 0.05 + 0 * x], axis=-1)
    return (np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(d / "b.png")
    Image.fromarray(_photo(1)).save(d / "a.png")
    Image.fromarray(_photo(2)).save(d / "sub" / "c.png")
    return d


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_write_layout_labels_and_scenes(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "dh"
    labels = write_synthetic_dehazed_dataset(photos, out, levels=(2, 4), seed=3, crop=32)
    assert len(labels) == 3 * 2 * len(DEHAZERS)
    rows = _rows(out)
    assert list(rows[0]) == COLUMNS
    assert [(r["scene"], r["haze_level"], r["dehazer"]) for r in rows[: len(DEHAZERS)]] == [
        ("S001", "2", n) for n in DEHAZERS
    ]
    for r in rows:
        assert r["image"] == f"{r['scene']}_h{r['haze_level']}_{r['dehazer']}.png" and r["ref"] == f"{r['scene']}.png"
        assert r["mos"] == r["ssim"]
    # references: photos in sorted path order (a.png -> S001), centre-cropped
    a = torch.from_numpy(_photo(1)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(load_image(out / "S001.png"), a[:, 4:36, 8:40])
    # the returned labels: scene groups, haze level, dehazer, reference, and mos = SSIM on the saved files
    assert sorted(set(labels.groups())) == ["S001", "S002", "S003"] and not labels.lower_is_better
    s = next(s for s in labels if s.path.name == "S002_h4_dcp.png")
    assert (s.scene, s.level, s.distortion, s.ref) == ("S002", 4, "dcp", out / "S002.png")
    expected = float(ssim(load_image(s.path).double(), load_image(s.ref).double()))
    assert s.score == pytest.approx(expected, abs=1e-5) and s.extra["ssim"] == s.score and s.extra["psnr"] > 10
    assert labels.scores().std() > 0.02
    # more haze, lower fidelity of the untouched hazy image
    hazy = {(s.scene, s.level): s.score for s in labels if s.distortion == "none"}
    assert all(hazy[(sc, 4)] < hazy[(sc, 2)] for sc in ("S001", "S002", "S003"))
    # the generic reader sees the same records, and scenes give leak-free splits
    back = read_labels(out / "labels.csv")
    assert [(b.path, b.score, b.scene, b.level, b.distortion) for b in back] == [
        (s.path, s.score, s.scene, s.level, s.distortion) for s in labels
    ]
    split = split_by_group(back, (0.34, 0.33, 0.33), seed=0)
    assert [len({back[i].scene for i in p}) for p in (split.train, split.val, split.test)] == [1, 1, 1]
    record = json.loads((out / "dataset.json").read_text())
    assert record["levels"] == [2, 4] and record["dehazers"] == list(DEHAZERS) and record["crop"] == 32
    # the hazy image is make-dataset's haze image for the same seed, photo and level
    write_synthetic_dataset(photos, tmp_path / "kadid", degradations=["haze"], levels=(4,), seed=3, crop=32)
    haze_id = distortion_type_ids(["haze"])["haze"]
    assert (out / "S003_h4_none.png").read_bytes() == (tmp_path / "kadid" / f"I03_{haze_id:02d}_04.png").read_bytes()


def test_workers_identical_and_overwrite(photos: Path, tmp_path: Path) -> None:
    kw = {"levels": (3,), "dehazers": ("none", "dcp", "dcp-strong"), "seed": 1, "crop": 32, "max_photos": 2}
    write_synthetic_dehazed_dataset(photos, tmp_path / "w0", workers=0, **kw)
    write_synthetic_dehazed_dataset(photos, tmp_path / "w2", workers=2, **kw)
    files = sorted(p.name for p in (tmp_path / "w0").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "w2").iterdir())
    assert len([f for f in files if f.endswith(".png")]) == 2 + 2 * 3
    for name in files:
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    with pytest.raises(FileExistsError, match="labels.csv exists"):
        write_synthetic_dehazed_dataset(photos, tmp_path / "w0", **kw)
    before = (tmp_path / "w0" / "labels.csv").read_bytes()
    again = write_synthetic_dehazed_dataset(photos, tmp_path / "w0", overwrite=True, **{**kw, "seed": 2})
    assert len(again) == 6 and (tmp_path / "w0" / "labels.csv").read_bytes() != before


def test_cache_reuses_and_regenerates(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    kw = {"levels": (2,), "dehazers": ["none", "dcp"], "crop": 24, "max_photos": 2}
    first = synthetic_dehazed_labels(photos, cache, **kw)
    assert len(first) == 4

    def _no_write(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a dataset that should have been reused")

    with monkeypatch.context() as m:
        m.setattr(dehazed_mod, "write_synthetic_dehazed_dataset", _no_write)
        reused = synthetic_dehazed_labels(photos, cache, workers=2, **kw)  # workers do not change the data
    assert [(s.path, s.score) for s in reused] == [(s.path, s.score) for s in first]
    # other arguments: regenerated, and the old set's images are gone
    other = synthetic_dehazed_labels(photos, cache, **{**kw, "dehazers": ["none", "gamma"]})
    assert {s.distortion for s in other} == {"none", "gamma"}
    assert not (cache / "S001_h2_dcp.png").exists() and (cache / "S001_h2_gamma.png").is_file()
    assert json.loads((cache / "dataset.json").read_text())["dehazers"] == ["none", "gamma"]
    # a missing image, or a changed photo set, also regenerates
    (cache / "S002_h2_gamma.png").unlink()
    assert len(synthetic_dehazed_labels(photos, cache, **{**kw, "dehazers": ["none", "gamma"]})) == 4
    assert (cache / "S002_h2_gamma.png").is_file()
    Image.fromarray(_photo(5)).save(photos / "0.png")  # sorts first: a different first two photos
    regen = synthetic_dehazed_labels(photos, cache, **{**kw, "dehazers": ["none", "gamma"]})
    new_first = torch.from_numpy(_photo(5)).permute(2, 0, 1)[:, 8:32, 12:36] / 255
    torch.testing.assert_close(load_image(regen[0].ref), new_first)


def test_argument_errors(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(ValueError, match=r"unknown dehazer\(s\) \['cap'\]; known: \['none'"):
        write_synthetic_dehazed_dataset(photos, out, dehazers=["cap"])
    with pytest.raises(ValueError, match="sequence of names"):
        write_synthetic_dehazed_dataset(photos, out, dehazers="dcp")
    with pytest.raises(ValueError, match="duplicates"):
        write_synthetic_dehazed_dataset(photos, out, dehazers=["dcp", "dcp"])
    with pytest.raises(ValueError, match=r"level\(s\) \[6\] out of range for 'haze'"):
        write_synthetic_dehazed_dataset(photos, out, levels=(2, 6))
    with pytest.raises(FileNotFoundError, match="photos folder not found"):
        synthetic_dehazed_labels(tmp_path / "none", out)
    assert not out.exists()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipiq")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_make_dataset_dehazed(photos_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = _parser().parse_args(
        ["make-dataset", str(photos_dir), str(out), "--kind", "dehazed", "--crop", "64", "--max-photos", "2"]
    )
    assert run(args) == 0
    n = len(DEHAZERS)
    assert f"wrote {2 * 4 * n} dehazed images (2 references x 4 haze levels x {n} dehazers)" in capsys.readouterr().out
    labels = read_labels(out / "labels.csv")
    assert {s.level for s in labels} == {2, 3, 4, 5} and {s.distortion for s in labels} == set(DEHAZERS)
    assert load_image(out / "S002.png").shape == (3, 64, 64) and len(set(labels.groups())) == 2
    # on real photos the dark channel prior beats leaving the haze in, on average
    mean = {d: np.mean([s.score for s in labels if s.distortion == d]) for d in ("none", "dcp")}
    assert mean["dcp"] > mean["none"], mean
    # chosen levels and dehazers; errors give a message and exit code 2
    sub = ["make-dataset", str(photos_dir), str(tmp_path / "sub"), "--kind", "dehazed", "--crop", "32",
           "--max-photos", "1", "--levels", "5", "--dehazers", "none,dcp-strong"]  # fmt: skip
    assert run(_parser().parse_args(sub)) == 0
    assert "wrote 2 dehazed images (1 references x 1 haze levels x 2 dehazers)" in capsys.readouterr().out
    assert run(_parser().parse_args(["make-dataset", str(photos_dir), str(out), "--kind", "dehazed"])) == 2
    assert "labels.csv exists" in capsys.readouterr().err
    bad = ["make-dataset", str(photos_dir), str(tmp_path / "y"), "--kind", "dehazed", "--dehazers", "cap"]
    assert run(_parser().parse_args(bad)) == 2
    assert "unknown dehazer(s) ['cap']" in capsys.readouterr().err
    assert run(_parser().parse_args([*bad[:5], "--degradations", "jpeg"])) == 2
    assert "--degradations applies to --kind degraded only" in capsys.readouterr().err
    assert run(_parser().parse_args(["make-dataset", str(photos_dir), str(tmp_path / "z"), "--dehazers", "dcp"])) == 2
    assert "--dehazers applies to --kind dehazed only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["make-dataset", str(photos_dir), str(out), "--kind", "hazy"])
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
    # the help names every dehazer
    with pytest.raises(SystemExit):
        _parser().parse_args(["make-dataset", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert all(name in help_text for name in DEHAZERS)
