"""Shared prompt pieces: phrase prompts (CLIP-IQA+, RSFIQA) and the text-feature cache (every prompted method)."""

from __future__ import annotations

import pytest
import torch

from clipiq.clip.prompts import TextFeatureCache, phrase_prompts, split_phrase


def test_split_phrase():
    assert split_phrase("Good photo.") == ("Good", "photo", ".")
    assert split_phrase("a sharp image") == ("a sharp", "image", "")
    with pytest.raises(ValueError, match="context words"):
        split_phrase("photo.")
    with pytest.raises(ValueError, match="no letters"):
        split_phrase("Good ...")


def test_phrase_prompts_start_at_the_phrase():
    from clipiq.clip.load import load_clip
    from clipiq.clip.tokenizer import tokenize

    tiny_clip, _ = load_clip("test-tiny")
    prompts = phrase_prompts(tiny_clip, "Good photo.")
    with torch.no_grad():
        learnt = prompts(tiny_clip)
        fixed = tiny_clip.encode_text(tokenize(["Good photo."]), normalize=True)
    assert prompts.n_ctx == 1
    assert torch.allclose(learnt, fixed, atol=1e-5)


def test_text_feature_cache_follows_its_tensors():
    weight = torch.nn.Parameter(torch.ones(3))
    calls = []

    def compute():
        calls.append(1)
        return weight * 2

    cache = TextFeatureCache()
    with torch.no_grad():
        first = cache.get(False, [weight], compute)
        assert cache.get(False, [weight], compute) is first and len(calls) == 1
        weight.add_(1.0)  # an optimiser step: in place, new version
        assert torch.equal(cache.get(False, [weight], compute), torch.full((3,), 4.0)) and len(calls) == 2
        cache.get(True, [weight], compute)  # training: never from the cache
        assert len(calls) == 3
        weight.data = weight.data.double()  # what Module.to(dtype) does: same object, new storage
        assert cache.get(False, [weight], compute).dtype == torch.float64 and len(calls) == 4
    out = cache.get(False, [weight], compute)  # autograd recording: fresh, with its graph
    assert out.requires_grad and len(calls) == 5
    cache.clear()
    with torch.no_grad():
        cache.get(False, [weight], compute)
    assert len(calls) == 6


def test_text_feature_cache_with_inference_tensors_computes_afresh():
    with torch.inference_mode():
        layer = torch.nn.Linear(2, 2)  # built under inference mode: no version counter
        cache = TextFeatureCache()
        a = cache.get(False, layer.parameters(), lambda: layer.weight.sum())
        b = cache.get(False, layer.parameters(), lambda: layer.weight.sum())
    assert torch.equal(a, b)
