"""CLIP-DQA: merged global/local streams, multimodal deep prompts, patch-grid inference, checkpoints, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipiq
from clipiq.clip import load_clip
from clipiq.clip.checkpoint import CheckpointError, read_method_checkpoint, save_method_checkpoint
from clipiq.clip.preprocess import grid_count
from clipiq.clip.prompts import prompt_probabilities
from clipiq.clip.tokenizer import tokenize
from clipiq.data.io import load_image
from clipiq.iqa.clip_dqa import CLIPDQAModel, build_model, load_model

TINY = {"backbone": "test-tiny", "n_ctx": 4, "ctx_init": "a photo of a", "patch_stride": 96, "patch_batch": 5}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(TINY)
    with torch.no_grad():  # non-trivial prompts so every piece matters
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return m.eval()


def test_only_prompts_train_and_gradients_reach_them(model):
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(k.startswith("clip.") for k in trainable)
    assert {"text_prompts.ctx", "text_deep", "vision_ctx"} <= trainable
    assert not any(k.startswith("couple.") for k in trainable)  # no text-to-vision coupling by default
    model.train()
    views = model.train_views(torch.rand(3, 240, 300), np.random.default_rng(0))
    assert [tuple(v.shape) for v in views] == [(3, 224, 224), (3, 224, 224)]
    losses = model.training_losses(tuple(v[None].repeat(2, 1, 1, 1) for v in views), torch.tensor([0.2, 0.9]))
    losses["loss"].backward()
    for k, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, k
        else:
            assert p.grad is None, k
    model.zero_grad(set_to_none=True)
    model.eval()


def test_one_stream_with_a_single_class_token(model):
    clip = model.clip
    g = clip.visual.embed_patches(torch.rand(1, 3, 224, 224))
    loc = clip.visual.embed_patches(torch.rand(1, 3, 224, 224))
    out = clip.visual.forward_tokens([g, loc], deep_prompts=model.vision_prompts(), return_tokens=True,
                                     prompts_before_ln_pre=True)
    assert out.n_prompts == 4
    assert out.tokens.shape[1] == g.shape[1] + loc.shape[1]  # both views' patch tokens, behind one CLS

def test_layer0_vision_prompts_go_in_before_ln_pre(model):
    """The authors' order; ln_pre gets a non-identity affine here (test-tiny's is the identity, where the
    order cannot show: attention sees the prompts through ln_1, which undoes a plain normalisation)."""
    visual = model.clip.visual
    g = visual.embed_patches(torch.rand(1, 3, 224, 224))
    loc = visual.embed_patches(torch.rand(1, 3, 224, 224))
    saved = {k: v.clone() for k, v in visual.ln_pre.state_dict().items()}
    try:
        with torch.no_grad():
            visual.ln_pre.weight.uniform_(0.5, 2.0)
            visual.ln_pre.bias.normal_(0, 0.5)
            vp, text = model.vision_prompts(), model.text_features()
            before = visual.forward_tokens([g, loc], deep_prompts=vp, prompts_before_ln_pre=True).pooled
            after = visual.forward_tokens([g, loc], deep_prompts=vp).pooled
            torch.testing.assert_close(model.quality(g, loc),
                                       prompt_probabilities(before, text, model.clip.logit_scale)[:, 1])
            assert (before - after).abs().max() > 1e-3
    finally:
        visual.ln_pre.load_state_dict(saved)


def test_independent_per_layer_prompts_and_projections_at_every_layer(model):
    """The authors' structure: each tower has its own prompts and its own width-to-width linear per layer."""
    depth = len(model.clip.visual.transformer.blocks)
    wt, wv = model.clip.text.width, model.clip.visual.width
    assert len(model.text_proj) == len(model.vision_proj) == depth
    assert all(p.weight.shape == (wt, wt) for p in model.text_proj)
    assert all(p.weight.shape == (wv, wv) for p in model.vision_proj)
    assert model.vision_ctx.shape == (depth, 4, wv) and model.text_deep.shape == (depth - 1, 4, wt)
    vp, tp = model.vision_prompts(), model._text_layers()
    for i in range(depth):  # layer 0 included, on both towers
        torch.testing.assert_close(vp[i], model.vision_proj[i](model.vision_ctx[i]))
    torch.testing.assert_close(tp[0], model.text_proj[0](model.text_prompts.ctx))
    torch.testing.assert_close(tp[1], model.text_proj[1](model.text_deep[0]))
    maple = build_model({**TINY, "prompt_coupling": "maple"})
    assert maple.vision_proj is None and maple.vision_ctx is None and len(maple.couple) == depth
    torch.testing.assert_close(maple.vision_prompts()[1], maple.couple[1](maple._text_layers()[1]))
    with pytest.raises(ValueError, match="prompt_coupling"):
        build_model({**TINY, "prompt_coupling": "shared"})


