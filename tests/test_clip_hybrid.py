"""The EfficientNet-Lite0 stem (ImageNet weights, sha256-pinned) and the hybrid ViT image tower built on it."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clipiq
from clipiq.clip.config import ARCHITECTURES, CLIPConfig, PreprocessConfig, VisionConfig, get_architecture
from clipiq.clip.dense import dense_maps
from clipiq.clip.efficientnet import (
    LITE0_MEAN,
    LITE0_STD,
    LITE0_WEIGHTS,
    ConvBN,
    EfficientNetLite0,
    StemMaps,
    _same_padding,
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


# -- the fast inference path (folded batch norms, channels_last, padding by the conv) ----------------


def _random_stem(seed: int = 0, frozen: bool = True) -> EfficientNetLite0:
    """A stem with random weights and random, non-trivial batch-norm statistics and affine parameters."""
    torch.manual_seed(seed)
    net = EfficientNetLite0(frozen=frozen)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.3, 1.5)
                m.bias.normal_(0.0, 0.5)
    return net.eval()


def _assert_maps_close(fast: StemMaps, ref: StemMaps, rel: float = 1e-4) -> None:
    for name, a, b in zip(("s16", "s32", "stats"), fast, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype and a.is_contiguous(), name
        scale = float(b.abs().max())
        assert float((a - b).abs().max()) <= rel * scale, (name, float((a - b).abs().max()), scale)


@pytest.mark.parametrize("kernel", [3, 5])
def test_same_padding_by_the_conv_equals_f_pad(kernel):
    # Odd sizes pad symmetrically; even sizes pad one more after, done with a zero-prepended kernel.
    torch.manual_seed(kernel)
    conv = ConvBN(6, 6, kernel, stride=2, groups=6).eval()
    f = conv.fused()
    for h in range(1, 14):
        for w in (1, 2, 7, 8):
            x = torch.randn(2, 6, h, w)
            (top, bottom), (left, right) = _same_padding(h, kernel, 2), _same_padding(w, kernel, 2)
            ref = F.conv2d(F.pad(x, (left, right, top, bottom)), f.weight, f.bias, 2, 0, 1, 6)
            xx, weight, padding = conv._same_padding_conv(x, f)
            assert xx is x  # no padded copy of the input
            out = F.conv2d(xx, weight, f.bias, 2, padding, 1, 6)
            assert out.shape == ref.shape == (2, 6, -(-h // 2), -(-w // 2))
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_symmetric_padding_and_slicing_is_not_same_padding():
    # Why the kernel trick: padding p+1 on both sides moves every stride-2 window by one pixel, which no slice of
    # the output undoes (the windows sit on the other parity), so it differs from 'same' padding for even sizes.
    torch.manual_seed(0)
    x, w = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 3, 3)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), w, stride=2)
    sym = F.conv2d(x, w, stride=2, padding=1)
    assert sym.shape == ref.shape and not torch.allclose(sym, ref)


@pytest.mark.parametrize("size", [(64, 64), (65, 97), (70, 45), (33, 50)])
def test_fast_stem_equals_the_reference(size):
    net = _random_stem(seed=sum(size))
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        assert net.stem.uses_fast_path() and net.fast
        fast, fast_logits = net.features(x), net(x)
        with net.reference_path():
            assert not net.stem.uses_fast_path() and not net.fast
            ref, ref_logits = net.features(x), net(x)
        assert net.fast  # restored
    _assert_maps_close(fast, ref)
    torch.testing.assert_close(fast_logits, ref_logits, rtol=1e-4, atol=1e-4 * float(ref_logits.abs().max()))


@pytest.mark.parametrize("fused_op, channels_last", [(False, True), (True, False), (False, False)])
def test_fast_stem_fallbacks_equal_the_reference(monkeypatch, fused_op, channels_last):
    # Without oneDNN's fused conv (another torch build) and without channels_last the fast path is still exact.
    import clipiq.clip.efficientnet as effnet

    monkeypatch.setattr(effnet, "_POINTWISE_OK", fused_op)
    monkeypatch.setattr(effnet, "_CHANNELS_LAST", channels_last)
    net = _random_stem(seed=11)
    x = torch.rand(2, 3, 66, 49) * 2 - 1
    with torch.no_grad():
        fast = net.features(x)
        with net.reference_path():
            ref = net.features(x)
    _assert_maps_close(fast, ref)
    assert fused_op == effnet._POINTWISE_OK  # the fused op, when used, did not fail


def test_fast_stem_equals_the_reference_with_imagenet_weights(lite0):
    x = torch.rand(1, 3, 224, 225) * 2 - 1
    with torch.no_grad():
        fast = lite0.features(x)
        with lite0.reference_path():
            ref = lite0.features(x)
    _assert_maps_close(fast, ref)


def test_fast_stem_in_bf16_stays_close():
    net = _random_stem(seed=3).to(torch.bfloat16)
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        fast = net.features(x)
        with net.reference_path():
            ref = net.features(x)
    assert fast.s16.dtype == torch.bfloat16
    _assert_maps_close(fast, ref, rel=0.1)  # the reference rounds to bf16 twice (conv, then batch norm)


def test_training_uses_batch_statistics_and_gradients_flow():
    net = _random_stem(seed=4, frozen=False).train()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    block = net.blocks[3].depthwise
    assert not block.uses_fast_path()
    stats = block.bn.running_mean.clone()
    net(x).sum().backward()
    assert not torch.equal(block.bn.running_mean, stats)  # batch statistics were used and collected
    assert block._fused is None  # the fold was never computed
    assert all(p.grad is not None for p in net.parameters())
    # Eval mode of an unfrozen stem with gradients on: still the exact path, so the weights get gradients.
    net.eval().zero_grad()
    assert not block.uses_fast_path()
    net.features(x).s32.sum().backward()
    assert net.stem.conv.weight.grad is not None and block.bn.weight.grad is not None


def test_a_frozen_stem_gives_input_gradients_like_the_reference():
    net = _random_stem(seed=5)
    x = (torch.rand(1, 3, 48, 50) * 2 - 1).requires_grad_()
    assert net.stem.uses_fast_path()  # the weights need no gradient, the input does: the fold is still exact
    (g_fast,) = torch.autograd.grad(net.features(x).s16.square().mean(), x)
    with net.reference_path():
        (g_ref,) = torch.autograd.grad(net.features(x).s16.square().mean(), x)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4 * float(g_ref.abs().max()))


def test_fold_follows_in_place_changes_of_weights_and_statistics():
    net = _random_stem(seed=6)
    keys = list(net.state_dict())
    x = torch.rand(1, 3, 64, 66) * 2 - 1

    def check() -> StemMaps:
        with torch.no_grad():
            fast = net.features(x)
            with net.reference_path():
                _assert_maps_close(fast, net.features(x))
        return fast

    first = check()
    bn = net.blocks[2].depthwise.bn
    folded = net.blocks[2].depthwise._fused
    with torch.no_grad():
        bn.running_var.mul_(4.0)  # buffers change in place (a load_state_dict copies in place too)
    second = check()
    assert not torch.allclose(first.s16, second.s16) and net.blocks[2].depthwise._fused is not folded
    with torch.no_grad():
        net.blocks[5].project.conv.weight.mul_(-1.0)
        net.stem.bn.bias.add_(0.25)
    third = check()
    assert not torch.allclose(second.s16, third.s16)
    net.load_state_dict(_random_stem(seed=7).state_dict())
    fourth = check()
    assert not torch.allclose(third.s16, fourth.s16)
    # A replaced tensor (same values, new storage) is caught too, and nothing of the fold is in the state dict.
    net.blocks[0].project.bn.running_mean = net.blocks[0].project.bn.running_mean.clone() + 1.0
    check()
    assert list(net.state_dict()) == keys
    clone = copy.deepcopy(net)
    assert all(m._fused is None for m in clone.modules() if isinstance(m, ConvBN))
    with torch.no_grad():
        _assert_maps_close(clone.features(x), net.features(x), rel=1e-6)


def test_fast_stem_keeps_the_hybrid_tower_outputs(hybrid):
    model, _ = hybrid
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        fast = model.encode_image(x)
        with model.visual.stem.reference_path():
            ref = model.encode_image(x)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_fast_stem_after_inference_mode_still_gives_input_gradients():
    # The first call under inference_mode caches the folded (and padded) kernels; they must not be inference tensors.
    net = _random_stem(seed=5)
    with torch.inference_mode():
        net.features(torch.rand(1, 3, 64, 64) * 2 - 1)
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    net.features(x).s32.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_fast_stem_under_autocast_casts_like_the_reference():
    net = _random_stem(seed=6)
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = net.features(x)
        with net.reference_path():
            ref = net.features(x)
    assert [t.dtype for t in fast] == [t.dtype for t in ref]
