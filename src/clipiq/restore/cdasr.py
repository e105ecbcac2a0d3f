"""CDASR: CLIP-aware domain-adaptive super-resolution (Lu et al. 2025, arXiv 2505.12391), restorer ``cdasr``.

The network (:class:`CDASRNet`) is a light IMDN-style SR backbone (Hui et al. 2019: information
multi-distillation blocks with contrast-aware channel attention, a 1x1 fusion of every block's output and a
pixel-shuffle upsampler: one conv and shuffle at x2/x3/x4, repeated x2 stages at x8/x16; written here) with the
paper's CLIP-guided feature alignment: the frozen offline CLIP's L2-normalised embedding of the low-resolution image
goes through a two-layer MLP and Conv-ReLU-Conv to a guidance map that is concatenated with the shallow SR features
and fused by a 1x1 conv, so every block sees features aligned to the image's CLIP description (its degradation and
content).

Choices where the paper is silent (see docs/methods/cdasr.md):

* the MLP's hidden width is ``mlp_hidden`` (default 256) and its output ``guide_channels`` (default 64, the
  feature width): the paper's 1024 and 512 would give 2.04M parameters in all at x2 (measured) with the
  256-d embedding of degradation-clip-v2, beyond the 0.3-1M budget of a light network and slow on CPU; the
  defaults give 0.79M (x2) to 0.81M (x4) in all, and 1.23M (x8) and 1.38M (x16), whose upsampler has three or
  four x2 stages (a conv to 4x the feature width and a pixel shuffle by 2 each, no activation, as EDSR's) and a
  conv to RGB;
* the guidance is one vector per image broadcast over the feature map, so the Conv-ReLU-Conv are 1x1 convs
  applied before broadcasting (identical to applying them to the broadcast map, without border effects);
* the bicubic upscale of the input is added to the output (global residual) and the output conv starts at zero,
  so training starts from bicubic, which matters for short CPU runs;
* ``clip: false`` (the ``--no-clip`` ablation) keeps every layer: the guidance branch gets a learned vector
  (L2-normalised, the embedding's size) instead of the CLIP embedding, so the two differ by that vector only;
* at inference the embedding is taken once from the whole input image and shared by all its tiles.

CLIP is reached through :mod:`clipiq.clip` only, never trained, and never saved: a checkpoint records the
backbone's name and sha256 and loading refuses another backbone. Checkpoints are ``clipiq-method/1``
safetensors written by ``clipiq train cdasr`` (``run_dir/checkpoint.safetensors``). Without ``weights``, the
checkpoint shipped inside the package for the scale (:data:`SHIPPED`, x2/x3/x4, trained on
``degradation-clip-v2``; see docs/models/cdasr.md) is used, its sha256 checked; none ships for x8/x16 (train
them: ``configs/cdasr/x8.yaml``), so those need ``weights``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.clip.checkpoint import check_backbone, read_method_checkpoint
from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.core.errors import CheckpointError, ConfigError
from clipiq.core.hub import HubFile, WeightsUnavailableError, resolve
from clipiq.core.image import check_image_batch
from clipiq.restore.base import RUN_OPTIONS, Restorer
from clipiq.restore.registry import RestorerSpec

log = logging.getLogger(__name__)

__all__ = ["MODEL_DEFAULTS", "SHIPPED", "SPEC", "CDASRNet", "CDASRRestorer", "build_net", "clip_guidance_embedding",
           "clip_image_embedding"]

PAPER = "Lu et al., CLIP-aware Domain-Adaptive Super-Resolution, arXiv 2505.12391, 2025"
#: The scales the network and its training take: x2/x3/x4 with a single pixel-shuffle upsampler, x8/x16 with
#: repeated x2 stages. Weights ship for x2/x3/x4 only (:data:`SHIPPED`); x8/x16 come from ``clipiq train cdasr``.
SCALES = (2, 3, 4, 8, 16)
SINGLE_STAGE_SCALES = (2, 3, 4)


def _shipped(scale: int, sha256: str, size: int) -> HubFile:
    return HubFile(
        name=f"cdasr-x{scale}-degradation-clip-v2",
        package_file=f"weights/cdasr-x{scale}-degradation-clip-v2.safetensors",
        sha256=sha256,
        size=size,
        license="MIT",  # this project's own checkpoint, under the project's licence
        description=f"CDASR x{scale} for degradation-clip-v2 (configs/cdasr/x{scale}.yaml): bicubic-downscaled "
                    "T91 and BSD200, about 11 minutes on one GPU (scripts/train_restorers_gpu.sh, then its "
                    "continue phase).",
    )


#: The checkpoints shipped inside the package, by scale, used when no weights are given (docs/models/cdasr.md).
SHIPPED: dict[int, HubFile] = {
    2: _shipped(2, "88d76fbfb81526b2f6784ee1a0ef4922268a5fd1d5183fe67d961992d5b0a183", 3182880),
    3: _shipped(3, "e7733535e5ff4fc28f6c15fefda85977280d68e70429a586d99586d390e8bbdf", 3217500),
    4: _shipped(4, "2dfd9c4d69a1b35c8b25ecf1d33d21ec8030a7495e2701a11a2d52b920f03937", 3265968),
}

#: The network's options (the ``model`` section of ``clipiq train cdasr``'s config).
MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "degradation-clip-v2",  # the frozen offline CLIP giving the guidance embedding
    "channels": 64,  # feature width
    "blocks": 6,  # information multi-distillation blocks
    "mlp_hidden": 256,  # paper: 1024; smaller to stay in the 0.3-1M budget and fast on CPU (see the docstring)
    "guide_channels": 64,  # the MLP's output and the guidance map's width
    "clip": True,  # false: the --no-clip ablation (a learned vector replaces the embedding; same layers)
}


def _check_model_cfg(m: Mapping[str, Any]) -> None:
    unknown = set(m) - set(MODEL_DEFAULTS)
    if unknown:
        raise ConfigError(f"cdasr: unknown model options {sorted(unknown)} (known: {', '.join(MODEL_DEFAULTS)})")
    for key in ("channels", "blocks", "mlp_hidden", "guide_channels"):
        v = m.get(key, MODEL_DEFAULTS[key])
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"cdasr: model.{key} must be a positive integer, got {v!r}")
    if int(m.get("channels", MODEL_DEFAULTS["channels"])) % 4:
        raise ConfigError(f"cdasr: model.channels must be a multiple of 4 (a quarter is distilled), got "
                          f"{m.get('channels')!r}")
    if not isinstance(m.get("clip", True), bool):
        raise ConfigError(f"cdasr: model.clip must be true or false, got {m.get('clip')!r}")


class ContrastChannelAttention(nn.Module):
    """IMDN's contrast-aware channel attention: weights from each channel's standard deviation plus mean."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(4, channels // reduction)
        self.fc = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True), nn.Conv2d(mid, channels, 1),
                                nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        """Reweight the channels of ``x``."""
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(-2, -1), keepdim=True).add(1e-8).sqrt()
        return x * self.fc(std + mean)


