"""clipiq.degrade.imresize: MATLAB-style bicubic resize on tensors and arrays (synthetic inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from clipiq.degrade import imresize


def _rand(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w))


@pytest.mark.parametrize("scale", [0.3, 0.5, 1 / 3, 0.77, 1.6, 2.0, 3.0])
def test_matches_pil_bicubic_away_from_borders(scale):
    # PIL's BICUBIC is the same a=-0.5 kernel, widened when shrinking, with the same pixel-centre mapping;
    # it only treats borders differently (renormalised weights instead of replicated pixels). PIL maps
    # with the exact size ratio, which is what imresize does when given a size.
    x = _rand(61, 83).astype(np.float32)
    oh, ow = math.ceil(61 * scale - 1e-9), math.ceil(83 * scale - 1e-9)
    ref = np.asarray(Image.fromarray(x, mode="F").resize((ow, oh), Image.Resampling.BICUBIC))
    ours = imresize(x.astype(np.float64), size=(oh, ow))
    assert imresize(x, scale).shape == (oh, ow)
    m = math.ceil(2.5 * max(scale, 1)) + 2  # output rows whose taps reach past the border
    np.testing.assert_allclose(ours[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-6)


def test_tensor_numpy_and_batch_paths_agree():
    x = _rand(40, 52 * 3, seed=1).reshape(40, 52, 3)
    ref = imresize(x, 0.45)
    t = torch.from_numpy(x).permute(2, 0, 1)
    single = imresize(t, 0.45)
    batch = imresize(torch.stack([t, t.flip(-1)]), 0.45)
    np.testing.assert_allclose(single.permute(1, 2, 0).numpy(), ref, atol=1e-12)
    torch.testing.assert_close(batch[0], single)
    torch.testing.assert_close(batch[1], imresize(t.flip(-1), 0.45))
    assert imresize(t.float(), 2.5).dtype == torch.float32
    assert imresize(x.astype(np.float32), 2.5).dtype == np.float32
    u8 = (x * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(
        imresize(torch.from_numpy(u8).permute(2, 0, 1), 1 / 3).permute(1, 2, 0).numpy(), imresize(u8, 1 / 3)
    )


def test_sizes_identity_and_constant_images():
    x = _rand(30, 45)
    assert imresize(x, 0.5).shape == (15, 23)  # ceil(scale * size), as MATLAB
    assert imresize(x, (0.5, 2.0)).shape == (15, 90)
    assert imresize(x, size=(17, 31)).shape == (17, 31)
    np.testing.assert_allclose(imresize(x, 1.0), x, atol=1e-12)
    const = np.full((20, 33), 0.37)
    for s in (0.21, 0.5, 1.7, 4.0):
        np.testing.assert_allclose(imresize(const, s), 0.37, atol=1e-12)
    assert not np.allclose(imresize(x, 0.5), imresize(x, 0.5, antialias=False))
    assert not np.allclose(imresize(x, 0.5), imresize(x, 0.5, border="symmetric"))


def test_gradients_flow():
    x = torch.rand(1, 3, 12, 14, requires_grad=True)
    imresize(x, 0.6).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_arguments():
    x = _rand(10, 10)
    with pytest.raises(ValueError, match="exactly one of scale or size"):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one of scale or size"):
        imresize(x, 0.5, size=(5, 5))
    with pytest.raises(ValueError, match="scale"):
        imresize(x, -1.0)
    with pytest.raises(ValueError, match="size"):
        imresize(x, size=(0, 5))
    with pytest.raises(ValueError, match="border"):
        imresize(x, 0.5, border="wrap")
    with pytest.raises(TypeError, match="dtype"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.int32), 0.5)
    with pytest.raises(TypeError, match="dtype"):
        imresize(np.zeros((8, 8), dtype=np.int64), 0.5)
    with pytest.raises(ValueError, match="shape"):
        imresize(torch.zeros(8, 8), 0.5)
    with pytest.raises(TypeError):
        imresize([[0.0]], 0.5)  # type: ignore[arg-type]
