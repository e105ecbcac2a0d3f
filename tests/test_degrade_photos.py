"""clipiq.degrade on real photos: severity ordering by PSNR, and imresize against MATLAB-made SR data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipiq.data.io import load_image
from clipiq.degrade import DEGRADATIONS, apply, imresize

# Smallest PSNR drop (dB) required between consecutive levels on the test crops; the smallest drop
# measured there is about 0.9 dB (motion_blur 4->5, jpeg 1->2), so this leaves room for platform noise.
MIN_STEP_DB = 0.25
SR_SCALES = (2, 3, 4)
# Published bicubic numbers for these very files (Y channel, border = scale), from shared/data/README.md.
BICUBIC_Y_PSNR = {
    "Set5": {2: 33.67, 3: 30.40, 4: 28.43},
    "Set14": {2: 30.33, 3: 27.63, 4: 26.09},
}


def _centre_crop(x: torch.Tensor, size: int = 256) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, top : top + size, left : left + size]


@pytest.fixture(scope="module")
def photo_crops(photos_dir: Path) -> torch.Tensor:
    files = [
        photos_dir / "kodak24" / "kodim03.png",
        photos_dir / "kodak24" / "kodim23.png",
        photos_dir / "mcmaster18" / "1.tif",
        sorted((photos_dir / "sunhays80").iterdir())[0],
    ]
    return torch.stack([_centre_crop(load_image(f)) for f in files])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1 / mse)).numpy()


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_higher_level_is_strictly_worse_on_real_photos(name, photo_crops):
    # one seed for all levels, so random ops draw the same noise/kernel/direction at every level
    psnr = np.stack([_psnr(apply(photo_crops, name, lv, seed=2024), photo_crops) for lv in range(1, 6)], 1)
    steps = psnr[:, :-1] - psnr[:, 1:]
    assert (steps > MIN_STEP_DB).all(), f"{name}: PSNR per level (rows = photos)\n{np.round(psnr, 2)}"
    assert (psnr[:, 0] < 45).all(), f"{name}: level 1 is barely visible\n{np.round(psnr, 2)}"


def _sr_pairs(sr_dir: Path, dataset: str, scale: int):
    folder = sr_dir / dataset / f"image_SRF_{scale}"
    for hr_path in sorted(folder.glob("*_HR.png")):
        yield hr_path, hr_path.with_name(hr_path.name.replace("_HR", "_LR"))


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# Set5 goes through the tensor path, Set14 through the numpy path (same algorithm, fewer torch calls).
@pytest.mark.parametrize("dataset, as_tensor", [("Set5", True), ("Set14", False)])
def test_imresize_float_reproduces_matlab_lr_files(sr_dir, dataset, as_tensor):
    """imresize(hr, 1/s) on floats, rounded to uint8, against MATLAB's LR files (colour images)."""
    worst, all_psnr = float("inf"), []
    for scale in SR_SCALES:
        for hr_path, lr_path in _sr_pairs(sr_dir, dataset, scale):
            hr_im, lr_im = Image.open(hr_path), Image.open(lr_path)
            if hr_im.mode != "RGB":  # Set14's two greyscale images are covered by the uint8 test
                continue
            hr = np.asarray(hr_im).astype(np.float32) / 255
            lr = np.asarray(lr_im)
            if as_tensor:
                out = imresize(torch.from_numpy(hr).permute(2, 0, 1), 1 / scale).permute(1, 2, 0).numpy()
            else:
                out = imresize(hr, 1 / scale)
            assert out.dtype == np.float32
            ours = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
            assert ours.shape == lr.shape
            p = _psnr_u8(ours, lr)
            all_psnr.append(p)
            worst = min(worst, p)
    assert all_psnr
    # Measured: min 55.1 dB, mean about 57 dB. The residual is MATLAB rounding its uint8 intermediate
    # image between the two 1-D passes, which the float path deliberately does not do.
    assert worst >= 50.0 and np.mean(all_psnr) >= 55.0, f"min {worst:.2f}, mean {np.mean(all_psnr):.2f}"


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_imresize_uint8_is_bit_exact_with_matlab(sr_dir, dataset):
    for scale in SR_SCALES:
        for hr_path, lr_path in _sr_pairs(sr_dir, dataset, scale):
            hr, lr = np.asarray(Image.open(hr_path)), np.asarray(Image.open(lr_path))
            ours = imresize(hr, 1 / scale)
            assert ours.dtype == np.uint8
            np.testing.assert_array_equal(ours, lr, err_msg=f"{lr_path.name}")


def _y_channel(rgb_u8: np.ndarray) -> np.ndarray:
    rgb = rgb_u8.astype(np.float64)
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_imresize_upscaling_reproduces_published_bicubic_baseline(sr_dir, dataset):
    for scale in SR_SCALES:
        scores = []
        for hr_path, lr_path in _sr_pairs(sr_dir, dataset, scale):
            hr = np.asarray(Image.open(hr_path).convert("RGB"))
            lr = np.asarray(Image.open(lr_path).convert("RGB"))
            sr = imresize(lr, scale)
            assert sr.shape == hr.shape
            y_sr, y_hr = _y_channel(sr)[scale:-scale, scale:-scale], _y_channel(hr)[scale:-scale, scale:-scale]
            scores.append(10 * np.log10(255.0**2 / np.mean((y_sr - y_hr) ** 2)))
        assert abs(np.mean(scores) - BICUBIC_Y_PSNR[dataset][scale]) < 0.015, (scale, np.mean(scores))
