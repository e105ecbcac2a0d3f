"""Config values of the wrong type are refused up front, naming the key; a diverging run ends in one line."""

from __future__ import annotations

import pytest

from clipiq.cli.main import main
from clipiq.core.config import load_config
from clipiq.core.errors import ClipIQError, ConfigError
from clipiq.train import TRAINING_TASKS

DEFAULTS = {"seed": 0, "train": {"steps": 10, "lr": 1e-3, "precision": "fp32", "resume": True, "sizes": [1, 2]},
            "data": {"labels": None}}


@pytest.mark.parametrize("override, key, expected", [
    ("train.steps=many", "train.steps", "an integer"),
    ("seed=[1,2]", "seed", "an integer"),
    ("train.lr=fast", "train.lr", "a number"),
    ("train.steps=2.5", "train.steps", "an integer"),
    ("train.resume=1", "train.resume", "a boolean"),
    ("train.precision=16", "train.precision", "a string"),
    ("train.sizes=3", "train.sizes", "a list"),
    ("train=5", "train", "a mapping"),
])
def test_wrong_types_are_refused_naming_the_key(override, key, expected):
    with pytest.raises(ConfigError, match=rf"{key} must be {expected}"):
        load_config(None, [override], defaults=DEFAULTS)


def test_compatible_values_are_accepted():
    cfg = load_config(None, ["train.lr=1", "train.steps=3", "data.labels=any/thing.csv", "data.labels=null",
                             "train.sizes=[4]"], defaults=DEFAULTS)
    assert cfg["train"]["lr"] == 1 and cfg["train"]["steps"] == 3 and cfg["train"]["sizes"] == [4]


def test_yaml_file_values_are_checked_too(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: lots\n")
    with pytest.raises(ConfigError, match=r"train:steps must be an integer"):
        load_config(f, defaults=DEFAULTS)


def test_every_shipped_config_fits_its_task():
    from pathlib import Path

    for f in sorted(Path("configs").glob("*/*.yaml")):
        task = f.parent.name  # configs/<task>/; GRMP-IQA's two stages share configs/grmp-iqa/
        if task == "grmp-iqa":
            task = "grmp-pretrain" if "pretrain" in f.name else "grmp-finetune"
        elif task == "cdasr" and f.name.startswith("meta"):  # CDASR's meta-learning stage shares configs/cdasr/
            task = "cdasr-meta"
        load_config(f, defaults=TRAINING_TASKS.get(task).DEFAULTS)


def test_cli_refuses_a_bad_override_with_exit_2(capsys):
    rc = main(["train", "clip-dqa", "--config", "configs/clip-dqa/tiny.yaml", "train.steps=many"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "train.steps must be an integer" in err and "Traceback" not in err


def test_config_error_is_a_clipiq_error():
    assert issubclass(ConfigError, ClipIQError) and issubclass(ConfigError, ValueError)


def test_diverging_training_ends_in_one_line(monkeypatch, capsys, tmp_path):
    module = TRAINING_TASKS.get("clip-dqa")

    def diverge(*_args, **_kwargs):
        raise FloatingPointError("loss became nan at step 3")

    monkeypatch.setattr(module, "run", diverge)
    rc = main(["train", "clip-dqa", "--config", "configs/clip-dqa/tiny.yaml", "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and "training diverged: loss became nan at step 3" in err
