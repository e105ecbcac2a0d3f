"""Paired restoration data: Set5 (SRF layout), DIV2K layout, aligned crops, shared augmentation, synthesis."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipiq.data.datasets import skip_bad_collate
from clipiq.data.io import ImageLoadError
from clipiq.data.paired import (
    ImagePair,
    PairedImageDataset,
    SyntheticPairDataset,
    find_div2k_pairs,
    find_pairs,
    find_srf_pairs,
    paired_augment,
    write_srf_pairs,
)
from clipiq.degrade import imresize


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(np.mean((a.double().numpy() - b.double().numpy()) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _downscale(gt: torch.Tensor, scale: int) -> torch.Tensor:
    return imresize(gt, 1 / scale).clamp(0, 1).mul(255).round().div(255)


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """All 8 flips/rotations of an image, in paired_augment's (hflip, vflip, transpose) order."""
    return [
        paired_augment([x], h, v, t)[0] for h in (False, True) for v in (False, True) for t in (False, True)
    ]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_pairs_align(sr_dir: Path, scale: int) -> None:
    pairs = find_srf_pairs(sr_dir / "Set5", scale)
    assert len(pairs) == 5
    assert pairs == find_pairs(sr_dir / "Set5", scale) == find_srf_pairs(sr_dir / "Set5" / f"image_SRF_{scale}", scale)
    for pair in pairs:
        assert pair.lq.name.endswith(f"_SRF_{scale}_LR.png") and pair.gt.name.endswith(f"_SRF_{scale}_HR.png")
        assert pair.lq.name.replace("_LR", "") == pair.gt.name.replace("_HR", "")
    ds = PairedImageDataset(pairs, scale=scale)
    for i in range(len(ds)):
        item = ds[i]
        h, w = item["lq"].shape[-2:]
        assert item["gt"].shape == (3, h * scale, w * scale)
        # The files' LR was made by MATLAB bicubic imresize of the HR: our imresize must reproduce it.
        assert _psnr(_downscale(item["gt"], scale), item["lq"]) > 45


@pytest.mark.parametrize("scale", [2, 4])
def test_set5_crops_align(sr_dir: Path, scale: int) -> None:
    pairs = find_srf_pairs(sr_dir / "Set5", scale)
    ds = PairedImageDataset(pairs, scale=scale, patch_size=24, seed=1)
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == (3, 24, 24) and item["gt"].shape == (3, 24 * scale, 24 * scale)
        assert _psnr(_downscale(item["gt"], scale), item["lq"]) > 35
    # the check has teeth: the same crop with the gt shifted by one lq pixel no longer matches
    full = PairedImageDataset(pairs, scale=scale)[0]
    lq, gt = full["lq"][:, 10:34, 10:34], full["gt"][:, 11 * scale : 35 * scale, 10 * scale : 34 * scale]
    assert _psnr(_downscale(gt, scale), lq) < 35


def test_set5_augmentation_is_shared(sr_dir: Path) -> None:
    scale = 3
    pairs = find_srf_pairs(sr_dir / "Set5", scale)
    plain = PairedImageDataset(pairs, scale=scale, patch_size=16, augment=False, seed=5)
    aug = PairedImageDataset(pairs, scale=scale, patch_size=16, augment=True, seed=5)
    used = set()
    for epoch in range(3):
        plain.set_epoch(epoch)
        aug.set_epoch(epoch)
        for i in range(len(pairs)):
            p, a = plain[i], aug[i]
            lq_options = _dihedral(p["lq"])
            matches = [k for k, t in enumerate(lq_options) if torch.equal(t, a["lq"])]
            assert matches, "augmented lq is not a flip/rotation of the same crop"
            k = matches[0]
            assert torch.equal(_dihedral(p["gt"])[k], a["gt"])  # the gt got the same transform
            assert _psnr(_downscale(a["gt"], scale), a["lq"]) > 35
            used.add(k)
    assert len(used) >= 4  # augmentation really varies


