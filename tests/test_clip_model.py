"""The backbone's hooks: deep prompts, merged streams, attention masks, any input size, precision."""

from __future__ import annotations

import pytest
import torch

import clipiq
from clipiq.clip.config import ARCHITECTURES, get_architecture
from clipiq.clip.model import build_model


@pytest.fixture(scope="module")
def tiny():
    model, pre = clipiq.load_clip("test-tiny", device="cpu")
    return model, pre


def test_test_tiny_is_small_seeded_and_labelled(tiny):
    model, _ = tiny
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert ARCHITECTURES["test-tiny"].random
    assert "random" in model.weights_name
    again, _ = clipiq.load_clip("test-tiny", device="cpu")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_public_api_shapes(tiny):
    model, pre = tiny
    tokens = clipiq.tokenize(["Good photo.", "Bad photo."])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    x = pre.prepare(torch.rand(2, 3, 300, 200))
    assert x.shape == (2, 3, 224, 224)
    assert model.encode_image(x).shape == (2, 32)
    assert model.encode_text(tokens).shape == (2, 32)
    assert model.logit_scale.ndim == 0


def test_named_architectures_match_published_sizes():
    # Parameter counts of the OpenAI models (open_clip reports the same figures).
    expected = {"ViT-B-32": 151_277_313, "ViT-B-16": 149_620_737}
    for name, n in expected.items():
        with torch.device("meta"):
            m = build_model(get_architecture(name))
        assert sum(p.numel() for p in m.parameters()) == n


def test_any_input_size_interpolates_position_embeddings(tiny):
    model, _ = tiny
    v = model.visual
    assert torch.equal(v.grid_pos_embed(v.grid, v.grid), v.pos_embed[1:])
    pe = v.grid_pos_embed(20, 9)
    assert pe.shape == (180, v.width)
    out = model.encode_image(torch.randn(1, 3, 320, 144))
    assert out.shape == (1, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="smaller than one"):
        model.encode_image(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        model.encode_image(torch.randn(3, 224, 224))


def test_merged_streams_equal_concatenated_tokens(tiny):
    model, _ = tiny
    a, b = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)
    ta, tb = model.visual.embed_patches(a), model.visual.embed_patches(b)
    merged = model.visual.forward_tokens([ta, tb]).pooled
    concat = model.visual.forward_tokens(torch.cat([ta, tb], 1)).pooled
    single = model.visual.forward_tokens(ta).pooled
    torch.testing.assert_close(merged, concat)
    assert not torch.allclose(merged, single, atol=1e-4)


