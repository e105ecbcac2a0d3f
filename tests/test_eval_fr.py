"""clipiq.eval PSNR/SSIM/rgb2ycbcr against scikit-image and the published Set5 bicubic number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr as sk_rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from clipiq.data.io import list_images, load_image
from clipiq.eval import psnr, rgb2ycbcr, ssim


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(1, 2, 0).to(torch.float64).numpy()


def _sk_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """scikit-image SSIM with the Wang et al. settings for (C,H,W) tensors."""
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    if a.shape[0] == 1:
        return float(structural_similarity(a[0].double().numpy(), b[0].double().numpy(), **kw))
    return float(structural_similarity(_hwc(a), _hwc(b), channel_axis=2, **kw))


@pytest.fixture(scope="module")
def photo_pairs(photos_dir: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two real 160x200 crops, each with a realistic distortion (noise; blur plus 8-bit rounding)."""
    paths = sorted(list_images([photos_dir / "kodak24"]))[:2]
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for i, p in enumerate(paths):
        ref = load_image(p)[:, 100:260, 200:400].double()
        if i == 0:
            dist = (ref + 0.04 * torch.randn(ref.shape, generator=gen, dtype=ref.dtype)).clamp(0, 1)
        else:
            k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=ref.dtype) / 16
            blur = torch.nn.functional.conv2d(
                torch.nn.functional.pad(ref[None], (2, 2, 2, 2), mode="reflect"),
                (k[:, None] * k[None, :]).expand(3, 1, 5, 5),
                groups=3,
            )[0]
            dist = blur.mul(255).round().div(255)
        pairs.append((ref, dist))
    return pairs


def test_rgb2ycbcr_matches_skimage_matlab_convention() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, 9, generator=gen, dtype=torch.float64)
    ours = rgb2ycbcr(x)
    ref = sk_rgb2ycbcr(_hwc(x)) / 255.0  # skimage follows MATLAB: Y in [16, 235] for [0,1] input
    np.testing.assert_allclose(_hwc(ours), ref, atol=1e-12)
    y = rgb2ycbcr(x[None], y_only=True)
    assert y.shape == (1, 1, 7, 9)
    torch.testing.assert_close(y[0], ours[:1])
    corners = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]).view(3, 1, 2)
    assert rgb2ycbcr(corners, y_only=True).flatten().tolist() == pytest.approx([16 / 255, 235 / 255])


def test_psnr_matches_skimage(photo_pairs) -> None:
    refs = torch.stack([r for r, _ in photo_pairs])
    dists = torch.stack([d for _, d in photo_pairs])
    out = psnr(dists, refs)
    assert out.shape == (2,) and out.dtype == torch.float64
    for i in range(2):
        expected = peak_signal_noise_ratio(_hwc(refs[i]), _hwc(dists[i]), data_range=1.0)
        assert out[i].item() == pytest.approx(expected, abs=1e-8)
        single = psnr(dists[i], refs[i], crop_border=4)
        assert single.ndim == 0
        cropped = peak_signal_noise_ratio(
            _hwc(refs[i][:, 4:-4, 4:-4]), _hwc(dists[i][:, 4:-4, 4:-4]), data_range=1.0
        )
        assert single.item() == pytest.approx(cropped, abs=1e-8)


