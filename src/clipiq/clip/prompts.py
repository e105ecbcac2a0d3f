"""Learnable prompts that plug into the backbone's hooks (CoOp context vectors, deep per-layer prompts).

These modules hold only prompt parameters; the CLIP they drive is passed in at call time and stays
frozen and shared, so a method never copies the backbone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from clipiq.clip.model import CLIP, PromptList
from clipiq.clip.tokenizer import tokenize

# CoOp's placeholder: "X" is one BPE token, so n placeholders reserve exactly n positions after SOT.
_PLACEHOLDER = "X"


class TextPrompts(nn.Module):
    """CoOp: ``n_ctx`` learnable context vectors in front of each class name, shared by all classes.

    ``init`` is "random" (normal, std 0.02) or a phrase of exactly ``n_ctx`` tokens (e.g. "a photo of a")
    whose token embeddings start the context. Calling it runs the text tower and returns one
    embedding per class, optionally with deep prompts for the later layers (which replace the
    context slot, so the end-of-text position does not move).
    """

    def __init__(self, clip: CLIP, classnames: Sequence[str], n_ctx: int = 8, init: str = "random",
                 suffix: str = "."):
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1, got {n_ctx}")
        if not classnames or not all(isinstance(c, str) and c.strip() for c in classnames):
            raise ValueError(f"classnames must be non-empty strings, got {classnames!r}")
        self.classnames = list(classnames)
        self.n_ctx = n_ctx
        texts = [" ".join([_PLACEHOLDER] * n_ctx) + f" {c}{suffix}" for c in self.classnames]
        tokens = tokenize(texts)
        width = clip.text.width
        with torch.no_grad():
            emb = clip.text.embed(tokens.to(clip.device)).float().cpu()
        if init == "random":
            ctx = torch.randn(n_ctx, width) * 0.02
        else:
            init_tokens = tokenize([init])[0]
            n_init = int(init_tokens.argmax()) - 1
            if n_init != n_ctx:
                raise ValueError(f"init phrase {init!r} is {n_init} tokens; it must be exactly n_ctx={n_ctx}")
            with torch.no_grad():
                ctx = clip.text.embed(init_tokens[None].to(clip.device)).float().cpu()[0, 1 : 1 + n_ctx]
        self.ctx = nn.Parameter(ctx)
        # Frozen pieces of the embedded prompts: SOT before the context, class name and padding after.
        self.register_buffer("prefix", emb[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", emb[:, 1 + n_ctx :].clone(), persistent=False)
        self.register_buffer("eot_index", tokens.argmax(dim=-1), persistent=False)

    def embeddings(self, ctx: Tensor | None = None) -> Tensor:
        """The prompt embedding sequences (C, 77, W) with the context (``ctx``, default the own) in place."""
        n = len(self.classnames)
        ctx = (self.ctx if ctx is None else ctx).unsqueeze(0).expand(n, -1, -1)
        return torch.cat([self.prefix.to(ctx.dtype), ctx, self.suffix.to(ctx.dtype)], dim=1)

    def forward(self, clip: CLIP, deep_prompts: PromptList | None = None, normalize: bool = True,
                ctx: Tensor | None = None) -> Tensor:
        """Class text embeddings (C, embed_dim); ``deep_prompts[i]`` replaces the context slot at layer i.

        ``ctx`` (n_ctx, W) stands in for the own context, e.g. the context after a learnt projection.
        """
        x = self.embeddings(ctx).to(clip.dtype)
        if deep_prompts is not None and len(deep_prompts) and deep_prompts[0] is not None:
            raise ValueError("deep_prompts[0] must be None: layer 0 already holds the learnable context")
        out = clip.text.forward_embeds(x, self.eot_index, deep_prompts=deep_prompts, n_prompts=self.n_ctx).pooled
        return nn.functional.normalize(out, dim=-1) if normalize else out


def split_phrase(phrase: str) -> tuple[str, str, str]:
    """'Good photo.' -> ('Good', 'photo', '.'): the context words, the class word and its punctuation."""
    words = phrase.split()
    if len(words) < 2:
        raise ValueError(f"a prompt phrase needs context words before its class word, got {phrase!r}")
    word = words[-1].rstrip(".!?,;:")
    if not word:
        raise ValueError(f"the last word of {phrase!r} has no letters")
    return " ".join(words[:-1]), word, words[-1][len(word) :]


def phrase_prompts(clip: CLIP, phrase: str) -> TextPrompts:
    """CoOp prompts for one phrase: learnable context starting at its leading words ("Good"), then the fixed
    last word ("photo") and its punctuation, as CLIP-IQA+ learns its antonym pair."""
    context, word, suffix = split_phrase(phrase)
    n_ctx = int(tokenize([context])[0].argmax()) - 1  # BPE tokens between start and end of text
    return TextPrompts(clip, [word], n_ctx=n_ctx, init=context, suffix=suffix)


class TextFeatureCache:
    """Text features kept between calls while nothing they are computed from changes.

    A prompted method's class embeddings depend only on its parameters, so inference computes them once. The
    key is each given tensor's identity, version, storage and dtype: optimiser steps and ``load_state_dict``
    change a tensor in place, which bumps its version and retires the entry, and ``.to()`` moves its storage.
    Nothing is cached in training mode or while autograd records, where the features must carry their graph.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple, Tensor, tuple[Tensor, ...]] | None = None

    def get(self, training: bool, tensors: Iterable[Tensor], compute: Callable[[], Tensor]) -> Tensor:
        """The cached features, or ``compute()`` (stored when not ``training`` and no grad is recorded)."""
        tensors = tuple(tensors)
        # Inference tensors have no version counter to tell an update by: computed afresh.
        if training or torch.is_grad_enabled() or any(torch.is_inference(t) for t in tensors):
            return compute()
        # ``Module.to()`` swaps a parameter's storage without a new version: the data pointer, dtype and device
        # see it; the entry keeps the tensors alive, so a freed storage's address cannot come back under a key.
        key = tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)
        if self._entry is None or self._entry[0] != key:
            self._entry = (key, compute(), tuple(t.detach() for t in tensors))
        return self._entry[1]

    def clear(self) -> None:
        """Forget the stored features."""
        self._entry = None


