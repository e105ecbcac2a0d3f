"""What a quality metric is: the one record of its name, direction, range and how to build it."""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricSpec:
    """A metric's metadata and factory; the metric's instances read their name, direction and range from here.

    ``factory`` is a callable returning a ``QualityMetric`` or a ``"package.module:attribute"`` reference
    to one, imported only when the metric is first built (so listing metrics imports no method code).
    """

    name: str
    factory: str | Callable[..., Any]
    description: str
    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    default_model: str | None = "ViT-B-32/openai"
    needs_checkpoint: bool = False

    def load_factory(self) -> Callable[..., Any]:
        """The factory, importing it first when it is given as a reference."""
        if callable(self.factory):
            return self.factory
        try:
            return pkgutil.resolve_name(self.factory)
        except (ImportError, AttributeError, ValueError) as e:
            raise ImportError(f"metric {self.name!r}: cannot import its factory {self.factory!r}: {e}") from e


__all__ = ["MetricSpec"]
