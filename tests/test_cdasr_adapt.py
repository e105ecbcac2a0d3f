"""CDASR's target-domain LR recipes, few-shot adaptation, the adapt command and the meta task (test-tiny CLIP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipiq.clip.checkpoint import read_method_checkpoint
from clipiq.core.errors import ConfigError, UnknownNameError
from clipiq.degrade import SR_DOMAINS, TARGET_DOMAINS, get_sr_domain, make_lr
from clipiq.restore import create_restorer
from clipiq.train import TRAINING_TASKS
from clipiq.train.cdasr import DEFAULTS as SOURCE_DEFAULTS
from clipiq.train.cdasr import run as train_source
from clipiq.train.cdasr_adapt import DEFAULTS as META_DEFAULTS
from clipiq.train.cdasr_adapt import SRPair, adapt, load_pair_folder, support_loss
from clipiq.train.cdasr_adapt import run as train_meta


def smooth_photo(rng: np.random.Generator, size: int) -> Image.Image:
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def write_photos(folder: Path, n: int = 3, size: int = 40, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        smooth_photo(rng, size).save(folder / f"p{i}.png")
    return folder


def tiny_source_cfg(root: Path, **model) -> dict:
    photos = write_photos(root / "photos")
    return {**SOURCE_DEFAULTS, "scale": 2, "ema": 0.0,
            "model": {**SOURCE_DEFAULTS["model"], "backbone": "test-tiny", "channels": 8, "blocks": 1,
                      "mlp_hidden": 8, "guide_channels": 4, **model},
            "data": {**SOURCE_DEFAULTS["data"], "train": [str(photos)], "patch_size": 8, "val": ""},
            "loss": {**SOURCE_DEFAULTS["loss"], "semantic": 0.1, "semantic_images": 2},
            "train": {**SOURCE_DEFAULTS["train"], "steps": 2, "batch_size": 2, "warmup": 0, "log_every": 1,
                      "eval_every": 2, "ckpt_every": 2, "monitor": None}}


@pytest.fixture(scope="module")
def source_ck(tmp_path_factory) -> Path:
    """A tiny trained x2 CDASR checkpoint on the random test-tiny CLIP."""
    root = tmp_path_factory.mktemp("source")
    summary = train_source(tiny_source_cfg(root), root / "run", torch.device("cpu"), progress=False)
    return Path(summary["checkpoint"])


def support_pairs(n: int = 3, domain: str = "aniso_blur", size: int = 24) -> list[SRPair]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        hr = torch.from_numpy(np.array(smooth_photo(rng, size))).permute(2, 0, 1).float() / 255
        out.append(SRPair(f"s{i}", make_lr(hr, domain, 2, torch.Generator().manual_seed(i)), hr))
    return out


# --- recipes ------------------------------------------------------------------------------------------------


def test_recipes_shapes_determinism_and_difference():
    hr = torch.from_numpy(np.array(smooth_photo(np.random.default_rng(0), 48))).permute(2, 0, 1).float() / 255
    assert set(TARGET_DOMAINS) == set(SR_DOMAINS.names()) - {"bicubic"} and len(TARGET_DOMAINS) >= 5
    outs = {}
    for name in SR_DOMAINS.names():
        for scale in (2, 3, 4):
            lr = make_lr(hr, name, scale, torch.Generator().manual_seed(3))
            assert lr.shape == (3, 48 // scale, 48 // scale) and lr.dtype == hr.dtype
            assert float(lr.min()) >= 0 and float(lr.max()) <= 1
            assert torch.equal(lr, make_lr(hr, name, scale, torch.Generator().manual_seed(3)))  # by generator
            assert torch.equal(lr * 255, (lr * 255).round())  # 8-bit levels, as LR files are
        outs[name] = make_lr(hr, name, 4, torch.Generator().manual_seed(3))
    for name in TARGET_DOMAINS:  # another generator state draws other parameters (or noise)
        others = [make_lr(hr, name, 4, torch.Generator().manual_seed(s)) for s in range(4, 8)]
        assert any(not torch.equal(outs[name], o) for o in others), name
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert float((outs[a] - outs[b]).abs().mean()) > 1e-3, (a, b)


def test_recipe_errors():
    with pytest.raises(UnknownNameError, match="Did you mean jpeg"):
        get_sr_domain("jpg")
    with pytest.raises(ValueError, match="multiple of the scale"):
        make_lr(torch.rand(3, 10, 11), "noise", 2)
    with pytest.raises(ValueError, match=r"\(3,H,W\)"):
        make_lr(torch.rand(1, 3, 8, 8), "noise", 2)


# --- adaptation ---------------------------------------------------------------------------------------------


def test_adapt_changes_weights_and_lowers_support_loss(source_ck, tmp_path):
    pairs = support_pairs()
    out = tmp_path / "adapted.safetensors"
    before = support_loss(source_ck, pairs)
    ck = adapt(source_ck, pairs, steps=6, lr=5e-3, batch_size=2, patch_size=8, out=out)
    src = read_method_checkpoint(source_ck, "cdasr")
    assert any(not torch.equal(src.state[k], ck.state[k]) for k in src.state)
    rec = read_method_checkpoint(out, "cdasr").config["adapt"]
    assert rec["pairs"] == ["s0", "s1", "s2"] and rec["shots"] == 3 and rec["steps"] == 6
    assert rec["source"] == str(source_ck) and len(rec["source_sha256"]) == 64
    assert rec["support_pixel_loss"][0] == pytest.approx(before)
    after = rec["support_pixel_loss"][1]
    assert after < before and support_loss(out, pairs) == pytest.approx(after)
    # same seed, same result (without the semantic term, for speed); the adapted checkpoint loads as the restorer
    one, two = (adapt(source_ck, pairs, steps=2, lr=5e-3, batch_size=2, patch_size=8, semantic=0.0) for _ in "ab")
    assert all(torch.equal(one.state[k], two.state[k]) for k in one.state)
    assert create_restorer("cdasr", scale=2, weights=str(out), device="cpu")(torch.rand(3, 7, 9)).shape == (3, 14, 18)


def test_adapt_bad_pairs(source_ck):
    pairs = support_pairs(1)
    with pytest.raises(ValueError, match="s0.*expected 2x"):
        adapt(source_ck, [SRPair("s0", pairs[0].lr, pairs[0].hr[:, :10])], steps=1)
    with pytest.raises(ValueError, match="at least one"):
        adapt(source_ck, [], steps=1)


# --- the command --------------------------------------------------------------------------------------------


def write_pair_folder(root: Path, n: int = 4, lr_name: str = "lr", hr_name: str = "hr") -> Path:
    for i, p in enumerate(support_pairs(n)):
        for sub, img in ((lr_name, p.lr), (hr_name, p.hr)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(root / sub / f"img{i}.png")
    return root


def test_cli_adapt_end_to_end(source_ck, tmp_path, capsys):
    from clipiq.cli.main import main

    pairs = write_pair_folder(tmp_path / "pairs", lr_name="lq", hr_name="gt")
    out = tmp_path / "out" / "a.safetensors"
    assert main(["adapt", "cdasr", "--checkpoint", str(source_ck), "--pairs", str(pairs), "--shots", "3",
                 "--steps", "2", "--batch-size", "2", "--patch-size", "8", "-o", str(out), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["shots"] == 3 and Path(printed["checkpoint"]) == out
    assert read_method_checkpoint(out, "cdasr").config["adapt"]["pairs"] == ["img0", "img1", "img2"]
    # HR images only, LR made by a recipe
    hr_only = tmp_path / "hr_only"
    write_photos(hr_only, n=2, size=20)
    out2 = tmp_path / "b.safetensors"
    assert main(["adapt", "cdasr", "--checkpoint", str(source_ck), "--pairs", str(hr_only), "--shots", "2",
                 "--domain", "jpeg", "--steps", "1", "--batch-size", "1", "--patch-size", "8", "-o", str(out2),
                 "--device", "cpu"]) == 0
    assert read_method_checkpoint(out2, "cdasr").config["adapt"]["domain"] == "jpeg"


def test_cli_adapt_errors(source_ck, tmp_path, capsys):
    from clipiq.cli.main import main

    pairs = write_pair_folder(tmp_path / "pairs", n=2)
    base = ["adapt", "cdasr", "--checkpoint", str(source_ck), "--steps", "1", "--device", "cpu",
            "-o", str(tmp_path / "x.safetensors")]
    cases = [
        (["--pairs", str(pairs), "--shots", "5"], "holds only 2"),
        (["--pairs", str(tmp_path / "nope"), "--shots", "1"], "not a folder"),
        (["--pairs", str(tmp_path), "--shots", "1"], "expected sub-folders lr/ and hr/"),
        (["--pairs", str(pairs), "--shots", "1", "--domain", "jpg"], "Did you mean jpeg"),
        (["--pairs", str(pairs), "--shots", "1", "--domain", "jpeg"], "give one or the other"),
    ]
    for extra, word in cases:
        assert main([*base, *extra]) == 2
        assert word in capsys.readouterr().err, word
    # mismatched sizes and names, named in the error
    Image.new("RGB", (9, 9)).save(pairs / "hr" / "img0.png")
    assert main([*base, "--pairs", str(pairs), "--shots", "2"]) == 2
    assert "img0" in capsys.readouterr().err
    Image.new("RGB", (4, 4)).save(pairs / "lr" / "extra.png")
    with pytest.raises(ValueError, match="without a partner.*extra"):
        load_pair_folder(pairs, 2)
    assert main(["adapt", "cdasr", "--checkpoint", str(tmp_path / "missing.safetensors"), "--pairs", str(pairs),
                 "--shots", "1", "-o", str(tmp_path / "y.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- meta-learning ------------------------------------------------------------------------------------------


def test_adapt_guides_crops_with_their_whole_pair(source_ck, monkeypatch):
    """Adaptation crops are guided by the embedding of their support pair's whole LR, as at inference."""
    from clipiq.restore.cdasr import clip_guidance_embedding
    from clipiq.train import cdasr_adapt

    pairs = support_pairs()
    seen = []
    real = cdasr_adapt._Adaptable.losses

    def spy(self, lr, hr, emb=None):
        seen.append((self, emb))
        return real(self, lr, hr, emb)

    monkeypatch.setattr(cdasr_adapt._Adaptable, "losses", spy)
    adapt(source_ck, pairs, steps=2, batch_size=3, patch_size=8, semantic=0.0, seed=4)
    model = seen[0][0]
    whole = torch.cat([clip_guidance_embedding(model.clip, model.preprocess, p.lr[None]) for p in pairs])
    assert len(seen) == 2
    for step, (_, emb) in enumerate(seen):
        lq, _, which = cdasr_adapt._crop_batch(pairs, 3, 8, 2, 4, step)
        assert lq.shape[-1] == 8 and torch.allclose(emb, whole[which], atol=1e-6)


