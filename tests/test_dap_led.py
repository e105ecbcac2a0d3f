"""DAP-LED: the network, its CLIP guidance and prior losses, the restorer entry and the training task (test-tiny)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

import photo_files
from clipiq.clip import load_clip
from clipiq.clip.checkpoint import read_method_checkpoint
from clipiq.clip.config import get_architecture
from clipiq.core import hub
from clipiq.core.config import load_config
from clipiq.core.errors import CheckpointError, ConfigError
from clipiq.restore import create_restorer
from clipiq.restore.dap_led import (
    MODEL_DEFAULTS,
    SFT,
    SHIPPED,
    DAPLEDNet,
    build_network,
    clip_guidance,
    count_parameters,
)
from clipiq.train.dap_led import DEFAULTS, DAPLEDTask, clip_prior_loss, run
from clipiq.train.restoration import freeze_clip

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dap-led"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


write_photos = partial(photo_files.write_photos, size=64)


def tiny_cfg(photos: Path, *overrides: str) -> dict:
    return load_config(CONFIGS / "tiny.yaml", [f"data.train=[{photos}]", *overrides], defaults=DEFAULTS)


@pytest.fixture(scope="module")
def tiny_clip():
    model, preprocess = load_clip("test-tiny", device="cpu")
    return freeze_clip(model), preprocess


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two tiny training runs (CLIP and no-CLIP), 2 steps each: their checkpoints."""
    root = tmp_path_factory.mktemp("dapled")
    photos = write_photos(root / "photos")
    out = {}
    for name, clip in (("clip", "true"), ("noclip", "false")):
        cfg = tiny_cfg(photos, "train.steps=2", "train.eval_every=2", "train.ckpt_every=2", f"model.clip={clip}")
        summary = run(cfg, root / name, torch.device("cpu"), progress=False)
        out[name] = Path(summary["checkpoint"])
    return out


def small_net(use_clip: bool = True, embed_dim: int = 32) -> DAPLEDNet:
    return build_network({"width": 8, "blocks": [1, 1, 1, 1], "refine": 0, "heads": [1, 1, 2, 2], "guide": 8,
                          "clip": use_clip}, embed_dim)


def test_default_size_under_2m_and_ablation_same_size():
    dim = get_architecture(MODEL_DEFAULTS["backbone"]).embed_dim
    with_clip = count_parameters(build_network({}, dim))
    without = count_parameters(build_network({"clip": False}, dim))
    assert with_clip <= 2_000_000
    assert abs(without - with_clip) / with_clip < 0.02


def test_network_shape_and_guidance_path():
    torch.manual_seed(0)
    net = small_net().eval()
    x = torch.rand(2, 3, 32, 48)
    maps, feats = torch.rand(2, 3, 2, 3), torch.randn(2, 32, 2, 3)
    with torch.no_grad():
        y = net(x, maps, feats)
        assert y.shape == x.shape
        # The transforms start at identity; once they are not, the output follows CLIP's maps.
        for m in net.modules():
            if isinstance(m, SFT):
                torch.nn.init.normal_(m.to_affine.weight, std=0.1)
        a, b = net(x, maps, feats), net(x, 1 - maps, feats)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 3, 30, 48), maps[:1], feats[:1])
    with pytest.raises(ValueError, match="clip_guidance"):
        net(x)


def test_no_clip_variant_ignores_inputs_and_needs_none():
    net = small_net(use_clip=False).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, torch.rand(1, 3, 2, 2), torch.rand(1, 32, 2, 2)))


def test_guidance_is_downscaled_and_detached(tiny_clip):
    clip, pre = tiny_clip
    x = torch.rand(1, 3, 100, 140, requires_grad=True)
    maps, feats = clip_guidance(clip, pre, x, clip_size=64)
    assert maps.shape[:2] == (1, 3) and feats.shape[:2] == (1, clip.cfg.embed_dim)
    assert maps.shape[-1] == 64 // 16 and not maps.requires_grad and not feats.requires_grad
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_clip_prior_loss_differentiable_no_grad_into_clip(tiny_clip):
    clip, pre = tiny_clip
    dark = torch.rand(2, 3, 32, 32) * 0.1
    for img in (dark, (dark * 8).clamp(0, 1)):
        x = img.clone().requires_grad_(True)
        loss = clip_prior_loss(clip, x, ("brightness", "sharpness"), pre)
        loss.backward()
        assert torch.isfinite(loss) and loss.ndim == 0
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())


