"""DAP-LED: joint low-light enhancement and deblurring guided by CLIP degradation maps (restorer ``dap-led``).

Wang, Wu and Wang 2024, "DAP-LED: Learning Degradation-Aware Priors with CLIP for Joint Low-light Enhancement
and Deblurring" (arXiv 2409.13496). No code is public; this is our reading of the paper's text, sized for CPUs.

* **Encoder-decoder.** Four levels of Restormer-style blocks (transposed "MDTA" attention across channels, whose
  cost is linear in the pixels, and a gated depthwise-conv feed-forward), pixel-(un)shuffle resampling, skip
  connections concatenated and reduced by a 1x1 conv, a refinement stage and a global residual (output = input +
  predicted correction).
* **CLIP-guided cross-fusion module.** The frozen offline CLIP (default ``degradation-clip-v2``) gives, per patch,
  its joint-space embedding (:func:`clipiq.clip.dense_features`: every cell's own class token pooled over its
  neighbourhood, i.e. the image tokens in the text-aligned space) and from those the probabilities of "Dark
  photo.", "Blurry photo." and "Noisy photo." against their clean antonyms (:func:`clipiq.clip.pair_probabilities`).
  The fusion module projects [maps, embeddings] at the patch grid to a guide, adds the projected image embedding
  (the mean of the cell embeddings), and resamples the guide to each of the four scales, where a per-scale 1x1
  conv mixes it.
* **CLIP-enhanced transformer blocks.** Every block modulates its two normalised inputs (attention and feed-forward)
  with a spatial feature transform ``x * (1 + gamma) + beta``, gamma and beta computed from the guide at the
  block's scale. The transform's last conv starts at zero, so an untrained block is a plain Restormer block.
* **No-CLIP ablation** (``clip: false``): the same network, the CLIP inputs replaced by learned constants (a
  learned value per map and a learned embedding, the same for every pixel and image). It has K + D more
  parameters (3 + 256 for ``degradation-clip-v2``), so both variants are the same size to within 0.1%; the
  modulations can still learn a fixed per-channel affine, but nothing that depends on the image's CLIP reading.

The CLIP maps are computed at the input's native resolution by default (``clip_size`` 0 or ``None``), or on a
copy whose longer side is at most ``clip_size`` pixels, bilinearly resampled. Training sees the maps of its
128 px patches at their native scale, so a smaller copy reads blur on a coarser scale than training did: native
is the default for that reason. Measured with ``degradation-clip-v2`` on one CPU thread, a 1152x864 (1 MP)
image: 1.28 CPU-s at native size, 0.23 at 512, 0.11 at 384 (the network itself about 2.6 CPU-s); ``clip_size``
trades that consistency for speed. No gradient reaches CLIP.

Weights: without ``weights``, the checkpoint shipped inside the package (:data:`SHIPPED`, trained on
``degradation-clip-v2``; see docs/models/dap-led.md) is used, its sha256 checked. ``weights=PATH`` loads a
checkpoint written by ``clipiq train dap-led`` instead (the exported ``checkpoint.safetensors`` or the trainer's
``best.safetensors``/``last.safetensors``). Both are clipiq's method checkpoint format (``clipiq-method/1``:
safetensors plus the JSON config and the backbone's name and sha256; CLIP's own weights are never saved in it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip import CLIP, Preprocess, dense_features, load_clip, pair_probabilities
from clipiq.clip.checkpoint import check_backbone, read_method_checkpoint
from clipiq.clip.preprocess import shrink_to
from clipiq.core.errors import CheckpointError, ConfigError
from clipiq.core.hub import HubFile, resolve
from clipiq.core.tensors import load_trainable_state
from clipiq.restore.base import Restorer
from clipiq.restore.registry import RestorerSpec

__all__ = [
    "GUIDE_PAIRS",
    "METHOD",
    "MODEL_DEFAULTS",
    "SFT",
    "SHIPPED",
    "SPEC",
    "CLIPBlock",
    "CrossFusion",
    "DAPLEDNet",
    "DAPLEDRestorer",
    "build_network",
    "check_model_config",
    "clip_guidance",
    "count_parameters",
]

METHOD = "dap-led"
PAPER = ("Wang, Wu and Wang, DAP-LED: Learning Degradation-Aware Priors with CLIP for Joint Low-light Enhancement "
         "and Deblurring, arXiv 2409.13496, 2024")
#: The checkpoint shipped inside the package, used when no weights are given (see docs/models/dap-led.md).
SHIPPED = HubFile(
    name="dap-led-degradation-clip-v2",
    package_file="weights/dap-led-degradation-clip-v2.safetensors",
    sha256="979274e3d605db11c723888f748e94b2fadf58d2b326bafaecb2a0f61a69b409",
    size=6180364,
    license="MIT",  # this project's own checkpoint, under the project's licence
    description="DAP-LED for degradation-clip-v2 (configs/dap-led/synthetic.yaml): synthetic low-light + blur "
                "pairs from Kodak24, T91 and BSD200, about 11 minutes on one GPU "
                "(scripts/train_restorers_gpu.sh, then its continue phase).",
)
#: The antonym pairs of :data:`clipiq.clip.vocabulary.ATTRIBUTE_PROMPTS` whose negative prompts give the maps:
#: "Dark photo.", "Blurry photo.", "Noisy photo." (each against "Bright", "Sharp", "Clean photo.").
GUIDE_PAIRS: tuple[str, ...] = ("brightness", "sharpness", "noisiness")

#: The network and its CLIP guidance: what ``model`` holds in a training config and in a checkpoint.
MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "degradation-clip-v2",  # the frozen CLIP load name (test-tiny in tests)
    "backbone_weights": None,  # a local weights file for the backbone, if not the registry's
    "clip": True,  # false: the --no-clip ablation (learned constants instead of CLIP's maps)
    "width": 16,  # channels of the top level (half resolution); x2 per level
    "blocks": [1, 2, 3, 4],  # transformer blocks per encoder level (the last is the bottleneck); the decoder
    # mirrors levels 0-2. 1.54 M parameters and about 22 GMAC per megapixel with the defaults.
    "refine": 1,  # blocks after the decoder, at the top level
    "heads": [1, 2, 4, 8],  # MDTA heads per level
    "expansion": 2.0,  # gated FFN hidden width / width
    "guide": 16,  # channels of the CLIP guide
    "clip_size": 0,  # CLIP maps at native size (0 or None), as training sees them; else on a copy at most this long
}

_LEVELS = 4


def check_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The model config over :data:`MODEL_DEFAULTS`, checked; a bad value raises ConfigError naming the option."""
    unknown = sorted(set(cfg) - set(MODEL_DEFAULTS))
    if unknown:
        raise ConfigError(f"dap-led: unknown model option(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(MODEL_DEFAULTS))}")
    c = {**MODEL_DEFAULTS, **cfg}

    def positive_int(key: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"dap-led: model.{key} must be a positive integer, got {value!r}")
        return value

    if not isinstance(c["clip"], bool):
        raise ConfigError(f"dap-led: model.clip must be true or false, got {c['clip']!r}")
    if not isinstance(c["backbone"], str) or not c["backbone"]:
        raise ConfigError(f"dap-led: model.backbone must be a CLIP load name, got {c['backbone']!r}")
    if c["backbone_weights"] is not None and not isinstance(c["backbone_weights"], str):
        raise ConfigError(f"dap-led: model.backbone_weights must be a file path or null, got {c['backbone_weights']!r}")
    for key in ("width", "guide"):
        positive_int(key, c[key])
    if isinstance(c["refine"], bool) or not isinstance(c["refine"], int) or c["refine"] < 0:
        raise ConfigError(f"dap-led: model.refine must be an integer >= 0, got {c['refine']!r}")
    for key in ("blocks", "heads"):
        if not isinstance(c[key], Sequence) or isinstance(c[key], str) or len(c[key]) != _LEVELS:
            raise ConfigError(f"dap-led: model.{key} must list {_LEVELS} integers (one per level), got {c[key]!r}")
        c[key] = [positive_int(key, v) for v in c[key]]
    for level, heads in enumerate(c["heads"]):
        if (c["width"] << level) % heads:
            raise ConfigError(f"dap-led: model.heads[{level}]={heads} does not divide the level's "
                              f"{c['width'] << level} channels (model.width={c['width']})")
    e = c["expansion"]
    if isinstance(e, bool) or not isinstance(e, int | float) or not 0.5 <= e <= 8:
        raise ConfigError(f"dap-led: model.expansion must be a number in [0.5, 8], got {e!r}")
    size = c["clip_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or (0 < size < 32) or size < 0):
        raise ConfigError(f"dap-led: model.clip_size must be 0/None (native) or an integer >= 32 pixels, "
                          f"got {size!r}")
    return c


# ----------------------------------------------------------------------------------------------------
# Building blocks (Restormer-style, written for this module)


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of (N,C,H,W) at every pixel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each pixel's channel vector."""
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) * torch.rsqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[:, None, None]


