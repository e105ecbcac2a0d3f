"""What every registered restorer promises, whatever it does inside."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import photo_files
from clipiq import create_restorer, list_restorers
from clipiq.core.errors import WeightsError
from clipiq.restore import Restorer, get_restorer_spec
from clipiq.restore.registry import RESTORERS


def _batch(n: int = 3, h: int = 37, w: int = 45) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # a hazy-looking batch: bright, low-contrast content, so every method has something to do
    return 0.4 + 0.5 * torch.rand(n, 3, h, w, generator=g)


REPO = Path(__file__).resolve().parents[1]


def _tiny_trained_weights(name: str, folder: Path) -> str:
    """A checkpoint of a restorer that ships no weights: its training task's tiny config, 1 step, on made-up photos."""
    from clipiq.core.config import load_config
    from clipiq.train import TRAINING_TASKS

    config = REPO / "configs" / name / "tiny.yaml"
    if name not in TRAINING_TASKS.names() or not config.is_file():
        pytest.fail(f"{name} takes weights and ships none, but has no training task with {config} to make them")
    photos = photo_files.write_photos(folder / "photos", n=3, size=72)
    task = TRAINING_TASKS.get(name)
    cfg = load_config(config, [f"data.train=[{photos}]", f"data.val={photos}", "data.val_format=photos",
                               "data.val_patch=0", "data.val_limit=1", "train.steps=1", "train.eval_every=1"],
                      defaults=task.DEFAULTS)
    return str(task.run(cfg, folder / "run", torch.device("cpu"), progress=False)["checkpoint"])


@pytest.fixture(scope="module", params=list_restorers())
def restorer(request, tmp_path_factory) -> Restorer:
    name = request.param
    try:
        return create_restorer(name, device="cpu")
    except WeightsError:  # a trained method before its weights ship (dap-led and cdasr ship theirs, and are checked
        # with them): checked on a one-step tiny checkpoint
        weights = _tiny_trained_weights(name, tmp_path_factory.mktemp(name))
        return create_restorer(name, weights=weights, device="cpu")


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


@pytest.mark.parametrize("name, options", [("dap-led", {}), ("cdasr", {"scale": 2})])
def test_a_corrupted_copy_of_shipped_weights_is_refused(name, options, tmp_path, monkeypatch) -> None:
    from clipiq.core import hub
    from clipiq.core.hub import WeightsChecksumError
    from clipiq.restore import cdasr, dap_led

    record = {"dap-led": dap_led.SHIPPED, "cdasr": cdasr.SHIPPED[2]}[name]
    monkeypatch.setenv("CLIPIQ_HOME", str(tmp_path / "home"))  # no checksum marker vouches for the copy
    bad = tmp_path / record.filename
    data = bytearray(hub.package_path(record).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the tensors: same size, still readable, not the shipped file
    bad.write_bytes(bytes(data))
    real = hub.package_path
    monkeypatch.setattr(hub, "package_path", lambda rec: bad if rec.name == record.name else real(rec))
    with pytest.raises(WeightsChecksumError, match=rf"(?s){record.name}.*was not used.*Reinstall"):
        create_restorer(name, device="cpu", **options)
