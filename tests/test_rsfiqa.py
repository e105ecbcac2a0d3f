"""RSFIQA: grid labels, the RSA mask, the per-layer mask hook, the zero-shot start, gradients, checkpoints, CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import clipiq
from clipiq.clip import load_clip
from clipiq.clip.checkpoint import read_method_checkpoint, save_method_checkpoint
from clipiq.clip.prompts import prompt_probabilities
from clipiq.clip.tokenizer import tokenize
from clipiq.iqa import rsfiqa
from clipiq.iqa.rsfiqa import build_model, labels_to_grid, padding_mask, region_token_mask, rsa_mask

TINY = {"backbone": "test-tiny", "view_size": 64, "rsa_layers": 1, "segmenter": "grid",
        "segmenter_options": {"rows": 2, "cols": 2}, "describer": "fake", "max_regions": 8}
LEVELS = ("sharpness", "noise", "exposure", "color", "compression")


@dataclass
class FakeDescription:
    levels: dict[str, int] = field(default_factory=dict)
    sentence: str = ""
    content: str | None = None


def fake_describer(image, labels):
    """A stand-in for clipiq.segment.describe: a sentence from each region's mean brightness."""
    out = []
    for k in range(int(labels.max()) + 1):
        level = 1 + int(4 * float(image[:, labels == k].mean()))
        out.append(FakeDescription({d: level for d in LEVELS}, f"a region of level {level} quality.", "thing"))
    return out


@pytest.fixture(autouse=True)
def _fake_describer(monkeypatch):
    monkeypatch.setattr(rsfiqa, "create_region_describer", lambda name, clip, pre, opts: fake_describer)


def _perturbed(cfg=TINY):
    torch.manual_seed(0)
    m = build_model(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return m.eval()


def _image(seed=0, h=70, w=100):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g) ** torch.rand(3, 1, 1, generator=g).add(0.3)


def test_labels_to_grid_majority_vote():
    labels = torch.zeros(4, 6, dtype=torch.int64)
    labels[0, 0:2] = 1  # cell (0,0) covers rows 0-1, cols 0-2: 2 of 6 pixels are 1 -> 0 wins
    labels[2:4, 3:5] = 2  # cell (1,1): 4 of 6 pixels are 2 -> 2 wins
    labels[2, 5] = 1
    grid = labels_to_grid(labels, 2, 2)
    assert grid.tolist() == [[0, 0], [0, 2]]
    tie = torch.tensor([[3, 1]])
    assert labels_to_grid(tie, 1, 1).tolist() == [[1]]  # ties go to the lower label
    # a grid finer than the labels takes the label under each cell's centre
    assert labels_to_grid(torch.tensor([[0, 1]]), 2, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]


def test_rsa_mask_structure():
    lab = torch.tensor([[0, 0, 1, -1]])
    m = rsa_mask(lab, n_prefix=2)[0, 0]  # [cls, prompt, t0, t1, t2, pad]
    assert m.shape == (6, 6)
    assert m[0].tolist() == [True, True, True, True, True, False]  # CLS attends to everything valid
    assert m[1].tolist() == [True, True, True, True, True, False]  # so do the prompts
    assert m[2].tolist() == [True, True, True, True, False, False]  # region 0: prefix + own region
    assert m[4].tolist() == [True, True, False, False, True, False]  # region 1
    assert m[5].tolist() == [True, True, False, False, False, True]  # padding: only itself (no empty row)
    assert padding_mask(torch.tensor([[0, 1]])) is None
    pm = padding_mask(lab, 1)[0, 0]
    assert pm.shape == (5, 5) and pm[:, -1].tolist() == [False] * 5 and pm[:, :-1].all()


def test_per_layer_attention_masks_hook():
    clip, _ = load_clip("test-tiny")
    v = clip.visual
    t = v.embed_patches(torch.rand(2, 3, 64, 64))
    lab = torch.tensor([[0] * 8 + [1] * 8, [0, 1] * 8])
    m = rsa_mask(lab)
    layers = len(v.transformer.blocks)
    with torch.no_grad():
        single = v.forward_tokens(t, attn_mask=m).pooled
        torch.testing.assert_close(v.forward_tokens(t, attn_mask=[m] * layers).pooled, single)
        torch.testing.assert_close(v.forward_tokens(t, attn_mask=[None] * layers).pooled, v.forward_tokens(t).pooled)
        last = v.forward_tokens(t, attn_mask=[None] * (layers - 1) + [m], return_tokens=True)
        full = v.forward_tokens(t, return_tokens=True)
        assert not torch.allclose(last.pooled, single)
        # the class token attends to everything: only the patch tokens feel a last-layer RSA mask
        torch.testing.assert_close(last.pooled, full.pooled)
        assert not torch.allclose(last.tokens, full.tokens)
    with pytest.raises(ValueError, match="per-layer entries"):
        v.forward_tokens(t, attn_mask=[m])
    with pytest.raises(ValueError, match="attn_mask covers"):
        v.forward_tokens(t, attn_mask=[None, m[..., :-1, :-1]])


