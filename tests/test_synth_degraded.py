"""Synthetic IQA data: determinism, PSNR/SSIM against scikit-image, the KADID layout on disk, and the CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from clipiq.cli.make_dataset import register, run
from clipiq.data.io import load_image
from clipiq.data.labels import read_kadid10k, read_labels
from clipiq.data.splits import split_by_group
from clipiq.degrade import DEGRADATIONS
from clipiq.synth.degraded import distortion_type_ids, synthesize, write_synthetic_dataset

NAMES = ["gaussian_blur", "gaussian_noise"]


def _photo(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A smooth colour gradient with some texture, as uint8 (H,W,3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin((x + y) / 5.0 + seed)], axis=-1)
    return (np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(d / "b.png")
    Image.fromarray(_photo(1)).save(d / "a.png")
    Image.fromarray(_photo(2)).save(d / "sub" / "c.jpg", quality=95)
    return d


def test_synthesize_metrics_match_skimage() -> None:
    ref = torch.from_numpy(_photo(3)).permute(2, 0, 1).float() / 255
    out = synthesize(ref, NAMES, levels=(1, 4), seed=0)
    assert [(d.distortion, d.level) for d in out] == [(n, lv) for n in NAMES for lv in (1, 4)]
    ref_np = ref.permute(1, 2, 0).double().numpy()
    for d in out:
        assert d.image.shape == ref.shape
        # 8-bit levels, as saved to PNG
        torch.testing.assert_close(d.image, d.image.mul(255).round().div(255), rtol=0, atol=0)
        img_np = d.image.permute(1, 2, 0).double().numpy()
        assert d.psnr == pytest.approx(peak_signal_noise_ratio(ref_np, img_np, data_range=1.0), abs=1e-3)
        sk = structural_similarity(
            ref_np, img_np, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )  # fmt: skip
        assert d.ssim == pytest.approx(sk, abs=1e-4)
        assert d.score == 6 - d.level  # 5 levels: KADID-style, higher is better
    # stronger level, lower fidelity
    assert out[1].psnr < out[0].psnr and out[3].psnr < out[2].psnr


def test_synthesize_deterministic_per_seed_and_image() -> None:
    ref = torch.from_numpy(_photo(4)).permute(2, 0, 1).float() / 255
    a = synthesize(ref, ["gaussian_noise"], levels=(2,), seed=0, image_id=1)[0]
    b = synthesize(ref, ["gaussian_noise"], levels=(2,), seed=0, image_id=1)[0]
    c = synthesize(ref, ["gaussian_noise"], levels=(2,), seed=1, image_id=1)[0]
    d = synthesize(ref, ["gaussian_noise"], levels=(2,), seed=0, image_id=2)[0]
    assert torch.equal(a.image, b.image) and a.seed == b.seed
    assert not torch.equal(a.image, c.image) and not torch.equal(a.image, d.image)
    # the same item comes out the same whatever else is generated alongside
    e = synthesize(ref, ["gaussian_blur", "gaussian_noise"], levels=(1, 2), seed=0, image_id=1)
    assert torch.equal(e[-1].image, a.image)


def test_synthesize_argument_errors() -> None:
    ref = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="unknown degradation"):
        synthesize(ref, ["nope"])
    with pytest.raises(ValueError, match=r"level\(s\) \[6\] out of range for 'gaussian_blur'"):
        synthesize(ref, ["gaussian_blur"], levels=(1, 6))
    with pytest.raises(ValueError, match="reference must be a \\(3,H,W\\) tensor"):
        synthesize(ref[None], ["gaussian_blur"])
    with pytest.raises(ValueError, match="duplicates"):
        distortion_type_ids(["jpeg", "jpeg"])


def test_type_ids_follow_registry_order() -> None:
    order = list(DEGRADATIONS)
    ids = distortion_type_ids(["jpeg", "gaussian_blur"])
    assert ids == {"gaussian_blur": order.index("gaussian_blur") + 1, "jpeg": order.index("jpeg") + 1}
    assert list(distortion_type_ids()) == order


def test_write_dataset_layout_and_read_back(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    labels = write_synthetic_dataset(photos, out, degradations=NAMES, levels=(1, 3, 5), seed=7, crop=32)
    ids = distortion_type_ids(NAMES)
    assert len(labels) == 3 * 2 * 3
    # photos in sorted path order: a.png -> I01, b.png -> I02, sub/c.jpg -> I03
    ref1 = load_image(out / "I01.png")
    assert ref1.shape == (3, 32, 32)
    a = torch.from_numpy(_photo(1)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(ref1, a[:, 4:36, 8:40])  # centre crop of 40x48
    assert json.loads((out / "distortions.json").read_text()) == {str(v): k for k, v in ids.items()}
    with (out / "dmos.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["dist_img", "ref_img", "dmos", "var", "distortion", "level", "psnr", "ssim"]
    names = {r["dist_img"] for r in rows}
    assert f"I02_{ids['gaussian_noise']:02d}_05.png" in names and len(names) == 18
    for r in rows:
        assert (out / r["dist_img"]).is_file() and (out / r["ref_img"]).is_file()
        assert float(r["dmos"]) == 6 - int(r["level"])
    # the KADID reader reads the folder back, with names from distortions.json
    back = read_kadid10k(out / "dmos.csv")
    assert read_labels(out / "dmos.csv").name == "kadid10k"
    assert [(s.path, s.scene, s.distortion, s.level, s.score) for s in back] == [
        (s.path, s.scene, s.distortion, s.level, s.score) for s in labels
    ]
    s = next(s for s in back if s.path.name == f"I03_{ids['gaussian_blur']:02d}_03.png")
    assert (s.scene, s.distortion, s.level, s.score, s.ref) == ("I03", "gaussian_blur", 3, 3.0, out / "I03.png")
    # stored PSNR describes the files on disk
    img, ref = load_image(s.path), load_image(s.ref)
    expected = peak_signal_noise_ratio(ref.numpy().astype(np.float64), img.numpy().astype(np.float64), data_range=1)
    assert s.extra["psnr"] == pytest.approx(expected, abs=1e-3)
    assert 0 < s.extra["ssim"] < 1
    # and the scenes give leak-free splits
    split = split_by_group(back, (0.34, 0.33, 0.33), seed=0)
    assert [len({back[i].scene for i in p}) for p in (split.train, split.val, split.test)] == [1, 1, 1]


def test_write_dataset_workers_identical_and_overwrite(photos: Path, tmp_path: Path) -> None:
    kw = {"degradations": ["gaussian_noise"], "levels": (2, 4), "seed": 1, "crop": 24, "max_photos": 2}
    write_synthetic_dataset(photos, tmp_path / "w0", workers=0, **kw)
    write_synthetic_dataset(photos, tmp_path / "w2", workers=2, **kw)
    files = sorted(p.name for p in (tmp_path / "w0").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "w2").iterdir())
    assert len([f for f in files if f.endswith(".png")]) == 2 + 2 * 2
    for name in files:
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    with pytest.raises(FileExistsError, match="dmos.csv exists"):
        write_synthetic_dataset(photos, tmp_path / "w0", **kw)
    again = write_synthetic_dataset(photos, tmp_path / "w0", overwrite=True, **{**kw, "seed": 2})
    assert len(again) == 4


def test_write_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="photos folder not found"):
        write_synthetic_dataset(tmp_path / "none", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        write_synthetic_dataset(tmp_path / "empty", tmp_path / "out", degradations=NAMES)
    with pytest.raises(ValueError, match="crop must be"):
        write_synthetic_dataset(tmp_path / "empty", tmp_path / "out", crop=0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipiq")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_make_dataset(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = _parser().parse_args(
        ["make-dataset", str(photos), str(out), "--degradations", "gaussian_blur,jpeg", "--levels", "1,5",
         "--seed", "3", "--crop", "24", "--max-photos", "2"]
    )  # fmt: skip
    assert args.func is run
    assert run(args) == 0
    assert "wrote 8 distorted images (2 references x 2 distortions)" in capsys.readouterr().out
    labels = read_kadid10k(out / "dmos.csv")
    assert {s.distortion for s in labels} == {"gaussian_blur", "jpeg"} and {s.level for s in labels} == {1, 5}
    assert load_image(out / "I02.png").shape == (3, 24, 24)
    # errors: a clear message and exit code 2
    assert run(_parser().parse_args(["make-dataset", str(photos), str(out)])) == 2
    assert "dmos.csv exists" in capsys.readouterr().err
    assert run(_parser().parse_args(["make-dataset", str(photos), str(out / "x"), "--degradations", "foo"])) == 2
    assert "unknown degradation(s) ['foo']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["make-dataset", str(photos), str(out), "--levels", "1,a"])