def test_crops_are_seeded_per_item(sr_dir: Path) -> None:
    pairs = find_srf_pairs(sr_dir / "Set5", 2)
    a = PairedImageDataset(pairs, scale=2, patch_size=16, augment=True, seed=0)
    b = PairedImageDataset(pairs, scale=2, patch_size=16, augment=True, seed=0)
    assert torch.equal(a[3]["gt"], b[3]["gt"])
    assert not torch.equal(a[3]["gt"], PairedImageDataset(pairs, 2, 16, True, seed=1)[3]["gt"])
    b.set_epoch(1)
    assert not torch.equal(a[3]["gt"], b[3]["gt"])


def _png(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_div2k_layout(tmp_path: Path) -> None:
    _png(tmp_path / "DIV2K_train_HR" / "0001.png", 24, 12)
    _png(tmp_path / "DIV2K_train_HR" / "0002.png", 25, 13)  # odd size: LR is floor(size / 3)
    _png(tmp_path / "DIV2K_train_LR_bicubic" / "X3" / "0001x3.png", 8, 4)
    _png(tmp_path / "DIV2K_train_LR_bicubic" / "X3" / "0002x3.png", 8, 4)
    pairs = find_pairs(tmp_path, 3)
    assert pairs == find_div2k_pairs(tmp_path, 3)
    assert pairs[0] == ImagePair(
        lq=tmp_path / "DIV2K_train_LR_bicubic" / "X3" / "0001x3.png", gt=tmp_path / "DIV2K_train_HR" / "0001.png"
    )
    ds = PairedImageDataset(pairs, scale=3)
    assert ds[1]["gt"].shape == (3, 12, 24)  # cropped to 3x the LR
    _png(tmp_path / "DIV2K_train_LR_bicubic" / "X3" / "0002x3.png", 7, 4)
    with pytest.raises(ValueError, match=r"0002\.png is 25x13 but .*0002x3\.png is 7x4; expected 3x \(21x12\)"):
        ds[1]
    _png(tmp_path / "DIV2K_train_HR" / "0003.png", 9, 9)
    with pytest.raises(FileNotFoundError, match=r"0003x3\.png: low-resolution partner of .*0003\.png not found"):
        find_div2k_pairs(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match="X2: folder not found"):
        find_div2k_pairs(tmp_path, 2)


def test_srf_layout_errors(tmp_path: Path) -> None:
    _png(tmp_path / "image_SRF_2" / "img_001_SRF_2_HR.png", 8, 8)
    with pytest.raises(FileNotFoundError, match=r"img_001 has only \['HR'\] for scale 2"):
        find_srf_pairs(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match="no \\*_SRF_4_HR"):
        find_srf_pairs(tmp_path, 4)


def test_bad_files_named_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pairs = []
    for i in range(4):
        _png(tmp_path / f"{i}_HR.png", 16, 16, seed=i)
        _png(tmp_path / f"{i}_LR.png", 8, 8, seed=i)
        pairs.append(ImagePair(tmp_path / f"{i}_LR.png", tmp_path / f"{i}_HR.png"))
    (tmp_path / "2_LR.png").write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match=r"2_LR\.png: not a recognised image format"):
        PairedImageDataset(pairs, scale=2)[2]
    ds = PairedImageDataset(pairs, scale=2, patch_size=4, augment=True, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="clipiq.data.paired"):
        assert ds[2] is None
    assert "2_LR.png" in caplog.text
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=skip_bad_collate))
    assert batches[0]["index"].tolist() == [0, 1, 3]
    assert batches[0]["lq"].shape == (3, 3, 4, 4) and batches[0]["gt"].shape == (3, 3, 8, 8)


def test_patch_larger_than_image(tmp_path: Path) -> None:
    _png(tmp_path / "HR.png", 16, 16)
    _png(tmp_path / "LR.png", 8, 8)
    with pytest.raises(ValueError, match="patch_size 9 is larger than the lq image 8x8"):
        PairedImageDataset([ImagePair(tmp_path / "LR.png", tmp_path / "HR.png")], scale=2, patch_size=9)[0]


@pytest.fixture(scope="module")
def photo_folder(photos_dir: Path) -> Path:
    return photos_dir / "mcmaster18"