class ChannelAttention(nn.Module):
    """Multi-DConv head transposed attention: a (C/h x C/h) attention map per head, linear in the pixels."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N,C,H,W) -> (N,C,H,W)."""
        n, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in (q, k, v))
        # Normalised along the pixels, so the logits are cosines scaled by a learned temperature per head.
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(n, c, h, w))


class GatedFFN(nn.Module):
    """Gated depthwise-conv feed-forward: GELU(a) * b over a 3x3 depthwise conv of the expanded features."""

    def __init__(self, dim: int, expansion: float):
        super().__init__()
        hidden = max(1, int(round(dim * expansion)))
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N,C,H,W) -> (N,C,H,W)."""
        a, b = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class SFT(nn.Module):
    """Spatial feature transform from the guide: ``x * (1 + gamma) + beta``, identity at initialisation."""

    def __init__(self, dim: int, guide: int):
        super().__init__()
        self.to_affine = nn.Conv2d(guide, dim * 2, 1)
        # Zero start: the untrained network is a plain encoder-decoder and the guide's influence is learned.
        nn.init.zeros_(self.to_affine.weight)
        nn.init.zeros_(self.to_affine.bias)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """Modulate (N,C,H,W) by the (N,G,H,W) guide."""
        gamma, beta = self.to_affine(g).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class CLIPBlock(nn.Module):
    """A CLIP-enhanced transformer block: SFT-modulated channel attention, then an SFT-modulated gated FFN."""

    def __init__(self, dim: int, heads: int, expansion: float, guide: int):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(dim), LayerNorm2d(dim)
        self.mod1, self.mod2 = SFT(dim, guide), SFT(dim, guide)
        self.attn = ChannelAttention(dim, heads)
        self.ffn = GatedFFN(dim, expansion)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """(N,C,H,W) features and their (N,G,H,W) guide -> (N,C,H,W)."""
        x = x + self.attn(self.mod1(self.norm1(x), g))
        return x + self.ffn(self.mod2(self.norm2(x), g))


class CrossFusion(nn.Module):
    """CLIP-guided cross-fusion: maps + dense embeddings (+ the image embedding) -> one guide per scale."""

    def __init__(self, n_maps: int, embed_dim: int, guide: int, levels: int):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(n_maps + embed_dim, guide, 1), nn.GELU(), nn.Conv2d(guide, guide, 1))
        self.global_ = nn.Linear(embed_dim, guide)
        # Mixed at the patch grid (a few hundred cells), then resampled: nothing here runs per pixel.
        self.scales = nn.ModuleList(
            nn.Sequential(nn.Conv2d(guide, guide, 3, padding=1, padding_mode="replicate"), nn.GELU())
            for _ in range(levels))

    def forward(self, maps: Tensor, feats: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """(N,K,gh,gw) maps and (N,D,gh,gw) embeddings -> a (N,G,h_l,w_l) guide per size."""
        image_embedding = F.normalize(feats.mean(dim=(-2, -1)), dim=-1)
        g = self.local(torch.cat([maps, feats], dim=1)) + self.global_(image_embedding)[..., None, None]
        out = []
        for size, mix in zip(sizes, self.scales):
            # The guide is one value per CLIP patch: bilinear resampling keeps it smooth across patch edges.
            out.append(F.interpolate(mix(g), size=size, mode="bilinear", align_corners=False))
        return out


class DAPLEDNet(nn.Module):
    """The four-level encoder-decoder with CLIP-enhanced blocks; input and output (N,3,H,W), H, W multiples of 16.

    ``forward(x, maps, feats)``: ``maps`` (N,K,gh,gw) are CLIP's degradation probabilities and ``feats``
    (N,D,gh,gw) its per-patch embeddings (see :func:`clip_guidance`); with ``use_clip=False`` both are ignored
    and learned constants stand in.
    """

    pad_multiple = 1 << _LEVELS  # the half-resolution top level, then three halvings

    def __init__(self, embed_dim: int, *, use_clip: bool = True, width: int = 16,
                 blocks: Sequence[int] = (1, 2, 3, 4), refine: int = 1, heads: Sequence[int] = (1, 2, 4, 8),
                 expansion: float = 2.0, guide: int = 16, n_maps: int = len(GUIDE_PAIRS)):
        super().__init__()
        self.use_clip, self.embed_dim, self.n_maps = use_clip, embed_dim, n_maps
        dims = [width << i for i in range(_LEVELS)]
        self.fusion = CrossFusion(n_maps, embed_dim, guide, _LEVELS)
        if not use_clip:
            # The ablation's stand-ins: one learned value per map and a learned embedding (same for all images).
            self.const_maps = nn.Parameter(torch.full((1, n_maps, 1, 1), 0.5))
            self.const_feats = nn.Parameter(F.normalize(torch.randn(1, embed_dim, 1, 1), dim=1))
        # The top level runs at half resolution (pixel-unshuffled input, as LEDNet's encoder does): a quarter of
        # the per-pixel work of a full-resolution level, which is what makes 1 MP in seconds on a CPU possible.
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, width, 3, padding=1))
        self.encoders = nn.ModuleList(
            nn.ModuleList(CLIPBlock(dims[i], heads[i], expansion, guide) for _ in range(blocks[i]))
            for i in range(_LEVELS))
        # Pixel-unshuffle halves the size and doubles the channels (conv to C/2, then 4x by unshuffling).
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i] // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
            for i in range(_LEVELS - 1))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i + 1], dims[i + 1] * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))
            for i in range(_LEVELS - 1))
        # Decoder levels 0..2: the upsampled features and the skip, concatenated, reduced by a 1x1 conv.
        self.reduce = nn.ModuleList(nn.Conv2d(dims[i] * 2, dims[i], 1, bias=False) for i in range(_LEVELS - 1))
        self.decoders = nn.ModuleList(
            nn.ModuleList(CLIPBlock(dims[i], heads[i], expansion, guide) for _ in range(blocks[i]))
            for i in range(_LEVELS - 1))
        self.refinement = nn.ModuleList(CLIPBlock(dims[0], heads[0], expansion, guide) for _ in range(refine))
        self.head = nn.Sequential(nn.Conv2d(width, 12, 3, padding=1), nn.PixelShuffle(2))

    def guides(self, x: Tensor, maps: Tensor | None, feats: Tensor | None) -> list[Tensor]:
        """The guide at each of the four scales of ``x``."""
        n, _, h, w = x.shape
        sizes = [(h >> (i + 1), w >> (i + 1)) for i in range(_LEVELS)]
        if not self.use_clip:
            maps = self.const_maps.expand(n, -1, -1, -1)
            feats = self.const_feats.expand(n, -1, -1, -1)
        elif maps is None or feats is None:
            raise ValueError("DAPLEDNet with use_clip=True needs CLIP's maps and dense features (clip_guidance)")
        elif maps.shape[1] != self.n_maps or feats.shape[1] != self.embed_dim:
            raise ValueError(f"expected {self.n_maps} maps and {self.embed_dim}-d features, got "
                             f"{tuple(maps.shape)} and {tuple(feats.shape)} (another backbone?)")
        return self.fusion(maps.to(x.dtype), feats.to(x.dtype), sizes)

    def forward(self, x: Tensor, maps: Tensor | None = None, feats: Tensor | None = None) -> Tensor:
        """Restore (N,3,H,W) (H, W multiples of 16); the output is not clamped (the loss sees overshoot)."""
        if x.shape[-2] % self.pad_multiple or x.shape[-1] % self.pad_multiple:
            raise ValueError(f"DAPLEDNet needs H and W multiples of {self.pad_multiple}, got {tuple(x.shape)}")
        g = self.guides(x, maps, feats)
        y = self.stem(x)
        skips = []
        for i in range(_LEVELS):
            for block in self.encoders[i]:
                y = block(y, g[i])
            if i < _LEVELS - 1:
                skips.append(y)
                y = self.downs[i](y)
        for i in reversed(range(_LEVELS - 1)):
            y = self.reduce[i](torch.cat([self.ups[i](y), skips[i]], dim=1))
            for block in self.decoders[i]:
                y = block(y, g[i])
        for block in self.refinement:
            y = block(y, g[0])
        return x + self.head(y)  # global residual: the network predicts the correction


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_network(cfg: Mapping[str, Any], embed_dim: int) -> DAPLEDNet:
    """A fresh network from a model config (see :data:`MODEL_DEFAULTS`) for a backbone of ``embed_dim``."""
    c = check_model_config(cfg)
    return DAPLEDNet(embed_dim, use_clip=c["clip"], width=c["width"], blocks=c["blocks"], refine=c["refine"],
                     heads=c["heads"], expansion=float(c["expansion"]), guide=c["guide"])


# ----------------------------------------------------------------------------------------------------
# CLIP guidance


@torch.no_grad()
def clip_guidance(clip: CLIP, preprocess: Preprocess, x: Tensor, clip_size: int | None = 0,
                  pairs: Sequence[str] = GUIDE_PAIRS) -> tuple[Tensor, Tensor]:
    """Frozen CLIP's (maps (N,K,gh,gw), dense embeddings (N,D,gh,gw)) of [0,1] images, on a downscaled copy.

    The copy's longer side is at most ``clip_size`` pixels (``None`` or 0: native size). No gradient flows.
    """
    x = shrink_to(x.detach().float().clamp(0, 1), clip_size, "bilinear")
    feats = dense_features(clip, preprocess, x)
    maps = pair_probabilities(clip, feats, list(pairs))
    return maps, feats


# ----------------------------------------------------------------------------------------------------
# Checkpoints


# ----------------------------------------------------------------------------------------------------
# The restorer


class DAPLEDRestorer(Restorer):
    """The trained network behind :class:`Restorer`: padding to 16, tiling, precision; CLIP guidance per tile."""

    pad_multiple = DAPLEDNet.pad_multiple
    # The transposed attention pools over the whole input, so tiles differ slightly from the whole image (as
    # with Restormer); tiles are still the only way to bound memory, and the blend hides their seams.
    tileable = True
    # Measured peak under inference_mode, fp32, default sizes, 1 MP: about 0.5 KB per pixel; kept 2x for headroom.
    bytes_per_pixel = 1024

    def __init__(self, net: DAPLEDNet, clip: CLIP | None, preprocess: Preprocess | None, clip_size: int | None,
                 **run: Any):
        super().__init__(**run)
        self.net = net.requires_grad_(False)
        self.clip = clip.requires_grad_(False) if clip is not None else None
        self.preprocess = preprocess
        self.clip_size = clip_size

    def restore_batch(self, x: Tensor) -> Tensor:
        """Guidance from the frozen CLIP (unless the ablation), then the network."""
        maps = feats = None
        if self.net.use_clip:
            assert self.clip is not None and self.preprocess is not None
            maps, feats = clip_guidance(self.clip, self.preprocess, x, self.clip_size)
        return self.net(x, maps, feats)


def load_dap_led(weights: str | os.PathLike, precision: str = "fp32", clip_size: int | None = None,
                 **run: Any) -> DAPLEDRestorer:
    """A restorer from a ``clipiq train dap-led`` checkpoint, with the backbone it names (refusing another)."""
    ck = read_method_checkpoint(weights, METHOD)
    state, config, record = ck.state, ck.config, ck.backbone
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"checkpoint {weights}: its config has no 'model' section")
    try:
        mcfg = check_model_config(config["model"])
    except ConfigError as e:
        raise CheckpointError(f"{weights}: {e}") from None
    if clip_size is not None:
        mcfg["clip_size"] = check_model_config({"clip_size": clip_size})["clip_size"]
    clip = preprocess = None
    embed_dim = int(record.get("embed_dim") or 0)
    if mcfg["clip"]:
        clip, preprocess = load_clip(record.get("name") or mcfg["backbone"], weights=record.get("weights"),
                                     device="cpu")
        check_backbone(ck, clip)
        embed_dim = clip.cfg.embed_dim
    if embed_dim <= 0:
        raise CheckpointError(f"{weights}: the backbone record lacks embed_dim")
    net = build_network(mcfg, embed_dim)
    load_trainable_state(net, state, str(weights))
    restorer = DAPLEDRestorer(net, clip, preprocess, mcfg["clip_size"], precision=precision, **run)
    restorer.weights = str(weights)
    return restorer


def _factory(weights: str | os.PathLike | None = None, precision: str = "fp32", clip_size: int | None = None,
             **run: Any) -> DAPLEDRestorer:
    if weights is None:  # the shipped checkpoint, sha256-checked (a corrupted copy raises WeightsChecksumError)
        weights = resolve(SHIPPED)
    return load_dap_led(weights, precision=precision, clip_size=clip_size, **run)


SPEC = RestorerSpec(
    name=METHOD,
    factory=_factory,
    description="DAP-LED: joint low-light enhancement and deblurring guided by CLIP degradation maps "
                "(shipped weights for degradation-clip-v2; others from clipiq train dap-led)",
    pad_multiple=DAPLEDNet.pad_multiple,
    has_weights=True,
    tileable=True,
    options=("clip_size",),
    paper=PAPER,
)
