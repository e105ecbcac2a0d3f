"""The Restorer base class: padding, tiling and blending, the memory budget, inputs, errors, devices, registry."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clipiq import create_restorer, list_restorers
from clipiq.core.errors import ConfigError, ImageLoadError, UnknownNameError
from clipiq.core.image import pad_to_multiple
from clipiq.restore import Restorer
from clipiq.restore.tiling import axis_window, margin_for, tile_starts, tiled_apply


class Recorder(Restorer):
    """A test restorer: records the batch shapes it sees and applies ``op``."""

    def __init__(self, op=torch.sqrt, *, scale: int = 1, pad_multiple: int = 1, tileable: bool = True,
                 bytes_per_pixel: int = 1024, **kw):
        self.name = "recorder"
        self.scale = scale
        self.pad_multiple = pad_multiple
        self.tileable = tileable
        self.bytes_per_pixel = bytes_per_pixel
        super().__init__(**kw)
        self.op = op
        self.seen: list[tuple[int, ...]] = []

    def restore_batch(self, x: Tensor) -> Tensor:
        assert x.dtype == torch.float32 and x.device == self.device
        assert x.shape[-2] % self.pad_multiple == 0 and x.shape[-1] % self.pad_multiple == 0
        self.seen.append(tuple(x.shape))
        y = self.op(x)
        return F.interpolate(y, scale_factor=self.scale, mode="nearest") if self.scale > 1 else y


def _box(radius: int):
    """A local operator: mean over (2r+1)^2 windows, replicate padding (its output depends on radius r)."""
    k = 2 * radius + 1
    return lambda x: F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)


def _image(n: int, h: int, w: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- padding ------------------------------------------------------------------------------------------


def test_pad_to_multiple_reflects_and_falls_back_to_replicate() -> None:
    x = _image(1, 10, 13)
    y = pad_to_multiple(x, 8)
    assert y.shape[-2:] == (16, 16)
    assert torch.equal(y[..., :10, :13], x)
    assert torch.equal(y[..., 10, :13], x[..., 8, :])  # reflected about the last row
    assert pad_to_multiple(x, 1) is x
    tiny = _image(1, 2, 3)
    z = pad_to_multiple(tiny, 8)  # a pad larger than the side cannot reflect
    assert z.shape[-2:] == (8, 8) and torch.equal(z[..., 7, 2], tiny[..., 1, 2])
    with pytest.raises(ValueError, match="multiple must be at least 1"):
        pad_to_multiple(x, 0)


@pytest.mark.parametrize("scale", [1, 2])
def test_padded_to_the_multiple_and_cropped_back(scale: int) -> None:
    r = Recorder(lambda t: t, scale=scale, pad_multiple=8)
    x = _image(2, 21, 30)
    y = r(x)
    assert r.seen == [(2, 3, 24, 32)]
    assert y.shape == (2, 3, 21 * scale, 30 * scale) and y.dtype == torch.float32
    assert torch.equal(y[..., ::scale, ::scale], x)


# --- tiling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 40, 16), (97, 32, 8), (40, 40, 8), (10, 40, 8),
                                                         (1000, 128, 32), (129, 128, 32)])
def test_tile_starts_cover_with_enough_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    assert starts == sorted(set(starts))


def test_axis_window_shape_and_partition_of_unity() -> None:
    w = axis_window(64, 16, True, True)
    m = margin_for(16)
    assert w[:m].eq(0).all() and w[-m:].eq(0).all() and w[m].gt(0) and w[32].eq(1)
    assert axis_window(64, 16, False, False).eq(1).all()
    # two tiles overlapping by exactly the overlap: the ramps sum to 1 across it
    a, b = axis_window(40, 16, False, True), axis_window(40, 16, True, False)
    torch.testing.assert_close(a[-16:] + b[:16], torch.ones(16, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("op", [torch.sqrt, lambda t: 1 - t], ids=["sqrt", "invert"])
def test_tiling_is_exact_for_a_pointwise_op(op) -> None:
    x = _image(2, 101, 131)
    assert torch.equal(tiled_apply(op, x, 40, 16), op(x))
    r = Recorder(op, tile=48, tile_overlap=16)
    assert torch.equal(r(x), op(x).clamp(0, 1))
    assert len(r.seen) == len(tile_starts(101, 48, 16)) * len(tile_starts(131, 48, 16))


def test_tiling_matches_untiled_for_a_local_op() -> None:
    x = _image(1, 150, 170)
    # receptive radius within the discarded margin (32 // 4 = 8): the same as untiled up to rounding
    near = _box(3)
    torch.testing.assert_close(Recorder(near, tile=64)(x), near(x), rtol=0, atol=1e-6)
    # a wider receptive field than the margin: not exact, but the blend keeps it close
    wide = _box(12)
    diff = (Recorder(wide, tile=64)(x) - wide(x)).abs()
    assert 0 < float(diff.max()) < 0.02 and float(diff.mean()) < 1e-3


def test_tiling_with_scale_and_pad_multiple() -> None:
    x = _image(1, 70, 90)
    r = Recorder(torch.sqrt, scale=2, pad_multiple=8, tile=32, tile_overlap=8)
    y = r(x)
    assert y.shape == (1, 3, 140, 180)
    assert torch.equal(y, F.interpolate(x.sqrt(), scale_factor=2, mode="nearest"))
    assert all(s[-1] <= 32 and s[-2] <= 32 for s in r.seen)


# --- the memory budget ----------------------------------------------------------------------------------


def test_memory_budget_chooses_tiles_and_batches() -> None:
    # 1 MiB at 1024 bytes per pixel: 1024 pixels per call, so 32x32 tiles
    r = Recorder(bytes_per_pixel=1024, memory_budget=1, tile_overlap=8, batch_size=8)
    assert r.max_tile_pixels == 1024 and r.tile_size() == 32
    x = _image(1, 50, 70)
    torch.testing.assert_close(r(x), x.sqrt(), rtol=0, atol=0)
    assert r.seen and all(math.prod(s[-2:]) <= 1024 for s in r.seen)
    assert {s[-2:] for s in r.seen} == {(32, 32)}
    # small images go through together, as many as fit in the budget (and the batch size)
    r.seen.clear()
    r(_image(5, 16, 16))  # 256 pixels each: 4 per call
    assert [s[0] for s in r.seen] == [4, 1]
    # an image within the budget is not tiled
    r.seen.clear()
    r(_image(1, 30, 30))
    assert r.seen == [(1, 3, 30, 30)]
    # a budget too small for tiles larger than the overlap
    with pytest.raises(ValueError, match="raise memory_budget"):
        Recorder(bytes_per_pixel=1024, memory_budget=0.01, tile_overlap=8)(_image(1, 40, 40))


def test_tile_zero_never_tiles_and_bad_run_options() -> None:
    r = Recorder(bytes_per_pixel=1024, memory_budget=1, tile=0)
    r(_image(1, 50, 70))
    assert r.seen == [(1, 3, 50, 70)]
    with pytest.raises(ConfigError, match="larger than tile_overlap"):
        Recorder(tile=16, tile_overlap=16)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        Recorder(batch_size=0)
    with pytest.raises(ConfigError, match="memory_budget must be a positive number"):
        Recorder(memory_budget=-1)


def test_non_tileable_refuses_above_budget_and_warns_on_explicit_tiles(caplog) -> None:
    r = Recorder(tileable=False, bytes_per_pixel=1024, memory_budget=1)
    r(_image(1, 30, 30))  # within the budget: fine
    with pytest.raises(ValueError, match=r"whole-image statistics.*memory_budget.*tile=N"):
        r(_image(1, 50, 70))
    with caplog.at_level(logging.WARNING):
        t = Recorder(tileable=False, tile=32, tile_overlap=8)
    assert "change its output" in caplog.text
    assert t(_image(1, 50, 70)).shape == (1, 3, 50, 70)


# --- inputs, outputs, errors, devices -------------------------------------------------------------------


def test_every_kind_of_input(tmp_path: Path) -> None:
    r = Recorder()
    x = _image(3, 20, 24)
    path = tmp_path / "a.png"
    arr = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)
    decoded = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert torch.equal(r(x[0]), x[0].sqrt()) and r(x[0]).shape == (3, 20, 24)
    assert torch.equal(r(x), x.sqrt())
    assert r(x.double()).dtype == torch.float32
    torch.testing.assert_close(r(str(path)), decoded.sqrt())
    torch.testing.assert_close(r(path), decoded.sqrt())
    torch.testing.assert_close(r(Image.open(path)), decoded.sqrt())
    mixed = r([path, x[1], x[:2], _image(1, 9, 7)[0]])  # a (N,3,H,W) item counts as N images
    assert isinstance(mixed, list) and [tuple(t.shape) for t in mixed] == [(3, 20, 24)] * 4 + [(3, 9, 7)]
    torch.testing.assert_close(mixed[0], decoded.sqrt())
    assert torch.equal(mixed[2], x[0].sqrt())


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    r = Recorder()
    with pytest.raises(ValueError, match=r"float tensor .*torch.uint8.*divide uint8 images by 255"):
        r((_image(1, 8, 8) * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"3 \(RGB\) channels"):
        r(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"values must lie in \[0,1\]"):
        r(_image(1, 8, 8) * 3)
    with pytest.raises(TypeError, match="must be a path, PIL image or tensor"):
        r([np.zeros((8, 8, 3))])
    with pytest.raises(ImageLoadError, match="file does not exist"):
        r(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="no images given"):
        r([])


def test_device_follows_to() -> None:
    r = Recorder()
    assert r.device == torch.device("cpu")
    assert Recorder().to("meta").device == torch.device("meta")  # no data moves: checks placement only
    if torch.cuda.is_available():
        x = _image(1, 20, 20)
        r.cuda()
        assert r.device.type == "cuda"
        assert r(x).device.type == "cpu" and r(x.cuda()).device.type == "cuda"
        torch.testing.assert_close(r(x.cuda()).cpu(), x.sqrt())


def test_iter_results_streams_one_result_per_input(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((12, 10, 3), 64, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    results = sorted(Recorder().iter_results([good, bad, _image(1, 12, 10)[0]], batch_size=2, workers=1),
                     key=lambda res: res.index)
    assert [res.ok for res in results] == [True, False, True]
    assert results[0].output.shape == (3, 12, 10) and results[0].output.device.type == "cpu"
    assert "corrupt or truncated" in results[1].error


# --- the registry ---------------------------------------------------------------------------------------


def test_create_restorer_checks_names_options_weights_and_precision() -> None:
    assert "dehaze-dcp" in list_restorers()
    r = create_restorer("Dehaze-DCP", device="cpu", omega=0.8, tile_overlap=16)
    assert r.name == "dehaze-dcp" and r.options == {"omega": 0.8} and r.tile_overlap == 16 and not r.training
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'omga' for restorer dehaze-dcp; known: .*omega"):
        create_restorer("dehaze-dcp", device="cpu", omga=0.8)
    with pytest.raises(UnknownNameError, match="Did you mean dehaze-dcp"):
        create_restorer("dehaze-dpc", device="cpu")
    with pytest.raises(ConfigError, match="takes no weights"):
        create_restorer("dehaze-dcp", weights="w.safetensors", device="cpu")
    with pytest.raises(ValueError, match="fp16' needs CUDA"):
        create_restorer("dehaze-dcp", device="cpu", precision="fp16")
    with pytest.raises(ValueError, match=r"omega must lie in \[0, 1\]"):
        create_restorer("dehaze-dcp", device="cpu", omega=2.0)