class DistillationBlock(nn.Module):
    """An information multi-distillation block: three steps each keep a quarter of the channels, then fuse."""

    def __init__(self, channels: int):
        super().__init__()
        d = channels // 4
        r = channels - d
        self.d = d
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(r, channels, 3, padding=1)
        self.c3 = nn.Conv2d(r, channels, 3, padding=1)
        self.c4 = nn.Conv2d(r, d, 3, padding=1)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.cca = ContrastChannelAttention(4 * d)
        self.fuse = nn.Conv2d(4 * d, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x + fuse(attention(distilled features))."""
        d = self.d
        a = self.act(self.c1(x))
        d1, r = a[:, :d], a[:, d:]
        a = self.act(self.c2(r))
        d2, r = a[:, :d], a[:, d:]
        a = self.act(self.c3(r))
        d3, r = a[:, :d], a[:, d:]
        d4 = self.c4(r)
        return x + self.fuse(self.cca(torch.cat([d1, d2, d3, d4], dim=1)))


class CDASRNet(nn.Module):
    """The CDASR network: ``forward(lr, embedding)`` -> the SR image (N,3,sH,sW); ``embedding`` is (N,embed_dim)."""

    def __init__(self, scale: int, embed_dim: int, channels: int = 64, blocks: int = 6, mlp_hidden: int = 256,
                 guide_channels: int = 64, clip: bool = True):
        super().__init__()
        if scale not in SCALES:
            raise ConfigError(f"cdasr: scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
        self.scale, self.embed_dim, self.use_clip = scale, embed_dim, clip
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        # CLIP-guided alignment: MLP (embedding -> hidden -> guide) and Conv-ReLU-Conv (1x1 on the broadcast map)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_hidden, guide_channels))
        self.guide = nn.Sequential(nn.Conv2d(guide_channels, guide_channels, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(guide_channels, guide_channels, 1))
        self.align = nn.Conv2d(channels + guide_channels, channels, 1)
        # --no-clip: a learned vector takes the embedding's place (same layers, + embed_dim parameters)
        self.constant = nn.Parameter(torch.randn(embed_dim) / embed_dim**0.5) if not clip else None
        self.body = nn.ModuleList(DistillationBlock(channels) for _ in range(blocks))
        self.body_fuse = nn.Sequential(nn.Conv2d(channels * blocks, channels, 1), nn.LeakyReLU(0.05, inplace=True))
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        if scale in SINGLE_STAGE_SCALES:
            # x2/x3/x4: one conv to 3*scale^2 channels and one pixel shuffle (the shipped checkpoints' layout)
            self.upsample = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1),
                                          nn.PixelShuffle(scale))
        else:
            # x8/x16: log2(scale) x2 stages (conv to 4*channels, pixel shuffle by 2; linear, as EDSR's upsampler),
            # then a conv to RGB at the output size
            stages: list[nn.Module] = []
            for _ in range(scale.bit_length() - 1):
                stages += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
            self.upsample = nn.Sequential(*stages, nn.Conv2d(channels, 3, 3, padding=1))
        # Zero-initialised output conv: an untrained network is PyTorch's bicubic upscale (24 dB on Set5 x2 with a
        # random one), so a short CPU run starts near the baseline instead of climbing back to it.
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)

    @property
    def output_conv(self) -> nn.Conv2d:
        """The upsampler's last conv, the one giving RGB (zero at init): ``upsample[0]`` at x2/x3/x4 (before its
        pixel shuffle), ``upsample[-1]`` at x8/x16 (after the x2 stages)."""
        conv = self.upsample[0] if self.scale in SINGLE_STAGE_SCALES else self.upsample[-1]
        assert isinstance(conv, nn.Conv2d)
        return conv

    def guidance(self, embedding: Tensor | None, n: int) -> Tensor:
        """(N, guide_channels, 1, 1) guidance vectors from the embeddings (or the learned vector without CLIP)."""
        if self.constant is not None:
            e = F.normalize(self.constant, dim=0).expand(n, -1)
        else:
            if embedding is None:
                raise ValueError("cdasr: this network uses CLIP guidance and needs the LR images' embeddings")
            if embedding.shape != (n, self.embed_dim):
                raise ValueError(f"cdasr: embeddings must be ({n}, {self.embed_dim}), got {tuple(embedding.shape)}")
            e = embedding
        g = self.mlp(e.to(self.head.weight.dtype))[..., None, None]
        return self.guide(g)

    def forward(self, lr: Tensor, embedding: Tensor | None = None) -> Tensor:
        """Super-resolve (N,3,h,w) -> (N,3,h*scale,w*scale) (not clamped: the losses see overshoot)."""
        n, _, h, w = lr.shape
        feat = self.head(lr)
        g = self.guidance(embedding, n).expand(-1, -1, h, w)
        feat = self.align(torch.cat([feat, g], dim=1))
        outs, x = [], feat
        for block in self.body:
            x = block(x)
            outs.append(x)
        x = self.body_conv(self.body_fuse(torch.cat(outs, dim=1))) + feat
        base = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return self.upsample(x) + base


def build_net(model_cfg: Mapping[str, Any], scale: int, embed_dim: int) -> CDASRNet:
    """A fresh :class:`CDASRNet` from the ``model`` config section (unknown or bad options raise ConfigError)."""
    _check_model_cfg(model_cfg)
    m = {**MODEL_DEFAULTS, **model_cfg}
    return CDASRNet(scale, embed_dim, channels=m["channels"], blocks=m["blocks"], mlp_hidden=m["mlp_hidden"],
                    guide_channels=m["guide_channels"], clip=m["clip"])


def clip_image_embedding(clip: CLIP, preprocess: Preprocess, x: Tensor) -> Tensor:
    """CLIP's L2-normalised float32 embeddings (N, embed_dim) of images in [0,1], each squashed whole to the input
    size ("resize": every pixel takes part). Differentiable with respect to ``x``; callers add ``no_grad``."""
    inp = preprocess.prepare(x.float(), "resize").to(clip.dtype)
    return clip.encode_image(inp, normalize=True).float()


def clip_guidance_embedding(clip: CLIP, preprocess: Preprocess, lr: Tensor) -> Tensor:
    """The frozen CLIP's L2-normalised embeddings (N, embed_dim) of LR images (the whole image, squashed).

    The network's guidance: at inference of each whole input image, in training of the whole LR photo a crop
    came from (:mod:`clipiq.train.cdasr`), so both see the same distribution.
    """
    with torch.no_grad():
        return clip_image_embedding(clip, preprocess, lr.clamp(0, 1))


class CDASRRestorer(Restorer):
    """The ``cdasr`` restorer: a trained :class:`CDASRNet` guided by its frozen CLIP backbone."""

    name = "cdasr"
    tileable = True
    # Float32 working memory per input pixel, estimated for the default network: the blocks' outputs kept for the
    # fusion and their concatenation (2 x 6 x 64 values), a few live 64-channel maps, and the scale^2 output
    # (x8/x16 add their x2 stages' maps in __init__).
    bytes_per_pixel = 8192

    def __init__(self, scale: int = 2, weights: str | os.PathLike | None = None, *, precision: str = "fp32",
                 **run: Any):
        if isinstance(scale, bool) or scale not in SCALES:
            raise ConfigError(f"cdasr: scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
        unknown = set(run) - set(RUN_OPTIONS)
        if unknown:
            raise ConfigError(f"cdasr: unknown options {sorted(unknown)}")
        if weights is None and scale not in SHIPPED:
            shipped = "/".join(f"x{k}" for k in SHIPPED)
            raise WeightsUnavailableError(
                f"cdasr: no weights ship for x{scale} (only {shipped}); train them with `clipiq train cdasr "
                f"--config configs/cdasr/x8.yaml{'' if scale == 8 else ' scale=16 data.patch_size=12'}` (see "
                f"docs/methods/cdasr.md) and give the run's checkpoint.safetensors as weights (--weights)")
        if weights is None:  # the shipped checkpoint, sha256-checked (a corrupted copy raises WeightsChecksumError)
            weights = resolve(SHIPPED[scale])
        self.scale = scale
        super().__init__(precision=precision, **run)
        ck = read_method_checkpoint(weights, "cdasr")
        cfg = ck.config
        if int(cfg.get("scale", 0)) != scale:
            raise ConfigError(f"cdasr: {weights} was trained for scale {cfg.get('scale')}, not scale={scale}")
        clip, self.preprocess = load_clip(ck.backbone.get("name"), weights=ck.backbone.get("weights"), device="cpu")
        check_backbone(ck, clip)
        self.clip = clip.requires_grad_(False).eval()
        self.net = build_net(cfg["model"], scale, clip.cfg.embed_dim)
        try:
            self.net.load_state_dict(ck.state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"cdasr: {weights} does not fit the network its config describes: {e}") from e
        self.net.requires_grad_(False).eval()
        if scale not in SINGLE_STAGE_SCALES:  # x8/x16: the x2 stages' maps (4*channels at up to scale^2/4 pixels)
            self.bytes_per_pixel = type(self).bytes_per_pixel + 8 * self.net.head.out_channels * scale * scale
        self.weights = str(weights)
        # The embedding of the image being restored, per thread: restore_tensor sets it for the tiles of one image,
        # so threads sharing this restorer never see each other's image.
        self._local = threading.local()

    def restore_batch(self, x: Tensor) -> Tensor:
        """Super-resolve a batch (the embedding of the whole image when set by :meth:`restore_tensor`)."""
        emb = None
        if self.net.use_clip:
            emb = getattr(self._local, "embedding", None)
            emb = (emb if emb is not None else self._embed(x)).expand(x.shape[0], -1)
        return self.net(x, emb)

    def _embed(self, x: Tensor) -> Tensor:
        return clip_guidance_embedding(self.clip, self.preprocess, x)

    @torch.inference_mode()
    def restore_tensor(self, x: Tensor, out_device: torch.device | str | None = None) -> Tensor:
        """As :meth:`Restorer.restore_tensor`, one image at a time so all tiles of an image share its embedding."""
        x = check_image_batch(x, "images")
        if not self.net.use_clip:
            return super().restore_tensor(x, out_device)
        out = []
        try:
            for i in range(x.shape[0]):
                self._local.embedding = self._embed(x[i : i + 1].to(self.device, torch.float32))
                out.append(super().restore_tensor(x[i : i + 1], out_device))
        finally:
            self._local.embedding = None
        return torch.cat(out)


#: The registry entry (registered lazily in clipiq.restore.registry: listing restorers imports nothing here).
SPEC = RestorerSpec(
    name="cdasr", factory=CDASRRestorer, task="super-resolution", scale=2, has_weights=True, tileable=True,
    options=("scale",), defaults={"scale": 2}, paper=PAPER,
    description="CLIP-aware domain-adaptive SR: light IMDN-style network guided by the frozen offline CLIP "
                "(x2/x3/x4/x8/x16; x2/x3/x4 weights ship for degradation-clip-v2, others from `clipiq train cdasr`)",
)