@pytest.mark.parametrize("scale", [2, 3, 4, 8, 16])
def test_synthetic_sr_pairs(photo_folder: Path, scale: int) -> None:
    ds = SyntheticPairDataset(photo_folder, task="sr", scale=scale, patch_size=12, seed=0)
    assert len(ds) == 18
    item = ds[0]
    assert item["lq"].shape == (3, 12, 12) and item["gt"].shape == (3, 12 * scale, 12 * scale)
    # lq is exactly the 8-bit bicubic downscale of gt, and gt is a real crop of the photo
    torch.testing.assert_close(item["lq"], _downscale(item["gt"], scale), rtol=0, atol=0)
    full = SyntheticPairDataset(photo_folder, task="sr", scale=scale)[0]
    h, w = full["gt"].shape[-2:]
    assert h % scale == 0 and w % scale == 0 and full["lq"].shape[-2:] == (h // scale, w // scale)
    # find the crop in the photo: match its 4x4 corner on the lq grid, then the whole patch
    g = 12 * scale
    corners = full["gt"][:, : h - g + 1, : w - g + 1].unfold(1, 4, scale).unfold(2, 4, scale)
    hits = torch.nonzero((corners - item["gt"][:, None, None, :4, :4]).abs().amax(dim=(0, 3, 4)) == 0)
    found = [(t * scale, l * scale) for t, l in hits.tolist()
             if torch.equal(full["gt"][:, t * scale : t * scale + g, l * scale : l * scale + g], item["gt"])]
    assert len(found) == 1


def test_synthetic_sr_augment_shared(photo_folder: Path) -> None:
    plain = SyntheticPairDataset(photo_folder, scale=2, patch_size=10, augment=False, seed=3)
    aug = SyntheticPairDataset(photo_folder, scale=2, patch_size=10, augment=True, seed=3)
    used = set()
    for i in range(6):
        p, a = plain[i], aug[i]
        k = next(k for k, t in enumerate(_dihedral(p["gt"])) if torch.equal(t, a["gt"]))
        assert torch.equal(_dihedral(p["lq"])[k], a["lq"])
        used.add(k)
    assert len(used) >= 3


def test_synthetic_lowlight_blur(photo_folder: Path) -> None:
    ds = SyntheticPairDataset(photo_folder, task="lowlight_blur", patch_size=32, augment=True, seed=0)
    item = ds[1]
    assert item["lq"].shape == item["gt"].shape == (3, 32, 32)
    assert float(item["lq"].mean()) < float(item["gt"].mean())  # darkened
    again = SyntheticPairDataset(photo_folder, task="lowlight_blur", patch_size=32, augment=True, seed=0)[1]
    assert torch.equal(item["lq"], again["lq"]) and torch.equal(item["gt"], again["gt"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["lq"], item["lq"])


def test_synthetic_argument_errors(photo_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        SyntheticPairDataset(photo_folder, task="denoise")
    with pytest.raises(ValueError, match="scale must be one of"):
        SyntheticPairDataset(photo_folder, task="sr", scale=5)
    with pytest.raises(FileNotFoundError, match="no images found"):
        SyntheticPairDataset(tmp_path)
    with pytest.raises(ValueError, match=r"smaller than the gt patch 1000x1000"):
        SyntheticPairDataset(photo_folder, scale=4, patch_size=250)[0]


@pytest.mark.parametrize("scale", [8, 16])
def test_write_srf_pairs_for_large_scales(sr_dir: Path, tmp_path: Path, scale: int) -> None:
    """x8/x16 pairs in the Set5 layout from a Set5-layout folder's HR files (its LR files are not sources)."""
    written = write_srf_pairs(sr_dir / "Set5" / "image_SRF_4", tmp_path / "Set5", scale)
    assert len(written) == 5 and written == find_pairs(tmp_path / "Set5", scale)
    assert written[0].gt.name == f"img_001_SRF_{scale}_HR.png" and written[0].gt.parent.name == f"image_SRF_{scale}"
    ds = PairedImageDataset(written, scale=scale)
    item = ds[0]
    h, w = item["lq"].shape[-2:]
    assert item["gt"].shape == (3, h * scale, w * scale)
    torch.testing.assert_close(item["lq"], _downscale(item["gt"], scale), rtol=0, atol=0)