def test_untrained_model_starts_at_zero_shot_and_ignores_descriptions():
    torch.manual_seed(0)
    m = build_model(TINY).eval()
    imgs = [_image(0), _image(1, 90, 60)]
    with torch.no_grad():
        zs = m.clip.encode_text(tokenize(["Good photo.", "Bad photo."]), normalize=True)
        torch.testing.assert_close(m.text_features(), zs, atol=1e-5, rtol=1e-5)
        infos, out = m._score_images(imgs)
        w = out["counts"] / out["counts"].sum(-1, keepdim=True)  # area-weighted start
        expected = 0.5 * out["cls_score"] + 0.5 * (w * out["region_scores"]).sum(-1)
        torch.testing.assert_close(out["score"], expected)
        torch.testing.assert_close(out["weights"], w)
        # CLS score is zero-shot CLIP-IQA on the RSA-masked forward
        views = [m.view(im) for im in imgs]
        assert views[0].shape == (3, 48, 64) and views[1].shape == (3, 64, 48)  # longer side 64, aspect kept
        # gate 0: descriptions change nothing
        no_desc = m.score_views(views, [m.grid(i) for i in infos], None, [i.n_regions for i in infos])
        torch.testing.assert_close(no_desc["score"], out["score"])
        m.gate.fill_(1.0)
        assert not torch.allclose(m.predict(imgs), out["score"])
        m.gate.zero_()
        # one region, full attention: the CLS score is zero-shot CLIP-IQA of the view; the region's own class
        # token sees what the CLS token sees, so the start is that score; pooling patch tokens instead ("mean")
        # scores the mean patch token, and the start mixes the two half and half
        one_cfg = {**TINY, "segmenter_options": {"rows": 1, "cols": 1}, "rsa_layers": 0}
        one = build_model(one_cfg).eval()
        enc = one.clip.visual(one.preprocess.normalize(views[0][None]), return_tokens=True)
        cls_zs = prompt_probabilities(enc.pooled, zs, one.clip.logit_scale)[:, 0]
        mean_zs = prompt_probabilities(enc.tokens.mean(1), zs, one.clip.logit_scale)[:, 0]
        torch.testing.assert_close(one.predict(imgs[:1]), cls_zs, atol=1e-5, rtol=1e-5)
        mean = build_model({**one_cfg, "region_pool": "mean"}).eval()
        torch.testing.assert_close(mean.predict(imgs[:1]), 0.5 * (cls_zs + mean_zs), atol=1e-5, rtol=1e-5)


