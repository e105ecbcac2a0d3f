"""Data-parallel training (clipiq.train.parallel): shards, and 2 CPU processes training what 1 process does."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import photo_files
from clipiq.cli.main import build_parser, main
from clipiq.cli.train import PASSED_ON, register, worker_argv
from clipiq.core.config import load_config
from clipiq.core.errors import ConfigError
from clipiq.core.tensors import trainable_state
from clipiq.data.labels import IQALabels, IQASample
from clipiq.train import parallel
from clipiq.train.dap_led import DEFAULTS, DAPLEDTask
from clipiq.train.engine import read_metrics, read_trainer_checkpoint, seed_everything
from clipiq.train.parallel import ParallelContext, current, shard_positions, take_shard
from clipiq.train.protocol import IQATask
from clipiq.train.restoration import PairedRestorationTask, restoration_defaults

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "dap-led" / "tiny.yaml"
TOL = 1e-5

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed gloo backend")


# --- shards ------------------------------------------------------------------------------------------------------

RANK0, RANK1 = ParallelContext(0, 2, 0, "gloo"), ParallelContext(1, 2, 1, "gloo")


def test_single_process_context_by_default():
    ctx = current()
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
    assert shard_positions(5) == slice(0, 5)
    batch = {"x": torch.arange(5)}
    assert take_shard(batch, 5) is batch


def test_shard_positions_are_contiguous_equal_parts():
    assert shard_positions(8, ctx=RANK0) == slice(0, 4) and shard_positions(8, ctx=RANK1) == slice(4, 8)
    four = [ParallelContext(r, 4) for r in range(4)]
    assert [list(range(8))[shard_positions(8, ctx=c)] for c in four] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ConfigError, match=r"train.batch_size=5 does not split evenly over 2 processes"):
        shard_positions(5, "train.batch_size", ctx=RANK1)
    # an epoch's last, smaller batch: every process takes it whole
    assert shard_positions(3, whole_if_uneven=True, ctx=RANK1) == slice(0, 3)


@dataclass
class _Batch:
    images: torch.Tensor
    texts: list[str]
    empty: torch.Tensor


class _Pair(NamedTuple):
    views: torch.Tensor
    target: torch.Tensor


def test_take_shard_slices_any_batch_structure():
    n = 4
    batch = ((torch.arange(4 * 3).view(4, 3), torch.zeros(4, 2)),  # a tuple of batched tensors is structure
             _Batch(torch.arange(4), ["a", "b", "c", "d"], torch.empty(0)),
             {"pair": _Pair(torch.arange(4), torch.arange(4) * 10), "names": ("p", "q", "r", "s"),
              "step": 7, "grid": np.arange(8).reshape(4, 2), "fixed": torch.ones(3)})
    (x, z), b, d = take_shard(batch, n, ctx=RANK1)
    assert torch.equal(x, torch.arange(6, 12).view(2, 3)) and z.shape == (2, 2)
    assert torch.equal(b.images, torch.tensor([2, 3])) and b.texts == ["c", "d"] and b.empty.shape == (0,)
    assert isinstance(d["pair"], _Pair) and torch.equal(d["pair"].target, torch.tensor([20, 30]))
    assert d["names"] == ("r", "s") and d["step"] == 7 and d["grid"].tolist() == [[4, 5], [6, 7]]
    assert torch.equal(d["fixed"], torch.ones(3))  # not n rows: the same on every process
    assert take_shard(12, n, ctx=RANK1) == 12  # a step number: nothing to slice, and no batch size to check
    with pytest.raises(ConfigError, match="train.batch_size=3"):
        take_shard({"x": torch.zeros(3)}, 3, ctx=RANK1)


# --- tasks that make only their shard -------------------------------------------------------------------------------


class _TinySR(PairedRestorationTask):
    method = "tiny-sr"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))


def _as(monkeypatch: pytest.MonkeyPatch, ctx: ParallelContext) -> None:
    monkeypatch.setattr(parallel, "_context", ctx)  # shards only: nothing here needs a process group


def test_restoration_shards_together_are_the_single_process_batch(tmp_path, monkeypatch):
    photos = photo_files.write_photos(tmp_path / "photos", n=5)
    cfg = restoration_defaults("tiny-sr", {}, scale=2, ema=0, data={"train": [str(photos)], "patch_size": 8},
                               train={"batch_size": 4})
    task = _TinySR(cfg)
    whole = [task.cpu_batch(s) for s in (0, 1)]  # 5 photos: batches of 4 and 1
    parts = []
    for ctx in (RANK0, RANK1):
        _as(monkeypatch, ctx)
        parts.append([task.cpu_batch(s) for s in (0, 1)])
    monkeypatch.undo()
    for key in ("lq", "gt", "index"):
        assert torch.equal(torch.cat([parts[0][0][key], parts[1][0][key]]), whole[0][key])
        assert torch.equal(parts[0][1][key], whole[1][key]) and torch.equal(parts[1][1][key], whole[1][key])
    assert [p[0]["shard"].tolist() for p in parts] == [[0, 2, 4], [2, 4, 4]]
    assert [p[1]["shard"].tolist() for p in parts] == [[0, 1, 1], [0, 1, 1]]  # the last batch: whole on both
    assert "shard" not in whole[0]

    # head_mean: each process's share of a term over the first k items; their mean is the single-process term
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    for k in (None, 1, 2, 3, 4, 6):
        one = task.head_mean(whole[0], k, lambda part: values[part].mean())
        shares = []
        for ctx, batch in zip((RANK0, RANK1), (parts[0][0], parts[1][0])):
            _as(monkeypatch, ctx)
            mine = values[batch["shard"][0] : batch["shard"][1]]
            shares.append(float(task.head_mean(batch, k, lambda part, mine=mine: mine[part].mean())))
        monkeypatch.undo()
        assert sum(shares) / 2 == pytest.approx(float(one)), k


class _CropModel(nn.Module):
    method = "crops"

    def train_views(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        y, x = (int(v) for v in rng.integers(0, 8, size=2))  # seeded by the item's global position
        return image[:, y : y + 8, x : x + 8]


def test_iqa_shards_together_are_the_single_process_batch(tmp_path, monkeypatch):
    photos = photo_files.write_photos(tmp_path / "photos", n=10, size=16)
    labels = IQALabels([IQASample(path=p, score=float(i), scene=f"s{i}")
                        for i, p in enumerate(sorted(photos.glob("*.png")))], name="toy")
    cfg = {"train": {"batch_size": 4}, "data": {"workers": 0}, "protocol": {}}
    task = IQATask(_CropModel(), labels, list(range(7)), [7, 8, 9], cfg, seed=3)
    for step in (0, 1):  # 7 images: batches of 4 and 3 (whole on both processes)
        views, target = task._make_batch(step)
        shards = []
        for ctx in (RANK0, RANK1):
            _as(monkeypatch, ctx)
            shards.append(task._make_batch(step))
        monkeypatch.undo()
        if step == 0:
            assert torch.equal(torch.cat([s[0] for s in shards]), views)
            assert torch.equal(torch.cat([s[1] for s in shards]), target)
        else:
            assert all(torch.equal(s[0], views) and torch.equal(s[1], target) for s in shards)


# --- the command line ----------------------------------------------------------------------------------------------


def test_nproc_below_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "dap-led", "--nproc", "0"])
    assert e.value.code == 2 and "--nproc" in capsys.readouterr().err


def test_worker_argv_passes_every_option_on_but_nproc():
    args = build_parser().parse_args(["-v", "train", "dap-led", "a.b=1", "--config", "c.yaml", "--run-dir", "r",
                                      "--device", "cpu", "--no-resume", "--shots", "5", "--meta-init", "m",
                                      "--nproc", "2"])
    assert worker_argv(args) == ["-v", "train", "dap-led", "--config", "c.yaml", "--run-dir", "r", "--device", "cpu",
                                 "--shots", "5", "--meta-init", "m", "--no-resume", "a.b=1"]
    # a new `clipiq train` option must be passed on to the launched processes too
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    flags = set(re.findall(r"(--[a-z][a-z-]*)", sub.choices["train"].format_help()))
    assert flags == {f for f, _ in PASSED_ON} | {"--no-resume", "--nproc", "--help"}


# --- 2 processes against 1 ------------------------------------------------------------------------------------------

OVERRIDES = ["train.steps=5", "train.batch_size=4", "train.eval_every=5", "train.ckpt_every=5", "data.workers=0"]

# The first 3 steps of the 5-step run in 2 processes, then stopped as an interruption would stop it.
INTERRUPTED = """
import sys
from clipiq.core.config import load_config
from clipiq.train import parallel
from clipiq.train.dap_led import DEFAULTS, DAPLEDTask
from clipiq.train.engine import Trainer, seed_everything

