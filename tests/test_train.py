"""clipiq.train: configs with overrides, deterministic resume, and a training loop that learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clipiq.clip.vocabulary import CLEAN_TEXTS, describe
from clipiq.core.config import ConfigError, apply_overrides, load_config
from clipiq.train import degradation_clip as dc
from clipiq.train import read_metrics
from clipiq.train.engine import Trainer, read_trainer_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "degradation-clip" / "tiny.yaml"


def test_overrides_parse_yaml_values_and_refuse_typos(tmp_path):
    cfg = {"train": {"lr": 0.1, "steps": 10}, "data": {"dirs": ["a"]}, "seed": 0}
    out = apply_overrides(cfg, ["train.lr=1e-3", "data.dirs=[x, y]", "seed=7"])
    assert out["train"]["lr"] == pytest.approx(1e-3) and out["data"]["dirs"] == ["x", "y"] and out["seed"] == 7
    assert cfg["train"]["lr"] == 0.1  # the input is not modified
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        apply_overrides(cfg, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["train.lr"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(cfg, ["seed.x=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: 3}\ntrian: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(bad, defaults=cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", defaults=cfg)


def _tiny_cfg(*overrides: str) -> dict:
    return load_config(TINY, list(overrides), defaults=dc.DEFAULTS)


@pytest.fixture(scope="module")
def tiny_pool(photos_dir):
    cfg = _tiny_cfg(f"data.root={photos_dir}")
    return dc.build_pool(cfg["data"], cfg["seed"])


def _run(cfg: dict, pool, run_dir: Path, resume: bool = True) -> Trainer:
    task = dc.DegradationCLIPTask(cfg, torch.device("cpu"), run_dir, pool=pool)
    trainer = Trainer(task, cfg, run_dir, torch.device("cpu"), resume=resume, progress=False)
    trainer.fit()
    return trainer


def test_resume_continues_exactly(tmp_path, photos_dir, tiny_pool):
    base = [f"data.root={photos_dir}", "train.eval_every=1000", "train.ckpt_every=6", "eval.photos=1"]
    straight = _run(_tiny_cfg(*base, "train.steps=12"), tiny_pool, tmp_path / "a")
    # An interrupted run: stop after 6 steps, then the same command resumes to 12.
    cfg = _tiny_cfg(*base, "train.steps=12")
    task = dc.DegradationCLIPTask(cfg, torch.device("cpu"), tmp_path / "b", pool=tiny_pool)
    t = Trainer(task, cfg, tmp_path / "b", torch.device("cpu"), progress=False)
    t.tcfg["steps"] = 6  # simulate the interruption at a checkpoint
    t.fit()
    resumed = _run(cfg, tiny_pool, tmp_path / "b")
    assert resumed.step == 12
    for (k, a), b in zip(straight.task.model.state_dict().items(), resumed.task.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"parameter {k} differs after resume")
    ck = read_trainer_checkpoint(tmp_path / "b" / "last.safetensors")
    assert ck["config"] == cfg and ck["payload"]["arch"]["name"] == "degradation-clip"
    # A different config in the same folder must not be silently resumed.
    with pytest.raises(ValueError, match="different config"):
        _run(_tiny_cfg(*base, "train.steps=12", "train.lr=0.5"), tiny_pool, tmp_path / "b")


def test_training_learns(tmp_path, photos_dir):
    """Loss falls, and zero-shot type retrieval on held-out McMaster crops clearly beats chance."""
    types = ["gaussian_blur", "gaussian_noise", "low_light", "over_exposure"]
    cfg = _tiny_cfg(f"data.root={photos_dir}", f"data.degradations=[{','.join(types)}]", "train.steps=80",
                    "train.eval_every=80")
    before_task = dc.DegradationCLIPTask(cfg, torch.device("cpu"), None)
    before = before_task.evaluate()["type_acc"]
    trainer = _run(cfg, before_task.pool, tmp_path, resume=False)
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r["phase"] == "train" and r["name"] == "loss"]
    first, last = rows[0]["value"], rows[-1]["value"]
    assert last < 0.95 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    acc = trainer.history[-1]["type_acc"]
    chance = 1 / len(types)
    assert acc >= chance + 0.15, f"held-out type accuracy {acc:.3f} vs chance {chance:.3f}"
    assert acc > before
    assert np.isfinite(trainer.history[-1]["rank_srcc"])


def test_descriptions_and_targets():
    rng = np.random.default_rng(0)
    assert describe([], rng) in CLEAN_TEXTS
    text = describe([("motion_blur", 5), ("jpeg", 2)], np.random.default_rng(1))
    assert "motion blur" in text and "jpeg" in text
    t_clean, m_clean = dc.antonym_targets([])
    t_bad, m_bad = dc.antonym_targets([("motion_blur", 5)])
    names = list(dc.ANTONYM_PAIRS)
    q, s = names.index("quality"), names.index("sharpness")
    assert t_clean[q] > t_bad[q] and t_clean[s] > t_bad[s] and m_bad[s] == 1
    levels = [dc.antonym_targets([("gaussian_noise", lv)])[0][q] for lv in range(1, 6)]
    assert all(a > b for a, b in zip(levels, levels[1:]))


def test_export_loads_with_load_clip(tmp_path):
    import clipiq

    arch = dc.architecture(_tiny_cfg()["model"])
    model = dc.CLIP(arch)
    sha = dc.export_model(model, arch, tmp_path / "m.safetensors")
    loaded, pre = clipiq.load_clip(None, weights=tmp_path / "m.safetensors", device="cpu")
    assert loaded.cfg == arch and pre.image_size == arch.preprocess.image_size
    assert loaded.weights_sha256 == sha and len(sha) == 64
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded.encode_image(x), model.half().float().encode_image(x), atol=1e-4, rtol=1e-4)


def test_cli_train_with_overrides_after_options(tmp_path, photos_dir, capsys):
    from clipiq.cli.main import main

    run_dir = tmp_path / "run"
    rc = main(["train", "degradation-clip", "--config", str(TINY), "--run-dir", str(run_dir), "--device", "cpu",
               f"data.root={photos_dir}", "train.steps=4", "train.eval_every=4", "eval.photos=1", "data.pool_size=64"])
    assert rc == 0
    assert (run_dir / "degradation-clip.safetensors").is_file() and (run_dir / "last.safetensors").is_file()
    saved = (run_dir / "config.yaml").read_text()
    assert "steps: 4" in saved and "pool_size: 64" in saved
    # A checkpoint exports to the same weights as the end-of-run export.
    from safetensors import safe_open

    sha = dc.export_checkpoint(run_dir / "last.safetensors", tmp_path / "from-ckpt.safetensors")
    assert len(sha) == 64
    with safe_open(str(run_dir / "degradation-clip.safetensors"), "pt") as a, \
            safe_open(str(tmp_path / "from-ckpt.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():  # noqa: SIM118
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
        assert b.metadata()["clipiq_train_step"] == "4"
    with pytest.raises(SystemExit):
        main(["train", "degradation-clip", "--config", str(TINY), "--bogus"])
    with pytest.raises(SystemExit):
        main(["train", "degradation-clip", "--config", str(TINY), "train.stepz=3", "--oops"])