def test_clip_prior_loss_refuses_trainable_clip():
    clip, _ = load_clip("test-tiny", device="cpu")
    with pytest.raises(ValueError, match="frozen"):
        clip_prior_loss(clip.train(), torch.rand(1, 3, 32, 32))


def test_gradients_reach_network_not_clip(tmp_path):
    cfg = tiny_cfg(write_photos(tmp_path / "photos"))
    task = DAPLEDTask(cfg, "cpu")
    batch = next(task.batches(0))
    losses = task.training_step(batch)
    assert {"pixel", "identity", "clip_prior", "loss"} <= set(losses)
    losses["loss"].backward()
    grads = [p.grad for p in task.model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in task.clip.parameters())
    # CLIP is not part of what trains or what a checkpoint holds
    assert not any(k.startswith("clip") for k in task.model.state_dict())


def test_training_checkpoint_loads_and_restores(trained):
    ck = read_method_checkpoint(trained["clip"], "dap-led")
    state, config, backbone = ck.state, ck.config, ck.backbone
    assert config["model"]["backbone"] == "test-tiny" and backbone["embed_dim"] == 32
    assert not any("visual" in k or "text" in k for k in state)  # CLIP's weights are never saved
    for name in ("clip", "noclip"):
        r = create_restorer("dap-led", weights=str(trained[name]), device="cpu")
        assert (r.clip is not None) == (name == "clip")
        x = torch.rand(3, 37, 45)  # odd sizes: padded to 16 and cropped back
        y = r(x)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0 and float(y.max()) <= 1
    # the trainer's own best checkpoint reads too, and tiles blend back to the image's size
    r = create_restorer("dap-led", weights=str(trained["clip"].parent / "best.safetensors"), device="cpu",
                        tile=32, tile_overlap=8)
    assert r(torch.rand(1, 3, 50, 70)).shape == (1, 3, 50, 70)


def test_checkpoint_refuses_other_backbone_and_method(trained, tmp_path):
    from clipiq.core.tensors import load_tensors, save_tensors

    tensors, meta = load_tensors(trained["clip"])
    save_tensors(tmp_path / "other.safetensors", tensors, {**meta, "backbone": {**meta["backbone"],
                                                                               "sha256": "0" * 64}})
    with pytest.raises(CheckpointError, match="backbone"):
        create_restorer("dap-led", weights=str(tmp_path / "other.safetensors"), device="cpu")
    save_tensors(tmp_path / "method.safetensors", tensors, {**meta, "method": "cdasr"})
    with pytest.raises(CheckpointError, match="cdasr"):
        create_restorer("dap-led", weights=str(tmp_path / "method.safetensors"), device="cpu")


@pytest.fixture(scope="module")
def shipped():
    """The restorer with the shipped weights (no weights given), built once for this module."""
    return create_restorer("dap-led", device="cpu")