@pytest.mark.parametrize("coupling", ["independent", "maple"])
def test_untrained_model_scores_like_the_zero_shot_prompt(coupling):
    """Training starts at zero-shot "{ctx_init} bad/good photo." on the same merged views.

    The text side is exact (identity projections, the phrase's own hidden states as deeper prompts); the
    vision prompts start as zero tokens, whose only effect is taking part in attention. Measured on
    test-tiny: at most 5e-4 apart (the scores' spread is 0.026), against 0.1-0.2 for random prompts.
    """
    torch.manual_seed(0)
    m = build_model({**TINY, "prompt_coupling": coupling}).eval()
    clip, visual = m.clip, m.clip.visual
    imgs = torch.rand(8, 3, 240, 300) ** torch.linspace(0.3, 3, 8)[:, None, None, None]
    g, loc = m.global_view(imgs), imgs[..., :224, :224]
    with torch.no_grad():
        texts = tokenize([f"a photo of a {c}." for c in ("bad photo", "good photo")])
        txt = clip.encode_text(texts, normalize=True)
        torch.testing.assert_close(m.text_features(), txt, atol=1e-5, rtol=1e-5)
        img = visual.forward_tokens([visual.embed_patches(m._encode(g)), visual.embed_patches(m._encode(loc))]).pooled
        zero_shot = prompt_probabilities(img, txt, clip.logit_scale)[:, 1]
        torch.testing.assert_close(m(g, loc), zero_shot, atol=2e-3, rtol=0)


def test_patch_grid_inference_equals_the_naive_loop(model):
    img = torch.rand(3, 300, 410)
    stride = 96
    fast = model.score_image(img, stride)
    # the grid reaches the borders: x at 0, 96, 186
    patches = model.preprocess.patches(img[None], 224, stride)[0]
    assert len(patches) == grid_count(300, 224, stride) * grid_count(410, 224, stride) == 2 * 3
    g = model.global_view(img)[None]
    with torch.no_grad():
        naive = torch.stack([model(g, p[None])[0] for p in patches]).mean()
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    assert 0 <= float(fast) <= 1


def test_predict_uses_val_stride_in_validation(model):
    img = torch.rand(3, 300, 420)
    model.val_stride = 1000
    try:
        assert torch.allclose(model.predict([img], phase="val"), model.score_image(img, 1000)[None])
        assert torch.allclose(model.predict([img], phase="test"), model.score_image(img, 96)[None])
    finally:
        model.val_stride = None


def test_views_global_resized_local_full_resolution_and_seeded(model):
    img = torch.rand(3, 300, 260)
    torch.testing.assert_close(model.global_view(img), model.preprocess.resize(img[None], "resize", 224)[0])
    assert model.global_view(img[None].repeat(2, 1, 1, 1)).shape == (2, 3, 224, 224)
    a = model.local_view(img, np.random.default_rng(1))
    b = model.local_view(img, np.random.default_rng(1))
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    # a crop, not a resize: it is found verbatim in the image
    found = any(torch.equal(img[:, y : y + 224, x : x + 224], a) for y in range(77) for x in range(37))
    assert found
    small = model.local_view(torch.rand(3, 100, 150), np.random.default_rng(0))
    assert small.shape == (3, 224, 224)


