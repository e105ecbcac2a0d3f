"""Layer 3 data: image I/O, IQA label files and datasets, splits, paired restoration data and the batch runner.

Names are imported on first use, so ``import clipiq`` (which needs only the runner and image I/O) does not
load the label readers, datasets and pair finders.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "IQADataset": "clipiq.data.datasets",
    "IQALabels": "clipiq.data.labels",
    "IQASample": "clipiq.data.labels",
    "ImageLoadError": "clipiq.data.io",
    "ImagePair": "clipiq.data.paired",
    "LabelFileError": "clipiq.data.labels",
    "PairedImageDataset": "clipiq.data.paired",
    "BatchRunner": "clipiq.data.runner",
    "RunResult": "clipiq.data.runner",
    "Split": "clipiq.data.splits",
    "prefetch": "clipiq.data.runner",
    "SyntheticPairDataset": "clipiq.data.paired",
    "few_shot": "clipiq.data.splits",
    "find_div2k_pairs": "clipiq.data.paired",
    "find_pairs": "clipiq.data.paired",
    "find_srf_pairs": "clipiq.data.paired",
    "list_images": "clipiq.data.io",
    "load_image": "clipiq.data.io",
    "official_split": "clipiq.data.splits",
    "open_image": "clipiq.data.io",
    "read_csiq": "clipiq.data.labels",
    "read_csv_labels": "clipiq.data.labels",
    "read_dhd": "clipiq.data.labels",
    "read_exbedde": "clipiq.data.labels",
    "read_kadid10k": "clipiq.data.labels",
    "read_koniq10k": "clipiq.data.labels",
    "read_labels": "clipiq.data.labels",
    "read_live_challenge": "clipiq.data.labels",
    "read_spaq": "clipiq.data.labels",
    "read_tid2013": "clipiq.data.labels",
    "repeated_splits": "clipiq.data.splits",
    "encode_image": "clipiq.data.io",
    "save_image": "clipiq.data.io",
    "skip_bad_collate": "clipiq.data.datasets",
    "split_by_group": "clipiq.data.splits",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipiq.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
