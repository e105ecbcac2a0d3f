"""Registry of pretrained CLIP weights: :class:`PretrainedWeights` records and their lookup.

Each record is a :class:`clipiq.core.hub.HubFile` (one exact file, pinned Hugging Face revision or
URL, plus its sha256 and licence) extended with the preprocessing those weights were trained with,
so normalisation cannot drift from the weights. Cache, download and sha256 verification live in
:mod:`clipiq.core.hub`; :func:`resolve_weights` is its ``resolve`` for records named here.

Sources of the registered hashes: the OpenAI ``.pt`` URLs carry their sha256 in the path (OpenAI's
``clip/clip.py`` checks it); the Hugging Face hashes are the LFS sha256 of the listed file at the
pinned revision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from clipiq.clip.config import OPENAI_MEAN, OPENAI_STD
from clipiq.core import hub
from clipiq.core.errors import WeightsError
from clipiq.core.hub import (
    HubFile,
    HubRegistry,
    UnknownWeightsError,
    UnverifiedWeightsError,
    WeightsChecksumError,
    WeightsUnavailableError,
    cache_dir,
    sha256_file,
    verify_file,
)

__all__ = [
    "WEIGHTS",
    "PretrainedWeights",
    "UnknownWeightsError",
    "UnverifiedWeightsError",
    "WeightsChecksumError",
    "WeightsError",
    "WeightsUnavailableError",
    "cache_dir",
    "cache_path",
    "get_weights",
    "is_cached",
    "list_weights",
    "register_weights",
    "resolve_weights",
    "sha256_file",
    "unregister_weights",
    "verify_file",
]

#: State-dict layouts a record may declare: OpenAI's original checkpoints, open_clip's, Hugging Face
#: transformers' ``CLIPModel``, and checkpoints written by clipiq itself.
LAYOUTS = ("openai", "open_clip", "hf", "clipiq")
ACTIVATIONS = ("quick_gelu", "gelu")
INTERPOLATIONS = ("bicubic", "bilinear")

_OFFLINE_ALTERNATIVES = (
    "Offline alternatives that need no download: the built-in 'degradation-clip-v2' and 'degradation-clip' models, "
    "and 'test-tiny' (random weights, for smoke tests only)."
)


@dataclass(frozen=True, kw_only=True)
class PretrainedWeights(HubFile):
    """A CLIP weights file (see :class:`HubFile` for the source fields) and how inputs are prepared."""

    kind: ClassVar[str] = "pretrained weights"

    arch: str
    layout: str = "open_clip"
    act: str = "quick_gelu"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    image_size: int = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"{self.name}: arch must be a non-empty string, got {self.arch!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"{self.name}: act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"{self.name}: interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        for field_name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, field_name))
            if len(value) != 3:
                raise ValueError(f"{self.name}: {field_name} must have 3 values (RGB), got {len(value)}")
            object.__setattr__(self, field_name, value)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std values must be positive, got {self.std}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"{self.name}: image_size must be a positive int, got {self.image_size!r}")

    def local_copy_hint(self) -> str:
        """The CLI option and the load_clip argument that take a local copy of these weights."""
        return f"`--weights FILE` on the command line, or load_clip({self.name!r}, weights=path) in Python"

    def offline_alternatives(self) -> str:
        """The CLIP models that work with no download at all."""
        return _OFFLINE_ALTERNATIVES


# --------------------------------------------------------------------------------------------------
# Registry: thin, name-accepting wrappers over clipiq.core.hub, kept because the CLI and tests use them

WEIGHTS: HubRegistry[PretrainedWeights] = HubRegistry("pretrained weights", PretrainedWeights)


def register_weights(record: PretrainedWeights, *, overwrite: bool = False) -> PretrainedWeights:
    """Add a weights record to the registry (``overwrite=True`` to replace one of the same name)."""
    return WEIGHTS.add(record, overwrite=overwrite)


def unregister_weights(name: str) -> PretrainedWeights:
    """Remove a record from the registry and return it."""
    return WEIGHTS.unregister(name)


def get_weights(name: str) -> PretrainedWeights:
    """The record registered under ``name`` (e.g. ``"ViT-B-32/openai"``, case-insensitive)."""
    return WEIGHTS.get(name)


def list_weights(arch: str | None = None) -> list[str]:
    """Sorted names of the registered weights, optionally only those for one architecture."""
    where = None if arch is None else (lambda r: r.arch.lower() == arch.lower())
    return sorted(WEIGHTS.names(where=where))


def cache_path(record: PretrainedWeights | str) -> Path:
    """Where the weights file lives in the cache (see :func:`clipiq.core.hub.cache_path`)."""
    return hub.cache_path(WEIGHTS.lookup(record))


def is_cached(record: PretrainedWeights | str) -> bool:
    """Whether the file is present locally (cache or package); says nothing about its checksum."""
    return hub.is_cached(WEIGHTS.lookup(record))


def resolve_weights(
    record: PretrainedWeights | str,
    *,
    local: str | Path | None = None,
    offline: bool | None = None,
    allow_unverified: bool = False,
) -> Path:
    """Local, sha256-verified path of the weights, downloading them if needed (:func:`clipiq.core.hub.resolve`)."""
    return hub.resolve(WEIGHTS.lookup(record), local=local, offline=offline, allow_unverified=allow_unverified)


# --------------------------------------------------------------------------------------------------
# Built-in records

_OPENAI_NOTE = "OpenAI CLIP weights (MIT, github.com/openai/CLIP), trained on 400M web image-text pairs"

for _record in (
    PretrainedWeights(
        name="ViT-B-32/openai",
        arch="ViT-B-32",
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        hf_revision="a6f597a30f7b82c51704746581f9a4e41421e878",
        sha256="e6d1bd7789aa45192b3bf90570a789b478bae1b74ebcce7eddd908e83a2b7c31",
        size=605_143_284,
        layout="open_clip",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; open_clip safetensors from the timm hub mirror.",
    ),
    PretrainedWeights(
        name="ViT-B-16/openai",
        arch="ViT-B-16",
        hf_repo="timm/vit_base_patch16_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        hf_revision="977e3dd0ec55ab8da155f2fbeb6b5f54948b6e3d",
        sha256="4b8699299b1e8997753c64b052ba32031449d5d853f55a039148560ee02b820f",
        size=598_516_980,
        layout="open_clip",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; open_clip safetensors from the timm hub mirror.",
    ),
    PretrainedWeights(
        name="ViT-L-14/openai",
        arch="ViT-L-14",
        hf_repo="timm/vit_large_patch14_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        hf_revision="18d0535469bb561bf468d76c1d73aa35156c922b",
        sha256="9ce2e8a8ebfff3793d7d375ad6d3c35cb9aebf3de7ace0fc7308accab7cd207e",
        layout="open_clip",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; open_clip safetensors from the timm hub mirror.",
    ),
    PretrainedWeights(
        name="ViT-B-32/laion2b_s34b_b79k",
        arch="ViT-B-32",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        hf_filename="open_clip_model.safetensors",
        hf_revision="1a25a446712ba5ee05982a381eed697ef9b435cf",
        sha256="ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
        size=605_143_316,
        layout="open_clip",
        act="gelu",
        license="MIT",  # as stated on LAION's model card for this repository
        description="OpenCLIP ViT-B/32 trained by LAION on LAION-2B (34B samples seen, batch 79K).",
    ),
    # OpenAI's original TorchScript archives; the URL path component is the file's sha256.
    PretrainedWeights(
        name="ViT-B-32/openai-pt",
        arch="ViT-B-32",
        url="https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        layout="openai",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; the original TorchScript archive from OpenAI's CDN.",
    ),
    PretrainedWeights(
        name="ViT-B-16/openai-pt",
        arch="ViT-B-16",
        url="https://openaipublic.azureedge.net/clip/models/"
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
        sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        layout="openai",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; the original TorchScript archive from OpenAI's CDN.",
    ),
    PretrainedWeights(
        name="ViT-L-14/openai-pt",
        arch="ViT-L-14",
        url="https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        layout="openai",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; the original TorchScript archive from OpenAI's CDN.",
    ),
):
    WEIGHTS.add(_record)
del _record


# clipiq's own offline model, shipped inside the package (see docs/models/degradation-clip.md).
WEIGHTS.add(
    PretrainedWeights(
        name="degradation-clip",
        arch="degradation-clip",
        package_file="weights/degradation-clip.safetensors",
        sha256="f769010bd4fbadf7ee6075c26428a7453d79cfe99cf25c7fff9d6915565b390b",
        size=16199690,
        layout="clipiq",
        act="gelu",
        image_size=128,
        license="MIT",  # this project's own model, under the project's licence
        description="Small CLIP trained by clipiq on synthetic degradations of real photos; knows degradations, "
        "not scene semantics. The first offline model (clipiqa's default is now degradation-clip-v2).",
    )
)


# clipiq's second offline model: a CLIP on the frozen EfficientNet-Lite0 stem (docs/models/degradation-clip-v2.md).
# The file holds no stem weights: load_clip fills them from the stem's own sha256-pinned package record.
WEIGHTS.add(
    PretrainedWeights(
        name="degradation-clip-v2",
        arch="degradation-clip-v2",
        package_file="weights/degradation-clip-v2.safetensors",
        sha256="605743b6ca34817987b5b9c608e917125f11b5b57e50848829e758934ea422a3",
        size=16799938,
        layout="clipiq",
        act="gelu",
        image_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        license="MIT",  # this project's own model, under the project's licence
        description="CLIP on the frozen ImageNet EfficientNet-Lite0 stem, trained by clipiq on synthetic and "
        "camera-like degradations with SSIM labels. Offline default of clipiqa.",
    )
)
