"""clipiq.segment region descriptions: the clip describer (pooling, thresholds), the MLLM describer's prompt,
parser and fallback (end to end on a tiny random Qwen2.5-VL built here), the registry and input errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import clipiq
from clipiq.core.errors import ConfigError, UnknownNameError, WeightsError
from clipiq.segment import (
    CONTENT_WORDS,
    DIMENSIONS,
    LEVELS,
    THRESHOLDS,
    ClipDescriber,
    RegionDescription,
    create_describer,
    list_describers,
)
from clipiq.segment.describe import levels_from_probabilities, region_means, sentence


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return clipiq.load_clip("test-tiny", device="cpu")


@pytest.fixture(scope="module")
def describer(tiny) -> ClipDescriber:
    clip, preprocess = tiny
    return create_describer("clip", clip=clip, preprocess=preprocess)


def _image(h: int = 48, w: int = 64) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))


def _quadrants(h: int = 48, w: int = 64) -> torch.Tensor:
    """Labels 0..3: top-left, top-right, bottom-left, bottom-right (split at 16 / 32 px, on patch borders)."""
    labels = torch.zeros(h, w, dtype=torch.int64)
    labels[:, 32:] = 1
    labels[16:] += 2
    return labels


def test_registry() -> None:
    assert list_describers() == ["clip", "mllm"]
    with pytest.raises(UnknownNameError, match="clip"):
        create_describer("clipp")
    with pytest.raises(ConfigError, match="unknown option.*colour.*known:"):
        create_describer("clip", colour=1)
    with pytest.raises(ConfigError, match="weights=FOLDER"):
        create_describer("mllm")


def test_thresholds_monotonic() -> None:
    p = torch.linspace(0, 1, 1001)
    levels = levels_from_probabilities(p)
    assert levels.dtype == torch.int64
    assert torch.all(levels[1:] >= levels[:-1])
    assert levels.min() == 0 and levels.max() == len(LEVELS) - 1
    edges = torch.tensor([0.0, 0.19, 0.2, 0.39, 0.4, 0.59, 0.6, 0.79, 0.8, 1.0])
    assert levels_from_probabilities(edges).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert THRESHOLDS == (0.2, 0.4, 0.6, 0.8)


def test_sentence_names_levels() -> None:
    lv = {"colour": 1, "noise": 3, "artifacts": 2, "blur": 1, "overall": 2}
    expected = "a region of sky with good colour, poor noise, fair artifacts, good blur; overall fair"
    assert sentence(lv, "sky") == expected
    assert sentence(lv, None).startswith("a region with good colour")


def test_clip_describer_output(describer) -> None:
    out = describer(_image(), _quadrants())
    assert len(out) == 4
    for d in out:
        assert isinstance(d, RegionDescription)
        assert tuple(d.levels) == DIMENSIONS
        assert all(0 <= v < len(LEVELS) for v in d.levels.values())
        assert d.content in CONTENT_WORDS
        assert d.sentence == sentence(d.levels, d.content)
        for dim in DIMENSIONS:
            assert LEVELS[d.levels[dim]] in d.sentence
    # No content words: no content.
    clip, preprocess = describer._clip, describer._preprocess
    bare = create_describer("clip", clip=clip, preprocess=preprocess, content_words=())
    assert all(d.content is None for d in bare(_image(), _quadrants()))


def test_clip_describer_pools_probability_maps(describer, monkeypatch) -> None:
    h, w = 48, 64
    labels = _quadrants(h, w)
    maps = torch.zeros(len(DIMENSIONS), h, w)
    # Region 0: uniform 0.1 -> excellent; region 1: half 0.1, half 0.5 (mean 0.3) -> good;
    # region 2: uniform 0.5 -> fair; region 3: half 0.85, half 0.95 (mean 0.9) -> bad. "noise" is inverted.
    maps[:, :16, :32] = 0.1
    maps[:, :16, 32:48], maps[:, :16, 48:] = 0.1, 0.5
    maps[:, 16:, :32] = 0.5
    maps[:, 16:32, 32:], maps[:, 32:, 32:] = 0.85, 0.95
    maps[1] = 1.0 - maps[1]
    calls = []
    real = describer.dense

    def fake(image):
        calls.append(1)
        return maps, real(image)[1]

    monkeypatch.setattr(describer, "dense", fake)
    out = describer(_image(h, w), labels)
    assert len(calls) == 1  # dense maps once per image, shared by all regions
    expected = [0, 1, 2, 4]
    for region, d in enumerate(out):
        assert d.levels["colour"] == d.levels["blur"] == d.levels["overall"] == expected[region]
        assert d.levels["noise"] == 4 - expected[region]
    assert region_means(maps, labels, 4)[:, 0].tolist() == pytest.approx([0.1, 0.3, 0.5, 0.9])


def test_clip_describer_pools_features(describer) -> None:
    image = _image()
    maps, feats = describer.dense(image)
    assert maps.shape == (5, 48, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    # Quadrant 0 covers patch cells rows 0, cols 0..1 (patch 16): the pooled embedding is their mean.
    pooled = describer.pooled_features(feats, _quadrants(), 4)
    manual = torch.nn.functional.normalize(feats[:, 0, :2].mean(dim=1), dim=0)
    assert torch.allclose(pooled[0], manual, atol=1e-5)
    # A region that covers part of a cell weighs the cell by its pixels there.
    labels = torch.zeros(48, 64, dtype=torch.int64)
    labels[:, 8:] = 1
    pooled = describer.pooled_features(feats, labels, 2)
    assert torch.allclose(pooled[0], torch.nn.functional.normalize(feats[:, :, 0].mean(dim=1), dim=0), atol=1e-5)
    cells = torch.full((3, 4), 16.0 * 16)
    cells[:, 0] = 16 * 8
    manual = torch.nn.functional.normalize((feats * cells).sum(dim=(1, 2)), dim=0)
    assert torch.allclose(pooled[1], manual, atol=1e-5)


def test_clip_describer_hybrid_backbone_and_options() -> None:
    clip, preprocess = clipiq.load_clip("test-tiny-hybrid", device="cpu")
    d = create_describer("clip", clip=clip, preprocess=preprocess, thresholds=(0.1, 0.2, 0.3, 0.4),
                         content_words={"sky": "the sky", "wall": "a wall"})
    out = d(_image(32, 32), torch.zeros(32, 32, dtype=torch.int64))
    assert len(out) == 1 and out[0].content in ("sky", "wall")
    with pytest.raises(ConfigError, match="thresholds"):
        create_describer("clip", clip=clip, preprocess=preprocess, thresholds=(0.5, 0.2, 0.6, 0.8))
    with pytest.raises(ConfigError, match="content word"):
        create_describer("clip", clip=clip, preprocess=preprocess, content_words=("spaceship",))
    with pytest.raises(ConfigError, match="both clip= and preprocess="):
        create_describer("clip", clip=clip)
    with pytest.raises(ConfigError, match="radius"):
        create_describer("clip", clip=clip, preprocess=preprocess, radius=0)


def test_bad_input(describer) -> None:
    image = _image()
    with pytest.raises(ValueError, match="do not match the image size"):
        describer(image, torch.zeros(48, 32, dtype=torch.int64))
    gap = _quadrants()
    gap[gap == 2] = 3
    with pytest.raises(ValueError, match="consecutive"):
        describer(image, gap)
    with pytest.raises(ValueError, match="consecutive"):
        describer(image, _quadrants() + 1)
    with pytest.raises(ValueError, match="integer"):
        describer(image, _quadrants().float())
    with pytest.raises(ValueError, match=r"\(3,H,W\)"):
        describer(image[None], _quadrants())


# ---------------------------------------------------------------------------------------------------- mllm


def test_parse_answer() -> None:
    from clipiq.segment.describe_mllm import parse_answer

    ok = "colour: good; noise: poor; artifacts: fair; blur: excellent; overall: bad; content: sky"
    assert parse_answer(ok) == ({"colour": 1, "noise": 3, "artifacts": 2, "blur": 0, "overall": 4}, "sky")
    messy = "Overall Quality = FAIR,\n  BLUR:good  Color : Excellent; compression artifacts- bad;NOISE:poor"
    assert parse_answer(messy) == ({"overall": 2, "blur": 1, "colour": 0, "artifacts": 4, "noise": 3}, None)
    assert parse_answer("colour: good; noise: fair; blur: banana") == ({"colour": 1, "noise": 2}, None)
    assert parse_answer("I cannot see the image [UNK] [PAD]") == ({}, None)
    assert parse_answer("") == ({}, None)


def test_region_crop() -> None:
    from clipiq.segment.describe_mllm import region_crop

    image = torch.rand(3, 60, 80)
    mask = torch.zeros(60, 80, dtype=torch.bool)
    mask[10:50, 20:70] = True
    mask[10:20, 20:30] = False
    crop = region_crop(image, mask)
    assert crop.shape == (3, 40, 50)
    assert torch.equal(crop[:, 10:, 10:], image[:, 20:50, 30:70])
    assert torch.all(crop[:, :10, :10] == 0.5)
    small = torch.zeros(60, 80, dtype=torch.bool)
    small[5:9, 5:19] = True
    assert region_crop(image, small).shape == (3, 28, 98)


def _tiny_qwen(folder: Path) -> Path:
    """A random Qwen2.5-VL (a few k parameters), a WordLevel tokenizer and the PIL image processor, saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    specials = ["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    words = ["colour", "noise", "artifacts", "blur", "overall", "content", "excellent", "good", "fair", "poor", "bad",
             "sky", ":", ";"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="<|im_end|>")
    torch.manual_seed(0)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, bos_token_id=2, eos_token_id=3,
                         pad_token_id=1),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=6, video_token_id=0, vision_start_token_id=4, vision_end_token_id=5,
    )
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mllm(tmp_path_factory, tiny):
    pytest.importorskip("transformers")
    folder = _tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))
    clip, preprocess = tiny
    return create_describer("mllm", weights=str(folder), max_new_tokens=4, clip=clip, preprocess=preprocess)