def test_grid_local_patches_come_from_the_inference_grid(model):
    img = torch.rand(3, 300, 260)
    grid = model.preprocess.patches(img[None], 224, model.patch_stride)[0]
    model.local_patches = "grid"
    try:
        drawn = [model.local_view(img, np.random.default_rng(s)) for s in range(12)]
    finally:
        model.local_patches = "random"
    # every drawn patch is one of the grid's, and more than one of them is drawn
    picks = {next(i for i, g in enumerate(grid) if torch.equal(g, d)) for d in drawn}
    assert len(picks) > 1
    with pytest.raises(ValueError, match="local_patches must be one of random, grid"):
        build_model({**TINY, "local_patches": "anywhere"})


def test_bad_configuration_errors():
    clip, pre = load_clip("test-tiny")
    with pytest.raises(ValueError, match="two class names"):
        CLIPDQAModel(clip, pre, classnames=["a", "b", "c"])
    with pytest.raises(ValueError, match="depth"):
        CLIPDQAModel(clip, pre, depth=9)
    with pytest.raises(ValueError, match="strides"):
        CLIPDQAModel(clip, pre, patch_stride=0)
    with pytest.raises(ValueError, match="exactly n_ctx=4"):
        CLIPDQAModel(clip, pre, n_ctx=4)  # the default phrase has 8 tokens


def _save(model, path, config=None):
    pl = model.checkpoint_payload(config or {"model": TINY})
    return save_method_checkpoint(path, pl["method"], pl["state"], pl["config"], pl["backbone"])


def test_checkpoint_is_small_and_reloads_exactly(model, tmp_path):
    path = _save(model, tmp_path / "dqa.safetensors")
    ck = read_method_checkpoint(path, "clip-dqa")
    assert not any(k.startswith("clip.") for k in ck.state)
    assert path.stat().st_size < 64_000  # prompts and projections only, no backbone
    again = load_model(path)
    img = torch.rand(3, 240, 260)
    torch.testing.assert_close(again.score_image(img), model.score_image(img))
    # a checkpoint of the earlier structure (text-to-vision coupling, no text projections) is refused clearly
    pl = model.checkpoint_payload({"model": TINY})
    old = {k: v for k, v in pl["state"].items() if not k.startswith(("text_proj.", "vision_"))}
    old["couple.0.weight"] = torch.zeros(32, 16)
    old_config = {"model": {k: v for k, v in pl["config"]["model"].items() if k not in ("prompt_coupling",
                                                                                        "ctx_init")}}
    old_path = save_method_checkpoint(tmp_path / "old.safetensors", pl["method"], old, old_config, pl["backbone"])
    with pytest.raises(CheckpointError, match="predates"):
        load_model(old_path)
    old_path = save_method_checkpoint(tmp_path / "old.safetensors", pl["method"], old, pl["config"], pl["backbone"])
    with pytest.raises(CheckpointError, match="couple.0.weight"):
        load_model(old_path)


def test_the_shipped_checkpoint_scores_with_no_arguments(examples_dir):
    from clipiq.iqa.clip_dqa import CLIPDQA, DEFAULT_BACKBONE, SHIPPED

    assert DEFAULT_BACKBONE in SHIPPED
    path = CLIPDQA.shipped_checkpoint()  # present, and its sha256 matches the pinned one
    ck = read_method_checkpoint(path, "clip-dqa")
    assert ck.config["data"]["source"] == "synthetic-dehazed"  # it records what it was trained on
    metric = clipiq.create_metric("clip-dqa", patch_stride=256)
    assert metric.clip.weights_name == DEFAULT_BACKBONE and path.name in metric.model_id
    img = load_image(examples_dir / "kodak-kodim23.png")[:, :300, :300]
    score = float(metric(img[None])[0])
    with torch.no_grad():
        untrained = build_model(ck.config["model"], clip=metric.clip, preprocess=metric.net.preprocess).eval()
        zero_shot = float(untrained.score_image(img, 256))
    assert 0 < score < 1 and abs(score - zero_shot) > 1e-4  # the prompts did train