def test_meta_guidance_is_the_whole_photos_lr(source_ck, tmp_path):
    """Meta-training crops are guided by their whole photo's LR in the step's domain; the crops' LR is unchanged."""
    from clipiq.data.io import load_image
    from clipiq.data.paired import mod_crop
    from clipiq.restore.cdasr import clip_guidance_embedding
    from clipiq.train.cdasr_adapt import CDASRMetaTask

    photos = write_photos(tmp_path / "photos", n=3)
    src = read_method_checkpoint(source_ck, "cdasr")
    cfg = {**META_DEFAULTS, "ema": 0.0, "scale": 2, "model": dict(src.config["model"]),
           "data": {**META_DEFAULTS["data"], "train": [str(photos)], "patch_size": 8, "val": ""},
           "meta": {**META_DEFAULTS["meta"], "source": str(source_ck)},
           "train": {**META_DEFAULTS["train"], "batch_size": 2}}
    task = CDASRMetaTask(cfg, "cpu")
    ss = np.random.SeedSequence([task.seed, 3, 0, 1])
    _, gseed = (int(v) for v in ss.generate_state(2))
    idx = [int(k) for k in np.random.default_rng(ss).choice(3, size=2, replace=False)]
    # the source domain: the same vectors as source training's
    batch = task.domain_batch("bicubic", 3, 0, 1)
    assert torch.allclose(batch["guidance"], task.photo_guidance(idx), atol=1e-6)
    # a target domain: the first crop's draws start from the seeded generator, and so do its photo's
    batch = task.domain_batch("jpeg", 3, 0, 1)
    recipe = get_sr_domain("jpeg")
    whole = recipe(mod_crop(load_image(task.train_set.paths[idx[0]]), 2), 2, torch.Generator().manual_seed(gseed))
    assert whole.shape[-1] == 20
    assert torch.allclose(batch["guidance"][0], clip_guidance_embedding(task.clip, task.preprocess, whole[None])[0],
                          atol=1e-6)
    gen = torch.Generator().manual_seed(gseed)
    assert torch.equal(batch["lq"], torch.stack([recipe(gt, 2, gen) for gt in batch["gt"]]))


