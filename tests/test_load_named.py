"""load_clip by registry name: cache, checksum refusal, offline error, preprocessing from the record."""

from __future__ import annotations

import pytest
import torch

import clipiq
from clipiq.clip import weights as wreg
from clipiq.clip.config import ARCHITECTURES, get_architecture
from clipiq.clip.model import build_model
from clipiq.core.errors import UnknownNameError


@pytest.fixture
def fake_record(tmp_path, monkeypatch):
    """A registry entry for test-tiny weights in the OpenAI layout, already in a private cache."""
    monkeypatch.setenv("CLIPIQ_HOME", str(tmp_path / "home"))
    src = build_model(get_architecture("test-tiny"), seed=5)
    sd = {}
    for k, v in src.state_dict().items():  # written in open_clip key names
        k = (k.replace("visual.patch_embed", "visual.conv1").replace("visual.cls_token", "visual.class_embedding")
             .replace("visual.pos_embed", "visual.positional_embedding")
             .replace("transformer.blocks", "transformer.resblocks").replace("attn.qkv.", "attn.in_proj_")
             .replace("attn.out.", "attn.out_proj.").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
             .replace("text.token_embed", "token_embedding").replace("text.pos_embed", "positional_embedding")
             .replace("text.ln_final", "ln_final").replace("text.proj", "text_projection"))
        sd[k[len("text."):] if k.startswith("text.") else k] = v
    f = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(sd, f)
    rec = wreg.PretrainedWeights(
        name="test-tiny/fake", arch="test-tiny", hf_repo="nobody/fake-tiny", hf_filename=f.name,
        sha256=wreg.sha256_file(f), layout="open_clip", act="gelu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )
    wreg.register_weights(rec)
    yield rec, f, src
    wreg.unregister_weights(rec.name)


def test_loads_from_cache_with_record_preprocessing(fake_record):
    rec, f, src = fake_record
    cached = wreg.cache_path(rec)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(f.read_bytes())
    model, pre = clipiq.load_clip(rec.name, device="cpu")
    assert model.weights_name == rec.name and model.weights_sha256 == rec.sha256
    assert pre.cfg.mean == (0.5, 0.5, 0.5) and pre.cfg.std == (0.25, 0.25, 0.25)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(model.encode_image(x), src.encode_image(x))


def test_tampered_cache_is_refused(fake_record):
    rec, f, _ = fake_record
    cached = wreg.cache_path(rec)
    cached.parent.mkdir(parents=True)
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(wreg.WeightsChecksumError, match=rec.sha256[:12]):
        clipiq.load_clip(rec.name, device="cpu")


def test_offline_without_copy_gives_one_clear_error(fake_record, monkeypatch):
    rec, _, _ = fake_record
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(wreg.WeightsUnavailableError) as e:
        clipiq.load_clip(rec.name, device="cpu")
    msg = str(e.value)
    assert "--weights" in msg and "degradation-clip" in msg and str(wreg.cache_path(rec)) in msg


def test_local_copy_of_named_weights_is_verified(fake_record, tmp_path):
    rec, f, src = fake_record
    model, _ = clipiq.load_clip(rec.name, weights=f, device="cpu")
    assert model.weights_sha256 == rec.sha256
    bad = tmp_path / "other" / f.name
    bad.parent.mkdir()
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(wreg.WeightsChecksumError):
        clipiq.load_clip(rec.name, weights=bad, device="cpu")


def test_unknown_weights_name_suggests():
    with pytest.raises(ValueError, match="ViT-B-32/openai"):
        clipiq.load_clip("ViT-B-32/opneai", device="cpu")


def test_degradation_clip_ships_and_loads_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CLIPIQ_HOME", str(tmp_path))
    rec = wreg.get_weights("degradation-clip")
    path = wreg.resolve_weights(rec)
    assert path.stat().st_size <= 40 * 2**20
    assert wreg.sha256_file(path) == rec.sha256
    model, pre = clipiq.load_clip("degradation-clip", device="cpu")
    assert model.weights_sha256 == rec.sha256 and not model.cfg.random
    assert pre.image_size == model.cfg.vision.image_size == 128
    with torch.no_grad():
        t = model.encode_text(clipiq.tokenize(["Good photo.", "Bad photo."]), normalize=True)
    assert float(t[0] @ t[1]) < 0.999  # trained text tower tells the pair apart


def test_architectures_are_a_registry():
    assert "ViT-B-32" in ARCHITECTURES and ARCHITECTURES["vit-b-32"].name == "ViT-B-32"
    assert get_architecture("ViT-B-32").act == "quick_gelu"
    assert get_architecture("test-tiny-quickgelu").act == "quick_gelu" and get_architecture("test-tiny").act == "gelu"
    with pytest.raises(UnknownNameError, match="unknown CLIP architecture 'ViT-B-33'.*Did you mean ViT-B-32"):
        get_architecture("ViT-B-33-quickgelu")
