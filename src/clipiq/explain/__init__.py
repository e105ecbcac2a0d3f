"""Explanations of quality: maps, regions and descriptions of why an image scores as it does (layer 5)."""

import sys
import types

from clipiq.explain.explainer import DEFAULT_MAX_SIDE, MAP_PAIRS, Explainer, explain, load_input
from clipiq.explain.result import DEGRADATION_MAPS, Explanation, RegionExplanation

__all__ = ["DEFAULT_MAX_SIDE", "DEGRADATION_MAPS", "MAP_PAIRS", "Explainer", "Explanation", "RegionExplanation",
           "explain", "load_input"]


class _CallableModule(types.ModuleType):
    """``clipiq.explain(image, metric=...)`` is :func:`explain`, while ``clipiq.explain.Explainer`` and the other
    names stay reachable as the package's attributes."""

    def __call__(self, image, *args, **kwargs) -> Explanation:
        return explain(image, *args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
