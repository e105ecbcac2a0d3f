"""What every registered restorer promises, whatever it does inside."""

from __future__ import annotations

import pytest
import torch

from clipiq import create_restorer, list_restorers
from clipiq.restore import Restorer, get_restorer_spec
from clipiq.restore.registry import RESTORERS


def _batch(n: int = 3, h: int = 37, w: int = 45) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # a hazy-looking batch: bright, low-contrast content, so every method has something to do
    return 0.4 + 0.5 * torch.rand(n, 3, h, w, generator=g)


@pytest.fixture(scope="module", params=list_restorers())
def restorer(request) -> Restorer:
    return create_restorer(request.param, device="cpu")


def test_spec_describes_the_restorer(restorer: Restorer) -> None:
    spec = get_restorer_spec(restorer.name)
    assert spec.name == restorer.name and spec.description
    assert spec.scale == restorer.scale and spec.tileable == restorer.tileable
    assert isinstance(restorer.scale, int) and restorer.scale >= 1
    assert not restorer.training and restorer.device == torch.device("cpu")


def test_shape_range_dtype(restorer: Restorer) -> None:
    x = _batch()
    y = restorer(x)
    s = restorer.scale
    assert y.shape == (3, 3, 37 * s, 45 * s) and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and torch.isfinite(y).all()
    single = restorer(x[0])
    assert single.shape == (3, 37 * s, 45 * s) and single.dtype == torch.float32


def test_batch_invariance(restorer: Restorer) -> None:
    x = _batch()
    y = restorer(x)
    for i in range(len(x)):
        torch.testing.assert_close(restorer(x[i]), y[i], rtol=0, atol=1e-5)
    # and a list of different sizes gives each image's own result
    small = _batch(1, 20, 26)[0]
    out = restorer([x[1], small])
    assert isinstance(out, list) and out[1].shape == (3, 20 * restorer.scale, 26 * restorer.scale)
    torch.testing.assert_close(out[0], y[1], rtol=0, atol=1e-5)


def test_float64_input_works(restorer: Restorer) -> None:
    x = _batch(2)
    y = restorer(x.double())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, restorer(x), rtol=0, atol=1e-4)


def test_uint8_input_is_refused_with_a_clear_error(restorer: Restorer) -> None:
    x = (_batch(1) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match=r"float tensor.*divide uint8 images by 255"):
        restorer(x)


def test_listing_does_not_build() -> None:
    assert list_restorers() == RESTORERS.names() and len(list_restorers()) >= 6
    assert list_restorers("dehaze-dcp*") == ["dehaze-dcp-weak", "dehaze-dcp", "dehaze-dcp-strong"]
