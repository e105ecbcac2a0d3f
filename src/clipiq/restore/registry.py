"""A name -> spec registry behind ``create_restorer`` (each method adds an entry, not a branch).

A spec says what a restorer is (description, scale, pad multiple, whether it can be tiled, whether it
takes weights, which options it has) and how to build it. Methods with heavy modules register a lazy
spec (``RESTORERS.register_lazy(name, "clipiq.restore.module:SPEC")``) so listing imports nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from clipiq.core.device import resolve_device, resolve_precision
from clipiq.core.errors import ConfigError
from clipiq.core.registry import Registry, check_known_options
from clipiq.restore.base import RUN_OPTIONS, Restorer

__all__ = ["RESTORERS", "RestorerSpec", "create_restorer", "get_restorer_spec", "list_restorers",
           "register_restorer"]


@dataclass(frozen=True)
class RestorerSpec:
    """What a restorer is and how to build it.

    ``factory(**options)`` returns the restorer (with ``weights=`` too when ``has_weights``); ``options``
    names the method's own options (the run options of :data:`clipiq.restore.base.RUN_OPTIONS` are
    always accepted) and ``defaults`` fills them in.
    """

    name: str
    factory: Callable[..., Restorer]
    description: str
    task: str = "restore"
    scale: int = 1
    pad_multiple: int = 1
    has_weights: bool = False
    tileable: bool = True
    options: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    paper: str = ""


RESTORERS: Registry[RestorerSpec] = Registry("restorer")
RESTORERS.register_lazy("cdasr", "clipiq.restore.cdasr:SPEC")
RESTORERS.register_lazy("dap-led", "clipiq.restore.dap_led:SPEC")


def register_restorer(spec: RestorerSpec) -> RestorerSpec:
    """Add a restorer to the registry (names are unique, case-insensitive)."""
    return RESTORERS.register(spec.name, spec)


def list_restorers(pattern: str | None = None) -> list[str]:
    """Names of the registered restorers, optionally only those matching a glob ``pattern``."""
    return RESTORERS.names(pattern)


def get_restorer_spec(name: str) -> RestorerSpec:
    """The spec of a restorer; an unknown name raises UnknownNameError with close matches."""
    return RESTORERS.get(name)


def create_restorer(
    name: str,
    weights: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    **options: Any,
) -> Restorer:
    """Build a restorer by name, on ``device`` (default: CUDA when available), in eval mode.

    ``options`` are the method's own options and the run options (``tile``, ``tile_overlap``,
    ``memory_budget`` in MiB, ``batch_size``); anything else raises ConfigError naming the known ones.
    """
    spec = get_restorer_spec(name)
    check_known_options("restorer", spec.name, options, (*spec.options, *RUN_OPTIONS))
    if weights is not None and not spec.has_weights:
        raise ConfigError(f"restorer {spec.name} takes no weights, got weights={weights!r}")
    dev = resolve_device(device)
    resolve_precision(precision, dev)  # fail early, before any weights are read
    kwargs = {**spec.defaults, **options}
    if spec.has_weights:
        kwargs["weights"] = weights
    restorer = spec.factory(precision=precision, **kwargs)
    restorer.name = spec.name
    return restorer.to(dev).eval()