def test_region_tokens_leave_the_class_token_alone_and_see_only_their_region():
    lab = torch.tensor([[0, 0, 1, -1]])
    m = region_token_mask(lab, 3, rsa=True)[0, 0]  # [cls, r0, r1, r2, t0, t1, t2, pad]
    assert m.shape == (8, 8)
    assert m[0].tolist() == [True, False, False, False, True, True, True, False]
    assert m[1].tolist() == [False, True, False, False, True, True, False, False]
    assert m[2].tolist() == [False, False, True, False, False, False, True, False]
    assert m[3].tolist() == [False, False, False, True, False, False, False, False]  # absent region: itself
    assert m[4].tolist() == [True, False, False, False, True, True, False, False]  # RSA: own region + cls
    full = region_token_mask(lab, 3, rsa=False)[0, 0]
    assert full[4].tolist() == [True, False, False, False, True, True, True, False]
    # the class token and the patches compute what they would without region tokens, in both pooling modes
    torch.manual_seed(0)
    token = build_model(TINY).eval()
    mean = build_model({**TINY, "region_pool": "mean"})
    mean.load_state_dict(token.state_dict())
    imgs = [_image(3), _image(4, 90, 60)]
    with torch.no_grad():
        a, b = token._score_images(imgs)[1], mean.eval()._score_images(imgs)[1]
    torch.testing.assert_close(a["cls_score"], b["cls_score"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a["region_scores"], b["region_scores"])
    with pytest.raises(ValueError, match="region_pool"):
        build_model({**TINY, "region_pool": "max"})


def test_gradients_reach_exactly_the_trainable_tensors():
    m = _perturbed()
    trainable = {k for k, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"good.ctx", "bad.ctx", "region_scorer.weight", "gate", "mix"}
    m.train()
    rng = np.random.default_rng(0)
    views = [m.train_views(_image(s, 60 + 10 * s, 80), rng) for s in range(3)]
    assert views[0][0].shape == (3, 64, 64) and views[0][1].shape == (4, 4) and views[0][2].shape[0] == 8
    assert (views[0][1] == -1).any()  # padded rows of a landscape view
    stacked = tuple(torch.stack(v) for v in zip(*views))
    m.training_losses(stacked, torch.tensor([0.1, 0.5, 0.9]))["loss"].backward()
    for k, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, k
        else:
            assert p.grad is None, k
    m.zero_grad(set_to_none=True)
    m.eval()


def test_padding_and_batching_do_not_change_scores():
    m = _perturbed()
    a, b = _image(0, 70, 100), _image(1, 100, 64)
    both = m.predict([a, b])
    torch.testing.assert_close(both, torch.cat([m.predict([a]), m.predict([b])]), atol=1e-5, rtol=1e-5)
    # the padded training view (no flip) scores as the image itself
    m.hflip = False
    v = m.train_views(a, np.random.default_rng(0))
    with torch.no_grad():
        torch.testing.assert_close(m(*(t[None] for t in v)), m.predict([a]), atol=1e-5, rtol=1e-5)


def test_flip_moves_image_and_labels_together():
    m = _perturbed()
    img = _image(3, 64, 64)
    views = [m.train_views(img, np.random.default_rng(s)) for s in range(8)]
    flipped = [v for v in views if not torch.equal(v[0], views[0][0])]
    assert flipped
    plain = next(v for v in views if torch.equal(v[0], m.view(img)))
    f = flipped[0]
    assert torch.equal(f[0], plain[0].flip(-1)) and torch.equal(f[1], plain[1].flip(-1))


def test_regions_are_cached_per_image():
    m = _perturbed()
    calls = []

    def counting(image, labels):
        calls.append(1)
        return fake_describer(image, labels)

    m.describer = counting
    img = _image(4)
    m.predict([img])
    m.train_views(img.clone(), np.random.default_rng(0))
    m.predict([img])
    assert len(calls) == 1 and m.region_cache.hits >= 2


def test_vanished_region_falls_back_to_cls_and_is_not_pooled():
    m = _perturbed({**TINY, "rsa_layers": 0})
    info = m.regions(_image(5, 64, 64))
    grid = m.grid(info).clone()
    grid[grid == 3] = 2  # region 3 has no token on the grid
    view = m.view(_image(5, 64, 64))
    with torch.no_grad():
        out = m.score_views([view], [grid], None, [4])
        assert out["counts"][0, 3] == 0 and out["weights"][0, 3] == 0
        cls_emb = m.clip.visual.forward_tokens(m.clip.visual.embed_patches(m._encode(view[None]))).pooled
        cls_region = prompt_probabilities(cls_emb, m.text_features(), m.clip.logit_scale)[:, 0]
        torch.testing.assert_close(out["region_scores"][0, 3], cls_region[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["weights"][0].sum(), torch.tensor(1.0))


def _save(model, path):
    pl = model.checkpoint_payload({"model": TINY})
    return save_method_checkpoint(path, pl["method"], pl["state"], pl["config"], pl["backbone"])


def test_checkpoint_round_trip_and_metric_contract(tmp_path):
    m = _perturbed()
    path = _save(m, tmp_path / "rsfiqa.safetensors")
    ck = read_method_checkpoint(path, "rsfiqa")
    assert set(ck.state) == {"good.ctx", "bad.ctx", "region_scorer.weight", "gate", "mix"}
    metric = clipiq.create_metric("rsfiqa", checkpoint=path)
    imgs = torch.stack([_image(0, 80, 96), _image(1, 80, 96)])
    torch.testing.assert_close(metric(imgs), m.predict(list(imgs)), atol=1e-5, rtol=1e-5)
    out = metric.score_regions(imgs[0])
    k = len(out["region_scores"])
    assert k == 4 and out["labels"].shape == (80, 96) and out["labels"].dtype == torch.int64
    assert sorted(out["labels"].unique().tolist()) == list(range(k))
    assert len(out["descriptions"]) == len(out["dimensions"]) == len(out["weights"]) == k
    assert set(out["dimensions"][0]) == set(LEVELS)
    assert abs(out["score"] - float(m.predict([imgs[0]])[0])) < 1e-5
    assert all(0 <= s <= 1 for s in out["region_scores"])


def test_the_shipped_checkpoint_scores_with_no_arguments_and_others_need_one():
    from clipiq.core import hub
    from clipiq.iqa.rsfiqa import SHIPPED

    record = SHIPPED["degradation-clip-v2"]
    path = hub.package_path(record)
    assert path.stat().st_size == record.size and hub.sha256_file(path) == record.sha256
    metric = clipiq.create_metric("rsfiqa", device="cpu")
    scores = metric(torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)))
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="rsfiqa needs a trained checkpoint: none ships for backbone "
                                         "'test-tiny'.*clipiq train rsfiqa"):
        clipiq.create_metric("rsfiqa", model="test-tiny")