def test_mllm_prompt(mllm) -> None:
    import sys

    from clipiq.segment.describe_mllm import region_crop

    inputs = mllm.build_inputs(region_crop(_image(), _quadrants() == 1))
    ids = inputs["input_ids"][0].tolist()
    cfg = mllm._config
    grid = inputs["image_grid_thw"][0]
    assert ids.count(cfg.image_token_id) == int(grid.prod()) // 4 == inputs["pixel_values"].shape[0] // 4
    start = ids.index(cfg.vision_start_token_id)
    assert ids[start + 1 + ids.count(cfg.image_token_id)] == cfg.vision_end_token_id
    assert "torchvision" not in sys.modules


def test_mllm_fallback_on_garbage(mllm, caplog) -> None:
    image, labels = _image(), _quadrants()
    with caplog.at_level(logging.WARNING, logger="clipiq.segment.describe_mllm"):
        out = mllm(image, labels)
    assert len(out) == 4
    expected = mllm.fallback()(image, labels)  # a random model's answer does not parse: all from clip
    assert [d.levels for d in out] == [d.levels for d in expected]
    assert "using the clip describer" in caplog.text


def test_mllm_parse_path(mllm, monkeypatch, caplog) -> None:
    # The tiny tokenizer knows only lower-case words, so the answers come back spaced ("colour : good ; ...").
    answers = iter([
        "colour: good; noise: poor; artifacts: fair; blur: excellent; overall: bad; content: sky",
        "blur: poor; overall: fair; colour:excellent; noise: good; artifacts: good",
        "colour: bad; noise: bad",  # partial: the rest from clip
    ])
    real_generate = mllm._model.generate

    def fake_generate(**inputs):
        assert inputs["input_ids"].shape[0] == 1 and not inputs["do_sample"]
        real_generate(**{**inputs, "max_new_tokens": 1})  # the real inputs still go through the model
        answer = mllm._tokenizer(next(answers), add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([inputs["input_ids"], answer], dim=1)

    monkeypatch.setattr(mllm._model, "generate", fake_generate)
    labels = torch.zeros(48, 64, dtype=torch.int64)
    labels[:, 20:] = 1
    labels[30:, 40:] = 2
    image = _image()
    with caplog.at_level(logging.WARNING, logger="clipiq.segment.describe_mllm"):
        out = mllm(image, labels)
    assert out[0].levels == {"colour": 1, "noise": 3, "artifacts": 2, "blur": 0, "overall": 4}
    assert out[0].content == "sky"
    assert out[0].sentence == ("a region of sky with good colour, poor noise, fair artifacts, excellent blur; "
                               "overall bad")
    assert out[1].levels == {"colour": 0, "noise": 1, "artifacts": 1, "blur": 3, "overall": 2}
    backup = mllm.fallback()(image, labels)[2]
    assert out[2].levels == {"colour": 4, "noise": 4, "artifacts": backup.levels["artifacts"],
                             "blur": backup.levels["blur"], "overall": backup.levels["overall"]}
    assert "region 2" in caplog.text and "region 0" not in caplog.text


def test_mllm_bad_weights(tmp_path) -> None:
    with pytest.raises(WeightsError, match="config.json"):
        create_describer("mllm", weights=str(tmp_path))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        create_describer("mllm", weights=str(tmp_path), max_new_tokens=0)


def test_mllm_llava_end_to_end(tmp_path, tiny, caplog) -> None:
    """LLaVA goes through CLIPImageProcessorPil and one <image> token per patch (2x2 for a 28 px, 14 px-patch tower)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "<s>", "</s>", "<image>", "colour", "good"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                            eos_token="</s>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=2, eos_token_id=3, pad_token_id=1),
        image_token_id=4, vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(cfg).save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    clip, preprocess = tiny
    d = create_describer("mllm", weights=str(tmp_path), max_new_tokens=3, clip=clip, preprocess=preprocess)
    inputs = d.build_inputs(_image(40, 50))
    assert inputs["pixel_values"].shape == (1, 3, 28, 28)
    assert int((inputs["input_ids"] == 4).sum()) == 4 and int(inputs["input_ids"][0, 0]) == 2
    labels = torch.zeros(48, 64, dtype=torch.int64)
    labels[:, 40:] = 1
    with caplog.at_level(logging.WARNING, logger="clipiq.segment.describe_mllm"):
        out = d(_image(), labels)
    assert [x.levels for x in out] == [x.levels for x in d.fallback()(_image(), labels)]
