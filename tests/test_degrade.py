"""clipiq.degrade: registry, apply/compose API, input checks, determinism and per-op behaviour."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from scipy import ndimage

from clipiq import degrade
from clipiq.degrade import DEGRADATIONS, FAMILIES, apply, compose, sample_recipe
from clipiq.degrade._common import fft_filter

REPO = Path(__file__).resolve().parents[1]
REQUIRED = (
    "gaussian_blur", "motion_blur", "defocus_blur", "gaussian_noise", "poisson_gaussian_noise",
    "impulse_noise", "jpeg", "low_light", "over_exposure", "haze", "contrast_change",
    "saturation_change", "color_cast", "pixelate", "quantization", "banding",
)  # fmt: skip
RANDOM_OPS = [n for n, r in DEGRADATIONS.items() if r.random]
DIFFERENTIABLE_OPS = [n for n, r in DEGRADATIONS.items() if r.differentiable]


def smooth_image(h: int = 40, w: int = 56, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """A photo-like test image: smooth colour blobs plus fine texture, values in [0.05, 0.95]."""
    g = torch.Generator().manual_seed(seed)
    shape = (n or 1, 3)
    coarse = torch.rand(*shape, 5, 6, generator=g)
    x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    x = x + 0.08 * torch.rand(*shape, h, w, generator=g)
    x = (x - x.amin()) / (x.amax() - x.amin())
    x = 0.05 + 0.9 * x
    return x if n else x[0]


def to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im).astype(np.float32) / 255).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------ registry


def test_registry_has_required_names_and_well_formed_records():
    assert set(REQUIRED) <= set(DEGRADATIONS)
    for name, rec in DEGRADATIONS.items():
        assert rec.name == name
        assert rec.family in FAMILIES
        assert rec.description and "\n" not in rec.description
        assert len(rec.levels) == 5
        assert all(set(lv) <= set(rec.parameters) and lv for lv in rec.levels)
        assert callable(rec.fn)
    assert {r.family for r in DEGRADATIONS.values()} == set(FAMILIES)


def test_registry_records_are_read_only():
    rec = DEGRADATIONS["jpeg"]
    with pytest.raises(TypeError):
        rec.levels[0]["quality"] = 99  # type: ignore[index]
    with pytest.raises(AttributeError):
        rec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEGRADATIONS["x"] = rec  # type: ignore[index]


def test_record_call_and_overrides_match_apply():
    x = smooth_image()
    rec = DEGRADATIONS["gaussian_blur"]
    torch.testing.assert_close(rec(x, 2), apply(x, "gaussian_blur", 2))
    torch.testing.assert_close(apply(x, "gaussian_blur", 1, sigma=2.0), degrade.gaussian_blur(x, sigma=2.0))
    assert not torch.equal(apply(x, "gaussian_blur", 1, sigma=2.0), apply(x, "gaussian_blur", 1))


# ------------------------------------------------------------------------------------ shape and dtype


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_single_and_batch_keep_shape_dtype_range(name):
    single = smooth_image()
    batch = smooth_image(n=3)
    for x in (single, batch):
        y = apply(x, name, 3, seed=1)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x), f"{name} left the image unchanged"
    y64 = apply(single.double(), name, 3, seed=1)
    assert y64.dtype == torch.float64
    yh = apply(single.half(), name, 3, seed=1)
    assert yh.dtype == torch.float16 and yh.shape == single.shape


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_batch_item_zero_matches_single_image(name):
    batch = smooth_image(n=2)
    out = apply(batch, name, 4, seed=7)
    torch.testing.assert_close(out[0], apply(batch[0], name, 4, seed=7), atol=2e-6, rtol=0)
    if not DEGRADATIONS[name].random:
        torch.testing.assert_close(out[1], apply(batch[1], name, 4), atol=2e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_runs_on_cuda(name):
    x = smooth_image(n=2).cuda()
    y = apply(x, name, 3, seed=0)
    assert y.device == x.device and y.shape == x.shape


# -------------------------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_random_ops_are_deterministic_per_seed(name):
    x = smooth_image(n=2)
    a, b = apply(x, name, 3, seed=123), apply(x, name, 3, seed=123)
    assert torch.equal(a, b)
    assert not torch.equal(a, apply(x, name, 3, seed=124))
    assert not torch.equal(apply(x, name, 3), apply(x, name, 3)), "seed=None should draw fresh noise"


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_batch_images_get_independent_draws(name):
    x = smooth_image().unsqueeze(0).repeat(2, 1, 1, 1)
    y = apply(x, name, 3, seed=5)
    assert not torch.equal(y[0], y[1])


def test_compose_is_deterministic_and_seed_dependent():
    x = smooth_image(n=2)
    c = compose([("motion_blur", 2), ("gaussian_noise", 2), ("jpeg", 3)], seed=11)
    assert torch.equal(c(x), c(x))
    assert not torch.equal(c(x), compose(c.steps, seed=12)(x))
    unseeded = compose([("gaussian_noise", 2)])
    assert not torch.equal(unseeded(x), unseeded(x))


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(8, 8), "shape"),
        (torch.rand(1, 1, 3, 8, 8), "shape"),
        (torch.rand(1, 8, 8), "channels"),
        (torch.rand(2, 4, 8, 8), "channels"),
        (torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8), "floating-point"),
        (torch.full((3, 8, 8), 1.5), r"\[0,1\]"),
        (torch.full((3, 8, 8), -0.1), r"\[0,1\]"),
        (torch.full((3, 8, 8), float("nan")), r"\[0,1\]"),
        (torch.rand(3, 0, 8), "empty"),
    ],
)
@pytest.mark.parametrize("name", ["gaussian_blur", "jpeg", "gaussian_noise"])
def test_bad_image_raises_value_error_naming_image(bad, message, name):
    with pytest.raises(ValueError, match=f"image.*{message}|{message}.*image"):
        apply(bad, name, 1, seed=0)


def test_bad_arguments_raise():
    x = smooth_image()
    with pytest.raises(TypeError, match="image"):
        apply(x.numpy(), "gaussian_blur", 1)
    with pytest.raises(ValueError, match="unknown degradation 'gausian_blur'.*Did you mean gaussian_blur"):
        apply(x, "gausian_blur", 1)
    for level in (0, 6, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="level"):
            apply(x, "gaussian_blur", level)
    with pytest.raises(ValueError, match="unknown parameter"):
        apply(x, "gaussian_blur", 1, radius=3)
    with pytest.raises(ValueError, match="seed"):
        apply(x, "gaussian_noise", 1, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        apply(x, "gaussian_noise", 1, seed=1.5)
    with pytest.raises(ValueError, match="sigma"):
        degrade.gaussian_blur(x, sigma=-1.0)
    with pytest.raises(ValueError, match="quality"):
        degrade.jpeg(x, quality=0)
    with pytest.raises(ValueError, match=r"steps\[1\]"):
        compose([("jpeg", 2), ("jpeg", 9)])
    with pytest.raises(ValueError, match=r"steps\[0\]"):
        compose(["jpeg"])
    with pytest.raises(ValueError, match="unknown degradation.*Did you mean|unknown degradation"):
        compose([("nope", 1)])


# ---------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", DIFFERENTIABLE_OPS)
def test_gradients_flow_through_differentiable_ops(name):
    x = smooth_image(24, 24, n=2).clamp(0.2, 0.8).requires_grad_(True)
    y = apply(x, name, 2, seed=0)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gaussian_blur_passes_gradcheck():
    x = smooth_image(8, 9, n=1).double().clamp(0.1, 0.9).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: degrade.gaussian_blur(t, sigma=1.2), (x,), fast_mode=True)


# ------------------------------------------------------------------------- per-op vs references


def test_gaussian_blur_matches_scipy():
    x = smooth_image(30, 44)
    for sigma in (0.8, 2.0, 4.5):
        ours = degrade.gaussian_blur(x.double(), sigma).numpy()
        radius = math.ceil(3 * sigma)
        ref = np.stack([ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma)
                        for c in x.double().numpy()])  # fmt: skip
        np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_fft_filter_is_a_true_convolution_with_mirrored_borders():
    x = smooth_image(20, 27, n=2).double()
    k = torch.rand(2, 7, 5, dtype=torch.float64)  # asymmetric, so a flipped kernel would be caught
    ours = fft_filter(x, k).numpy()
    for i in range(2):
        for c in range(3):
            ref = ndimage.convolve(x[i, c].numpy(), k[i].numpy(), mode="mirror")
            np.testing.assert_allclose(ours[i, c], ref, atol=1e-10)


def test_defocus_blur_matches_scipy_convolution_with_disk():
    x = smooth_image(33, 35).double()
    k = degrade.disk_kernel(3.5)
    assert k.shape == (9, 9) and abs(k.sum() - 1) < 1e-12 and np.allclose(k, k.T) and np.allclose(k, k[::-1])
    ours = degrade.defocus_blur(x, 3.5).numpy()
    ref = np.stack([ndimage.convolve(c, k, mode="mirror") for c in x.numpy()])
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_motion_kernel_properties():
    rng = np.random.default_rng(3)
    traj = degrade.motion_trajectory(rng)
    assert abs(np.abs(np.diff(traj)).sum() - 1) < 1e-9, "trajectory has unit length"
    sizes = []
    for length in (5, 15, 33):
        k = degrade.motion_kernel(length, trajectory=traj)
        assert k.min() >= 0 and abs(k.sum() - 1) < 1e-12 and k.shape[0] % 2 == 1
        yy, xx = np.mgrid[: k.shape[0], : k.shape[1]]
        c = k.shape[0] // 2
        assert abs((k * yy).sum() - c) < 0.05 and abs((k * xx).sum() - c) < 0.05, "centred on its mass"
        sizes.append(k.shape[0])
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    np.testing.assert_array_equal(degrade.motion_kernel(9, rng=4), degrade.motion_kernel(9, rng=4))


def test_gaussian_noise_statistics():
    x = torch.full((3, 200, 200), 0.5)
    y = degrade.gaussian_noise(x, sigma=0.05, seed=0)
    r = (y - x).flatten(1)
    assert abs(float(r.mean())) < 2e-3
    assert abs(float(r.std()) - 0.05) < 2e-3
    corr = torch.corrcoef(r)[0, 1]
    assert abs(float(corr)) < 0.02, "channels draw independent noise"


def test_poisson_gaussian_noise_variance_follows_signal():
    shot, read = 0.01, 0.02
    for level in (0.2, 0.7):
        x = torch.full((3, 150, 150), level)
        r = degrade.poisson_gaussian_noise(x, shot=shot, read=read, seed=1) - x
        assert abs(float(r.var()) / (shot * level + read**2) - 1) < 0.05


def test_impulse_noise_sets_nested_pixels_to_black_or_white():
    x = smooth_image(100, 100)
    masks = []
    for amount in (0.05, 0.2):
        y = degrade.impulse_noise(x, amount=amount, seed=3)
        changed = (y != x).any(dim=0)
        assert abs(float(changed.float().mean()) - amount) < 0.02
        vals = y[:, changed]
        assert ((vals == 0) | (vals == 1)).all() and (vals == vals[0:1]).all(), "whole pixels go black/white"
        masks.append(changed)
    assert not (masks[0] & ~masks[1]).any(), "a larger amount corrupts a superset of pixels"


def test_jpeg_matches_opencv_libjpeg():
    cv2 = pytest.importorskip("cv2")
    x = smooth_image(48, 64)
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for q in (50, 10):
        ok, buf = cv2.imencode(".jpg", arr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
        ours = degrade.jpeg(x, q).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_saturation_and_contrast_match_pil_enhance():
    x = smooth_image(40, 50)
    x = from_pil(to_pil(x))  # on the uint8 grid, as PIL sees it
    for f in (0.3, 0.7):
        ref = from_pil(ImageEnhance.Color(to_pil(x)).enhance(f))
        torch.testing.assert_close(degrade.saturation_change(x, f), ref, atol=1.5 / 255, rtol=0)
        ref = from_pil(ImageEnhance.Contrast(to_pil(x)).enhance(f))
        torch.testing.assert_close(degrade.contrast_change(x, f), ref, atol=1.5 / 255, rtol=0)
    grey = x.mean(0, keepdim=True).expand(3, -1, -1)
    torch.testing.assert_close(degrade.saturation_change(grey, 0.1), grey, atol=1e-6, rtol=0)


def test_srgb_curves_match_the_standard():
    v = torch.tensor([0.0, 0.02, 0.04045, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.02 / 12.92, 0.04045 / 12.92, 0.21404114048223255, 1.0], dtype=torch.float64)
    torch.testing.assert_close(degrade.srgb_to_linear(v), expected)
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(degrade.linear_to_srgb(degrade.srgb_to_linear(grid)), grid)


def test_low_light_without_noise_is_an_exposure_change_in_linear_light():
    x = smooth_image().double()
    y = degrade.low_light(x, exposure=0.2, shot=0.0, read=0.0, seed=0)
    lin = np.where(x <= 0.04045, x / 12.92, ((x.numpy() + 0.055) / 1.055) ** 2.4) * 0.2
    ref = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.maximum(lin, 0.0031308) ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-6)
    noisy = apply(x, "low_light", 3, seed=0)
    assert float(noisy.mean()) < 0.6 * float(x.mean())


def test_over_exposure_gain_one_is_identity_and_clips_highlights():
    x = smooth_image().double()
    torch.testing.assert_close(degrade.over_exposure(x, 1.0), x)
    y = degrade.over_exposure(x, 4.0)
    assert (y >= x - 1e-9).all() and float((y > 1 - 1e-9).float().mean()) > 0.2


def test_haze_with_depth_map_follows_scattering_model():
    x = smooth_image(20, 30).double()
    depth = torch.linspace(0, 40.0, 30, dtype=torch.float64).expand(20, 30)  # metres, say
    beta, air = 1.5, 0.9
    y = degrade.haze(x, beta, airlight=air, depth=depth)
    t = np.exp(-beta * depth.numpy() / 40.0)
    np.testing.assert_allclose(y.numpy(), x.numpy() * t + air * (1 - t), atol=1e-12)
    raw = degrade.haze(x, 0.05, airlight=air, depth=depth, normalize_depth=False)
    t = np.exp(-0.05 * depth.numpy())
    np.testing.assert_allclose(raw.numpy(), x.numpy() * t + air * (1 - t), atol=1e-12)
    # zero depth leaves the scene clear; a coloured airlight tints the far field
    torch.testing.assert_close(degrade.haze(x, 2.0, airlight=air, depth=torch.zeros(20, 30)), x)
    tinted = degrade.haze(x, 3.0, airlight=(1.0, 0.5, 0.2), depth=depth)
    assert float(tinted[0, :, -1].mean()) > float(tinted[2, :, -1].mean())
    # per-image depth for a batch, and apply() forwarding depth as an override
    xb = x.unsqueeze(0).repeat(2, 1, 1, 1)
    yb = apply(xb, "haze", 3, seed=0, depth=torch.stack([depth, depth.flip(-1)])[:, None])
    assert yb.shape == xb.shape and not torch.equal(yb[0], yb[1])
    with pytest.raises(ValueError, match="depth"):
        degrade.haze(x, 1.0, depth=torch.ones(10, 10))
    with pytest.raises(ValueError, match="depth"):
        degrade.haze(x, 1.0, depth=-torch.ones(20, 30))


def test_haze_depth_proxy_is_far_at_the_top():
    x = smooth_image(60, 40)
    y = degrade.haze(x, 2.0, airlight=1.0, seed=0)
    whiteness = (1 - y).mean(dim=(0, 2))  # distance to the airlight per row
    assert float(whiteness[:10].mean()) < float(whiteness[-10:].mean())


def test_color_cast_direction_and_identity():
    x = smooth_image().double()
    torch.testing.assert_close(degrade.color_cast(x, 0.0, seed=0), x)
    red = degrade.color_cast(x, 0.3, hue=0.0)
    assert float((red[0] - x[0]).mean()) > 0 and float((red[2] - x[2]).mean()) < 0
    blue = degrade.color_cast(x, 0.3, hue=240.0)
    assert float((blue[2] - x[2]).mean()) > 0 and float((blue[0] - x[0]).mean()) < 0


def test_pixelate_matches_block_means():
    x = smooth_image(24, 36).double()
    y = degrade.pixelate(x, 4)
    means = x.numpy().reshape(3, 6, 4, 9, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(y.numpy(), np.repeat(np.repeat(means, 4, axis=1), 4, axis=2), atol=1e-12)
    assert degrade.pixelate(smooth_image(25, 30), 4).shape == (3, 25, 30)


def test_banding_and_quantization_limit_the_palette():
    x = smooth_image(64, 64)
    b = degrade.banding(x, 6)
    for c in b:
        assert len(torch.unique(c)) <= 6
    torch.testing.assert_close(b * 5, torch.round(b * 5), atol=1e-5, rtol=0)
    errors = []
    for k in (4, 8, 16):
        q = degrade.quantization(x, k)
        assert len(torch.unique(q.flatten(1).T, dim=0)) <= k
        errors.append(float(((q - x) ** 2).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_resize_blur_factor_one_is_identity():
    x = smooth_image().double()
    torch.testing.assert_close(degrade.resize_blur(x, 1.0), x)
    with pytest.raises(ValueError, match="factor"):
        degrade.resize_blur(x, 0.5)


# ---------------------------------------------------------------------------------- compose, recipes


def test_compose_applies_steps_in_order():
    x = smooth_image(n=2)
    c = compose([("gaussian_blur", 2), ("jpeg", 4)])
    expected = apply(apply(x, "gaussian_blur", 2), "jpeg", 4)
    assert torch.equal(c(x), expected)
    reverse = apply(apply(x, "jpeg", 4), "gaussian_blur", 2)
    assert not torch.allclose(c(x), reverse)
    assert repr(c) == "Compose([('gaussian_blur', 2), ('jpeg', 4)], seed=None)"
    assert len(c) == 2
    with_override = compose([("haze", 2, {"airlight": 0.7})], seed=3)
    assert "airlight" in repr(with_override)
    assert torch.equal(compose([])(x), x)


def test_sample_recipe():
    a = sample_recipe(0, max_ops=3)
    assert a == sample_recipe(0, max_ops=3)
    seen_lengths = set()
    order = {f: i for i, f in enumerate(FAMILIES)}
    for s in range(60):
        r = sample_recipe(np.random.default_rng(s), max_ops=3)
        seen_lengths.add(len(r))
        fams = [DEGRADATIONS[n].family for n, _ in r]
        assert len(set(fams)) == len(fams)
        assert [order[f] for f in fams] == sorted(order[f] for f in fams)
        assert all(1 <= lv <= 5 for _, lv in r)
        compose(r, seed=s)  # every recipe is a valid compose spec
    assert seen_lengths == {1, 2, 3}
    only = sample_recipe(1, max_ops=1, names=["jpeg"], min_level=2, max_level=2)
    assert only == [("jpeg", 2)]
    assert all(len(sample_recipe(s, max_ops=2, min_ops=2)) == 2 for s in range(20))
    with pytest.raises(ValueError, match="min_ops"):
        sample_recipe(0, max_ops=2, min_ops=3)
    with pytest.raises(ValueError, match="max_ops"):
        sample_recipe(0, max_ops=2, names=["jpeg", "banding"])
    with pytest.raises(ValueError, match="min_level"):
        sample_recipe(0, min_level=4, max_level=2)


# ---------------------------------------------------------------------------------- low-light pairs


def test_lowlight_blur_pair():
    x = smooth_image(48, 48, n=2)
    deg, target = degrade.lowlight_blur_pair(x, level=3, seed=0)
    assert deg.shape == target.shape == x.shape and torch.equal(target, x)
    assert float(deg.mean()) < 0.6 * float(x.mean())
    again, _ = degrade.lowlight_blur_pair(x, level=3, seed=0)
    assert torch.equal(deg, again) and not torch.equal(deg[0], deg[1])
    rand_a, _ = degrade.lowlight_blur_pair(x, seed=9)
    rand_b, _ = degrade.lowlight_blur_pair(x, seed=9)
    assert torch.equal(rand_a, rand_b)
    single, _ = degrade.lowlight_blur_pair(x[0], level=3, seed=0)
    torch.testing.assert_close(single, deg[0], atol=2e-6, rtol=0)
    means = [float(degrade.lowlight_blur_pair(x, level=lv, seed=0)[0].mean()) for lv in (1, 3, 5)]
    assert means[0] > means[1] > means[2]
    with pytest.raises(ValueError, match="level"):
        degrade.lowlight_blur_pair(x, level=6)


def test_lowlight_blur_pair_parts_split_one_draw():
    x = smooth_image(48, 48, n=2)
    deg, sharp = degrade.lowlight_blur_pair(x, level=3, seed=0)
    dark, blurred = degrade.lowlight_blur_pair(x, level=3, seed=0, parts="lowlight")
    blurred_in, sharp_out = degrade.lowlight_blur_pair(x, level=3, seed=0, parts="blur")
    # enhancement then deblurring compose into the joint task, from the same draws
    assert torch.equal(dark, deg) and torch.equal(blurred, blurred_in) and torch.equal(sharp_out, sharp)
    assert abs(float(blurred.mean()) - float(x.mean())) < 0.05  # normal exposure, only blurred
    assert float((blurred - x).abs().mean()) > 0.005
    with pytest.raises(ValueError, match="parts"):
        degrade.lowlight_blur_pair(x, parts="noise")


def test_single_task_pair_kinds(tmp_path):
    from PIL import Image

    from clipiq.data.paired import SyntheticPairDataset

    Image.fromarray((smooth_image(64, 64).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(tmp_path / "a.png")
    items = {k: SyntheticPairDataset(tmp_path, task=k, patch_size=32, seed=1)[0] for k in ("lowlight_blur", "lowlight",
                                                                                          "deblur")}
    assert torch.equal(items["lowlight"]["lq"], items["lowlight_blur"]["lq"])
    assert torch.equal(items["deblur"]["gt"], items["lowlight_blur"]["gt"])
    assert torch.equal(items["deblur"]["lq"], items["lowlight"]["gt"])


# --------------------------------------------------------------------------------------------- docs


def test_docs_contain_current_tables():
    doc = (REPO / "docs" / "degradations.md").read_text(encoding="utf-8")
    table = degrade.degradations_markdown()
    assert table in doc, "docs/degradations.md is stale: regenerate it with clipiq.degrade.docs.write_docs"
    for name, rec in DEGRADATIONS.items():
        assert f"### `{name}`" in table
        for key in rec.levels[0]:
            assert f"| `{key}` |" in table