def test_attention_mask_can_hide_a_stream(tiny):
    """Blocking all attention between the stream-b tokens and the rest reproduces the single-stream output."""
    model, _ = tiny
    a, b = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224)
    ta, tb = model.visual.embed_patches(a), model.visual.embed_patches(b)
    la, lb = ta.shape[1] + 1, tb.shape[1]
    mask = torch.zeros(la + lb, la + lb, dtype=torch.bool)
    mask[:la, :la] = True
    mask[la:, la:] = True
    masked = model.visual.forward_tokens([ta, tb], attn_mask=mask).pooled
    single = model.visual.forward_tokens(ta).pooled
    torch.testing.assert_close(masked, single, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attn_mask covers"):
        model.visual.forward_tokens(ta, attn_mask=mask)


def test_deep_prompts_insert_then_replace(tiny):
    model, _ = tiny
    v = model.visual
    x = torch.randn(2, 3, 224, 224)
    n_layers = len(v.transformer.blocks)
    p0 = torch.randn(4, v.width, requires_grad=True)
    p1 = torch.randn(4, v.width, requires_grad=True)
    out = v(x, deep_prompts=[p0, p1], return_tokens=True, return_hidden=True)
    assert out.n_prompts == 4
    assert out.tokens.shape == (2, 196, 32)  # prompt outputs are not returned as image tokens
    assert all(h.shape[1] == 1 + 4 + 196 for h in out.hidden)
    out.pooled.sum().backward()
    assert p0.grad is not None and p0.grad.abs().sum() > 0
    assert p1.grad is not None and p1.grad.abs().sum() > 0
    # Replacing at layer 1 means changing p1 changes the output; None lets layer-0 prompts flow on.
    out2 = v(x, deep_prompts=[p0, torch.randn_like(p1)]).pooled
    assert not torch.allclose(out.pooled, out2)
    passthrough = v(x, deep_prompts=[p0, None]).pooled
    assert passthrough.shape == (2, 32)
    with pytest.raises(ValueError, match="entries but the tower has"):
        v(x, deep_prompts=[p0] * (n_layers + 1))
    with pytest.raises(ValueError, match="prompt tokens must be"):
        v(x, deep_prompts=[torch.randn(4, v.width + 1)])


def test_prompts_before_ln_pre_and_pre_ln_post(tiny):
    """Both options change only what they name; left at their defaults the tower is what it was."""
    model, _ = tiny
    v = model.visual
    torch.manual_seed(0)
    tokens = v.embed_patches(torch.randn(2, 3, 224, 224))
    p0, p1 = torch.randn(4, v.width) * 3, torch.randn(4, v.width)
    cls = (v.cls_token + v.pos_embed[0]).expand(2, 1, -1)

    def by_hand(normed: torch.Tensor, deep: list, n_prompts: int) -> torch.Tensor:  # from after ln_pre on
        x, _, _ = v.transformer(normed, deep_prompts=deep, n_prompts=n_prompts)
        return v.ln_post(x[:, 0]) @ v.proj

    with torch.no_grad():
        default = v.forward_tokens(tokens, deep_prompts=[p0, p1]).pooled
        torch.testing.assert_close(v.forward_tokens(tokens, deep_prompts=[p0, p1], prompts_before_ln_pre=False,
                                                    pre_ln_post=None).pooled, default, atol=0, rtol=0)
        torch.testing.assert_close(default, by_hand(v.ln_pre(torch.cat([cls, tokens], 1)), [p0, p1], 0))
        # before ln_pre: [CLS, p0, tokens] is normalised as one sequence, then the blocks run with p1 at layer 1
        first = v.ln_pre(torch.cat([cls, p0.expand(2, -1, -1), tokens], 1))
        out = v.forward_tokens(tokens, deep_prompts=[p0, p1], prompts_before_ln_pre=True, return_tokens=True)
        assert out.n_prompts == 4 and out.tokens.shape == tokens.shape
        torch.testing.assert_close(out.pooled, by_hand(first, [None, p1], 4))
        # without layer-0 prompts the option changes nothing
        torch.testing.assert_close(v.forward_tokens(tokens, deep_prompts=[None, p1], prompts_before_ln_pre=True)
                                   .pooled, v.forward_tokens(tokens, deep_prompts=[None, p1]).pooled, atol=0, rtol=0)
        # pre_ln_post maps the whole final sequence before ln_post
        torch.testing.assert_close(v.forward_tokens(tokens, pre_ln_post=lambda x: x).pooled,
                                   v.forward_tokens(tokens).pooled, atol=0, rtol=0)
        scale = torch.linspace(0.1, 3.0, v.width)
        x, _, _ = v.transformer(v.ln_pre(torch.cat([cls, tokens], 1)))
        torch.testing.assert_close(v.forward_tokens(tokens, pre_ln_post=lambda t: t * scale).pooled,
                                   v.ln_post(x[:, 0] * scale) @ v.proj)


def test_text_context_vectors_and_deep_prompts(tiny):
    """CoOp-style: learnable context replaces placeholder embeddings; text deep prompts replace it per layer."""
    model, _ = tiny
    t = model.text
    tokens = clipiq.tokenize(["X X X X good photo.", "X X X X bad photo."])
    eot = tokens.argmax(-1)
    emb = t.embed(tokens)
    plain = t.forward_embeds(emb, eot).pooled
    torch.testing.assert_close(plain, model.encode_text(tokens))
    ctx = torch.randn(4, t.width, requires_grad=True)
    emb2 = torch.cat([emb[:, :1], ctx.expand(2, -1, -1), emb[:, 5:]], dim=1)
    deep = [None, torch.randn(4, t.width, requires_grad=True)]
    out = t.forward_embeds(emb2, eot, deep_prompts=deep, n_prompts=4).pooled
    out.sum().backward()
    assert ctx.grad.abs().sum() > 0 and deep[1].grad.abs().sum() > 0
    # return_hidden: every block's output (the states a later layer's prompts replace)
    hidden = t.forward_embeds(emb, eot, return_hidden=True).hidden
    assert len(hidden) == len(t.transformer.blocks) and hidden[0].shape == emb.shape
    # Inserted (not replacing) prompts shift the end-of-text position; pooling must follow it.
    ins = t.forward_embeds(emb, eot, deep_prompts=[torch.zeros(3, t.width)], n_prompts=0)
    assert ins.n_prompts == 3 and torch.isfinite(ins.pooled).all()


def test_gradients_reach_the_image(tiny):
    model, pre = tiny
    x = torch.rand(1, 3, 224, 224, requires_grad=True)
    model.encode_image(pre.normalize(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bf16_close_to_fp32():
    m32, pre = clipiq.load_clip("test-tiny", device="cpu")
    m16, _ = clipiq.load_clip("test-tiny", device="cpu", precision="bf16")
    assert m16.dtype == torch.bfloat16
    x = pre.prepare(torch.rand(8, 3, 224, 224))
    with torch.inference_mode():
        a = m32.encode_image(x, normalize=True)
        b = m16.encode_image(x, normalize=True).float()
    cos = (a * b).sum(-1)
    assert cos.min() > 0.99


def test_precision_and_device_errors():
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        clipiq.load_clip("test-tiny", device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        clipiq.load_clip("test-tiny", device="cpu", precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            clipiq.load_clip("test-tiny", device="cuda")
    with pytest.raises(ValueError, match="unknown CLIP architecture|unknown"):
        clipiq.load_clip("ViT-Q-99", device="cpu")
    with pytest.raises(ValueError, match="needs weights"):
        clipiq.load_clip("ViT-B-32", device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    cpu, pre = clipiq.load_clip("test-tiny", device="cpu")
    gpu, _ = clipiq.load_clip("test-tiny", device="cuda")
    x = pre.prepare(torch.rand(2, 3, 224, 224))
    torch.testing.assert_close(gpu.encode_image(x.cuda()).cpu(), cpu.encode_image(x), atol=1e-4, rtol=1e-4)


def test_preprocess_views_and_patch_grid(tiny):
    _, pre = tiny
    x = torch.rand(2, 3, 500, 333)
    assert pre.resize(x, "resize").shape[-2:] == (224, 224)
    assert pre.resize(x, "center_crop").shape[-2:] == (224, 224)
    s = pre.resize(x, "shortest")
    assert min(s.shape[-2:]) >= 224 - 16 and s.shape[-1] % 16 == 0 and s.shape[-2] % 16 == 0
    n = pre.resize(x, "native")
    assert n.shape[-2:] == (496, 320)
    tiles = pre.patches(x, 224, 64)
    # rows: 0,64,128,192,256 and the border 276 -> 6; cols: 0,64 and the border 109 -> 3
    assert tiles.shape == (2, 18, 3, 224, 224)
    torch.testing.assert_close(tiles[:, 0], x[..., :224, :224])
    torch.testing.assert_close(tiles[:, -1], x[..., -224:, -224:])
    normed = pre.normalize(torch.ones(1, 3, 4, 4))
    torch.testing.assert_close(normed[0, :, 0, 0], (1 - torch.tensor(pre.cfg.mean)) / torch.tensor(pre.cfg.std))
    with pytest.raises(ValueError, match="unknown resize mode"):
        pre.resize(x, "zoom")
    with pytest.raises(ValueError, match="float"):
        pre.normalize(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