ctx, device = parallel.init_from_env("cpu")
cfg = load_config(sys.argv[1], sys.argv[3:], defaults=DEFAULTS)
seed_everything(int(cfg["seed"]))
trainer = Trainer(DAPLEDTask(cfg, device), cfg, sys.argv[2], device, progress=False)
trainer.tcfg["steps"] = 3  # the schedule stays the 5-step run's
trainer.fit()
parallel.shutdown()
"""


def _env() -> dict[str, str]:
    # one thread per process: two processes share the 2 cores of a test machine
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _run(*args: str, cwd: Path) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=240)
    assert r.returncode == 0, f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _train(root: Path, name: str, *extra: str) -> tuple[Path, str]:
    run_dir = root / name
    out = _run("-m", "clipiq", "train", "dap-led", "--config", str(TINY), "--run-dir", str(run_dir),
               f"data.train=[{root / 'photos'}]", *OVERRIDES, *extra, cwd=root)
    return run_dir, out


def _weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    ck = read_trainer_checkpoint(run_dir / "last.safetensors")
    assert ck["step"] == 5
    return {"weights": ck["model"], "ema": ck["payload"]["state"]}


def _max_difference(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> float:
    assert a.keys() == b.keys() and all(a[k].keys() == b[k].keys() for k in a)
    return max(float((a[k][t].float() - b[k][t].float()).abs().max()) for k in a for t in a[k])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """9 photos: 2 for validation and 7 to train on, so the batches of 4 are 4, 3, 4, 3, 4: the 4s split over the
    processes, the 3s (an epoch's last batch) are trained whole by both. The default loss.clip_images=2 puts the
    CLIP terms on the first 2 items of each batch, which lie on the first process only."""
    root = tmp_path_factory.mktemp("ddp")
    photo_files.write_photos(root / "photos", n=9, size=64)
    return root


@pytest.fixture(scope="module")
def single(root) -> tuple[Path, str]:
    """The single-process 5-step run (total batch 4): its folder and output."""
    return _train(root, "single")


@needs_gloo
def test_two_processes_train_the_single_process_weights(root, single):
    run_dir, out = _train(root, "double", "--nproc", "2")
    one, two = _weights(single[0]), _weights(run_dir)
    assert _max_difference(one, two) <= TOL
    # the weights did train (so the comparison can fail)
    cfg = load_config(TINY, [f"data.train=[{root / 'photos'}]", *OVERRIDES], defaults=DEFAULTS)
    seed_everything(int(cfg["seed"]))
    init = trainable_state(DAPLEDTask(cfg, "cpu").model)
    assert max(float((init[k] - one["weights"][k]).abs().max()) for k in init) > 100 * TOL
    # rank 0 alone wrote the run folder and printed the summary
    assert out.count('"method"') == 1 and json.loads(out)["steps"] == 5
    for f in ("config.yaml", "best.safetensors", "checkpoint.safetensors", "summary.json"):
        assert (run_dir / f).is_file()
    rows = [(r["step"], r["phase"], r["name"]) for r in read_metrics(run_dir / "metrics.csv")]
    assert len(rows) == len(set(rows)) and {s for s, _, _ in rows} == {1, 2, 3, 4, 5}
    # the logged losses are the processes' mean: the single-process figures
    logged = [{(r["step"], r["phase"], r["name"]): r["value"] for r in read_metrics(d / "metrics.csv")}
              for d in (single[0], run_dir)]
    assert logged[0].keys() == logged[1].keys()
    for key, v in logged[0].items():
        assert logged[1][key] == pytest.approx(v, rel=1e-4, abs=1e-6), key


@needs_gloo
def test_two_processes_resume_to_the_uninterrupted_weights(root, single):
    script = root / "interrupted.py"
    script.write_text(INTERRUPTED)
    run_dir = root / "resumed"
    _run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(TINY),
         str(run_dir), f"data.train=[{root / 'photos'}]", *OVERRIDES, cwd=root)
    assert read_trainer_checkpoint(run_dir / "last.safetensors")["step"] == 3
    _train(root, "resumed", "--nproc", "2")  # the same command again: resumes at step 3
    assert _max_difference(_weights(single[0]), _weights(run_dir)) <= TOL
    rows = [(r["step"], r["phase"], r["name"]) for r in read_metrics(run_dir / "metrics.csv")]
    assert {s for s, p, _ in rows if p == "train"} == {1, 2, 3, 4, 5} and len(rows) == len(set(rows))
