"""CDASR: the network, the restorer entry, and its training task on tiny synthetic data (test-tiny CLIP)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import photo_files
from clipiq.clip.checkpoint import read_method_checkpoint
from clipiq.core import hub
from clipiq.core.errors import CheckpointError, ConfigError
from clipiq.restore import create_restorer, list_restorers
from clipiq.restore.cdasr import SHIPPED, CDASRNet, build_net
from clipiq.train import TRAINING_TASKS
from clipiq.train.cdasr import DEFAULTS, CDASRTask, run

write_photos = partial(photo_files.write_photos, n=3, grid=5)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_cfg(tmp_path: Path, scale: int = 2, **model) -> dict:
    photos = write_photos(tmp_path / "photos")
    val = write_photos(tmp_path / "val", n=1, seed=1)
    return {**DEFAULTS, "scale": scale, "ema": 0.9,
            "model": {**DEFAULTS["model"], "backbone": "test-tiny", "channels": 8, "blocks": 2, "mlp_hidden": 8,
                      "guide_channels": 4, **model},
            "data": {**DEFAULTS["data"], "train": [str(photos)], "patch_size": 8, "val": str(val),
                     "val_format": "photos", "val_patch": 12},
            "loss": {**DEFAULTS["loss"], "semantic": 0.1},
            "train": {**DEFAULTS["train"], "steps": 3, "batch_size": 2, "warmup": 0, "eval_every": 3,
                      "log_every": 1}}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scale", [2, 3, 4, 8, 16])
def test_net_shapes(scale):
    net = build_net({"channels": 8, "blocks": 1, "mlp_hidden": 8, "guide_channels": 4}, scale, 32)
    for h, w in ((7, 9), (16, 16)):
        out = net(torch.rand(2, 3, h, w), torch.nn.functional.normalize(torch.randn(2, 32), dim=1))
        assert out.shape == (2, 3, h * scale, w * scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_size_budget(scale):
    # degradation-clip-v2's embedding is 256-d; the --no-clip ablation adds only the 256-d learned vector
    with_clip = n_params(build_net({}, scale, 256))
    no_clip = n_params(build_net({"clip": False}, scale, 256))
    assert 300_000 <= with_clip <= 1_000_000
    assert no_clip - with_clip == 256


def test_untrained_net_is_bicubic():
    net = build_net({"channels": 8, "blocks": 1}, 3, 32)
    x = torch.rand(1, 3, 6, 7)
    want = torch.nn.functional.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False)
    assert torch.allclose(net(x, torch.randn(1, 32)), want)


def test_no_clip_needs_no_embedding():
    net = build_net({"channels": 8, "blocks": 1, "clip": False}, 2, 32)
    assert net(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)
    with pytest.raises(ValueError, match="embeddings"):
        build_net({"channels": 8, "blocks": 1}, 2, 32)(torch.rand(1, 3, 5, 6))


@pytest.mark.parametrize("bad, word", [({"channels": 10}, "channels"), ({"blocks": 0}, "blocks"),
                                       ({"clip": "yes"}, "clip"), ({"width": 3}, "width")])
def test_bad_model_options(bad, word):
    with pytest.raises(ConfigError, match=word):
        build_net(bad, 2, 32)


def test_x16_net_and_its_upsampler():
    """x16: four x2 pixel-shuffle stages then a zero-initialised conv to RGB, so the untrained net is bicubic."""
    net = build_net({"channels": 8, "blocks": 1, "mlp_hidden": 8, "guide_channels": 4}, 16, 32)
    x = torch.rand(1, 3, 6, 5)
    y = net(x, torch.nn.functional.normalize(torch.randn(1, 32), dim=1))
    assert y.shape == (1, 3, 96, 80)
    assert torch.allclose(y, torch.nn.functional.interpolate(x, scale_factor=16, mode="bicubic", align_corners=False))
    shuffles = [m for m in net.upsample if isinstance(m, torch.nn.PixelShuffle)]
    assert len(shuffles) == 4 and all(m.upscale_factor == 2 for m in shuffles)
    assert net.output_conv is net.upsample[-1] and net.output_conv.out_channels == 3
    # x2/x3/x4 keep the single-stage layout (and parameter names) of the shipped checkpoints
    small = build_net({"channels": 8, "blocks": 1}, 4, 32)
    assert small.output_conv is small.upsample[0] and len(small.upsample) == 2
    assert {k for k in small.state_dict() if k.startswith("upsample")} == {"upsample.0.weight", "upsample.0.bias"}


def test_bad_scale():
    for bad in (1, 5, 6, 32):
        with pytest.raises(ConfigError, match="scale"):
            CDASRNet(bad, 32)
    with pytest.raises(ConfigError, match="scale"):
        create_restorer("cdasr", scale=5, weights="x.safetensors", device="cpu")


@pytest.mark.parametrize("scale", [8, 16])
def test_no_shipped_weights_for_x8_x16(scale):
    from clipiq.core.errors import WeightsError

    assert set(SHIPPED) == {2, 3, 4}
    with pytest.raises(WeightsError, match=rf"(?s)no weights ship for x{scale}.*x2/x3/x4.*clipiq train cdasr"):
        create_restorer("cdasr", scale=scale, device="cpu")


def test_registered_and_checks_options():
    assert "cdasr" in list_restorers()
    assert "cdasr" in TRAINING_TASKS.names()
    with pytest.raises(ConfigError, match="colour"):
        create_restorer("cdasr", scale=2, weights="x.safetensors", colour=1, device="cpu")
    with pytest.raises(ConfigError, match="colour"):  # refused before the shipped weights are read
        create_restorer("cdasr", scale=2, colour=1, device="cpu")


@pytest.fixture(scope="module")
def shipped_restorer():
    """The restorer with the shipped weights of a scale, built once per scale for this module."""
    built: dict[int, object] = {}

    def get(scale: int):
        if scale not in built:
            built[scale] = create_restorer("cdasr", scale=scale, device="cpu")
        return built[scale]

    return get


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_weights_load_and_restore(scale, shipped_restorer):
    record = SHIPPED[scale]
    path = hub.package_path(record)
    assert record.package_file == f"weights/cdasr-x{scale}-degradation-clip-v2.safetensors"
    assert path.stat().st_size == record.size and hub.sha256_file(path) == record.sha256 and record.license == "MIT"
    ck = read_method_checkpoint(path, "cdasr")
    assert int(ck.config["scale"]) == scale and ck.backbone["name"] == "degradation-clip-v2"
    restorer = shipped_restorer(scale)
    assert restorer.scale == scale and Path(restorer.weights) == path and restorer.net.use_clip
    x = torch.rand(2, 3, 14, 19, generator=torch.Generator().manual_seed(scale))
    y = restorer(x)
    assert y.shape == (2, 3, 14 * scale, 19 * scale) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1
    # the default scale is x2, with its own shipped file
    if scale == 2:
        assert Path(create_restorer("cdasr", device="cpu").weights) == path


@pytest.mark.parametrize("scale, margin", [(2, 1.0), (3, 0.2), (4, 0.0)])
def test_shipped_weights_beat_bicubic(scale, margin, shipped_restorer):
    """On crops of two example photos, MATLAB-bicubic downscaled: measured +2.0/+2.0 dB (x2), +1.2/+1.0 (x3),
    +0.5/+0.3 (x4) over bicubic upscaling in PSNR on Y."""
    from clipiq.data.io import load_image
    from clipiq.degrade import imresize
    from clipiq.eval import psnr

    restorer = shipped_restorer(scale)
    for name in ("kodak-kodim05.png", "kodak-kodim23.png"):
        hr = load_image(EXAMPLES / name)[:, 64:160, 96:192][None]
        lr = imresize(hr, scale=1 / scale).clamp(0, 1)
        sr = restorer(lr)
        bicubic = imresize(lr, scale=scale).clamp(0, 1)
        ours, base = (float(psnr(z, hr, crop_border=scale, y_channel=True)) for z in (sr, bicubic))
        assert ours > base + margin, (name, ours, base)


def test_gradients_reach_net_not_clip(tmp_path):
    torch.manual_seed(0)
    task = CDASRTask(tiny_cfg(tmp_path), "cpu")
    torch.nn.init.normal_(task.model.upsample[0].weight, std=0.1)  # zero at init: nothing would flow back yet
    batch = next(task.batches(0))
    losses = task.training_step(batch)
    assert set(losses) == {"pixel", "semantic", "loss"} and float(losses["semantic"].detach()) > 0
    losses["loss"].backward()
    assert all(p.grad is not None for p in task.model.parameters())
    # every part, the CLIP guidance branch included, gets a gradient (a single dead ReLU unit may not)
    for name, part in task.model.named_children():
        assert sum(float(p.grad.abs().sum()) for p in part.parameters()) > 0, name
    assert all(not p.requires_grad and p.grad is None for p in task.clip.parameters())
    assert not any(k.startswith("clip") for k in task.model.state_dict())


def test_training_guidance_is_the_whole_photos(tmp_path, monkeypatch):
    """A training crop is guided by the embedding of the whole LR photo it came from, the vector the restorer
    uses for that image: clip_guidance_embedding of the photo's imresize (8-bit levels, as LR files are)."""
    from clipiq.data.io import load_image
    from clipiq.degrade import imresize
    from clipiq.restore.cdasr import clip_guidance_embedding

    torch.manual_seed(0)
    task = CDASRTask(tiny_cfg(tmp_path), "cpu")
    batch = next(task.batches(0))
    assert batch["index"].tolist() and batch["lq"].shape[-1] == 8  # crops, tagged with their photo's index
    want = []
    for i in batch["index"].tolist():
        lr = imresize(load_image(task.train_set.paths[i]), 1 / 2).clamp(0, 1).mul(255).round().div(255)
        assert lr.shape[-2:] == (20, 20)  # the whole photo, not the 8-px crop
        want.append(clip_guidance_embedding(task.clip, task.preprocess, lr[None])[0])
    want = torch.stack(want)
    got = task.photo_guidance(batch["index"])
    assert torch.allclose(got, want, atol=1e-6)
    crops = clip_guidance_embedding(task.clip, task.preprocess, batch["lq"])
    assert not torch.allclose(got, crops, atol=1e-3)  # not the crop's own embedding
    # the training forward pass uses exactly that guidance
    torch.nn.init.normal_(task.model.upsample[0].weight, std=0.1)
    with torch.no_grad():
        assert torch.equal(task.predict_batch(batch), task.model(batch["lq"], got))
    # computed once per photo for the run: later batches reuse the cache
    calls = []
    monkeypatch.setattr("clipiq.train.cdasr.clip_guidance_embedding",
                        lambda *a: calls.append(1) or clip_guidance_embedding(*a))
    assert torch.equal(task.photo_guidance(batch["index"]), got) and not calls
    # a fresh task (as after a resume) derives the same vectors
    again = CDASRTask(task.cfg, "cpu")
    again.clip.load_state_dict(task.clip.state_dict())
    assert torch.equal(again.photo_guidance(batch["index"]), got)


