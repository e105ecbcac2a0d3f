"""Trainer: a wall-clock budget (train.time_limit) and resume's tolerance of run-control keys."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clipiq.train import engine
from clipiq.train.engine import Trainer, resume_config_json, train_defaults


class FakeClock:
    """perf_counter stand-in: time moves only when a training step says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ToyTask:
    """Fits y = 2x with one weight; each step costs ``step_seconds`` on the fake clock."""

    def __init__(self, clock: FakeClock, step_seconds: float = 1.0):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1, bias=False)
        self.clock, self.step_seconds = clock, step_seconds
        self.evaluations = 0

    def batches(self, start_step: int):
        while True:
            x = torch.randn(8, 1)
            yield x, 2 * x

    def training_step(self, batch):
        self.clock.now += self.step_seconds
        x, y = batch
        return {"loss": (self.model(x) - y).pow(2).mean()}

    def evaluate(self):
        self.evaluations += 1
        return {"score": -abs(float(self.model.weight) - 2.0)}

    def checkpoint_payload(self):
        return {}


@pytest.fixture()
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(engine.time, "perf_counter", c)
    return c


def _cfg(**train):
    train = {"steps": 1000, "lr": 0.1, "optimizer": "sgd", "momentum": 0.0, "monitor": "score", **train}
    return {"seed": 0, "data": {"workers": 0}, "train": train_defaults(**train)}


def test_time_limit_ends_the_run_evaluates_saves_and_decays_the_rate(tmp_path, clock):
    task = ToyTask(clock)
    tr = Trainer(task, _cfg(time_limit=20, eval_every=0, log_every=5), tmp_path, torch.device("cpu"), progress=False)
    fit = tr.fit()
    assert fit["steps"] == 20  # 1000 steps allowed, 20 seconds spent at one second a step
    assert task.evaluations == 1 and tr.last_path.exists() and tr.best_path.exists()
    assert tr.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-9)  # cosine by time: ends decayed
    half = Trainer(ToyTask(clock), _cfg(time_limit=20), tmp_path / "b", torch.device("cpu"), progress=False)
    half._clock, half.elapsed = clock.now - 10, 0.0
    assert half.time_fraction() == pytest.approx(0.5)
    assert half.scheduler.lr_lambdas[0](0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_without_a_limit_the_clock_is_ignored(tmp_path, clock):
    fit = Trainer(ToyTask(clock, step_seconds=1e6), _cfg(steps=7), tmp_path, torch.device("cpu"),
                  progress=False).fit()
    assert fit["steps"] == 7


def test_resume_carries_the_time_spent(tmp_path, clock):
    Trainer(ToyTask(clock), _cfg(time_limit=6), tmp_path, torch.device("cpu"), progress=False).fit()
    again = Trainer(ToyTask(clock), _cfg(time_limit=6), tmp_path, torch.device("cpu"), progress=False)
    assert again.fit()["steps"] == 6  # the budget was spent before the interruption: nothing more to do
    longer = Trainer(ToyTask(clock), _cfg(time_limit=10), tmp_path, torch.device("cpu"), progress=False)
    assert longer.fit()["steps"] == 10  # a larger budget resumes (time_limit is a run-control key)


def test_resume_ignores_run_control_keys_but_not_the_rest(tmp_path, clock):
    Trainer(ToyTask(clock), _cfg(steps=4), tmp_path, torch.device("cpu"), progress=False).fit()
    tr = Trainer(ToyTask(clock), _cfg(steps=6, log_every=1, ckpt_every=2), tmp_path, torch.device("cpu"),
                 progress=False)
    with pytest.raises(ValueError, match="different config"):  # steps changed: a different run
        tr.fit()
    a, b = _cfg(steps=4), _cfg(steps=4, log_every=3, time_limit=9)
    b["data"]["workers"] = 4
    assert resume_config_json(a) == resume_config_json(b)
    assert resume_config_json(a) != resume_config_json(_cfg(steps=4, lr=0.2))
    ok = Trainer(ToyTask(clock), _cfg(steps=4, log_every=1), tmp_path, torch.device("cpu"), progress=False)
    assert ok.fit()["steps"] == 4


def test_negative_time_limit_is_refused(tmp_path, clock):
    with pytest.raises(ValueError, match="time_limit"):
        Trainer(ToyTask(clock), _cfg(time_limit=-1), tmp_path, torch.device("cpu"), progress=False)


class SlowBatches(ToyTask):
    """Each batch takes time to fetch: the limit can run out between two steps."""

    def __init__(self, clock: FakeClock, fetch_seconds: float):
        super().__init__(clock, step_seconds=0.0)
        self.fetch_seconds = fetch_seconds

    def batches(self, start_step: int):
        for batch in super().batches(start_step):
            self.clock.now += self.fetch_seconds
            yield batch


def test_time_running_out_between_steps_still_evaluates_and_saves_the_last_step(tmp_path, clock):
    task = SlowBatches(clock, fetch_seconds=3.0)
    # eval and checkpoints only at the end: the run must still end evaluated and saved
    tr = Trainer(task, _cfg(time_limit=10, eval_every=0, ckpt_every=0), tmp_path, torch.device("cpu"),
                 progress=False)
    fit = tr.fit()
    assert fit["steps"] == 3  # fetched at 3, 6, 9 s; the 4th batch arrives at 12 s, past the limit
    assert task.evaluations == 1 and tr.last_path.exists() and tr.best_path.exists()
    assert engine.read_trainer_checkpoint(tr.last_path)["step"] == 3


def test_an_empty_init_is_the_same_run_as_none():
    a, b = _cfg(steps=4), _cfg(steps=4)
    b["init"] = ""
    assert resume_config_json(a) == resume_config_json(b)
    b["init"] = "runs/x/checkpoint.safetensors"
    assert resume_config_json(a) != resume_config_json(b)
