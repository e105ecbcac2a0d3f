"""CLIP's byte-level BPE tokenizer (49408 tokens, context length 77).

Same vocabulary, pre-tokenisation and merge rules as OpenAI's ``SimpleTokenizer``, so token ids
match the published CLIP text towers. Text cleaning differs in one documented way: ``ftfy`` is not
a dependency, so instead of ``ftfy.fix_text`` we apply the subset of its default fixes that matter
for prompts (NFC normalisation, removal of terminal escapes and control characters, curly quotes to
straight quotes, Latin ligatures and full-width ASCII to plain ASCII). ftfy's mojibake repair
(e.g. ``"cafÃ©"`` back to ``"café"``) is not reproduced; such text tokenizes as written.
"""

from __future__ import annotations

import functools
import gzip
import html
import logging
import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import regex
import torch

__all__ = ["Tokenizer", "tokenize", "default_tokenizer"]

logger = logging.getLogger(__name__)

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
_END_OF_WORD = "</w>"
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps 49408 - 256 bytes - 256 end-of-word bytes - 2 special tokens = 48894 merges.
_NUM_MERGES = 49408 - 2 * 256 - 2

# CLIP's pre-tokenisation: special tokens, English contractions, letter runs, single digits, and
# runs of anything else that is not whitespace.
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")
_TERMINAL_ESCAPE = regex.compile(r"\x1b\[[0-9;]*[A-Za-z]?")
# Control characters (Unicode category Cc) other than tab, newline and carriage return.
_CONTROL_CHARS = regex.compile(r"[^\P{Cc}\t\n\r]")
_SINGLE_QUOTES = regex.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = regex.compile("[\u201c-\u201f]")
# Latin ligatures (U+FB00..U+FB06) and full-width ASCII (U+FF01..U+FF5E) have NFKC forms that are
# plain ASCII; NFKC is applied to these characters only, as ftfy does, not to the whole text.
_COMPAT_CHARS = regex.compile("[\ufb00-\ufb06\uff01-\uff5e\u3000]")


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, so BPE never sees whitespace or controls."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    # Order matters: the vocabulary lists the printable bytes first, then the remapped ones.
    return {b: mapping[b] for b in printable + [b for b in range(256) if b not in printable]}


def _basic_clean(text: str) -> str:
    """ftfy-lite plus CLIP's double HTML unescape (see the module docstring for what is skipped)."""
    text = _TERMINAL_ESCAPE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _COMPAT_CHARS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _SINGLE_QUOTES.sub("'", text)
    text = _DOUBLE_QUOTES.sub('"', text)
    text = _CONTROL_CHARS.sub("", text)
    # Twice, as CLIP does, so doubly-escaped entities ("&amp;amp;") are decoded too.
    text = html.unescape(html.unescape(text))
    return text.strip()


def _whitespace_clean(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _word_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word, word[1:])}


def _read_merges(bpe_path: str | Path | None) -> list[tuple[str, str]]:
    if bpe_path is None:
        raw = resources.files("clipiq.clip").joinpath(_VOCAB_FILE).read_bytes()
        source = f"clipiq.clip/{_VOCAB_FILE}"
    else:
        raw = Path(bpe_path).read_bytes()
        source = str(bpe_path)
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    # Line 0 is the "#version" header; CLIP uses only the first 48894 merges that follow.
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{source} is not a CLIP BPE merges file (expected {_NUM_MERGES} merge pairs)")
    return merges  # type: ignore[return-value]


class Tokenizer:
    """CLIP byte-level BPE tokenizer; ``tok(texts)`` gives the ``[N, 77]`` LongTensor CLIP expects."""

    def __init__(self, bpe_path: str | Path | None = None, *, cache_size: int = 10_000) -> None:
        merges = _read_merges(bpe_path)
        self._byte_encoder = _bytes_to_unicode()
        self._byte_decoder = {c: b for b, c in self._byte_encoder.items()}
        base = list(self._byte_encoder.values())
        # Same order as CLIP: bytes, bytes at word end, merged pairs, then the two special tokens.
        vocab = [*base, *(c + _END_OF_WORD for c in base), *("".join(m) for m in merges)]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self._ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.sot_token_id: int = self.encoder[SOT_TOKEN]
        self.eot_token_id: int = self.encoder[EOT_TOKEN]
        # Per-instance LRU (not a method decorator, which would keep every instance alive).
        self._bpe_cached = functools.lru_cache(maxsize=cache_size)(self._bpe)

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary (49408 for CLIP)."""
        return len(self.encoder)

    def _bpe(self, token: str) -> tuple[str, ...]:
        if token in (SOT_TOKEN, EOT_TOKEN):
            return (token,)
        word: tuple[str, ...] = (*token[:-1], token[-1] + _END_OF_WORD)
        pairs = _word_pairs(word)
        while pairs:
            best = min(pairs, key=lambda p: self._ranks.get(p, float("inf")))
            if best not in self._ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _word_pairs(word)
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start/end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        text = _whitespace_clean(_basic_clean(text)).lower()
        ids: list[int] = []
        for word in _WORD_PATTERN.findall(text):
            mapped = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe_cached(mapped))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text for ``ids``; with ``skip_special_tokens`` the start token and everything from the end
        token on (the zero padding of a tokenized row) are dropped."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() > 1:
                raise ValueError(f"ids must be one sequence (1-D), got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        pieces: list[str] = []
        for i in ids:
            i = int(i)
            if skip_special_tokens:
                if i == self.eot_token_id:
                    break
                if i == self.sot_token_id:
                    continue
            if i not in self.decoder:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            pieces.append(self.decoder[i])
        text = "".join(pieces)
        # Special tokens are not byte-mapped; keep them literal when they are not skipped.
        out = bytearray()
        for ch in text:
            if ch in self._byte_decoder:
                out.append(self._byte_decoder[ch])
            else:
                out.extend(ch.encode("utf-8"))
        return out.decode("utf-8", errors="replace").replace(_END_OF_WORD, " ").strip()

    def __call__(
        self, texts: str | Sequence[str], context_length: int = 77, truncate: bool = True
    ) -> torch.Tensor:
        """Tokenize to a zero-padded ``[N, context_length]`` LongTensor: start token, ids, end token."""
        texts = _as_text_list(texts)
        if isinstance(context_length, bool) or not isinstance(context_length, int):
            raise TypeError(f"context_length must be an int, got {type(context_length).__name__}")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    shown = text if len(text) <= 80 else text[:77] + "..."
                    raise ValueError(
                        f"text {shown!r} is {len(ids)} tokens long (with start/end tokens), more than "
                        f"context_length={context_length}; pass truncate=True to cut it"
                    )
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id  # CLIP pools the text feature at the end token
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result


def _as_text_list(texts: object) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, Sequence):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        return list(texts)
    raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")


@functools.cache
def default_tokenizer() -> Tokenizer:
    """The shared tokenizer built from the packaged vocabulary (loaded on first use, once)."""
    logger.debug("loading the CLIP BPE vocabulary")
    return Tokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = True) -> torch.Tensor:
    """Tokenize one text or a list of texts with the default CLIP tokenizer, as ``[N, context_length]``."""
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)