class DeepPrompts(nn.Module):
    """Learnable prompt tokens for layers ``0..depth-1`` of one tower (VPT-deep / MaPLe style).

    ``length`` tokens per layer; with ``proj_dim`` the tokens live in that size and a linear
    projection (plus dropout) maps them to the tower width, as in VPT's projected variant.
    ``init`` is "normal" (tokens N(0, init_std^2), PyTorch's default projection) or "vpt" (VPT's: tokens
    uniform in +-sqrt(6 / (3 * patch_size^2 + dim)), the Xavier bound of a patch embedding with the prompt's
    size as fan-out; projection weight Kaiming-normal with fan-out, bias zero).
    Returns the list the towers' ``deep_prompts`` hook takes.
    """

    def __init__(self, depth: int, length: int, width: int, proj_dim: int | None = None, dropout: float = 0.0,
                 init_std: float = 0.02, init: str = "normal", patch_size: int | None = None):
        super().__init__()
        if depth < 1 or length < 1:
            raise ValueError(f"depth and length must be at least 1, got depth={depth}, length={length}")
        if init not in ("normal", "vpt") or (init == "vpt" and not patch_size):
            raise ValueError(f"init must be 'normal' or 'vpt' (with patch_size), got {init!r}, "
                             f"patch_size={patch_size}")
        dim = proj_dim or width
        self.tokens = nn.Parameter(torch.randn(depth, length, dim) * init_std)
        self.proj = nn.Linear(dim, width) if proj_dim else None
        self.dropout = nn.Dropout(dropout)
        if init == "vpt":
            bound = math.sqrt(6.0 / (3 * int(patch_size) ** 2 + dim))
            nn.init.uniform_(self.tokens, -bound, bound)
            if self.proj is not None:
                nn.init.kaiming_normal_(self.proj.weight, mode="fan_out")
                nn.init.zeros_(self.proj.bias)

    @property
    def depth(self) -> int:
        """Number of layers that receive prompts."""
        return self.tokens.shape[0]

    def forward(self) -> list[Tensor]:
        """Per-layer prompt tokens, each (length, width)."""
        t = self.proj(self.tokens) if self.proj is not None else self.tokens
        return list(self.dropout(t).unbind(0))


def prompt_probabilities(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Softmax over classes of cosine similarities times exp(logit_scale) (N, C), in fp32.

    ``logit_scale`` is CLIP's log-temperature parameter (``clip.logit_scale``). The head runs in fp32
    because bf16 rounding of the logits costs ranking fidelity.
    """
    img = nn.functional.normalize(image_features.float(), dim=-1)
    txt = nn.functional.normalize(text_features.float(), dim=-1)
    scale = torch.as_tensor(logit_scale, device=img.device).float().exp()
    return (scale * img @ txt.t()).softmax(dim=-1)


__all__ = ["DeepPrompts", "TextFeatureCache", "TextPrompts", "phrase_prompts", "prompt_probabilities", "split_phrase"]
