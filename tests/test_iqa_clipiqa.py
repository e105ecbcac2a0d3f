"""create_metric / clipiqa: inputs, validation, outputs, batching and precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq
from clipiq.clip.vocabulary import ATTRIBUTE_PROMPTS
from clipiq.data.io import ImageLoadError


@pytest.fixture(scope="module")
def metric():
    return clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="resize")


def test_registry_lists_and_rejects():
    assert "clipiqa" in clipiq.list_metrics()
    with pytest.raises(ValueError, match="unknown metric 'clipiq'.*Did you mean clipiqa"):
        clipiq.create_metric("clipiq", model="test-tiny", device="cpu")


def test_metric_attributes(metric):
    assert metric.lower_better is False
    assert metric.score_range == (0.0, 1.0)


def test_scores_match_a_manual_computation(metric):
    """The score is the softmax of logit_scale * cosine over ('Good photo.', 'Bad photo.')."""
    x = torch.rand(3, 3, 224, 224)
    got = metric(x)
    model, pre = clipiq.load_clip("test-tiny", device="cpu")
    with torch.no_grad():
        img = model.encode_image(pre.normalize(x), normalize=True)
        txt = model.encode_text(clipiq.tokenize(["Good photo.", "Bad photo."]), normalize=True)
        expected = (model.logit_scale.exp() * img @ txt.t()).softmax(-1)[:, 0]
    assert got.shape == (3,) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_paths_pil_and_tensor_agree(tmp_path, metric):
    arr = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    by_path = metric(str(tmp_path / "a.png"))
    by_pil = metric(Image.fromarray(arr))
    by_tensor = metric(t)
    torch.testing.assert_close(by_path, by_tensor)
    torch.testing.assert_close(by_pil, by_tensor)
    mixed = metric([tmp_path / "a.png", t, Image.fromarray(arr)])
    assert mixed.shape == (3,)


def test_batching_does_not_change_scores():
    m1 = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", batch_size=1)
    m8 = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", batch_size=8)
    imgs = [torch.rand(3, 96, 128) for _ in range(5)] + [torch.rand(3, 64, 64)]
    torch.testing.assert_close(m1(imgs), m8(imgs), atol=1e-5, rtol=1e-5)


def test_attributes_and_prompt_pairs():
    m = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", attributes="all")
    out = m.score_with_outputs(torch.rand(2, 3, 128, 128))
    assert set(out) == {"score"} | (set(ATTRIBUTE_PROMPTS) - {"quality"})
    assert all(v.shape == (2,) and ((v >= 0) & (v <= 1)).all() for v in out.values())
    # Swapping the pair's order turns p into 1 - p.
    a = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", prompts=[("Good photo.", "Bad photo.")])
    b = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", prompts=[("Bad photo.", "Good photo.")])
    x = torch.rand(2, 3, 100, 100)
    torch.testing.assert_close(a(x), 1 - b(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown CLIP-IQA attribute"):
        clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", attributes="sharpnes")
    with pytest.raises(ValueError, match="view must be one of"):
        clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="zoom")


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(2, 4, 32, 32), r"\(N,3,H,W\)"),
        (torch.rand(32, 32), r"\(N,3,H,W\)"),
        ((torch.rand(1, 3, 32, 32) * 255).byte(), "float tensor"),
        (torch.rand(1, 3, 32, 32) * 255, r"must lie in \[0,1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
        (42, "must be paths"),
        ([], "no images"),
    ],
)
def test_bad_inputs_get_clear_errors(metric, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        metric(bad)


def test_bad_files_name_the_file(tmp_path, metric):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="junk.png.*not a recognised image"):
        metric(tmp_path / "junk.png")
    with pytest.raises(ImageLoadError, match="missing.png.*does not exist"):
        metric(tmp_path / "missing.png")
    good = tmp_path / "t.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageLoadError, match="trunc.png"):
        metric(tmp_path / "trunc.png")


def test_bf16_scores_track_fp32():
    from scipy.stats import spearmanr

    m32 = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="resize")
    m16 = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="resize", precision="bf16")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 224, 224, generator=g)
    a, b = m32(x), m16(x)
    assert (a - b).abs().max() < 0.02
    assert spearmanr(a.numpy(), b.numpy())[0] > 0.95


def test_native_view_handles_any_size():
    m = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="native", max_side=256)
    out = m([torch.rand(3, 300, 500), torch.rand(3, 40, 40)])
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_tiles_view_averages_native_scale_tiles():
    m = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="tiles", max_tiles=4)
    r = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view="resize")
    x = torch.rand(1, 3, 448, 448)
    tiles = [x[..., :224, :224], x[..., :224, 224:], x[..., 224:, :224], x[..., 224:, 224:]]
    expected = torch.stack([r(t) for t in tiles]).mean()
    torch.testing.assert_close(m(x)[0], expected, atol=1e-5, rtol=1e-5)
    # A large image is covered by at most max_tiles tiles, reaching the borders.
    prepared = m.prepare(torch.rand(3, 1000, 1500))
    assert prepared.ndim == 4 and prepared.shape[0] <= 4 and prepared.shape[1:] == (3, 224, 224)
    with pytest.raises(ValueError, match="max_tiles"):
        clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", max_tiles=0)