def test_restorer_embedding_is_per_thread(tmp_path):
    """Two threads restoring different images with one restorer each get their own image's guidance."""
    import contextlib
    import threading

    cfg = tiny_cfg(tmp_path)
    cfg["train"]["steps"] = 1
    summary = run(cfg, tmp_path / "run", torch.device("cpu"), progress=False)
    restorer = create_restorer("cdasr", scale=2, weights=summary["checkpoint"], device="cpu", tile=12,
                               tile_overlap=4)
    torch.nn.init.normal_(restorer.net.upsample[0].weight, std=0.1)  # the guidance must show in the output
    images = [torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    alone = [restorer.restore_tensor(x) for x in images]
    inside = threading.Barrier(2)
    real_batch = restorer.restore_batch
    results: dict[int, torch.Tensor] = {}

    def slow_batch(x):  # both threads are inside restore_tensor at once, between their tiles
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait(timeout=5)
        return real_batch(x)

    restorer.restore_batch = slow_batch

    def work(k):
        results[k] = restorer.restore_tensor(images[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not torch.allclose(alone[0], alone[1])
    for k in range(2):
        assert torch.allclose(results[k], alone[k], atol=1e-6), k


def test_train_resume_and_load(tmp_path):
    cfg = tiny_cfg(tmp_path)
    run_dir = tmp_path / "run"
    summary = run(cfg, run_dir, torch.device("cpu"), progress=False)
    assert summary["steps"] == 3 and np.isfinite(summary["best"])
    ck = Path(summary["checkpoint"])
    # a second run on the same folder resumes at the end: no step is taken and the weights are unchanged
    before = Path(run_dir / "last.safetensors").read_bytes()
    again = run(cfg, run_dir, torch.device("cpu"), progress=False)
    assert again["steps"] == 3 and Path(run_dir / "last.safetensors").read_bytes() == before
    restorer = create_restorer("cdasr", scale=2, weights=str(ck), device="cpu")
    for h, w in ((9, 7), (12, 12)):
        out = restorer(torch.rand(3, h, w))
        assert out.shape == (3, 2 * h, 2 * w) and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    # tiles share the whole image's embedding: a tiled run matches the untiled one closely
    x = torch.rand(1, 3, 40, 40)
    tiled = create_restorer("cdasr", scale=2, weights=str(ck), device="cpu", tile=24, tile_overlap=8)
    assert torch.allclose(restorer(x), tiled(x), atol=2e-3)
    with pytest.raises(ConfigError, match="scale"):
        create_restorer("cdasr", scale=3, weights=str(ck), device="cpu")
    # the command line: --scale is the scale option
    from clipiq.cli.main import main

    img = tmp_path / "lr.png"
    Image.fromarray((np.random.default_rng(3).random((10, 14, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "sr"
    assert main(["restore", str(img), "--method", "cdasr", "--scale", "2", "--weights", str(ck), "-o", str(out),
                 "--device", "cpu"]) == 0
    assert Image.open(out / "lr.png").size == (28, 20)
    assert main(["restore", str(img), "--method", "cdasr", "--scale", "2", "--option", "scale=3", "--weights",
                 str(ck), "-o", str(tmp_path / "sr3"), "--device", "cpu"]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CheckpointError):
        create_restorer("cdasr", scale=2, weights=str(bad), device="cpu")


def test_x8_trains_restores_and_benches_from_the_cli(tmp_path):
    """`clipiq train cdasr --config configs/cdasr/tiny.yaml scale=8 ...`, then restore to 8x the size and bench on
    Set5-layout x8 pairs (made by write_srf_pairs)."""
    from clipiq.cli.main import main
    from clipiq.data.paired import write_srf_pairs

    photos = photo_files.write_photos(tmp_path / "photos", n=3, size=64, grid=5)
    val = photo_files.write_photos(tmp_path / "val-hr", n=1, size=72, seed=1, grid=5)
    write_srf_pairs(val, tmp_path / "val", 8)
    run_dir = tmp_path / "run"
    tiny = Path(__file__).resolve().parents[1] / "configs" / "cdasr" / "tiny.yaml"
    assert main(["train", "cdasr", "--config", str(tiny), "scale=8", f"data.train=[{photos}]",
                 f"data.val={tmp_path / 'val'}", "data.patch_size=8", "data.workers=0", "train.steps=2",
                 "train.eval_every=2", "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    ck = read_method_checkpoint(run_dir / "checkpoint.safetensors", "cdasr")
    assert int(ck.config["scale"]) == 8
    restorer = create_restorer("cdasr", scale=8, weights=str(run_dir / "checkpoint.safetensors"), device="cpu")
    out = restorer(torch.rand(3, 5, 6))
    assert out.shape == (3, 40, 48) and torch.isfinite(out).all()
    img = tmp_path / "lr.png"
    Image.fromarray((np.random.default_rng(3).random((5, 7, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["restore", str(img), "--method", "cdasr", "--scale", "8", "--weights",
                 str(run_dir / "checkpoint.safetensors"), "-o", str(tmp_path / "sr"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "sr" / "lr.png").size == (56, 40)
    assert main(["bench", "--restore", "cdasr", "--option", "scale=8", "--weights",
                 str(run_dir / "checkpoint.safetensors"), "--pairs", str(tmp_path / "val"), "--crop-border", "8",
                 "--device", "cpu", "--json", str(tmp_path / "bench.json")]) == 0
    assert (tmp_path / "bench.json").is_file()


def test_no_clip_trains(tmp_path):
    cfg = tiny_cfg(tmp_path, clip=False)
    cfg["loss"]["semantic"] = 0.0
    cfg["train"]["steps"] = 2
    summary = run(cfg, tmp_path / "run", torch.device("cpu"), progress=False)
    restorer = create_restorer("cdasr", scale=2, weights=summary["checkpoint"], device="cpu")
    assert restorer(torch.rand(3, 6, 5)).shape == (3, 12, 10)


def test_task_bad_options(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(ConfigError, match="kind"):
        CDASRTask({**cfg, "kind": "lowlight_blur"}, "cpu")
    with pytest.raises(ConfigError, match="loss.semantic"):
        CDASRTask({**cfg, "loss": {**cfg["loss"], "semantic": -1.0}}, "cpu")
