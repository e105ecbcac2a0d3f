"""``clipiq restore`` and ``clipiq bench --restore`` end to end on small temporary images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipiq.cli.main import main
from clipiq.data.io import load_image, save_image
from clipiq.degrade import apply
from clipiq.restore import dehaze


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "hazy"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((100 + rng.random((24 + 8 * i, 32, 3)) * 150).astype(np.uint8)).save(d / f"img{i}.png")
    Image.fromarray(np.full((20, 20, 3), 180, np.uint8)).save(d / "photo.jpg")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    sub = d / "sub"
    sub.mkdir()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(sub / "deep.png")
    return d


def _log(out: Path) -> list[dict]:
    with (out / "restore_log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.png")}


def test_restore_folder_with_a_corrupt_file_then_resume(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["restore", str(images), "--method", "dehaze-dcp", "-o", str(out), "--device", "cpu", "-r",
            "--option", "omega=0.8", "--batch-size", "2"]
    assert main(args) == 1  # the corrupt file failed, the rest were written
    err = capsys.readouterr().err
    assert "restored 5/6 images (0 already done), 1 failed" in err
    assert sorted(_snapshot(out)) == ["img0.png", "img1.png", "img2.png", "photo.png", "sub/deep.png"]
    rows = _log(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 6 and len(failed) == 1
    assert failed[0]["input"].endswith("corrupt.png") and "corrupt or truncated" in failed[0]["error"]
    # the output is the dehazed input, at 8-bit levels
    x = load_image(images / "img1.png")
    expected = dehaze(x, "dcp", omega=0.8)
    torch.testing.assert_close(load_image(out / "img1.png"), expected.mul(255).round().div(255), rtol=0, atol=1 / 255)
    manifest = json.loads((out / "restore.json").read_text())
    assert manifest["method"] == "dehaze-dcp" and manifest["options"] == {"omega": 0.8}

    before = _snapshot(out)
    assert main([*args[:-2], "--batch-size", "3", "--option", "tile_overlap=16"]) == 1  # run options may change
    err = capsys.readouterr().err
    assert "resuming: 5 of 6 images already restored" in err and "restored 5/6 images (5 already done)" in err
    assert _snapshot(out) == before  # nothing rewritten
    assert len(_log(out)) == 7  # only the corrupt file was tried again

    (images / "corrupt.png").unlink()
    assert main(args) == 0
    assert _snapshot(out) == before


def test_restore_files_all_good_exits_zero_and_lists(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "files"
    assert main(["restore", str(images / "img0.png"), str(images / "photo.jpg"), "--method", "dehaze-none",
                 "-o", str(out), "--device", "cpu", "--tile", "20", "--option", "tile_overlap=8"]) == 0
    assert sorted(_snapshot(out)) == ["img0.png", "photo.png"]
    # dehaze-none is the identity: the PNG output is the input's pixels
    assert torch.equal(load_image(out / "img0.png"), load_image(images / "img0.png"))
    capsys.readouterr()
    assert main(["restorers"]) == 0
    listing = capsys.readouterr().out
    assert "dehaze-dcp-strong" in listing and "tileable" in listing


def test_refuses_to_write_into_an_input_folder(images: Path, tmp_path: Path, capsys) -> None:
    before = _snapshot(images)
    assert main(["restore", str(images), "--method", "dehaze-dcp", "-o", str(images), "--device", "cpu"]) == 2
    assert "is the input folder" in capsys.readouterr().err
    # a folder holding an input file given alone, or a folder inside an input folder read with -r
    assert main(["restore", str(images / "img0.png"), "--method", "dehaze-dcp", "-o", str(images),
                 "--device", "cpu"]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert main(["restore", str(images), "-r", "--method", "dehaze-dcp", "-o", str(images / "sub"),
                 "--device", "cpu"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    # two inputs that would share an output name
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "img0.jpg")
    assert main(["restore", str(images / "img0.png"), str(other / "img0.jpg"), "--method", "dehaze-none",
                 "-o", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "would both be written to" in capsys.readouterr().err
    assert _snapshot(images) == before
    assert not (images / "restore.json").exists() and not (images / "restore_log.csv").exists()


def test_never_overwrites_a_file_it_did_not_write(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "img0.png"
    save_image(torch.zeros(3, 8, 8), mine)
    stamp = mine.stat().st_mtime_ns
    assert main(["restore", str(images / "img0.png"), str(images / "img1.png"), "--method", "dehaze-gamma",
                 "-o", str(out), "--device", "cpu"]) == 1
    assert mine.stat().st_mtime_ns == stamp and (out / "img1.png").exists()
    assert [r["error"] for r in _log(out) if r["status"] == "failed"][0].endswith("not overwritten")
    capsys.readouterr()
    # another method (or options) into the same folder is refused rather than mixed
    assert main(["restore", str(images / "img1.png"), "--method", "dehaze-contrast", "-o", str(out),
                 "--device", "cpu"]) == 2
    assert "use another output folder" in capsys.readouterr().err


def test_usage_errors_exit_2(images: Path, tmp_path: Path, capsys) -> None:
    base = ["restore", str(images / "img0.png"), "-o", str(tmp_path / "o"), "--device", "cpu"]
    assert main([*base, "--method", "dehaze-dpc"]) == 2
    assert "Did you mean dehaze-dcp" in capsys.readouterr().err
    assert main([*base, "--method", "dehaze-dcp", "--option", "omga=1"]) == 2
    assert "unknown option(s) 'omga'" in capsys.readouterr().err


def test_bench_restore_on_pairs(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        y = torch.linspace(0, 1, 40).view(40, 1).expand(40, 48)
        clean = torch.stack([0.2 + 0.6 * y, 0.7 - 0.5 * y, 0.05 * torch.rand(40, 48, generator=g)]).clamp(0, 1)
        clean = clean.mul(255).round().div(255)
        save_image(clean, pairs / f"img{i}_SRF_1_HR.png")
        save_image(apply(clean, "haze", 3, seed=0), pairs / f"img{i}_SRF_1_LR.png")
    summary = tmp_path / "bench.json"
    per_pair = tmp_path / "bench.csv"
    rc = main(["bench", "--restore", "dehaze-dcp", "--pairs", str(pairs), "--device", "cpu", "--json", str(summary),
               "--out", str(per_pair)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dehaze-dcp on" in out and "psnr_y" in out and "seconds_per_mp" in out and "peak_mib_per_mp" in out
    s = json.loads(summary.read_text())
    assert s["pairs"] == 2 and s["failed"] == 0 and s["crop_border"] == 1
    assert 10 < s["psnr_y"] < 60 and 0 < s["ssim_y"] <= 1 and s["seconds_per_mp"] > 0
    with per_pair.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["psnr"]) > 0 for r in rows)
    # dehazing beats leaving the haze
    assert main(["bench", "--restore", "dehaze-none", "--pairs", str(pairs), "--device", "cpu", "--json",
                 str(tmp_path / "none.json"), "--crop-border", "4"]) == 0
    none = json.loads((tmp_path / "none.json").read_text())
    assert none["crop_border"] == 4 and none["ssim_y"] < s["ssim_y"]
    capsys.readouterr()
    assert main(["bench", "--restore", "dehaze-dcp", "--device", "cpu"]) == 2
    assert "--restore NAME with --pairs DIR" in capsys.readouterr().err


def test_a_second_restore_into_the_same_folder_is_refused(images: Path, tmp_path: Path, capsys):
    from clipiq.core.files import exclusive_lock

    out = tmp_path / "busy"
    with exclusive_lock(out / ".restore.lock", str(out)):  # another run holds the folder
        rc = main(["restore", str(images / "img0.png"), "--method", "dehaze-none", "-o", str(out)])
    assert rc == 2
    assert str(out) in capsys.readouterr().err
    assert not (out / "img0.png").exists()
    assert main(["restore", str(images / "img0.png"), "--method", "dehaze-none", "-o", str(out)]) == 0


def test_save_image_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    target = tmp_path / "x.png"
    save_image(torch.rand(3, 8, 8), target)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="unknown image file extension"):
        save_image(torch.rand(3, 8, 8), tmp_path / "x.notanimage")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_the_manifest_records_the_weights_used_by_content(tmp_path: Path, capsys) -> None:
    from clipiq.restore.cdasr import SHIPPED

    src = tmp_path / "lr"
    src.mkdir()
    Image.fromarray((np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)).save(src / "a.png")
    out = tmp_path / "sr"
    args = ["restore", str(src), "--method", "cdasr", "--scale", "2", "-o", str(out), "--device", "cpu"]
    assert main(args) == 0
    manifest = json.loads((out / "restore.json").read_text())
    assert manifest["weights"] is None and manifest["weights_sha256"] == SHIPPED[2].sha256  # the shipped file
    assert Image.open(out / "a.png").size == (48, 40)
    # another weights file of any name: the folder refuses to mix outputs (here, the stored record is altered)
    (out / "restore.json").write_text(json.dumps({**manifest, "weights_sha256": "0" * 64}))
    capsys.readouterr()
    assert main(args) == 2
    assert "use another output folder" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["restore", str(src), "--method", "dehaze-dcp", "-o", str(plain), "--device", "cpu"]) == 0
    assert json.loads((plain / "restore.json").read_text())["weights_sha256"] is None
