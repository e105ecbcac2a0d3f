"""Architecture configs and preprocessing records for the CLIP backbone."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from clipiq.core.registry import Registry

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: Convolutional stems the image tower can use instead of a patchify conv, and their output stride (the
#: tower's patch size). "efficientnet-lite0": ImageNet EfficientNet-Lite0 (clipiq.clip.efficientnet).
STEM_STRIDES: dict[str, int] = {"efficientnet-lite0": 16}
STEM_MEAN_STD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "efficientnet-lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the stem was trained on [-1, 1] inputs
}


@dataclass(frozen=True)
class VisionConfig:
    """Image tower hyper-parameters (ViT, optionally on a pretrained convolutional stem).

    ``stem``: None for the usual patchify conv, or a name in ``STEM_STRIDES`` whose feature maps become the
    tokens; ``patch_size`` is then the stem's stride, so every grid computation stays the same.
    ``stem_stats``: also add a projection of the stem's per-stage channel statistics to the class token.
    """

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    stem: str | None = None
    stem_stats: bool = False

    def __post_init__(self) -> None:
        if self.stem is None:
            if self.stem_stats:
                raise ValueError("stem_stats needs a convolutional stem (VisionConfig.stem)")
            return
        if self.stem not in STEM_STRIDES:
            raise ValueError(f"unknown image stem {self.stem!r}; expected None or one of {', '.join(STEM_STRIDES)}")
        if self.patch_size != STEM_STRIDES[self.stem]:
            raise ValueError(f"stem {self.stem!r} has stride {STEM_STRIDES[self.stem]}, so patch_size must be "
                             f"{STEM_STRIDES[self.stem]}, got {self.patch_size}")


@dataclass(frozen=True)
class TextConfig:
    """Text tower hyper-parameters (causal transformer)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class PreprocessConfig:
    """How pixels are turned into model input; travels with the weights so it cannot drift."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"


@dataclass(frozen=True)
class CLIPConfig:
    """A full CLIP architecture: both towers, the joint embedding size and the MLP activation."""

    name: str
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    act: str = "quick_gelu"
    ln_eps: float = 1e-5
    random: bool = False  # True for architectures meant only for tests (random weights)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def replace(self, **changes: Any) -> CLIPConfig:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable), used in checkpoints."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON form, stored in checkpoint metadata."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        """Inverse of to_dict."""
        d = dict(d)
        pre = d.pop("preprocess", None) or {}
        pre = PreprocessConfig(
            image_size=pre.get("image_size", 224),
            mean=tuple(pre.get("mean", OPENAI_MEAN)),
            std=tuple(pre.get("std", OPENAI_STD)),
            interpolation=pre.get("interpolation", "bicubic"),
        )
        return cls(
            vision=VisionConfig(**d.pop("vision")),
            text=TextConfig(**d.pop("text")),
            preprocess=pre,
            **d,
        )


def _vit(name: str, embed: int, v: VisionConfig, t: TextConfig, **kw: Any) -> CLIPConfig:
    # A CNN stem brings its own input normalisation; a plain ViT uses CLIP's.
    pre = PreprocessConfig(v.image_size, *STEM_MEAN_STD[v.stem]) if v.stem else PreprocessConfig(v.image_size)
    return CLIPConfig(name=name, embed_dim=embed, vision=v, text=t, preprocess=pre, **kw)


ARCHITECTURES: Registry[CLIPConfig] = Registry("CLIP architecture")

for _cfg in (
    _vit("ViT-B-32", 512, VisionConfig(224, 32, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    _vit("ViT-B-16", 512, VisionConfig(224, 16, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    _vit("ViT-L-14", 768, VisionConfig(224, 14, 1024, 24, 16), TextConfig(77, 49408, 768, 12, 12)),
    # Random, seeded, under 1M parameters: for tests and smoke runs only, its outputs mean nothing.
    _vit(
        "test-tiny",
        32,
        VisionConfig(224, 16, 32, 2, 2),
        TextConfig(77, 49408, 16, 2, 2),
        act="gelu",
        random=True,
    ),
    # The ImageNet EfficientNet-Lite0 stem under two tiny transformer layers; the rest is random (tests only).
    _vit(
        "test-tiny-hybrid",
        32,
        VisionConfig(224, 16, 32, 2, 2, stem="efficientnet-lite0"),
        TextConfig(77, 49408, 16, 2, 2),
        act="gelu",
        random=True,
    ),
    # clipiq's second offline model: a 4x128 ViT on the frozen Lite0 stem (its stage statistics join the class
    # token) and v1's 4x128 text tower; sized so it trains on cached stem features in under an hour on 2 CPU cores.
    _vit(
        "degradation-clip-v2",
        256,
        VisionConfig(224, 16, 128, 4, 4, stem="efficientnet-lite0", stem_stats=True),
        TextConfig(77, 49408, 128, 4, 4),
        act="gelu",
    ),
):
    ARCHITECTURES.register(_cfg.name, _cfg)
del _cfg


def get_architecture(name: str) -> CLIPConfig:
    """Look up an architecture by name; a '-quickgelu' suffix selects the QuickGELU activation."""
    cfg = ARCHITECTURES.get(name.removesuffix("-quickgelu"))  # unknown names list close matches
    return cfg.replace(act="quick_gelu") if name.endswith("-quickgelu") else cfg
