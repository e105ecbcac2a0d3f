"""A compact CLIP (ViT image tower + causal text tower) built for being reached into.

The hooks later methods use, instead of copying the backbone:

* ``VisionTower.embed_patches(x)``: patch tokens with (interpolated) position embeddings, for any size.
* ``VisionTower.forward_tokens(streams, deep_prompts=..., attn_mask=...)``: several token streams
  (e.g. a global view and a local crop) merged behind one class token, with prompt tokens inserted
  after the class token at layer 0 and replaced at later layers (VPT-deep / MaPLe style); ``attn_mask``
  is one mask or one per layer (e.g. region-restricted attention in the last blocks only).
* ``TextTower.embed(tokens)`` and ``TextTower.forward_embeds(x, eot_index, deep_prompts=...)``:
  learnable context vectors in the embedding sequence (CoOp) and per-layer text prompts.

Sequence layout inside both towers: ``[first token (CLS or SOT), prompts..., the rest]``.

A hybrid image tower (``VisionConfig.stem``) replaces the patchify conv with a pretrained, frozen
convolutional stem (EfficientNet-Lite0): its stride-16 map and its upsampled stride-32 head map, each
layer-normalised and then projected to the tower's width, are the patch tokens. Every hook above works
unchanged; ``stem_features`` and ``embed_stem_features`` split ``embed_patches`` so training can cache
the frozen stem's output per crop. With ``VisionConfig.stem_stats`` the stem's per-stage channel statistics,
projected, are added to the class token (``forward`` and ``forward_stem_features`` do it; a caller that runs
``forward_tokens`` itself gets tokens and the addition from ``embed_images`` and passes ``cls_extra=``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip.config import CLIPConfig, TextConfig, VisionConfig
from clipiq.clip.efficientnet import STATS_CHANNELS, EfficientNetLite0, StemMaps, load_lite0_into
from clipiq.clip.stem_cache import StemCache

PromptList = Sequence[Tensor | None]
#: Per-layer attention masks (None = full attention at that layer); see ``Transformer.forward``.
MaskList = Sequence[Tensor | None]


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI's CLIP."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'quick_gelu' or 'gelu'")


class Attention(nn.Module):
    """Multi-head self-attention on scaled_dot_product_attention, fused qkv projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        n, length, width = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out(o.transpose(1, 2).reshape(n, length, width))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(width, hidden))
        self.mlp.add_module("act", _activation(act))
        self.mlp.add_module("fc2", nn.Linear(hidden, width))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal)
        return x + self.mlp(self.ln_2(x))


@dataclass
class TowerOutput:
    """Pooled embedding plus, on request, the per-token outputs and the prompt count."""

    pooled: Tensor
    tokens: Tensor | None = None
    hidden: list[Tensor] | None = None
    n_prompts: int = 0


