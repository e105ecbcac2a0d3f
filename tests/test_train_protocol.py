"""The shared IQA training machinery: trainer options, prompts hooks, method checkpoints, the n-round protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from clipiq.clip import load_clip, tokenize
from clipiq.clip.checkpoint import (
    CheckpointError,
    backbone_fingerprint,
    backbone_record,
    check_backbone,
    payload,
    read_method_checkpoint,
    save_method_checkpoint,
)
from clipiq.clip.prompts import DeepPrompts, TextPrompts, prompt_probabilities
from clipiq.core.tensors import load_tensors, save_tensors
from clipiq.data.labels import IQALabels, IQASample
from clipiq.train.engine import (
    Trainer,
    load_trainable_state,
    read_trainer_checkpoint,
    save_trainer_checkpoint,
    trainable_state,
)
from clipiq.train.protocol import normalised_targets, round_split, run_protocol


@pytest.fixture(scope="module")
def tiny():
    return load_clip("test-tiny")


# --------------------------------------------------------------------------------------------------------
# trainer options


class _ScriptedTask:
    """A one-parameter task whose validation figures follow a script."""

    def __init__(self, script, with_backward=False):
        self.model = nn.Linear(1, 1)
        self.frozen = nn.Linear(1, 1).requires_grad_(False)
        self.model.add_module("frozen", self.frozen)
        self.script = list(script)
        self.evals = 0
        self.backward_calls = 0
        if with_backward:
            self.backward = self._backward

    def batches(self, start):
        while True:
            yield torch.ones(4, 1)

    def training_step(self, x):
        return {"loss": (self.model(x) - 3).pow(2).mean()}

    def _backward(self, losses):
        self.backward_calls += 1
        (2 * losses["loss"]).backward()

    def evaluate(self):
        v = self.script[min(self.evals, len(self.script) - 1)]
        self.evals += 1
        return {"srcc": v}

    def checkpoint_payload(self):
        return {"w": self.model.weight.detach().clone()}


def _cfg(**train):
    base = {"steps": 20, "lr": 0.1, "eval_every": 2, "monitor": "srcc", "log_every": 2}
    return {"train": {**base, **train}}


def test_early_stopping_stops_after_patience(tmp_path):
    task = _ScriptedTask([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])
    out = Trainer(task, _cfg(patience=3), tmp_path, torch.device("cpu"), progress=False).fit()
    # best at eval 2 (step 4), then 3 evaluations without improvement -> stop at step 10, before the 0.9
    assert out["stopped_early"] and out["steps"] == 10 and task.evals == 5
    assert out["best"] == pytest.approx(0.5)
    best = read_trainer_checkpoint(tmp_path / "best.safetensors")
    assert best["step"] == 4
    # a rerun resumes the stopped run and does not train further
    again = Trainer(_ScriptedTask([0.1]), _cfg(patience=3), tmp_path, torch.device("cpu"), progress=False).fit()
    assert again["steps"] == 10 and again["stopped_early"]


def test_no_early_stop_before_min_steps(tmp_path):
    task = _ScriptedTask([0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9])
    out = Trainer(task, _cfg(patience=2, min_steps=12), tmp_path, torch.device("cpu"), progress=False).fit()
    # patience runs out at step 6, but the run goes on to the first evaluation at or after step 12
    assert out["stopped_early"] and out["steps"] == 12 and task.evals == 6


def test_no_patience_runs_all_steps(tmp_path):
    task = _ScriptedTask([0.5, 0.1])
    out = Trainer(task, _cfg(patience=0), tmp_path, torch.device("cpu"), progress=False).fit()
    assert out["steps"] == 20 and not out["stopped_early"]


def test_nan_monitor_is_never_best(tmp_path):
    task = _ScriptedTask([float("nan"), 0.2, float("nan")])
    out = Trainer(task, _cfg(steps=6), tmp_path, torch.device("cpu"), progress=False).fit()
    assert out["best"] == pytest.approx(0.2)


def test_plateau_schedule_cuts_lr(tmp_path):
    task = _ScriptedTask([0.5, 0.4, 0.4, 0.4, 0.4])
    tr = Trainer(task, _cfg(steps=10, optimizer="sgd", schedule="plateau", plateau_factor=0.3, plateau_patience=1),
                 tmp_path, torch.device("cpu"), progress=False)
    assert isinstance(tr.optimizer, torch.optim.SGD)
    tr.fit()
    assert tr.optimizer.param_groups[0]["lr"] < 0.1 * 0.3 + 1e-9


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice(tmp_path, name, cls):
    tr = Trainer(_ScriptedTask([0.1]), _cfg(optimizer=name), tmp_path, torch.device("cpu"), progress=False)
    assert type(tr.optimizer) is cls


def test_bad_optimizer_and_schedule_names(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(_ScriptedTask([0.1]), _cfg(optimizer="lion"), tmp_path, torch.device("cpu"))
    with pytest.raises(ValueError, match="schedule"):
        Trainer(_ScriptedTask([0.1]), _cfg(schedule="step"), tmp_path, torch.device("cpu"))


def test_trainer_checkpoints_are_safetensors_and_name_what_is_missing(tmp_path):
    """last.safetensors: tensors (model, optimizer, torch RNG, payload) plus JSON metadata; gaps are named."""
    cfg = _cfg(steps=4, optimizer="adamw", schedule="plateau")
    Trainer(_ScriptedTask([0.1, 0.5]), cfg, tmp_path, torch.device("cpu"), progress=False).fit()
    tensors, meta = load_tensors(tmp_path / "last.safetensors")
    assert meta["format"] == "clipiq-trainer/1" and meta["step"] == 4 and len(meta["history"]) == 2
    assert {"model.weight", "model.bias", "rng.torch", "payload.w", "optimizer.state.0.exp_avg"} <= set(tensors)
    assert meta["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999] and meta["plateau"]["mode"] == "max"
    assert isinstance(meta["rng"]["python"][1], list) and isinstance(meta["rng"]["numpy"][1], list)
    last = tmp_path / "last.safetensors"
    save_tensors(last, tensors, {k: v for k, v in meta.items() if k != "optimizer"})
    with pytest.raises(CheckpointError, match=r"last\.safetensors: metadata lacks optimizer"):
        Trainer(_ScriptedTask([0.1]), cfg, tmp_path, torch.device("cpu"), progress=False).fit()
    save_tensors(last, {k: v for k, v in tensors.items() if k != "model.weight"}, meta)
    with pytest.raises(CheckpointError, match=r"last\.safetensors: tensor 'model\.weight' is missing"):
        Trainer(_ScriptedTask([0.1]), cfg, tmp_path, torch.device("cpu"), progress=False).fit()


def test_method_checkpoint_read_from_a_trainer_file_names_a_missing_tensor(tmp_path):
    pl = payload("toy", {"a": torch.ones(2), "b": torch.zeros(1)}, {"model": {}}, {"sha256": "x"})
    best = save_trainer_checkpoint(tmp_path / "best.safetensors", {"step": 3, "payload": pl})
    ck = read_method_checkpoint(best, "toy")
    assert set(ck.state) == {"a", "b"} and ck.config == {"model": {}}
    tensors, meta = load_tensors(best)
    save_tensors(best, {k: v for k, v in tensors.items() if k != "payload.state.b"}, meta)
    with pytest.raises(CheckpointError, match=r"best\.safetensors: tensor 'payload\.state\.b' is missing"):
        read_method_checkpoint(best)


def test_task_backward_hook_replaces_plain_backward(tmp_path):
    task = _ScriptedTask([0.1], with_backward=True)
    Trainer(task, _cfg(steps=3, eval_every=3), tmp_path, torch.device("cpu"), progress=False).fit()
    assert task.backward_calls == 3


def test_trainable_state_skips_frozen_and_round_trips():
    task = _ScriptedTask([0.1])
    state = trainable_state(task.model)
    assert set(state) == {"weight", "bias"}  # the frozen sub-module is not saved
    other = _ScriptedTask([0.1]).model
    load_trainable_state(other, state)
    assert torch.equal(other.weight, task.model.weight)
    with pytest.raises(ValueError, match="not in the model"):
        load_trainable_state(other, {**state, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing"):
        load_trainable_state(other, {"bias": state["bias"]})


# --------------------------------------------------------------------------------------------------------
# prompts


def test_text_prompts_initialised_from_a_phrase_equal_plain_text(tiny):
    clip, _ = tiny
    prompts = TextPrompts(clip, ["bad photo", "good photo"], n_ctx=4, init="a photo of a")
    with torch.no_grad():
        got = prompts(clip)
        want = clip.encode_text(tokenize(["a photo of a bad photo.", "a photo of a good photo."]), normalize=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_text_prompts_train_and_deep_prompts_change_the_output(tiny):
    clip, _ = tiny
    prompts = TextPrompts(clip, ["bad photo", "good photo"], n_ctx=3)
    deep = [None, torch.randn(3, clip.text.width, requires_grad=True)]
    out = prompts(clip, deep_prompts=deep)
    out.sum().backward()
    assert prompts.ctx.grad is not None and prompts.ctx.grad.abs().sum() > 0
    assert deep[1].grad is not None and deep[1].grad.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(prompts(clip), prompts(clip, deep_prompts=deep))
    with pytest.raises(ValueError, match="deep_prompts\\[0\\]"):
        prompts(clip, deep_prompts=[torch.zeros(3, clip.text.width)])
    with pytest.raises(ValueError, match="exactly n_ctx"):
        TextPrompts(clip, ["x"], n_ctx=2, init="a photo of a")


def test_deep_prompts_feed_the_vision_hook(tiny):
    clip, _ = tiny
    dp = DeepPrompts(depth=2, length=5, width=clip.visual.width, proj_dim=8, dropout=0.1)
    layers = dp()
    assert len(layers) == 2 and layers[0].shape == (5, clip.visual.width)
    x = torch.rand(2, 3, 64, 64)
    out = clip.visual(x, deep_prompts=layers)
    assert out.n_prompts == 5 and out.pooled.shape == (2, clip.cfg.embed_dim)
    probs = prompt_probabilities(out.pooled, torch.randn(2, clip.cfg.embed_dim), clip.logit_scale)
    assert torch.allclose(probs.sum(-1), torch.ones(2))


# --------------------------------------------------------------------------------------------------------
# method checkpoints


def test_method_checkpoint_round_trip_and_refusals(tmp_path, tiny):
    clip, _ = tiny
    rec = backbone_record(clip, "test-tiny")
    assert rec["sha256"] == backbone_fingerprint(clip) and rec["sha256"].startswith("tensors:")
    state = {"ctx": torch.randn(3, 4)}
    path = save_method_checkpoint(tmp_path / "m.safetensors", "demo", state, {"model": {"n_ctx": 3}}, rec)
    ck = read_method_checkpoint(path, "demo")
    assert torch.equal(ck.state["ctx"], state["ctx"]) and ck.config["model"]["n_ctx"] == 3
    check_backbone(ck, clip)  # same backbone: accepted
    other, _ = load_clip("test-tiny")
    with torch.no_grad():
        other.visual.proj.add_(1.0)
    other._tensor_digest = None
    with pytest.raises(CheckpointError, match="do not transfer"):
        check_backbone(ck, other)
    with pytest.raises(CheckpointError, match="for method 'demo'"):
        read_method_checkpoint(path, "clip-dqa")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_method_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.safetensors is not a safetensors file"):
        read_method_checkpoint(bad)


# --------------------------------------------------------------------------------------------------------
# protocol


def _toy_labels(tmp_path: Path, n_scenes=10, per_scene=4) -> IQALabels:
    samples = []
    rng = np.random.default_rng(0)
    for s in range(n_scenes):
        for k in range(per_scene):
            level = k / (per_scene - 1)
            arr = (np.full((40, 48, 3), 0.5) + (rng.random((40, 48, 3)) - 0.5) * level).clip(0, 1)
            p = tmp_path / f"s{s}_{k}.png"
            Image.fromarray((arr * 255).astype(np.uint8)).save(p)
            samples.append(IQASample(path=p, score=10 - 8 * level, scene=f"s{s}"))
    return IQALabels(samples, name="toy")


def test_round_split_carves_val_from_train_groups(tmp_path):
    labels = _toy_labels(tmp_path)
    sp = round_split(labels, {"ratios": [0.8, 0.2], "val_fraction": 0.25, "group": "auto"}, 3)
    groups = labels.groups()
    parts = [{groups[i] for i in part} for part in (sp.train, sp.val, sp.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(sp.test) == 8 and len(sp.val) == 8 and len(sp.train) == 24
    with pytest.raises(ValueError, match="val_fraction"):
        round_split(labels, {"ratios": [0.8, 0.2], "val_fraction": 0}, 0)


def test_normalised_targets_flip_lower_is_better(tmp_path):
    labels = _toy_labels(tmp_path, 2, 3)
    t = normalised_targets(labels)
    assert t.min() == 0 and t.max() == 1
    flipped = IQALabels(labels.samples, lower_is_better=True)
    np.testing.assert_allclose(normalised_targets(flipped), 1 - t)


class _NoiseModel(nn.Module):
    """Scores = sigmoid(a * (b - local std)): learns that noisier is worse."""

    method = "toy"

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.1))
        self.b = nn.Parameter(torch.tensor(0.0))

    def train_views(self, image, rng):
        return image[:, :32, :32]

    def _score(self, x):
        return torch.sigmoid(self.a * 10 * (self.b - x.std(dim=(1, 2, 3)) * 10))

    def training_losses(self, views, target):
        return {"loss": ((self._score(views) - target) ** 2).mean()}

    def predict(self, images, phase="test"):
        return self._score(torch.stack([i[:, :32, :32] for i in images]))

    def checkpoint_payload(self, config):
        from clipiq.clip.checkpoint import payload

        return payload("toy", trainable_state(self), dict(config), {"sha256": "x"})


def test_run_protocol_rounds_summary_and_resume(tmp_path):
    from clipiq.core.config import apply_overrides
    from clipiq.train.protocol import IQA_DEFAULTS

    labels = _toy_labels(tmp_path)
    cfg = apply_overrides(IQA_DEFAULTS, ["protocol.rounds=3", "protocol.val_fraction=0.25", "train.epochs=6",
                                        "train.batch_size=8", "train.lr=0.3", "train.patience=0"])
    built = []

    def build(c, device):
        built.append(1)
        return _NoiseModel()

    summary = run_protocol(cfg, tmp_path / "run", torch.device("cpu"), build, progress=False, labels=labels)
    assert summary["rounds"] == 3 and len(built) == 3
    rows = (tmp_path / "run" / "rounds.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("round,seed,n_train,n_val,n_test")
    # the toy model learns the direction: noisier is worse
    assert summary["srcc_median"] > 0.8
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["srcc_median"] == pytest.approx(summary["srcc_median"])
    ck = read_method_checkpoint(summary["checkpoint"], "toy")
    assert set(ck.state) == {"a", "b"}
    # finished rounds keep their small checkpoint, not the trainer's resume files
    assert not (tmp_path / "run" / "round00" / "last.safetensors").exists()
    assert not (tmp_path / "run" / "round00" / "best.safetensors").exists()
    # a rerun reuses finished rounds instead of training again
    again = run_protocol(cfg, tmp_path / "run", torch.device("cpu"), build, progress=False, labels=labels)
    assert len(built) == 3 and again["srcc_mean"] == pytest.approx(summary["srcc_mean"])


def test_run_protocol_shares_one_stem_cache_and_times_rounds(tmp_path):
    from clipiq.clip.stem_cache import StemCache
    from clipiq.core.config import apply_overrides
    from clipiq.train.protocol import IQA_DEFAULTS

    labels = _toy_labels(tmp_path)
    cfg = apply_overrides(IQA_DEFAULTS, ["protocol.rounds=2", "protocol.val_fraction=0.25", "train.epochs=2",
                                        "train.batch_size=8", "data.stem_cache_mb=16"])
    towers = []

    def build(c, device):
        model = _NoiseModel()
        # what use_stem_cache looks for: a tower with a stem and a stem_cache slot
        model.tower = nn.Module()
        model.tower.stem, model.tower.stem_cache = nn.Identity(), None
        towers.append(model.tower)
        return model

    run_protocol(cfg, tmp_path / "run", torch.device("cpu"), build, progress=False, labels=labels)
    assert isinstance(towers[0].stem_cache, StemCache) and towers[0].stem_cache is towers[1].stem_cache
    first = json.loads((tmp_path / "run" / "round00" / "result.json").read_text())
    assert first["seconds"] > 0
    # a round finished by an older version (no "seconds") still goes into rounds.csv with the newer ones
    del first["seconds"]
    (tmp_path / "run" / "round00" / "result.json").write_text(json.dumps(first))
    (tmp_path / "run" / "round01" / "result.json").unlink()
    run_protocol(cfg, tmp_path / "run", torch.device("cpu"), build, progress=False, labels=labels)
    header, r0, r1 = (tmp_path / "run" / "rounds.csv").read_text().splitlines()
    col = header.split(",").index("seconds")
    assert r0.split(",")[col] == "" and float(r1.split(",")[col]) > 0
    off = apply_overrides(cfg, ["data.stem_cache_mb=0", "protocol.rounds=1"])
    towers.clear()
    run_protocol(off, tmp_path / "off", torch.device("cpu"), build, progress=False, labels=labels)
    assert towers[0].stem_cache is None
