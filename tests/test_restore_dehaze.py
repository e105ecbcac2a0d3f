"""Classic dehazers: shapes and batching, input checks, gradients, and that they actually remove haze."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipiq.data.io import load_image
from clipiq.degrade import apply
from clipiq.degrade.ops import haze
from clipiq.eval import ssim
from clipiq.restore import (
    DEHAZERS,
    contrast_stretch,
    create_restorer,
    dark_channel_prior,
    dehaze,
    gamma_restore,
    guided_filter,
)


def _scene(h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A haze-free-looking (3,H,W) image: smooth colours with one channel near black everywhere, plus
    texture, so its dark channel is close to 0 as the prior assumes for outdoor photos."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    r = 0.2 + 0.7 * x
    gr = 0.3 + 0.6 * (1 - y) * (0.5 + 0.5 * torch.sin(6 * x))
    b = 0.04 * torch.rand(h, w, generator=g)
    img = torch.stack([r, gr, b]) + 0.05 * torch.rand(3, h, w, generator=g)
    return img.clamp(0, 1)


def _hazy(clean: torch.Tensor, beta: float = 1.2, seed: int = 0) -> torch.Tensor:
    return haze(clean, beta, airlight=0.9, seed=seed).mul(255).round().div(255)


def _crop128(path: Path) -> torch.Tensor:
    img = load_image(path)
    h, w = img.shape[-2:]
    top, left = (h - 128) // 2, (w - 128) // 2
    return img[:, top : top + 128, left : left + 128]


@pytest.mark.parametrize("name", list(DEHAZERS))
def test_shape_dtype_range_and_batching(name: str) -> None:
    batch = torch.stack([_hazy(_scene(seed=i), beta=0.6 + 0.5 * i, seed=i) for i in range(3)])
    out = dehaze(batch, name)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # images of a batch are independent: the batched result is the per-image result
    for i in range(3):
        single = dehaze(batch[i], name)
        assert single.shape == batch[i].shape
        torch.testing.assert_close(out[i], single, rtol=0, atol=1e-6)
    out64 = dehaze(batch.double(), name)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, rtol=0, atol=1e-4)


def test_none_returns_the_hazy_input() -> None:
    x = _hazy(_scene())
    assert torch.equal(dehaze(x, "none"), x)


def test_bad_inputs_raise_clear_errors() -> None:
    x = _hazy(_scene())
    with pytest.raises(ValueError, match=r"shape \(3,H,W\) or \(N,3,H,W\)"):
        dark_channel_prior(x[0])
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        contrast_stretch(torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="floating-point.*torch.uint8"):
        gamma_restore((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="floating-point.*torch.int64"):
        dehaze(torch.ones(3, 8, 8, dtype=torch.long), "dcp")
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        dark_channel_prior(x.numpy())
    with pytest.raises(ValueError, match=r"values must lie in \[0,1\]"):
        contrast_stretch(x * 2)
    with pytest.raises(ValueError, match="patch must be odd"):
        dark_channel_prior(x, patch=14)
    with pytest.raises(ValueError, match=r"omega must lie in \[0, 1\]"):
        dark_channel_prior(x, omega=1.5)
    with pytest.raises(ValueError, match=r"t0 must lie in \(0, 1\]"):
        dark_channel_prior(x, t0=0)
    with pytest.raises(ValueError, match="low must be below high"):
        contrast_stretch(x, low=0.9, high=0.1)
    with pytest.raises(ValueError, match="gamma must lie in"):
        gamma_restore(x, gamma=0)
    with pytest.raises(ValueError, match=r"unknown dehazer 'cap'; available: none, gamma, contrast, dcp-weak"):
        dehaze(x, "cap")
    with pytest.raises(ValueError, match="guide must have shape"):
        guided_filter(x[None], x[None], radius=2)


@pytest.mark.parametrize("fn", [contrast_stretch, gamma_restore])
def test_gradient_flows(fn) -> None:
    x = _hazy(_scene()).clone().requires_grad_(True)
    fn(x).pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_guided_filter_basics() -> None:
    p = _scene()[None]
    grey = p.mean(dim=1, keepdim=True)
    const = torch.full_like(p, 0.3)
    torch.testing.assert_close(guided_filter(grey, const, radius=4), const, rtol=0, atol=1e-6)
    # guided by itself with a tiny eps, every window is an "edge": the input comes back
    torch.testing.assert_close(guided_filter(grey, grey, radius=3, eps=1e-9), grey, rtol=0, atol=1e-3)
    # with a huge eps, a -> 0 and it is the box mean (windows clipped at the borders) applied twice
    noise = torch.rand(2, 1, 23, 31, dtype=torch.float64)
    box = lambda t: F.avg_pool2d(t, 7, stride=1, padding=3, count_include_pad=False)  # noqa: E731
    torch.testing.assert_close(guided_filter(noise, noise, radius=3, eps=1e9), box(box(noise)), rtol=0, atol=1e-9)


def test_stretch_and_gamma_tone_curves() -> None:
    x = _hazy(_scene(), beta=1.5)
    y = contrast_stretch(x, low=0.0, high=1.0)
    for c in range(3):  # per-channel min-max stretch reaches both ends
        assert float(y[c].min()) == pytest.approx(0, abs=1e-6) and float(y[c].max()) == pytest.approx(1, abs=1e-6)
    flat = torch.full((3, 8, 8), 0.4)
    assert torch.equal(contrast_stretch(flat), flat)  # nothing to stretch: unchanged, not black
    # gamma > 1 darkens the haze veil before the stretch
    assert float(gamma_restore(x, gamma=2.0).mean()) < float(gamma_restore(x, gamma=1.0).mean())


def test_dcp_restores_a_scene_that_obeys_the_prior() -> None:
    clean = _scene(64, 80)
    hazy = _hazy(clean, beta=1.5)
    before = float(ssim(hazy, clean))
    after = float(ssim(dark_channel_prior(hazy), clean))
    assert after > before + 0.05, (before, after)
    # more haze removed by larger omega: the dark channel of the result gets darker
    dark = {n: float(dehaze(hazy, n).amin(dim=0).mean()) for n in ("none", "dcp-weak", "dcp", "dcp-strong")}
    assert dark["none"] > dark["dcp-weak"] > dark["dcp"] > dark["dcp-strong"], dark


@pytest.mark.parametrize("name", ["kodim01.png", "kodim05.png"])
def test_dcp_restores_a_hazed_photo(photos_dir: Path, name: str) -> None:
    clean = _crop128(photos_dir / "kodak24" / name)
    hazy = apply(clean, "haze", 3, seed=0).mul(255).round().div(255)
    before = float(ssim(hazy, clean))
    after = float(ssim(dehaze(hazy, "dcp"), clean))
    assert after > before + 0.05, (before, after)


def test_dehazers_are_a_registry_and_restorers() -> None:
    # weakest to strongest, as the synthetic dehazed data lists them
    assert list(DEHAZERS) == ["none", "gamma", "contrast", "dcp-weak", "dcp", "dcp-strong"]
    assert "DCP" in DEHAZERS and DEHAZERS["dcp"].options == ("patch", "omega", "t0", "refine", "radius", "eps")
    x = _hazy(_scene())
    torch.testing.assert_close(dehaze(x, "dcp", omega=0.7), dark_channel_prior(x, omega=0.7), rtol=0, atol=0)
    for name in DEHAZERS:
        restorer = create_restorer(f"dehaze-{name}", device="cpu")
        torch.testing.assert_close(restorer(x), dehaze(x, name), rtol=0, atol=1e-6)
    assert create_restorer("dehaze-none", device="cpu").tileable
    assert not create_restorer("dehaze-dcp", device="cpu").tileable  # the airlight is a whole-image estimate
    tuned = create_restorer("dehaze-dcp-strong", device="cpu", omega=0.8)
    torch.testing.assert_close(tuned(x), dark_channel_prior(x, omega=0.8, t0=0.05, refine=False), rtol=0, atol=1e-6)
