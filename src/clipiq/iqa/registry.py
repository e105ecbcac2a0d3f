"""Every metric's spec, declared here once, and ``create_metric`` (each method adds an entry, not a branch).

Factories are lazy references, so ``import clipiq`` and ``clipiq metrics`` import no method module;
``create_metric`` imports the one it builds.
"""

from __future__ import annotations

import inspect
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any

import torch

from clipiq.core.device import resolve_device, resolve_precision
from clipiq.core.errors import ConfigError
from clipiq.core.registry import Registry, check_known_options
from clipiq.iqa.base import QualityMetric
from clipiq.iqa.spec import MetricSpec

#: The metric table: name (case-insensitive) -> MetricSpec.
METRICS: Registry[MetricSpec] = Registry("metric")

#: Arguments every factory takes from ``create_metric`` itself; everything else is a metric option.
COMMON_ARGS = ("model", "weights", "device", "precision")


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric to the registry (names are unique, case-insensitively)."""
    return METRICS.register(spec.name, spec)


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(METRICS.names(), key=str.lower)


def get_metric_spec(name: str) -> MetricSpec:
    """The spec of a metric; an unknown name raises UnknownNameError (a ValueError) with close matches."""
    return METRICS.get(name)


def known_options(name: str) -> list[str]:
    """The options a metric takes beyond model, weights, device and precision (imports its factory)."""
    return list(_options(get_metric_spec(name).load_factory()))


def _options(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(factory).parameters
    return {k: p for k, p in params.items()
            if k not in COMMON_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _accepts(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a type hint, checking only the outer type (``Sequence[str]`` checks Sequence)."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    hint = origin or hint
    if hint in (int, float):  # bool is an int to Python but never a sensible count or size
        return isinstance(value, numbers.Integral if hint is int else numbers.Real) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_options(spec: MetricSpec, options: dict[str, Any]) -> None:
    """Raise ConfigError for an option the metric does not take, or one of the wrong type."""
    factory = spec.load_factory()
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()):
        return  # a factory that takes **kwargs validates its own options
    check_known_options("metric", spec.name, options, _options(factory))
    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except (NameError, TypeError):  # annotations that cannot be evaluated: skip the type check
        return
    for key, value in options.items():
        if key in hints and not _accepts(value, hints[key]):
            raise ConfigError(f"metric {spec.name!r} option {key!r} must be {_type_name(hints[key])}, "
                              f"got {type(value).__name__} {value!r}")


def create_metric(
    name: str,
    model: str | None = None,
    weights: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    **options: Any,
) -> QualityMetric:
    """Build a metric by name; ``model`` takes the same names as ``load_clip``, ``options`` the metric's own."""
    spec = get_metric_spec(name)
    check_options(spec, options)  # fail early, before any weights are read
    dev = resolve_device(device)
    resolve_precision(precision, dev)
    factory: Callable[..., Any] = spec.load_factory()
    # A weights file without a model name is loaded as what it holds, not as the default model.
    if model is None and weights is None:
        model = spec.default_model
    metric = factory(model=model, weights=weights, device=dev, precision=precision, **options)
    if not isinstance(metric, QualityMetric):
        raise TypeError(f"metric {spec.name!r}: its factory returned {type(metric).__name__}, not a QualityMetric")
    metric.spec = spec  # the spec it was built from (one class may back several registered names)
    return metric.eval()


register_metric(MetricSpec(
    name="clipiqa",
    factory="clipiq.iqa.clipiqa:CLIPIQA",
    description="Zero-shot CLIP-IQA: softmax of 'Good photo.' vs 'Bad photo.' (+ attribute pairs)",
    # Offline default; --model ViT-B-32/openai gives the original CLIP-IQA backbone.
    default_model="degradation-clip-v2",
))
register_metric(MetricSpec(
    name="clipiqa+",
    factory="clipiq.iqa.clipiqa_plus:CLIPIQAPlus",
    description="CLIP-IQA+: CLIP-IQA with CoOp-trained antonym prompts (shipped: trained on 400 LIVE Challenge "
                "images; --checkpoint for others)",
    # None: the shipped prompts' backbone, or a checkpoint's own (clipiqa_plus.DEFAULT_BACKBONE).
    default_model=None,
))
register_metric(MetricSpec(
    name="clip-dqa",
    factory="clipiq.iqa.clip_dqa:CLIPDQA",
    description="CLIP-DQA: dehazed-image quality from global+local views with multimodal deep prompts "
                "(shipped: trained on synthetic dehazed images; --checkpoint for others)",
    # None: the shipped checkpoint's backbone, or a checkpoint's own (clip_dqa.DEFAULT_BACKBONE).
    default_model=None,
))
register_metric(MetricSpec(
    name="grmp-iqa",
    factory="clipiq.iqa.grmp_iqa:GRMPIQA",
    description="GRMP-IQA: few-shot CLIP adaptation with meta-learned prompts and gradient regularisation "
                "(shipped: 50 LIVE Challenge shots; --checkpoint for others)",
    # None: the shipped checkpoint's backbone, or a checkpoint's own (grmp_iqa.DEFAULT_BACKBONE).
    default_model=None,
))
register_metric(MetricSpec(
    name="rsfiqa",
    factory="clipiq.iqa.rsfiqa:RSFIQA",
    description="RSFIQA: regions segmented, described and scored, with region-aware semantic attention "
                "(needs --checkpoint)",
    default_model=None,
    needs_checkpoint=True,
))

__all__ = [
    "METRICS",
    "MetricSpec",
    "check_options",
    "create_metric",
    "get_metric_spec",
    "list_metrics",
    "known_options",
    "register_metric",
]
