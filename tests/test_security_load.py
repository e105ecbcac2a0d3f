"""Nothing clipiq loads runs code: every route a user can hand a file to, fed a file that would.

Each payload file runs code when unpickled (``torch.load(weights_only=False)``) or loaded as TorchScript
(``torch.jit.load`` runs the archive's ``__setstate__``): it creates a marker file or prints a marker line.
Each test feeds one to one route and checks that the marker never appears and that a clear error names
the file (or, for a stray ``last.pt`` in a run folder, that it is ignored with a warning).
"""

from __future__ import annotations

import csv
import logging
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq
from clipiq.cli.main import main as cli
from clipiq.clip.checkpoint import read_method_checkpoint
from clipiq.core.errors import CheckpointError
from clipiq.iqa import create_metric

REPO = Path(__file__).resolve().parents[1]
TINY_FT = REPO / "configs" / "grmp-iqa" / "tiny-finetune.yaml"
PRINTED = "CLIPIQ-SETSTATE-RAN"


class _Payload:
    """Unpickling this creates ``path`` (the marker): proof that loading ran code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_bomb(path: Path, marker: Path) -> Path:
    """A torch.save file that looks like a trainer checkpoint and creates ``marker`` when unpickled."""
    torch.save({"step": 1, "config": {}, "payload": _Payload(marker), "model": {"w": torch.zeros(1)}}, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER"


@pytest.fixture
def image(tmp_path) -> Path:
    p = tmp_path / "img.png"
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(p)
    return p


# ---------------------------------------------------------------------------------------------------------
# method checkpoints: whatever the name, only safetensors


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".png"])
def test_method_checkpoint_pickle_is_refused_by_the_api(tmp_path, marker, suffix):
    evil = _pickle_bomb(tmp_path / f"evil{suffix}", marker)
    with pytest.raises(CheckpointError) as err:
        read_method_checkpoint(evil)
    assert not marker.exists()
    assert f"evil{suffix} is not a safetensors file" in str(err.value) and "checkpoint.safetensors" in str(err.value)
    for metric in ("clip-dqa", "grmp-iqa"):
        with pytest.raises(CheckpointError) as err:
            create_metric(metric, checkpoint=evil, device="cpu")
        assert not marker.exists()
        assert "not a safetensors file" in str(err.value)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".png"])
@pytest.mark.parametrize("metric", ["clip-dqa", "grmp-iqa"])
def test_method_checkpoint_pickle_is_refused_by_score(tmp_path, marker, image, capsys, suffix, metric):
    evil = _pickle_bomb(tmp_path / f"evil{suffix}", marker)
    rc = cli(["score", str(image), "--metric", metric, "--checkpoint", str(evil), "--device", "cpu",
              "-o", str(tmp_path / "scores.csv")])
    assert not marker.exists()
    assert rc == 2
    assert f"evil{suffix} is not a safetensors file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# training: --meta-init, and a last.pt left in a run folder


@pytest.fixture
def labels_csv(tmp_path) -> Path:
    """Ten scenes of two small images each, as a CSV label file (enough for one protocol round)."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for s in range(10):
        for k in range(2):
            arr = (np.full((64, 64, 3), 0.5) + (rng.random((64, 64, 3)) - 0.5) * k).clip(0, 1)
            name = f"s{s}_{k}.png"
            Image.fromarray((arr * 255).astype(np.uint8)).save(data / name)
            rows.append({"image": name, "mos": 5 - 3 * k, "scene": f"s{s}"})
    path = data / "labels.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _finetune_args(run_dir: Path, labels: Path) -> list[str]:
    return ["train", "grmp-finetune", "--config", str(TINY_FT), "--run-dir", str(run_dir), "--device", "cpu",
            "--shots", "4", "data.source=labels", f"data.labels={labels}", "data.format=csv",
            "protocol.group=scene", "train.steps=2", "train.eval_every=1"]


