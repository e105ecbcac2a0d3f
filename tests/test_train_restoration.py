"""The shared paired-restoration training machinery: EMA, losses, the base task, resume and checkpoints."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import photo_files
from clipiq.clip import load_clip
from clipiq.clip.checkpoint import read_method_checkpoint, save_method_checkpoint
from clipiq.core.errors import CheckpointError, ConfigError
from clipiq.train.engine import read_trainer_checkpoint
from clipiq.train.restoration import (
    ModelEMA,
    PairedRestorationTask,
    charbonnier_loss,
    clip_embedding_loss,
    freeze_clip,
    restoration_defaults,
    run_restoration,
)

write_photos = photo_files.write_photos


@pytest.fixture(scope="module")
def tiny_clip():
    model, _ = load_clip("test-tiny", device="cpu")
    return freeze_clip(model)


class TinySR(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + self.up(self.conv(x))


class TinyTask(PairedRestorationTask):
    method = "tiny-sr"

    def build_model(self) -> nn.Module:
        return TinySR(self.scale)


def tiny_cfg(tmp_path: Path, **changes) -> dict:
    photos = write_photos(tmp_path / "photos")
    val = write_photos(tmp_path / "val", n=2, seed=1)
    cfg = restoration_defaults("tiny-sr", {}, scale=2, ema=0.9,
                               data={"train": [str(photos)], "patch_size": 8, "val": str(val),
                                     "val_format": "photos", "val_patch": 12},
                               train={"steps": 3, "batch_size": 2, "log_every": 1, "eval_every": 3})
    for k, v in changes.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def test_ema_update_math():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEMA(model, 0.5)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0) caps the decay at first
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # 0.1 * 1 + 0.9 * 3
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 2.8))
    for _ in range(20):
        ema.update(model)
    assert ema.current_decay() == 0.5 and ema.updates == 21
    with torch.no_grad():
        model.weight.fill_(5.0)
    with ema.applied(model):
        assert torch.allclose(model.weight, ema.shadow["weight"])
    assert torch.all(model.weight == 5.0)  # the live weights are back
    fresh = ModelEMA(model, 0.5)
    fresh.load_state_dict(ema.state_dict())
    assert fresh.updates == 21 and torch.equal(fresh.shadow["weight"], ema.shadow["weight"])


@pytest.mark.parametrize("decay", [1.0, -0.1, "x", True])
def test_ema_bad_decay(decay):
    with pytest.raises(ConfigError, match="ema"):
        ModelEMA(nn.Linear(1, 1), decay)


def test_charbonnier():
    a = torch.rand(2, 3, 8, 8)
    assert float(charbonnier_loss(a, a)) == 0.0
    b = (a + 0.1).requires_grad_()
    loss = charbonnier_loss(b, a)
    assert float(loss.detach()) == pytest.approx(np.sqrt(0.01 + 1e-6) - 1e-3, rel=1e-4)
    loss.backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_clip_embedding_loss(tiny_clip):
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32)
    assert float(clip_embedding_loss(tiny_clip, target.clone(), target)) == pytest.approx(0.0, abs=1e-5)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    tgt = target.clone().requires_grad_()
    loss = clip_embedding_loss(tiny_clip, pred, tgt)
    assert float(loss.detach()) > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert tgt.grad is None
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_clip_embedding_loss_needs_frozen_clip():
    model, _ = load_clip("test-tiny", device="cpu")
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="frozen"):
        clip_embedding_loss(model, x, x)


def test_bad_options(tmp_path):
    cfg = tiny_cfg(tmp_path)
    for key, value, word in (("kind", "denoise", "kind"), ("scale", 5, "scale"),
                             ("data", {**cfg["data"], "patch_size": 2}, "patch_size"),
                             ("data", {**cfg["data"], "train": []}, "data.train"),
                             ("loss", {**cfg["loss"], "pixel": "huber"}, "loss.pixel")):
        with pytest.raises(ConfigError, match=word):
            TinyTask({**cfg, key: value})


def test_batches_are_deterministic(tmp_path):
    task = TinyTask(tiny_cfg(tmp_path))
    a = next(task.batches(5))
    b = next(task.batches(5))
    assert a["lq"].shape == (2, 3, 8, 8) and a["gt"].shape == (2, 3, 16, 16)
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    # each item carries the index of the photo it was cut from (for per-photo data such as CDASR's guidance)
    assert torch.equal(a["index"], b["index"]) and a["index"].shape == (2,)
    epoch = 5 // task.steps_per_epoch
    for k, i in enumerate(a["index"].tolist()):
        assert torch.equal(task.train_set.item(i, epoch)["gt"], a["gt"][k])


def test_prefetching_workers_and_the_photo_cache_change_no_batch(tmp_path):
    cfg = tiny_cfg(tmp_path)
    plain = TinyTask({**cfg, "data": {**cfg["data"], "workers": 0, "cache_photos": False}})
    fast = TinyTask({**cfg, "data": {**cfg["data"], "workers": 3, "cache_photos": True}})
    n = 3 * plain.steps_per_epoch + 1  # across epoch boundaries, where the crops change
    want = list(itertools.islice(plain.batches(2), n))
    got = list(itertools.islice(fast.batches(2), n))
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
        assert torch.equal(a["index"], b["index"])
    assert fast.train_set._cache and plain.train_set._cache is None
    assert not torch.equal(want[0]["gt"], want[plain.steps_per_epoch]["gt"])  # the draws do change


def test_shared_clip_helpers(tiny_clip):
    from clipiq.train.restoration import check_frozen, clip_preprocess, first_items

    assert clip_preprocess(tiny_clip) is clip_preprocess(tiny_clip)  # built once per model
    check_frozen(tiny_clip, "x")
    model, _ = load_clip("test-tiny", device="cpu")
    with pytest.raises(ValueError, match="my_loss needs a frozen CLIP"):
        check_frozen(model, "my_loss")
    ds = list(range(5))
    assert first_items(ds, 0) is ds and list(first_items(ds, 2)) == [0, 1] and len(first_items(ds, 9)) == 5


def test_train_resume_and_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path)
    run = tmp_path / "run"
    summary = run_restoration(TinyTask, cfg, run, torch.device("cpu"), progress=False)
    assert summary["steps"] == 3 and np.isfinite(summary["best"])
    ck = read_method_checkpoint(summary["checkpoint"], "tiny-sr")
    assert set(ck.state) == {"conv.weight", "conv.bias"}
    last = read_trainer_checkpoint(run / "last.safetensors")
    assert last["payload"]["ema"]["updates"] == 3
    # EMA weights differ from the raw ones and are what the checkpoint holds
    assert not torch.equal(last["payload"]["state"]["conv.weight"], last["model"]["conv.weight"])


class Interrupted(Exception):
    pass


class StopAt4(TinyTask):
    def after_step(self) -> None:
        super().after_step()
        if self.ema.updates == 4:  # after step 3's checkpoint was written
            raise Interrupted


def test_resume_is_exact(tmp_path):
    cfg = tiny_cfg(tmp_path, train={"steps": 6, "eval_every": 3, "ckpt_every": 3})
    one_go = tmp_path / "one_go"
    run_restoration(TinyTask, cfg, one_go, torch.device("cpu"), progress=False)
    split = tmp_path / "split"
    with pytest.raises(Interrupted):
        run_restoration(StopAt4, cfg, split, torch.device("cpu"), progress=False)
    assert read_trainer_checkpoint(split / "last.safetensors")["step"] == 3
    run_restoration(TinyTask, cfg, split, torch.device("cpu"), progress=False)
    a = read_trainer_checkpoint(one_go / "last.safetensors")
    b = read_trainer_checkpoint(split / "last.safetensors")
    assert b["step"] == 6 and b["payload"]["ema"]["updates"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])
        assert torch.equal(a["payload"]["state"][k], b["payload"]["state"][k])


def test_init_starts_from_a_checkpoint_of_the_same_network_in_any_float_dtype(tmp_path):
    cfg = tiny_cfg(tmp_path)
    summary = run_restoration(TinyTask, cfg, tmp_path / "first", torch.device("cpu"), progress=False)
    ck = read_method_checkpoint(summary["checkpoint"], "tiny-sr")
    half = tmp_path / "half.safetensors"
    save_method_checkpoint(half, ck.method, {k: v.half() for k, v in ck.state.items()}, ck.config, ck.backbone)
    task = TinyTask({**cfg, "init": str(half)})
    for k, v in ck.state.items():
        assert torch.allclose(task.model.state_dict()[k], v, atol=1e-3)  # fp16 rounding, nothing more
        assert torch.equal(task.ema.shadow[k], task.model.state_dict()[k])  # the average starts there too
    assert not torch.allclose(TinyTask(cfg).model.conv.weight, task.model.conv.weight)
    with pytest.raises(ConfigError, match="another network"):
        TinyTask({**cfg, "scale": 3, "init": str(half)})
    with pytest.raises(CheckpointError):
        TinyTask({**cfg, "init": str(tmp_path / "first" / "metrics.csv")})


def test_the_photo_cache_stops_at_its_cap(tmp_path, monkeypatch):
    from clipiq.data import paired

    cfg = tiny_cfg(tmp_path)
    task = TinyTask({**cfg, "data": {**cfg["data"], "workers": 0, "cache_photos": True}})
    ds = task.train_set
    one = ds.photo(0).numel()
    monkeypatch.setattr(paired, "PHOTO_CACHE_BYTES", one)  # room for one photo's 8-bit levels
    for i in range(len(ds)):
        ds.photo(i)
    assert len(ds._cache) == 1 and ds._cache_bytes <= one
    assert torch.equal(ds.photo(len(ds) - 1), ds.photo(len(ds) - 1))  # uncached photos are still read
