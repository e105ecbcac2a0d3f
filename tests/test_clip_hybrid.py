"""The EfficientNet-Lite0 stem (ImageNet weights, sha256-pinned) and the hybrid ViT image tower built on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import clipiq
from clipiq.clip.config import ARCHITECTURES, CLIPConfig, PreprocessConfig, VisionConfig, get_architecture
from clipiq.clip.dense import dense_maps
from clipiq.clip.efficientnet import (
    LITE0_MEAN,
    LITE0_STD,
    LITE0_WEIGHTS,
    imagenet_classes,
    load_lite0,
    resolve_lite0_weights,
)
from clipiq.clip.model import CLIP, build_model
from clipiq.clip.preprocess import Preprocess
from clipiq.core.hub import WeightsChecksumError, sha256_file
from clipiq.core.image import pil_to_tensor

REPO = Path(__file__).resolve().parents[1]
BARN = "sunhays80/barn_sun_btulbiaoilnxcseh.jpg"  # a barn photo the stem classifies as 'barn'


@pytest.fixture(scope="module")
def lite0():
    return load_lite0()


@pytest.fixture(scope="module")
def hybrid():
    return clipiq.load_clip("test-tiny-hybrid", device="cpu")


def _top1(net, path: Path) -> tuple[str, float]:
    # ImageNet evaluation: shortest side to 224, centre crop, inputs in [-1, 1].
    pre = Preprocess(PreprocessConfig(224, LITE0_MEAN, LITE0_STD))
    x = pre.prepare(pil_to_tensor(Image.open(path).convert("RGB"))[None])
    with torch.no_grad():
        p = net(x).softmax(-1)[0]
    return imagenet_classes()[int(p.argmax())], float(p.max())


# -- the stem ----------------------------------------------------------------------------------------


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[88] == "macaw" and names[425] == "barn"


def test_stem_classifies_the_bundled_example(lite0):
    name, p = _top1(lite0, REPO / "examples" / "kodak-kodim23.png")
    assert name == "macaw" and p > 0.5


def test_stem_classifies_shared_photos(lite0, photos_dir):
    assert _top1(lite0, photos_dir / "kodak24" / "kodim23.png")[0] == "macaw"
    assert _top1(lite0, photos_dir / BARN)[0] == "barn"


def test_stem_weights_come_from_the_package_and_are_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPIQ_HOME", str(tmp_path / "home"))
    path = resolve_lite0_weights()
    assert path.is_file() and LITE0_WEIGHTS.python_package in path.parts
    assert sha256_file(path) == LITE0_WEIGHTS.sha256 and path.stat().st_size == LITE0_WEIGHTS.size
    assert LITE0_WEIGHTS.license == "Apache-2.0"
    good = tmp_path / "lite0-copy.pth"  # any name: the stem has one file form, so every copy is checked
    shutil.copyfile(path, good)
    assert resolve_lite0_weights(good) == good
    bad = tmp_path / LITE0_WEIGHTS.filename
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="sha256 mismatch"):
        load_lite0(bad)


# -- architectures -----------------------------------------------------------------------------------


def test_hybrid_architectures_are_registered_and_validated():
    tiny, v2 = get_architecture("test-tiny-hybrid"), get_architecture("degradation-clip-v2")
    assert tiny.random and not v2.random
    vision = v2.vision
    assert (vision.stem, vision.patch_size, vision.width, vision.layers, vision.stem_stats) == (
        "efficientnet-lite0", 16, 128, 4, True)
    assert v2.preprocess.mean == LITE0_MEAN and v2.preprocess.std == LITE0_STD
    assert CLIPConfig.from_dict(v2.to_dict()) == v2
    with pytest.raises(ValueError, match="unknown image stem"):
        VisionConfig(stem="resnet50")
    with pytest.raises(ValueError, match="patch_size must be 16"):
        VisionConfig(patch_size=32, stem="efficientnet-lite0")
    from clipiq.clip.weights import list_weights

    assert list_weights(arch="degradation-clip-v2") == ["degradation-clip-v2"]  # its shipped weights
    with torch.device("meta"):  # a checkpoint load builds here: the stem file is not read
        model = build_model(ARCHITECTURES["degradation-clip-v2"])
    assert model.visual.stem is not None and model.visual.stem.stem.conv.weight.is_meta


# -- the hybrid tower's hooks ------------------------------------------------------------------------


def test_hybrid_stem_is_the_pretrained_one(hybrid, lite0):
    model, pre = hybrid
    assert pre.cfg.mean == LITE0_MEAN and pre.patch_size == 16 and "random" in model.weights_name
    for (k, a), b in zip(model.visual.stem.state_dict().items(), lite0.state_dict().values()):
        assert torch.equal(a, b), k


def test_encode_image_and_grid_at_any_size(hybrid):
    model, _ = hybrid
    v = model.visual
    with torch.no_grad():
        for h, w in ((224, 224), (160, 272), (208, 250)):
            x = torch.randn(1, 3, h, w)
            assert v.embed_patches(x).shape == (1, (h // 16) * (w // 16), v.width)
            out = model.encode_image(x)
            assert out.shape == (1, 32) and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="smaller than one"):
            model.encode_image(torch.randn(1, 3, 8, 64))


def test_cached_stem_features_give_the_same_tokens(hybrid):
    model, _ = hybrid
    v = model.visual
    x = torch.randn(2, 3, 208, 176)  # an odd grid (13x11) exercises the stride-32 alignment
    with torch.no_grad():
        maps = v.stem_features(x)
        assert maps.s16.shape == (2, 112, 13, 11) and maps.s32.shape == (2, 320, 7, 6)
        tokens = v.embed_patches(x)
        torch.testing.assert_close(v.embed_stem_features(maps), tokens)
        half = v.embed_stem_features(tuple(m.half() for m in maps))  # a compact cache still works
        torch.testing.assert_close(half, tokens, atol=0.05, rtol=0.05)
        with pytest.raises(ValueError, match="does not belong"):
            v.embed_stem_features((maps.s16, maps.s32[..., :3, :]))


def test_forward_tokens_streams_prompts_and_masks(hybrid):
    model, _ = hybrid
    v = model.visual
    w = v.width
    with torch.no_grad():
        g = v.embed_patches(torch.randn(1, 3, 224, 224))
        loc = v.embed_patches(torch.randn(1, 3, 128, 128))
        prompts = [torch.randn(3, w), torch.randn(3, w)]
        out = v.forward_tokens([g, loc], deep_prompts=prompts, return_tokens=True)
        assert out.pooled.shape == (1, 32) and out.n_prompts == 3
        assert out.tokens.shape == (1, 196 + 64, 32)
        length = 1 + g.shape[1]
        full = torch.ones(length, length, dtype=torch.bool)
        torch.testing.assert_close(v.forward_tokens(g, attn_mask=full).pooled, v.forward_tokens(g).pooled)
        own = torch.eye(length, dtype=torch.bool)  # each token sees itself only
        assert not torch.allclose(v.forward_tokens(g, attn_mask=own).pooled, v.forward_tokens(g).pooled)


def test_dense_maps_and_a_metric_run_on_the_hybrid(hybrid):
    model, pre = hybrid
    maps = dense_maps(model, pre, torch.rand(1, 3, 72, 100), ("quality", "sharpness"))
    assert maps.maps.shape == (1, 2, 72, 100) and maps.grid.shape == (1, 2, 5, 7) and maps.patch_size == 16
    metric = clipiq.create_metric("clipiqa", model="test-tiny-hybrid", device="cpu")
    scores = metric([torch.rand(3, 96, 128), torch.rand(3, 240, 200)])
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()


def test_gradients_reach_the_transformer_not_the_frozen_stem():
    model = build_model(get_architecture("test-tiny-hybrid"), seed=0)
    v = model.visual
    model.train()
    assert not v.stem.training and v.transformer.training  # a frozen stem keeps its batch-norm statistics
    stats = v.stem.blocks[3].depthwise.bn.running_mean.clone()
    model.encode_image(torch.randn(2, 3, 96, 96)).sum().backward()
    assert torch.equal(v.stem.blocks[3].depthwise.bn.running_mean, stats)
    assert all(p.grad is None for p in v.stem.parameters())
    for p in (v.patch_embed.weight, v.transformer.blocks[0].attn.qkv.weight, v.stem_norm16.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    v.freeze_stem(False)  # the model is in training mode, so the unfrozen stem trains too
    assert v.stem.training and all(p.requires_grad for p in v.stem.parameters())
    model.encode_image(torch.randn(2, 3, 96, 96)).sum().backward()
    assert v.stem.stem.conv.weight.grad is not None
    assert not torch.equal(v.stem.blocks[3].depthwise.bn.running_mean, stats)


def test_frozen_stem_survives_a_meta_build_and_state_load():
    cfg = get_architecture("test-tiny-hybrid")
    source = build_model(cfg, seed=0)
    with torch.device("meta"):
        target = CLIP(cfg)
    target.load_state_dict(source.state_dict(), strict=True, assign=True)
    assert not any(p.requires_grad for p in target.visual.stem.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval().encode_image(x), source.eval().encode_image(x))
