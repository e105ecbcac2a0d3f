"""degradation-clip-v2: camera recipes, the training task end to end (tiny), and the shipped offline model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import clipiq
from clipiq import degrade
from clipiq.cli.main import main
from clipiq.clip import weights as wreg
from clipiq.data.io import load_image
from clipiq.train import TRAINING_TASKS
from clipiq.train import degradation_clip_v2 as v2

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "degradation-clip-v2" / "tiny.yaml"
SHARED = REPO.parent / "shared" / "data"


def test_camera_recipes_draw_levels_in_range_and_compose():
    for name, steps in degrade.CAMERA_RECIPES.items():
        recipe = degrade.camera_recipe(name, np.random.default_rng(3))
        assert [d for d, _ in recipe] == [d for d, _ in steps]
        assert all(lo <= lv <= hi for (_, lv), (_, (lo, hi)) in zip(recipe, steps))
    assert degrade.camera_recipe("defocus_noise", 5) == degrade.camera_recipe("defocus_noise", 5)
    x = torch.rand(2, 3, 48, 48)
    a = degrade.camera_composite("low_light_gain_jpeg", 1, seed=0)(x)
    b = degrade.camera_composite("low_light_gain_jpeg", 1, seed=0)(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert a.mean() < x.mean()  # low light darkens
    with pytest.raises(KeyError, match="unknown camera recipe"):
        degrade.camera_recipe("sunny")


def test_content_words_and_ssim_targets():
    assert v2.with_content("a photo with haze", "church") == "a photo of a church with haze"
    assert v2.with_content("a sharp, clean photo", "dog") == "a sharp, clean photo of a dog"
    assert v2.quality_target(1.0) == pytest.approx(0.98) and v2.quality_target(-0.1) == pytest.approx(0.02)
    train, val = v2.split_photos([Path(f"{i}.png") for i in range(20)], 0.1, 0)
    assert len(val) == 2 and not set(train) & set(val)


@pytest.mark.skipif(not (SHARED / "photos" / "kodak24").is_dir(), reason="needs the shared photos")
def test_tiny_training_runs_end_to_end(tmp_path):
    assert "degradation-clip-v2" in TRAINING_TASKS
    run_dir = tmp_path / "run"
    rc = main(["train", "degradation-clip-v2", "--config", str(TINY), "--run-dir", str(run_dir), "--device", "cpu",
               f"data.root={SHARED}"])
    assert rc == 0
    out = run_dir / "degradation-clip-v2.safetensors"
    assert out.is_file() and (run_dir / "last.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert not any(k.startswith("visual.stem.") for k in f.keys())  # noqa: SIM118
    model, _ = clipiq.load_clip(weights=out, device="cpu")  # the stem comes from its package record
    assert model.cfg.vision.stem_stats and model.visual.stem is not None
    assert model.encode_image(torch.zeros(1, 3, 64, 64)).shape == (1, model.cfg.embed_dim)


def test_shipped_model_loads_offline_and_ranks_blur_below_clean():
    rec = wreg.get_weights("degradation-clip-v2")
    model, _ = clipiq.load_clip("degradation-clip-v2", device="cpu")
    assert model.weights_name == rec.name and model.weights_sha256 == rec.sha256
    assert wreg.sha256_file(wreg.resolve_weights(rec)) == rec.sha256
    from clipiq.iqa import create_metric

    metric = create_metric("clipiqa", device="cpu")
    assert metric.clip.weights_name == "degradation-clip-v2"  # the offline default
    img = load_image(REPO / "examples" / "kodak-kodim23.png")[:, :256, :256]
    blurred = degrade.apply(img, "gaussian_blur", 5)
    scores = metric([img, blurred])
    assert float(scores[1]) < float(scores[0])