def test_psnr_data_range_and_y_channel(photo_pairs) -> None:
    ref, dist = photo_pairs[0]
    base = psnr(dist, ref, y_channel=True).item()
    scaled = psnr(dist * 255, ref * 255, y_channel=True, data_range=255.0).item()
    assert scaled == pytest.approx(base, abs=1e-8)
    y_ref = sk_rgb2ycbcr(_hwc(ref))[..., 0] / 255.0
    y_dist = sk_rgb2ycbcr(_hwc(dist))[..., 0] / 255.0
    assert base == pytest.approx(peak_signal_noise_ratio(y_ref, y_dist, data_range=1.0), abs=1e-8)
    yq = psnr(dist, ref, y_channel=True, quantize_y=True).item()
    ref_q = peak_signal_noise_ratio(np.round(y_ref * 255), np.round(y_dist * 255), data_range=255.0)
    assert yq == pytest.approx(ref_q, abs=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage_on_photos(photo_pairs, dtype: torch.dtype) -> None:
    refs = torch.stack([r for r, _ in photo_pairs]).to(dtype)
    dists = torch.stack([d for _, d in photo_pairs]).to(dtype)
    out = ssim(dists, refs)
    assert out.shape == (2,) and out.dtype == dtype
    for i in range(2):
        expected = _sk_ssim(dists[i], refs[i])
        assert 0.3 < expected < 0.99  # the distortions are neither trivial nor total
        assert out[i].item() == pytest.approx(expected, abs=1e-4)
        single = ssim(dists[i], refs[i])
        assert single.ndim == 0 and single.item() == pytest.approx(expected, abs=1e-4)
        cropped = ssim(dists[i], refs[i], crop_border=6).item()
        assert cropped == pytest.approx(_sk_ssim(dists[i][:, 6:-6, 6:-6], refs[i][:, 6:-6, 6:-6]), abs=1e-4)


def test_ssim_y_channel_and_grey_match_skimage(photo_pairs) -> None:
    ref, dist = photo_pairs[1]
    y_ref = torch.from_numpy(sk_rgb2ycbcr(_hwc(ref))[..., 0] / 255.0)[None]
    y_dist = torch.from_numpy(sk_rgb2ycbcr(_hwc(dist))[..., 0] / 255.0)[None]
    expected = _sk_ssim(y_dist, y_ref)
    assert ssim(dist, ref, y_channel=True).item() == pytest.approx(expected, abs=1e-6)
    assert ssim(y_dist, y_ref).item() == pytest.approx(expected, abs=1e-6)


def test_identical_images() -> None:
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    assert torch.isinf(psnr(x, x)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(2))


def _set5_pairs(sr_dir: Path, scale: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    folder = sr_dir / "Set5" / f"image_SRF_{scale}"
    hr_paths = sorted(folder.glob("*_HR.png"))
    if len(hr_paths) != 5:
        pytest.skip(f"expected 5 Set5 HR images in {folder}, found {len(hr_paths)}")
    return [(load_image(p), load_image(str(p).replace("_HR.png", "_LR.png"))) for p in hr_paths]


def test_set5_bicubic_x2_psnr_matches_published(sr_dir: Path) -> None:
    degrade = pytest.importorskip("clipiq.degrade")
    imresize = degrade.imresize
    values, values_q, ssims = [], [], []
    for hr, lr in _set5_pairs(sr_dir, 2):
        sr = imresize(lr.double(), scale=2)
        assert sr.shape == hr.shape
        sr = sr.clamp(0, 1).mul(255).round().div(255)  # saved as uint8, as MATLAB/BasicSR evaluate it
        values.append(psnr(sr, hr.double(), crop_border=2, y_channel=True).item())
        values_q.append(psnr(sr, hr.double(), crop_border=2, y_channel=True, quantize_y=True).item())
        ssims.append(ssim(sr, hr.double(), crop_border=2, y_channel=True).item())
    # Published: 33.66 dB; these files measure 33.67 with MATLAB. Float Y reads slightly above uint8 Y.
    assert np.mean(values) == pytest.approx(33.67, abs=0.015)
    assert np.mean(values) == pytest.approx(33.66, abs=0.04)
    assert np.mean(values_q) == pytest.approx(33.66, abs=0.04)
    assert np.mean(values_q) < np.mean(values)
    # Published bicubic SSIM on Set5 x2 (SRCNN/VDSR tables): 0.9299.
    assert np.mean(ssims) == pytest.approx(0.9299, abs=0.002)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_errors(fn) -> None:
    x = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        fn(x, torch.rand(3, 32, 31))
    with pytest.raises(ValueError, match="crop_border=16"):
        fn(x, x, crop_border=16)
    with pytest.raises(ValueError, match="crop_border must be"):
        fn(x, x, crop_border=-1)
    with pytest.raises(ValueError, match="a must be a floating-point"):
        fn(x.mul(255).byte(), x.mul(255).byte())
    with pytest.raises(ValueError, match="b must be a floating-point"):
        fn(x, x.mul(255).byte())
    with pytest.raises(ValueError, match="a must be a torch.Tensor"):
        fn(x.numpy(), x)
    with pytest.raises(ValueError, match=r"\(C,H,W\) or \(N,C,H,W\)"):
        fn(x[0], x[0])
    with pytest.raises(ValueError, match="3-channel"):
        fn(x[:1], x[:1], y_channel=True)
    with pytest.raises(ValueError, match="data_range"):
        fn(x, x, data_range=0)
    with pytest.raises(ValueError, match="quantize_y"):
        fn(x, x, quantize_y=True)


def test_ssim_too_small_and_rgb2ycbcr_errors() -> None:
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(3, 20, 20), torch.rand(3, 20, 20), crop_border=5)
    with pytest.raises(ValueError, match="3 RGB channels"):
        rgb2ycbcr(torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="img must be a floating-point"):
        rgb2ycbcr(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_half_precision_is_computed_in_float32() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(3, 24, 24, generator=gen)
    b = (a + 0.05 * torch.randn(3, 24, 24, generator=gen)).clamp(0, 1)
    out = psnr(a.half(), b.half())
    assert out.dtype == torch.float16
    assert out.float().item() == pytest.approx(psnr(a.half().float(), b.half().float()).item(), abs=0.02)


def test_gradients() -> None:
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(2, 3, 14, 14, generator=gen, dtype=torch.float64)
    x = (ref + 0.1 * torch.randn(ref.shape, generator=gen, dtype=ref.dtype)).requires_grad_(True)
    # fast_mode checks random directional derivatives: the same analytic-vs-numeric test, far cheaper.
    assert torch.autograd.gradcheck(lambda t: psnr(t, ref, y_channel=True), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: ssim(t, ref), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: ssim(t, ref, y_channel=True), (x,), fast_mode=True)
    # Raising SSIM by gradient ascent moves the image towards the reference.
    loss = -ssim(x, ref).sum()
    loss.backward()
    with torch.no_grad():
        stepped = x - 0.05 * x.grad
    assert (ssim(stepped, ref) > ssim(x.detach(), ref)).all()