class Transformer(nn.Module):
    """A stack of blocks with the deep-prompt hook."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        self.width = width
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, act, eps) for _ in range(layers))

    def forward(
        self,
        x: Tensor,
        *,
        attn_mask: Tensor | MaskList | None = None,
        is_causal: bool = False,
        deep_prompts: PromptList | None = None,
        n_prompts: int = 0,
        return_hidden: bool = False,
    ) -> tuple[Tensor, int, list[Tensor] | None]:
        """Run the blocks; at layer i, ``deep_prompts[i]`` (P,W) or (N,P,W) takes the prompt slot.

        The prompt slot is positions ``1 .. 1+n_prompts``. When it is empty the prompts are inserted
        after the first token; otherwise the previous layer's prompt outputs are replaced. A None
        entry (or a list shorter than the depth) lets the current prompt outputs pass through.

        ``attn_mask`` is one mask for every layer, or a sequence with exactly one entry per layer (a mask,
        or None for full attention at that layer), e.g. region-restricted attention in the last layers only.
        Each mask is what ``scaled_dot_product_attention`` takes: boolean (True = may attend) or additive,
        (L,L), or (N,1,L,L) for a per-image mask; L covers [first token, prompts, tokens...].
        Returns the sequence, the final prompt count and, on request, every block's output.
        """
        if deep_prompts is not None and len(deep_prompts) > len(self.blocks):
            raise ValueError(f"deep_prompts has {len(deep_prompts)} entries but the tower has "
                             f"{len(self.blocks)} layers")
        if attn_mask is None or isinstance(attn_mask, Tensor):
            masks: Sequence[Tensor | None] = [attn_mask] * len(self.blocks)
        else:
            masks = list(attn_mask)
            if len(masks) != len(self.blocks):
                raise ValueError(f"attn_mask has {len(masks)} per-layer entries but the tower has "
                                 f"{len(self.blocks)} layers (give one mask, or one entry per layer)")
        hidden: list[Tensor] | None = [] if return_hidden else None
        for i, blk in enumerate(self.blocks):
            if deep_prompts is not None and i < len(deep_prompts) and deep_prompts[i] is not None:
                x = _put_prompts(x, deep_prompts[i], n_prompts)
                n_prompts = deep_prompts[i].shape[-2]
            mask = masks[i]
            if mask is not None and mask.shape[-1] != x.shape[1]:
                raise ValueError(
                    f"attn_mask covers {mask.shape[-1]} tokens but layer {i} sees {x.shape[1]} "
                    "(the mask must cover [first token, prompts, tokens...])"
                )
            x = blk(x, attn_mask=mask, is_causal=is_causal)
            if hidden is not None:
                hidden.append(x)
        return x, n_prompts, hidden


def _put_prompts(x: Tensor, prompts: Tensor, n_present: int) -> Tensor:
    n = x.shape[0]
    if prompts.ndim == 2:
        prompts = prompts.unsqueeze(0).expand(n, -1, -1)
    if prompts.ndim != 3 or prompts.shape[0] != n or prompts.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"prompt tokens must be (P, {x.shape[-1]}) or ({n}, P, {x.shape[-1]}), got {tuple(prompts.shape)}"
        )
    return torch.cat([x[:, :1], prompts.to(x.dtype), x[:, 1 + n_present :]], dim=1)


class VisionTower(nn.Module):
    """ViT image encoder with position-embedding interpolation and merged token streams.

    With ``cfg.stem`` set, the patch tokens come from a frozen pretrained stem (``self.stem``), loaded with
    its ImageNet weights when ``pretrained_stem`` and the tower is not built on the meta device (a checkpoint
    then supplies every weight).
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int, act: str, eps: float, *, pretrained_stem: bool = True):
        super().__init__()
        self.cfg = cfg
        self.patch_size = cfg.patch_size
        self.grid = cfg.image_size // cfg.patch_size
        w = cfg.width
        scale = w**-0.5
        self.stem: EfficientNetLite0 | None = None
        # Set by clipiq.clip.stem_cache.use_stem_cache; not a submodule, so never saved or moved with the tower.
        self.stem_cache: StemCache | None = None
        if cfg.stem is None:
            self.patch_embed: nn.Conv2d | nn.Linear = nn.Conv2d(
                3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False
            )
        else:
            self.stem = EfficientNetLite0(frozen=True)
            # The two maps differ in scale by 10x and more (on a photo the stride-16 map, a linear projection plus
            # residual, has std ~6; the ReLU6 head ~0.5): each is normalised on its own before one projection.
            self.stem_norm16 = nn.LayerNorm(self.stem.s16_channels, eps=eps)
            self.stem_norm32 = nn.LayerNorm(self.stem.head_channels, eps=eps)
            self.patch_embed = nn.Linear(self.stem.s16_channels + self.stem.head_channels, w)
            if cfg.stem_stats:
                self.stats_norm = nn.LayerNorm(2 * STATS_CHANNELS, eps=eps)
                self.stats_proj = nn.Linear(2 * STATS_CHANNELS, w)
                # Starts at zero, so the class token begins as a plain ViT's and the statistics are learnt in.
                nn.init.zeros_(self.stats_proj.weight)
                nn.init.zeros_(self.stats_proj.bias)
            if pretrained_stem and not self.stem.stem.conv.weight.is_meta:
                load_lite0_into(self.stem)
        self.cls_token = nn.Parameter(scale * torch.randn(w))
        self.pos_embed = nn.Parameter(scale * torch.randn(self.grid * self.grid + 1, w))
        self.ln_pre = nn.LayerNorm(w, eps=eps)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_ratio, act, eps)
        self.ln_post = nn.LayerNorm(w, eps=eps)
        self.proj = nn.Parameter(scale * torch.randn(w, embed_dim))

    @property
    def width(self) -> int:
        """Token width of the tower."""
        return self.cfg.width

    def grid_pos_embed(self, gh: int, gw: int) -> Tensor:
        """Patch position embeddings (gh*gw, W), bicubically interpolated when the grid differs."""
        pos = self.pos_embed[1:]
        if (gh, gw) == (self.grid, self.grid):
            return pos
        g = pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        g = F.interpolate(g.float(), size=(gh, gw), mode="bicubic", align_corners=False)
        return g.permute(0, 2, 3, 1).reshape(gh * gw, -1).to(pos.dtype)

    def _check_images(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (N,3,H,W), got {tuple(x.shape)}")
        p = self.patch_size
        if x.shape[-2] < p or x.shape[-1] < p:
            raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} are smaller than one {p}x{p} patch")

    def embed_patches(self, x: Tensor) -> Tensor:
        """Normalised images (N,3,H,W) -> patch tokens (N, gh*gw, W) with position embeddings."""
        if self.stem is not None:
            return self.embed_stem_features(self.stem_features(x))
        self._check_images(x)
        t = self.patch_embed(x.to(self.patch_embed.weight.dtype))
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        return t + self.grid_pos_embed(gh, gw)

    def stem_features(self, x: Tensor) -> StemMaps:
        """Normalised images (N,3,H,W) -> the stem's maps, the first half of ``embed_patches`` (hybrid towers).

        Like a patchify conv, the grid is (H//p, W//p): the remainder rows and columns are cropped first.
        The maps depend only on the frozen stem, so they can be computed once per crop and cached: with a
        :class:`~clipiq.clip.stem_cache.StemCache` attached (``use_stem_cache``), images seen before are not
        run through the stem again.
        """
        if self.stem is None:
            raise ValueError("stem_features needs a hybrid image tower (VisionConfig.stem is None)")
        self._check_images(x)
        p = self.patch_size
        gh, gw = x.shape[-2] // p, x.shape[-1] // p
        x = x[..., : gh * p, : gw * p]
        if self.stem_cache is not None and self.stem.frozen and not x.requires_grad:
            return self.stem_cache.features(x, self.stem, self.stem.features)
        return self.stem.features(x)

    def embed_stem_features(self, maps: StemMaps | tuple[Tensor, Tensor]) -> Tensor:
        """Stem maps from ``stem_features`` (any float dtype) -> patch tokens (N, gh*gw, W) with position embeddings."""
        if self.stem is None:
            raise ValueError("embed_stem_features needs a hybrid image tower (VisionConfig.stem is None)")
        s16, s32 = maps[0], maps[1]
        if s16.ndim != 4 or s32.ndim != 4 or s16.shape[1] != self.stem.s16_channels \
                or s32.shape[1] != self.stem.s32_channels:
            raise ValueError(
                f"stem maps must be (N,{self.stem.s16_channels},gh,gw) and (N,{self.stem.s32_channels},"
                f"ceil(gh/2),ceil(gw/2)), got {tuple(s16.shape)} and {tuple(s32.shape)}"
            )
        gh, gw = s16.shape[-2:]
        if s32.shape[-2:] != ((gh + 1) // 2, (gw + 1) // 2):
            raise ValueError(f"stride-32 map {tuple(s32.shape[-2:])} does not belong to a {gh}x{gw} stride-16 map")
        dtype = self.patch_embed.weight.dtype
        # Channels-last: on the CPU, bilinear upsampling of a contiguous (N,1280,h,w) map was 12x slower (17% of a
        # clipiqa call on v2) and its tokens then needed a copy; channels-last gives the same values bit for bit,
        # and its tokens below are a view.
        head = self.stem.head(s32.to(dtype)).contiguous(memory_format=torch.channels_last)
        # TF 'same' padding puts stride-32 cell i over stride-16 cells 2i and 2i+1, so an exact 2x upsampling
        # (then dropping the padded last row/column of an odd grid) keeps the two maps aligned.
        head = F.interpolate(head, scale_factor=2.0, mode="bilinear", align_corners=False)[..., :gh, :gw]
        t16 = self.stem_norm16(s16.to(dtype).flatten(2).transpose(1, 2))
        t32 = self.stem_norm32(head.flatten(2).transpose(1, 2))
        t = self.patch_embed(torch.cat([t16, t32], dim=-1))
        return t + self.grid_pos_embed(gh, gw)

    def embed_stem_stats(self, maps: StemMaps | Sequence[Tensor]) -> Tensor | None:
        """The class-token addition (N, W) from the stem's stage statistics; None when the tower has none."""
        if not self.cfg.stem_stats:
            return None
        if len(maps) < 3 or maps[2] is None or maps[2].shape[-1] != 2 * STATS_CHANNELS:
            raise ValueError(f"this tower needs the stem's stage statistics (N, {2 * STATS_CHANNELS}) as the third "
                             "entry of the stem maps")
        return self.stats_proj(self.stats_norm(maps[2].to(self.patch_embed.weight.dtype)))

    def embed_images(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Normalised images -> (patch tokens, class-token addition) for ``forward_tokens(tokens, cls_extra=...)``.

        The addition is the projected stem statistics of a hybrid tower with ``stem_stats`` (None otherwise): a
        method that builds its own token streams passes it on, so its class token sees what ``forward`` gives it.
        """
        if self.stem is None:
            return self.embed_patches(x), None
        maps = self.stem_features(x)
        return self.embed_stem_features(maps), self.embed_stem_stats(maps)

    def forward_stem_features(self, maps: StemMaps | Sequence[Tensor], **kwargs) -> TowerOutput:
        """Encode cached stem maps (as ``forward`` encodes images), statistics included when the tower uses them."""
        return self.forward_tokens(self.embed_stem_features(maps), cls_extra=self.embed_stem_stats(maps), **kwargs)

    def freeze_stem(self, frozen: bool = True) -> None:
        """Freeze (the default after construction) or unfreeze a hybrid tower's stem, batch norms included."""
        if self.stem is None:
            raise ValueError("freeze_stem needs a hybrid image tower (VisionConfig.stem is None)")
        self.stem.freeze(frozen)

    def forward_tokens(
        self,
        streams: Tensor | Sequence[Tensor],
        *,
        deep_prompts: PromptList | None = None,
        attn_mask: Tensor | MaskList | None = None,
        return_tokens: bool = False,
        return_hidden: bool = False,
        cls_extra: Tensor | None = None,
        prompts_before_ln_pre: bool = False,
        pre_ln_post: Callable[[Tensor], Tensor] | None = None,
    ) -> TowerOutput:
        """Encode one or several token streams (each (N,L_i,W)) merged behind a single class token.

        ``attn_mask``: one mask for all layers or one entry per layer (see ``Transformer.forward``).
        ``cls_extra`` (N,W), e.g. ``embed_stem_stats(maps)``, is added to the class token.
        ``prompts_before_ln_pre`` inserts layer 0's prompts before ``ln_pre`` (CLIP-DQA's order) instead of after.
        ``pre_ln_post`` (e.g. a trainable norm) maps the final sequence (N,L,W) before ``ln_post``.
        """
        if isinstance(streams, Tensor):
            streams = [streams]
        x = torch.cat(list(streams), dim=1)
        n = x.shape[0]
        cls = (self.cls_token + self.pos_embed[0]).to(x.dtype).expand(n, 1, -1)
        if cls_extra is not None:
            cls = cls + cls_extra.to(x.dtype).unsqueeze(1)
        x = torch.cat([cls, x], dim=1)
        n_prompts = 0
        if prompts_before_ln_pre and deep_prompts is not None and len(deep_prompts) and deep_prompts[0] is not None:
            x = _put_prompts(x, deep_prompts[0], 0)
            n_prompts = deep_prompts[0].shape[-2]
            deep_prompts = [None, *deep_prompts[1:]]
        x = self.ln_pre(x)
        x, n_prompts, hidden = self.transformer(
            x, attn_mask=attn_mask, deep_prompts=deep_prompts, n_prompts=n_prompts, return_hidden=return_hidden
        )
        if pre_ln_post is not None:
            x = pre_ln_post(x)
        pooled = self.ln_post(x[:, 0]) @ self.proj
        tokens = self.ln_post(x[:, 1 + n_prompts :]) @ self.proj if return_tokens else None
        return TowerOutput(pooled, tokens, hidden, n_prompts)

    def forward(self, x: Tensor, **kwargs) -> TowerOutput:
        """Encode normalised images (N,3,H,W) of any size."""
        if self.stem is not None and self.cfg.stem_stats:
            return self.forward_stem_features(self.stem_features(x), **kwargs)
        return self.forward_tokens(self.embed_patches(x), **kwargs)


class TextTower(nn.Module):
    """Causal text transformer pooled at the end-of-text token."""

    def __init__(self, cfg: TextConfig, embed_dim: int, act: str, eps: float):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embed = nn.Embedding(cfg.vocab_size, w)
        self.pos_embed = nn.Parameter(0.01 * torch.randn(cfg.context_length, w))
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_ratio, act, eps)
        self.ln_final = nn.LayerNorm(w, eps=eps)
        self.proj = nn.Parameter(w**-0.5 * torch.randn(w, embed_dim))
        nn.init.normal_(self.token_embed.weight, std=0.02)

    @property
    def width(self) -> int:
        """Token width of the tower."""
        return self.cfg.width

    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids (N,L) -> token embeddings (N,L,W), without position embeddings."""
        return self.token_embed(tokens)

    def forward_embeds(
        self,
        x: Tensor,
        eot_index: Tensor,
        *,
        deep_prompts: PromptList | None = None,
        n_prompts: int = 0,
        return_tokens: bool = False,
        return_hidden: bool = False,
    ) -> TowerOutput:
        """Encode an embedding sequence (N,L,W); ``n_prompts`` context vectors already sit after SOT."""
        if x.ndim != 3 or x.shape[1] > self.cfg.context_length:
            raise ValueError(f"text embeddings must be (N, L<={self.cfg.context_length}, W), got {tuple(x.shape)}")
        x = x + self.pos_embed[: x.shape[1]].to(x.dtype)
        start = n_prompts
        x, n_prompts, hidden = self.transformer(x, is_causal=True, deep_prompts=deep_prompts, n_prompts=n_prompts,
                                                return_hidden=return_hidden)
        x = self.ln_final(x)
        # Inserting prompts (rather than replacing) shifts the end-of-text position.
        idx = eot_index.to(x.device) + (n_prompts - start)
        pooled = x[torch.arange(x.shape[0], device=x.device), idx] @ self.proj
        return TowerOutput(pooled, x @ self.proj if return_tokens else None, hidden, n_prompts)

    def forward(self, tokens: Tensor, **kwargs) -> TowerOutput:
        """Encode token ids (N,L); the end-of-text token has the largest id, so argmax finds it."""
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer tensor (N, L), got {tokens.dtype} {tuple(tokens.shape)}")
        return self.forward_embeds(self.embed(tokens), tokens.argmax(dim=-1), **kwargs)


class CLIP(nn.Module):
    """Contrastive image-text model; weights are loaded with ``clipiq.load_clip``."""

    def __init__(self, cfg: CLIPConfig, *, pretrained_stem: bool = True):
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTower(cfg.vision, cfg.embed_dim, cfg.act, cfg.ln_eps, pretrained_stem=pretrained_stem)
        self.text = TextTower(cfg.text, cfg.embed_dim, cfg.act, cfg.ln_eps)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # Set by the loader: which weights these are, so checkpoints can refuse a mismatched backbone.
        self.weights_name: str | None = None
        self.weights_sha256: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (float32, bfloat16 or float16)."""
        return self.visual.patch_embed.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.visual.patch_embed.weight.device

    def encode_image(self, x: Tensor, normalize: bool = False, **kwargs) -> Tensor:
        """Normalised images (N,3,H,W) -> image embeddings (N, embed_dim)."""
        out = self.visual(x, **kwargs).pooled
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, tokens: Tensor, normalize: bool = False, **kwargs) -> Tensor:
        """Token ids (N,77) -> text embeddings (N, embed_dim)."""
        out = self.text(tokens, **kwargs).pooled
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled cosine logits (per image, per text)."""
        img = self.encode_image(images, normalize=True)
        txt = self.encode_text(tokens, normalize=True)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()


def build_model(cfg: CLIPConfig, seed: int | None = None) -> CLIP:
    """Instantiate a randomly initialised CLIP (seeded when ``seed`` is given); a hybrid's stem is pretrained."""
    if seed is None:
        return CLIP(cfg)
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return CLIP(cfg)