def test_meta_task_two_steps(source_ck, tmp_path):
    assert "cdasr-meta" in TRAINING_TASKS.names()
    photos = write_photos(tmp_path / "photos", n=2)
    cfg = {**META_DEFAULTS, "ema": 0.0,
           "data": {**META_DEFAULTS["data"], "train": [str(photos)], "patch_size": 8, "val": ""},
           "loss": {**META_DEFAULTS["loss"], "semantic": 0.1, "semantic_images": 1},
           "meta": {**META_DEFAULTS["meta"], "source": str(source_ck), "domains": ["aniso_blur", "jpeg", "noise"],
                    "meta_batch": 2, "inner_steps": 2, "inner_lr": 5e-3},
           "train": {**META_DEFAULTS["train"], "steps": 2, "batch_size": 2, "log_every": 1, "eval_every": 2,
                     "ckpt_every": 1}}
    summary = train_meta(cfg, tmp_path / "meta", torch.device("cpu"), progress=False)
    assert summary["steps"] == 2 and summary["method"] == "cdasr-meta"
    ck = read_method_checkpoint(summary["checkpoint"], "cdasr")
    src = read_method_checkpoint(source_ck, "cdasr")
    assert ck.config["scale"] == 2 and ck.config["model"] == src.config["model"]  # the source's network
    assert any(not torch.equal(src.state[k], ck.state[k]) for k in src.state)
    # the meta-initialised checkpoint adapts like any other and loads as the restorer
    adapt(summary["checkpoint"], support_pairs(2), steps=1, batch_size=1, patch_size=8)
    assert create_restorer("cdasr", scale=2, weights=summary["checkpoint"], device="cpu")(torch.rand(3, 6, 6)).shape \
        == (3, 12, 12)
    with pytest.raises(ConfigError, match="meta.source"):
        train_meta({**cfg, "meta": {**cfg["meta"], "source": ""}}, tmp_path / "m2", torch.device("cpu"))