def test_ablations_build_and_describer_none_has_no_gate():
    none = build_model({**TINY, "describer": "none", "rsa_layers": 0})
    assert none.gate is None and none.attention_masks(torch.zeros(1, 4, dtype=torch.int64)) is None
    out = none.score_regions(_image(2))
    assert out["dimensions"] == [{}] * 4 and out["descriptions"] == [""] * 4
    slic = build_model({**TINY, "segmenter": "slic", "segmenter_options": {"n_segments": 4}})
    assert slic.predict([_image(2)]).shape == (1,)
    with pytest.raises(ValueError, match="rsa_layers"):
        build_model({**TINY, "rsa_layers": 5})
    with pytest.raises(ValueError, match="view_size"):
        build_model({**TINY, "view_size": 60})
    with pytest.raises(ValueError, match="unknown rsfiqa model option"):
        build_model({**TINY, "rsa_layer": 1})
    with pytest.raises(ValueError, match="max_regions"):
        build_model({**TINY, "max_regions": 2}).predict([_image(2)])


def test_train_cli_end_to_end(tmp_path, photos_dir):
    import json

    from clipiq.cli.main import main

    run = tmp_path / "run"
    rc = main(["train", "rsfiqa", "--config", "configs/rsfiqa/tiny.yaml", "--run-dir", str(run),
               f"data.photos={photos_dir / 'kodak24'}", f"data.cache_dir={tmp_path / 'data'}",
               "model.view_size=64", "data.options.crop=96"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["n_images"] == 12
    metric = clipiq.create_metric("rsfiqa", checkpoint=summary["checkpoint"])
    image = sorted(p for p in (tmp_path / "data").rglob("S*_*.png") if not p.stem.endswith("_mask"))[0]
    out = metric.score_regions(image)
    assert len(out["region_scores"]) == 6 and len(out["descriptions"]) == 6  # the 2x3 grid segmenter
    assert out["labels"].shape == (96, 96)


def test_hybrid_tower_through_the_stem_hooks():
    torch.manual_seed(0)
    m = build_model({**TINY, "backbone": "test-tiny-hybrid"}).eval()
    a, b = _image(0, 70, 100), _image(1, 100, 64)
    both = m.predict([a, b])
    assert both.shape == (2,) and ((both >= 0) & (both <= 1)).all()
    torch.testing.assert_close(both, torch.cat([m.predict([a]), m.predict([b])]), atol=1e-5, rtol=1e-5)


def test_real_clip_describer_shares_the_backbone(monkeypatch):
    describe = pytest.importorskip("clipiq.segment.describe")
    monkeypatch.undo()  # the real create_region_describer
    m = build_model({**TINY, "describer": "clip"}).eval()
    assert isinstance(m.describer, describe.RegionDescriber) and m.describer is m.describer
    out = m.score_regions(_image(6, 80, 96))
    assert len(out["descriptions"]) == len(out["dimensions"]) == len(out["region_scores"]) == 4
    assert all(isinstance(s, str) and s for s in out["descriptions"]) and all(out["dimensions"])
    m.train()
    view, grid, desc = m.train_views(_image(6, 80, 96), np.random.default_rng(0))
    assert desc.shape == (8, m.clip.cfg.embed_dim) and desc[:4].norm(dim=-1).allclose(torch.ones(4))
    m.eval()
