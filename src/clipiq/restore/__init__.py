"""Restoration methods behind one registry and one inference wrapper, as quality metrics are.

:func:`create_restorer` builds a :class:`Restorer` by name (see :func:`list_restorers`); every restorer
takes paths, PIL images or [0,1] float tensors, pads to its network's multiple and tiles large images
under a memory budget (:mod:`clipiq.restore.base`). The first entries are the classic dehazers
(``dehaze-none`` .. ``dehaze-dcp-strong``), which :data:`DEHAZERS` also names for the synthetic
dehazed-image data.
"""

from clipiq.restore.base import DEFAULT_MEMORY_BUDGET_MB, DEFAULT_TILE_OVERLAP, RUN_OPTIONS, Restorer
from clipiq.restore.dehaze import (
    DEHAZERS,
    Dehazer,
    DehazeRestorer,
    contrast_stretch,
    dark_channel_prior,
    dehaze,
    gamma_restore,
    guided_filter,
)
from clipiq.restore.registry import (
    RESTORERS,
    RestorerSpec,
    create_restorer,
    get_restorer_spec,
    list_restorers,
    register_restorer,
)

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "DEFAULT_TILE_OVERLAP",
    "DEHAZERS",
    "RESTORERS",
    "RUN_OPTIONS",
    "DehazeRestorer",
    "Dehazer",
    "Restorer",
    "RestorerSpec",
    "contrast_stretch",
    "create_restorer",
    "dark_channel_prior",
    "dehaze",
    "gamma_restore",
    "get_restorer_spec",
    "guided_filter",
    "list_restorers",
    "register_restorer",
]
