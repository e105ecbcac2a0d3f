"""clipiq.explain: shapes and ranges, input kinds and errors, downscaling, restoration, reuse and rsfiqa."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipiq.clip.checkpoint import save_method_checkpoint
from clipiq.core.errors import ClipIQError, ImageLoadError, UnknownNameError
from clipiq.core.image import pil_to_tensor
from clipiq.degrade import gaussian_blur
from clipiq.explain import DEGRADATION_MAPS, Explainer, Explanation, explain
from clipiq.iqa.rsfiqa import build_model
from clipiq.segment import DIMENSIONS, LEVELS

H, W = 96, 128
TINY = "test-tiny"  # a random seeded backbone: fast, for everything that does not need meaningful scores


def _photo(seed: int = 0) -> Image.Image:
    """A made-up 96x128 photo (a smooth colour field with stripes) whose left half is blurred, 8-bit."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = pil_to_tensor(Image.fromarray(small).resize((W, H), Image.BICUBIC))
    stripes = 0.15 * torch.sin(torch.arange(W, dtype=torch.float32) * 1.3)[None, None, :]
    x = (0.8 * field + stripes + 0.1).clamp(0, 1)
    x[:, :, : W // 2] = gaussian_blur(x[:, :, : W // 2], 3.0)
    # 8-bit, so a path, a PIL image and a tensor of it hold the very same pixels.
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return _photo()


@pytest.fixture(scope="module")
def photo_path(photo, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explain") / "photo.png"
    photo.save(path)
    return path


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    """The default: zero-shot clipiqa on the offline backbone, slic regions, clip descriptions."""
    return Explainer()


@pytest.fixture(scope="module")
def explained(explainer, photo) -> Explanation:
    return explainer(pil_to_tensor(photo))


@pytest.fixture(scope="module")
def tiny() -> Explainer:
    return Explainer(model=TINY, restore="dehaze-dcp")


def _check(e: Explanation, h: int = H, w: int = W) -> None:
    assert isinstance(e.score, float) and 0.0 <= e.score <= 1.0
    assert e.image.shape == (3, h, w) and e.image.dtype == torch.float32
    assert float(e.image.min()) >= 0.0 and float(e.image.max()) <= 1.0
    maps = {"heatmap": e.heatmap, **e.degradation_maps}
    assert tuple(e.degradation_maps) == DEGRADATION_MAPS
    for name, m in maps.items():
        assert m is not None and m.shape == (h, w) and m.dtype == torch.float32, name
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0, name
    assert e.labels is not None and e.labels.shape == (h, w) and e.labels.dtype == torch.int64
    k = len(e.regions)
    assert sorted(e.labels.unique().tolist()) == list(range(k))  # a partition 0..K-1 covering every pixel
    assert sorted(r.label for r in e.regions) == list(range(k))
    scores = [r.score for r in e.regions]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)  # worst first
    assert abs(sum(r.area for r in e.regions) - 1.0) < 1e-6
    for r in e.regions:
        assert abs(r.area - float((e.labels == r.label).float().mean())) < 1e-6


def test_explanation_shapes_and_ranges(explained):
    e = explained
    _check(e)
    assert e.metric == "clipiqa" and e.original_size == (H, W) and e.source == ""
    assert {"brightness", "noisiness", "sharpness"} <= set(e.attributes)
    assert all(0.0 <= v <= 1.0 for v in e.attributes.values())
    assert len(e.regions) > 1
    for r in e.regions:
        assert isinstance(r.description, str) and r.description
        assert list(r.dimensions) == list(DIMENSIONS) and all(v in LEVELS for v in r.dimensions.values())
    assert e.restorer is None and e.restored is None and e.restored_score is None


def test_region_score_is_one_minus_the_mean_heatmap(explained):
    for r in explained.regions:
        mean = float(explained.heatmap[explained.labels == r.label].double().mean())
        assert abs(r.score - (1.0 - mean)) < 1e-5


def test_path_pil_and_tensor_give_the_same_explanation(explainer, explained, photo, photo_path):
    by_path = explainer(photo_path)
    by_pil = explainer(photo)
    for e in (by_path, by_pil):
        assert abs(e.score - explained.score) < 1e-6
        assert e.attributes == pytest.approx(explained.attributes, abs=1e-6)
        torch.testing.assert_close(e.heatmap, explained.heatmap)
        assert torch.equal(e.labels, explained.labels)
    assert by_path.source == str(photo_path) and by_pil.source == ""


def test_score_is_the_metrics_own(explainer, explained):
    assert abs(explained.score - float(explainer.metric(explained.image[None])[0])) < 1e-6


def test_bad_input_raises_a_clipiq_error_naming_it(tiny, tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageLoadError, match="missing.png"):
        tiny(missing)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        tiny(corrupt)
    with pytest.raises(ClipIQError, match=r"image tensor: .*3 \(RGB\) channels"):
        tiny(torch.rand(2, H, W))
    with pytest.raises(ClipIQError, match=r"frame\.raw: .*3 \(RGB\) channels"):
        tiny(torch.rand(2, H, W), source="frame.raw")
    with pytest.raises(ClipIQError, match=r"values must lie in \[0,1\]"):
        tiny(torch.rand(3, H, W) + 1.0)
    with pytest.raises(ClipIQError):
        tiny(torch.rand(2, 3, H, W))  # a batch: explain takes one image


def test_unknown_names_fail_early():
    with pytest.raises(UnknownNameError, match="segmenter"):
        Explainer(model=TINY, segmenter="slick")
    with pytest.raises(UnknownNameError):
        Explainer(model=TINY, restore="dehaze-nope")
    with pytest.raises(ClipIQError, match="max_side"):
        Explainer(model=TINY, max_side=-1)


def test_max_side_downscales_and_records_the_original_size(photo):
    small = Explainer(model=TINY, max_side=64)
    e = small(photo)
    _check(e, 48, 64)
    assert e.original_size == (H, W)
    # A (1,3,H,W) tensor is one image; a source names it.
    batch = small(pil_to_tensor(photo)[None], source="mine")
    assert batch.source == "mine" and batch.original_size == (H, W) and abs(batch.score - e.score) < 1e-6
    assert Explainer(model=TINY, max_side=None)(photo).image.shape == (3, H, W)


def test_restore_fills_restored_and_its_score(tiny, photo):
    e = tiny(photo)
    _check(e)
    assert e.restorer == "dehaze-dcp"
    assert e.restored is not None and e.restored.shape == (3, H, W)
    assert float(e.restored.min()) >= 0.0 and float(e.restored.max()) <= 1.0
    assert e.restored_score is not None and 0.0 <= e.restored_score <= 1.0
    assert abs(e.restored_score - float(tiny.metric(e.restored[None])[0])) < 1e-6


def test_reused_explainer_matches_explain_on_each_image():
    photos = [_photo(1), _photo(2)]
    reused = Explainer(model=TINY)
    for p in photos:
        a, b = reused(p), explain(p, model=TINY)
        assert a.score == b.score and a.attributes == b.attributes and a.original_size == b.original_size
        torch.testing.assert_close(a.heatmap, b.heatmap)
        for k in DEGRADATION_MAPS:
            torch.testing.assert_close(a.degradation_maps[k], b.degradation_maps[k])
        assert torch.equal(a.labels, b.labels) and a.regions == b.regions


def test_without_a_describer_regions_have_no_descriptions(photo):
    e = Explainer(model=TINY, describer=None, segmenter="grid", segmenter_options={"rows": 2, "cols": 3})(photo)
    _check(e)
    assert len(e.regions) == 6 and all(r.description == "" and r.dimensions == {} for r in e.regions)


def test_rsfiqa_gives_its_own_regions(tmp_path, photo):
    cfg = {"backbone": TINY, "view_size": 64, "rsa_layers": 1, "segmenter": "grid",
           "segmenter_options": {"rows": 2, "cols": 2}, "max_regions": 8}
    torch.manual_seed(0)
    model = build_model(cfg)
    pl = model.checkpoint_payload({"model": cfg})
    path = save_method_checkpoint(tmp_path / "rsfiqa.safetensors", pl["method"], pl["state"], pl["config"],
                                  pl["backbone"])
    ex = Explainer("rsfiqa", model=TINY, metric_options={"checkpoint": str(path)})
    e = ex(photo)
    _check(e)
    assert e.metric == "rsfiqa" and len(e.regions) == 4
    own = ex.metric.score_regions(e.image)
    assert abs(e.score - own["score"]) < 1e-6
    assert sorted(r.score for r in e.regions) == pytest.approx(sorted(own["region_scores"]))
    for r in e.regions:
        assert r.description and all(v in LEVELS for v in r.dimensions.values())
    # Attributes come from zero-shot CLIP-IQA on the same backbone, as for any metric.
    assert e.attributes == pytest.approx(Explainer(model=TINY)(photo).attributes, abs=1e-6)


def test_another_metric_scores_while_attributes_and_maps_stay_zero_shot(explained, photo):
    ex = Explainer("clip-dqa")
    e = ex(photo)
    _check(e)
    assert e.metric == "clip-dqa" and ex.zero_shot is not ex.metric
    assert abs(e.score - float(ex.metric(e.image[None])[0])) < 1e-6
    # The same backbone (degradation-clip-v2) as the default explainer: the same attributes and maps.
    assert e.attributes == pytest.approx(explained.attributes, abs=1e-5)
    torch.testing.assert_close(e.heatmap, explained.heatmap)


def test_a_built_metric_is_used_as_given(photo):
    from clipiq import create_metric

    full = create_metric("clipiqa", model=TINY, attributes="all")
    assert Explainer(full).zero_shot is full  # it already gives every attribute: no second backbone
    bare = create_metric("clipiqa", model=TINY)
    ex = Explainer(bare, model=TINY)
    assert ex.metric is bare and ex.zero_shot is not bare
    e = ex(photo)
    assert abs(e.score - float(bare(e.image[None])[0])) < 1e-6 and "sharpness" in e.attributes
