"""CLIP BPE tokenizer: exact id parity with transformers' CLIPTokenizer, padding, truncation, decode."""

from __future__ import annotations

import gzip
import json
from importlib import resources

import pytest
import torch

from clipiq.clip.tokenizer import Tokenizer, default_tokenizer, tokenize

SOT, EOT = 49406, 49407

PROMPTS = [
    "Good photo.",
    "Bad photo.",
    "a photo of a cat",
    "A high quality photo.",
    "A low quality, blurry photo!",
    "What's this? It's a dog; isn't it... (maybe)",
    "they'll say we've done it, I'm sure you'd agree",
    "ISO 3200, f/2.8, 1/250s -- 24mm @ 100%",
    "3.14159 and 2024-01-31 at 12:30",
    "café, naïve façade, Ångström, Übermensch",
    "cafe\u0301 (decomposed accent)",
    "emoji 🐱😀👍 and ✨sparkles✨",
    "JPEG-compressed",
    "JPEG compression artifacts, ringing & blocking",
    "MiXeD CaSe TeXt WiTh CAPS",
    "   extra   whitespace\tand\ttabs\nand newlines   ",
    "under_score snake_case and #hashtag @mention",
    "a photo with <|endoftext|> inside",
    "",
    " ".join(["a very long caption about a noisy, low-light photo of a street at night"] * 8),
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return default_tokenizer()


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    """transformers' CLIPTokenizer built from the same gz file, vocabulary assembled as CLIP does."""
    transformers = pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    raw = resources.files("clipiq.clip").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    merges = gzip.decompress(raw).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = tmp_path_factory.mktemp("hf_clip_tokenizer")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("text", PROMPTS)
def test_ids_match_transformers(tok, hf_tok, text):
    ref = hf_tok(text)["input_ids"]
    assert ref[0] == SOT and ref[-1] == EOT  # HF adds both; compare our ids inside them
    assert tok.encode(text) == ref[1:-1]


def test_tokenize_rows_match_transformers(tok, hf_tok):
    short = [p for p in PROMPTS if len(hf_tok(p)["input_ids"]) <= 77]
    out = tokenize(short)
    for row, text in zip(out, short):
        ref = hf_tok(text)["input_ids"]
        assert row[: len(ref)].tolist() == ref
        assert torch.all(row[len(ref) :] == 0)


def test_known_clip_ids(tok):
    # The ids every CLIP implementation gives for this prompt ('a'=320, 'photo'=1125, 'of'=539, 'cat'=2368).
    assert tokenize("a photo of a cat")[0, :7].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT]


def test_vocab_and_special_tokens(tok):
    assert tok.vocab_size == 49408
    assert tok.sot_token_id == SOT and tok.eot_token_id == EOT
    assert tok.encode("<|startoftext|>") == [SOT]


def test_shape_dtype_and_padding(tok):
    out = tokenize(["a photo", "a much longer photo caption here", ""])
    assert out.shape == (3, 77) and out.dtype == torch.long
    for row, text in zip(out, ["a photo", "a much longer photo caption here", ""]):
        n = len(tok.encode(text))
        assert row[0] == SOT and row[n + 1] == EOT
        assert torch.all(row[n + 2 :] == 0)
    single = tokenize("a photo")
    assert single.shape == (1, 77) and torch.equal(single[0], out[0])
    assert tokenize([]).shape == (0, 77)
    assert tok(["a photo"], context_length=10).shape == (1, 10)


def test_truncation_keeps_eot_last(tok):
    text = PROMPTS[-1]
    ids = tok.encode(text)
    assert len(ids) > 75
    row = tokenize(text)[0]
    assert row[0] == SOT and row[-1] == EOT
    assert row[1:-1].tolist() == ids[:75]
    short = tok(text, context_length=8)[0]
    assert short.tolist() == [SOT, *ids[:6], EOT]


def test_too_long_without_truncation_raises_naming_text(tok):
    with pytest.raises(ValueError, match="a very long caption") as info:
        tokenize(["ok", PROMPTS[-1]], truncate=False)
    assert "context_length=77" in str(info.value)
    tokenize(PROMPTS[0], truncate=False)  # short text is fine


@pytest.mark.parametrize(
    "text", ["a photo of a cat", "good photo", "a blurry noisy photo with jpeg artifacts", "café"]
)
def test_decode_round_trip(tok, text):
    assert tok.decode(tokenize(text)[0]) == text
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", PROMPTS[:12])
def test_decode_matches_transformers(tok, hf_tok, text):
    # Every pre-token ends a word, so "photo." decodes as "photo ." in both implementations.
    ids = tok.encode(text)
    assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)


def test_decode_keeps_special_tokens_when_asked(tok):
    ids = tokenize("a cat", context_length=6)[0].tolist()
    assert tok.decode(ids, skip_special_tokens=False).startswith("<|startoftext|>a cat <|endoftext|>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([49408])


def test_cleaning(tok):
    base = tok.encode("fish & chips")
    assert tok.encode("fish &amp; chips") == base
    assert tok.encode("fish &amp;amp; chips") == base  # unescaped twice, as CLIP does
    assert tok.encode("  FISH\t&\n chips  ") == base
    assert tok.encode("it\u2019s \u201cgood\u201d") == tok.encode("it's \"good\"")
    assert tok.encode("\ufb01ne \uff21\uff22") == tok.encode("fine ab")  # ligature, full-width
    assert tok.encode("red\x1b[31m text\x07") == tok.encode("red text")


def test_input_type_errors():
    with pytest.raises(TypeError, match="int"):
        tokenize(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\].*NoneType"):
        tokenize(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="context_length"):
        tokenize("a", context_length=1)
    with pytest.raises(TypeError, match="context_length"):
        tokenize("a", context_length=7.5)  # type: ignore[arg-type]


def test_explicit_vocab_path_and_bad_file(tmp_path):
    path = tmp_path / "bpe.txt.gz"
    path.write_bytes(resources.files("clipiq.clip").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes())
    assert Tokenizer(path).encode("a photo of a cat") == default_tokenizer().encode("a photo of a cat")
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"#version: 0.2\ni n\n"))
    with pytest.raises(ValueError, match="not a CLIP BPE merges file"):
        Tokenizer(bad)


def test_default_tokenizer_is_shared():
    assert default_tokenizer() is default_tokenizer()