def test_shipped_weights_load_and_restore(shipped):
    path = hub.package_path(SHIPPED)
    assert SHIPPED.package_file == "weights/dap-led-degradation-clip-v2.safetensors" and SHIPPED.license == "MIT"
    assert path.stat().st_size == SHIPPED.size and hub.sha256_file(path) == SHIPPED.sha256
    ck = read_method_checkpoint(path, "dap-led")
    assert ck.backbone["name"] == "degradation-clip-v2" and ck.config["model"]["clip"] is True
    assert shipped.clip is not None and shipped.net.use_clip and not shipped.training
    x = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(0))  # padded to 16 and cropped back
    y = shipped(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1
    # the same network as naming the shipped file
    named = create_restorer("dap-led", weights=str(path), device="cpu")
    torch.testing.assert_close(named(x), y, rtol=0, atol=1e-6)


def test_shipped_weights_restore_synthetic_lowlight_blur(shipped):
    """A dark, blurred, noisy crop of an example photo (the training degradation, level 3): measured 16.9 and
    16.2 dB against the sharp, bright crop, from 11.4 and 8.4 dB for the input."""
    from clipiq.data.io import load_image
    from clipiq.degrade.lowlight import lowlight_blur_pair
    from clipiq.eval import psnr

    for name in ("kodak-kodim05.png", "kodak-kodim23.png"):
        hr = load_image(EXAMPLES / name)[:, 64:160, 96:192]
        lq, target = lowlight_blur_pair(hr, level=3, seed=0)
        before = float(psnr(lq[None], target[None]))
        after = float(psnr(shipped(lq[None]), target[None]))
        assert after > before + 3, (name, after, before)


def test_bad_restorer_options_name_the_option(trained):
    with pytest.raises(ConfigError, match="bogus"):
        create_restorer("dap-led", weights=str(trained["clip"]), bogus=1)
    with pytest.raises(ConfigError, match="clip_size"):
        create_restorer("dap-led", weights=str(trained["clip"]), clip_size=-3)


@pytest.mark.parametrize(("option", "value", "match"), [
    ("width", 0, "model.width"),
    ("blocks", [1, 2, 3], "model.blocks"),
    ("heads", [1, 2, 4, 5], r"model.heads\[3\]"),
    ("expansion", "big", "model.expansion"),
    ("clip", "yes", "model.clip"),
    ("clip_size", 8, "model.clip_size"),
    ("depth", 3, "depth"),
])
def test_bad_model_options_name_the_option(option, value, match):
    with pytest.raises(ConfigError, match=match):
        build_network({option: value}, 32)


@pytest.mark.parametrize(("override", "match"), [
    ("loss.identity_weight=-1", "loss.identity_weight"),
    ("loss.prior_pairs=[brightnes]", "loss.prior_pairs"),
    ("data.patch_size=40", "data.patch_size"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("model.width=0", "model.width"),
])
def test_bad_training_options_name_the_option(tmp_path, override, match):
    cfg = tiny_cfg(tmp_path, override)
    with pytest.raises(ConfigError, match=match):
        DAPLEDTask(cfg, "cpu")


def test_held_out_mcmaster_refused(tmp_path):
    cfg = tiny_cfg(write_photos(tmp_path / "mcmaster18"))
    with pytest.raises(ConfigError, match="McMaster18"):
        DAPLEDTask(cfg, "cpu")


def test_shipped_configs_parse():
    for name in ("synthetic", "lolblur", "tiny"):
        cfg = load_config(CONFIGS / f"{name}.yaml", defaults=DEFAULTS)
        assert cfg["method"] == "dap-led"
        build_network(cfg["model"], 32)


def test_pairs_on_disk_lolblur_layout(tmp_path):
    for part, seq in (("train", "0000"), ("test", "0170")):
        write_photos(tmp_path / part / "high_sharp_scaled" / seq, n=3)
        write_photos(tmp_path / part / "low_blur_noise" / seq, n=3, seed=5)
    cfg = tiny_cfg(tmp_path / "train" / "high_sharp_scaled", f"data.train_lq={tmp_path / 'train' / 'low_blur_noise'}",
                   f"data.val={tmp_path / 'test' / 'high_sharp_scaled'}",
                   f"data.val_lq={tmp_path / 'test' / 'low_blur_noise'}", "data.val_fraction=0")
    task = DAPLEDTask(cfg, "cpu")
    assert len(task.train_set) == 3 and len(task.val_set) == 2  # val_limit 2
    item = task.train_set[0]
    assert item["lq_path"].replace("low_blur_noise", "high_sharp_scaled") == item["gt_path"]
    assert next(task.batches(0))["lq"].shape == (2, 3, 32, 32)
    (tmp_path / "train" / "low_blur_noise" / "0000" / "p1.png").unlink()
    with pytest.raises(FileNotFoundError, match="partner"):
        DAPLEDTask(cfg, "cpu")