def test_metric_needs_a_checkpoint_and_refuses_another_backbone(model, tmp_path):
    with pytest.raises(ValueError, match="needs a trained checkpoint: none ships for backbone 'test-tiny'"):
        clipiq.create_metric("clip-dqa", model="test-tiny")
    path = _save(model, tmp_path / "dqa.safetensors")
    metric = clipiq.create_metric("clip-dqa", checkpoint=path, patch_stride=128)
    scores = metric(torch.rand(2, 3, 230, 250))
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    # a checkpoint claiming another backbone's fingerprint is refused
    pl = model.checkpoint_payload({"model": TINY})
    pl["backbone"]["sha256"] = "0" * 64
    wrong = save_method_checkpoint(tmp_path / "wrong.safetensors", "clip-dqa", pl["state"], pl["config"],
                                   pl["backbone"])
    with pytest.raises(CheckpointError, match="do not transfer"):
        clipiq.create_metric("clip-dqa", checkpoint=wrong)
    with pytest.raises(ValueError, match="patch_stride"):
        clipiq.create_metric("clip-dqa", checkpoint=path, patch_stride=0)


def test_cli_score_with_checkpoint_and_stride(model, tmp_path, examples_dir, capsys):
    from clipiq.cli.main import main

    path = _save(model, tmp_path / "dqa.safetensors")
    out = tmp_path / "scores.csv"
    rc = main(["score", str(examples_dir), "--metric", "clip-dqa", "--checkpoint", str(path),
               "--patch-stride", "160", "-o", str(out)])
    assert rc == 0
    text = out.read_text()
    assert text.count("\n") == 1 + len(list(examples_dir.glob("*.png"))) + len(list(examples_dir.glob("*.jpg")))
    assert "dqa.safetensors#" in text  # the checkpoint is part of the scores' identity
    # resuming into the same file with another checkpoint is refused
    other = _save(model, tmp_path / "other.safetensors", {"model": TINY, "seed": 1})
    assert main(["score", str(examples_dir), "--metric", "clip-dqa", "--checkpoint", str(other),
                 "-o", str(out)]) == 2
    assert "already holds scores" in capsys.readouterr().err


def test_train_cli_end_to_end_on_synthetic_dehazed(tmp_path, photos_dir, capsys):
    import json

    from clipiq.cli.main import main
    from clipiq.train.engine import read_metrics

    run = tmp_path / "run"
    rc = main(["train", "clip-dqa", "--config", "configs/clip-dqa/tiny.yaml", "--run-dir", str(run),
               f"data.photos={photos_dir / 'kodak24'}", f"data.cache_dir={tmp_path / 'data'}"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["n_images"] == 6 * 2 * 3
    assert -1 <= summary["srcc_median"] <= 1 and "plcc_mean" in summary
    rows = (run / "rounds.csv").read_text().splitlines()
    assert len(rows) == 3
    log = read_metrics(run / "round00" / "metrics.csv")
    assert {r["step"] for r in log if r["phase"] == "val" and r["name"] == "srcc"} == {3, 6}  # once per epoch
    assert {r["step"] for r in log if r["name"] == "train_srcc"} == {3, 6}  # underfitting shows in the log
    metric = clipiq.create_metric("clip-dqa", checkpoint=summary["checkpoint"])
    labels = sorted((tmp_path / "data").rglob("*_dcp.png"))
    assert metric(labels[:2]).shape == (2,)


def test_stem_statistics_of_the_global_view_reach_the_class_token(tmp_path):
    model = build_model({"backbone": "degradation-clip-v2", "n_ctx": 4, "ctx_init": "a photo of a",
                         "patch_stride": 128}).eval()
    img = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        g, stats = model.clip.visual.embed_images(model._encode(model.global_view(img[None])))
        patch = model.preprocess.patches(img[None], 224, 128)[0][:1]
        local = model.clip.visual.embed_images(model._encode(patch))[0]
        manual = model.quality(g, local, cls_extra=stats)
        torch.testing.assert_close(model(model.global_view(img[None]), patch), manual)
        model.stem_stats = False
        assert not torch.allclose(model(model.global_view(img[None]), patch), manual)
        model.stem_stats = True
    pl = model.checkpoint_payload({"model": {"backbone": "degradation-clip-v2"}})
    assert pl["config"]["model"]["stem_stats"] is True
    old_cfg = {**pl["config"], "model": {k: v for k, v in pl["config"]["model"].items() if k != "stem_stats"}}
    old = save_method_checkpoint(tmp_path / "old.safetensors", pl["method"], pl["state"], old_cfg, pl["backbone"])
    assert load_model(old).stem_stats is False  # trained before the setting existed: without statistics