def test_meta_init_pickle_is_refused(tmp_path, marker, labels_csv, capsys):
    evil = _pickle_bomb(tmp_path / "meta.pt", marker)
    rc = cli([*_finetune_args(tmp_path / "run", labels_csv), "--meta-init", str(evil)])
    assert not marker.exists()
    assert rc == 2
    assert "meta.pt is not a safetensors file" in capsys.readouterr().err


def test_stray_last_pt_in_a_run_folder_is_ignored(tmp_path, marker, labels_csv, caplog):
    run = tmp_path / "run"
    (run / "round00").mkdir(parents=True)
    stray = _pickle_bomb(run / "round00" / "last.pt", marker)
    with caplog.at_level(logging.WARNING, logger="clipiq.train.engine"):
        rc = cli(_finetune_args(run, labels_csv))
    assert not marker.exists()
    assert rc == 0
    assert any("ignoring" in r.getMessage() and str(stray) in r.getMessage() for r in caplog.records)
    assert (run / "round00" / "checkpoint.safetensors").is_file()


# ---------------------------------------------------------------------------------------------------------
# CLIP weights: TorchScript archives are read as data


class _Evil(torch.nn.Module):
    """A module whose TorchScript ``__setstate__`` prints a marker: torch.jit.load runs it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("CLIPIQ-SETSTATE-RAN")
        self.w = state[0]
        self.training = state[1]


class _Root(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = _Evil()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _setstate_archive(path: Path) -> Path:
    torch.jit.save(torch.jit.script(_Root()), str(path))
    return path


def _pickle_archive(path: Path, marker: Path) -> Path:
    """A TorchScript archive (code/, constants.pkl) whose data.pkl creates ``marker`` when unpickled."""
    plain = _setstate_archive(path.with_name("plain.pt"))
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for n in src.namelist():
            data = pickle.dumps(_Payload(marker), protocol=2) if n.endswith("/data.pkl") else src.read(n)
            dst.writestr(n, data)
    return path


@pytest.fixture
def evil_archive(tmp_path) -> Path:
    return _setstate_archive(tmp_path / "evil-jit.pt")


def _assert_nothing_ran(marker: Path, capfd) -> None:
    out, err = capfd.readouterr()
    assert PRINTED not in out + err
    assert not marker.exists()


def test_torchscript_weights_never_run_through_load_clip(evil_archive, marker, capfd):
    for name in (None, "test-tiny"):
        with pytest.raises(Exception) as err:
            clipiq.load_clip(name, weights=evil_archive, device="cpu")
        _assert_nothing_ran(marker, capfd)
        assert isinstance(err.value, CheckpointError) and "evil-jit.pt" in str(err.value)


def test_torchscript_weights_never_run_through_score(evil_archive, marker, image, tmp_path, capfd):
    for model in ([], ["--model", "test-tiny"]):
        rc = cli(["score", str(image), "--weights", str(evil_archive), *model, "--device", "cpu",
                  "-o", str(tmp_path / "scores.csv")])
        _assert_nothing_ran(marker, capfd)
        assert rc == 2


def test_torchscript_pickle_globals_are_refused_with_a_way_out(tmp_path, marker):
    """The data reader is a restricted unpickler: a global outside its short list is an error, never a call."""
    evil = _pickle_archive(tmp_path / "evil-jit.pt", marker)
    with pytest.raises(CheckpointError, match=r"evil-jit\.pt: .*refers to io\.open.*save_file\(torch\.jit\.load"):
        clipiq.load_clip(None, weights=evil, device="cpu")
    assert not marker.exists()


def test_torchscript_archive_reads_as_its_module_tensors(tmp_path):
    """The data-only reader gives what torch.jit.load's state_dict gives, dtypes and shared storage included."""

    class Leaf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 4).half())
            self.register_buffer("ids", torch.arange(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = torch.nn.Sequential(Leaf(), torch.nn.LayerNorm(4))
    root.register_buffer("view", root[1].weight.detach()[1:])  # a view into another tensor's storage
    path = tmp_path / "ok.pt"
    torch.jit.save(torch.jit.script(root), str(path))
    got = clipiq.clip.convert.read_torchscript(path)
    want = torch.jit.load(str(path)).state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
