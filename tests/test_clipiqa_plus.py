"""CLIP-IQA+: zero-shot start, what trains, the training task end to end, and the shipped prompts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

import clipiq
from clipiq.clip.checkpoint import read_method_checkpoint, save_method_checkpoint
from clipiq.core.config import load_config
from clipiq.core.errors import CheckpointError
from clipiq.data.io import load_image
from clipiq.iqa.clipiqa_plus import DEFAULT_BACKBONE, SHIPPED, build_model, shipped_checkpoint
from clipiq.train import TRAINING_TASKS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kodak-kodim05.png"


def _untrained(folder: Path) -> Path:
    pl = build_model({"backbone": "test-tiny"}).checkpoint_payload({"model": {"backbone": "test-tiny"}})
    return save_method_checkpoint(folder / "untrained.safetensors", pl["method"], pl["state"], pl["config"],
                                  pl["backbone"])


@pytest.mark.parametrize("view", ["tiles", "resize"])
def test_untrained_prompts_score_as_zero_shot_clipiqa(tmp_path, view):
    x = torch.rand(3, 3, 240, 300, generator=torch.Generator().manual_seed(0))
    zero_shot = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view=view)(x)
    plus = build_model({"backbone": "test-tiny", "view": view}).eval()
    with torch.no_grad():
        scores = torch.cat([plus.score_prepared(plus.prepare(img)[None]) for img in x])
    torch.testing.assert_close(scores, zero_shot, atol=1e-6, rtol=0)
    metric = clipiq.create_metric("clipiqa+", device="cpu", checkpoint=_untrained(tmp_path))
    torch.testing.assert_close(metric(x), clipiq.create_metric("clipiqa", model="test-tiny", device="cpu")(x),
                               atol=1e-6, rtol=0)


def test_only_the_context_vectors_train():
    torch.manual_seed(0)
    model = build_model({"backbone": "test-tiny"}).train()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompts.0.ctx", "prompts.1.ctx"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = [torch.rand(3, 200 + 20 * i, 230) for i in range(4)]
    rng = __import__("numpy").random.default_rng(0)
    views = [model.train_views(img, rng) for img in images]
    batch = tuple(torch.stack(v) for v in zip(*views))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for loss in ("mse", "fidelity"):
        model.loss = loss
        model.training_losses(batch, torch.tensor([0.1, 0.9, 0.4, 0.6]))["loss"].backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"prompts.0.ctx", "prompts.1.ctx"}
    assert set(model.checkpoint_payload({})["state"]) == changed
    assert len(model.features) == 4  # one image-tower pass per image, reused by later steps and predictions
    model.eval()
    assert model.predict(images).shape == (4,) and len(model.features) == 4


def _tiny_dataset(folder: Path, n: int = 12) -> Path:
    g = torch.Generator().manual_seed(1)
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos"])
        for i in range(n):
            level = i / (n - 1)
            img = (torch.rand(3, 48, 64, generator=g) * (0.2 + 0.8 * level)).permute(1, 2, 0)
            Image.fromarray((img.numpy() * 255).astype("uint8")).save(folder / f"{i:02d}.png")
            w.writerow([f"{i:02d}.png", 100 * level])
    return folder / "labels.csv"


def test_tiny_training_run_end_to_end_and_reload(tmp_path):
    labels = _tiny_dataset(tmp_path)
    task = TRAINING_TASKS.get("clipiqa-plus")
    overrides = [f"data.labels={labels}", f"data.root={tmp_path}"]
    cfg = load_config(ROOT / "configs/clipiqa-plus/tiny.yaml", overrides, defaults=task.DEFAULTS)
    summary = task.run(cfg, tmp_path / "run", torch.device("cpu"), progress=False)
    assert summary["rounds"] == 2 and "srcc_median" in summary
    assert set(summary["zero_shot_clipiqa"]) >= {"srcc_median", "plcc_median"}
    ck = read_method_checkpoint(summary["checkpoint"], "clipiqa+")
    assert ck.config["trained_on"]["n_images"] == 12 and ck.config["trained_on"]["labels"] == str(labels)
    assert set(ck.state) == {"prompts.0.ctx", "prompts.1.ctx"}
    metric = clipiq.create_metric("clipiqa+", device="cpu", checkpoint=summary["checkpoint"])
    assert metric.clip.weights_name.startswith("test-tiny") and metric(torch.rand(1, 3, 64, 64)).shape == (1,)
    with pytest.raises(CheckpointError, match="trained on backbone"):
        clipiq.create_metric("clipiqa+", model="degradation-clip", device="cpu", checkpoint=summary["checkpoint"])
    # ratios [1, 0]: one round on every image (validation carved from them), as the shipped prompts are trained
    final = load_config(ROOT / "configs/clipiqa-plus/tiny.yaml",
                        [*overrides, "protocol.rounds=1", "protocol.ratios=[1.0, 0.0]"], defaults=task.DEFAULTS)
    summary = task.run(final, tmp_path / "all", torch.device("cpu"), progress=False)
    assert "srcc_median" not in summary and "zero_shot_clipiqa" not in summary
    assert read_method_checkpoint(summary["checkpoint"]).config["trained_on"]["n_images"] == 12


def test_the_shipped_prompts_score_with_no_arguments():
    assert DEFAULT_BACKBONE in SHIPPED
    for backbone in SHIPPED:  # every shipped file is present and matches its pinned sha256
        assert shipped_checkpoint(backbone).name == f"clipiqa-plus-{backbone}.safetensors"
    metric = clipiq.create_metric("clipiqa+")
    path = shipped_checkpoint()
    assert metric.clip.weights_name == DEFAULT_BACKBONE and path.name in metric.model_id
    assert path.stat().st_size < 64_000
    ck = read_method_checkpoint(path, "clipiqa+")
    assert ck.config["trained_on"]["n_images"] == 400
    views = metric.prepare(load_image(EXAMPLE))[None]
    with torch.no_grad():
        score = metric.score_prepared(views)["score"]
        untrained = build_model({"backbone": DEFAULT_BACKBONE}, clip=metric.clip, preprocess=metric.net.preprocess)
        zero_shot = untrained.eval().score_prepared(views)
    assert score.shape == (1,) and 0 < float(score) < 1
    assert abs(float(score) - float(zero_shot)) > 1e-3  # the prompts did train
    with pytest.raises(ValueError, match="none ships for backbone .test-tiny."):
        clipiq.create_metric("clipiqa+", model="test-tiny")
