"""Image I/O, IQA label files and datasets, splits and paired restoration data (layer 3)."""

from clipiq.data.datasets import IQADataset, skip_bad_collate
from clipiq.data.io import ImageLoadError, list_images, load_image, open_image, save_image
from clipiq.data.labels import (
    IQALabels,
    IQASample,
    LabelFileError,
    read_csiq,
    read_csv_labels,
    read_dhd,
    read_exbedde,
    read_kadid10k,
    read_koniq10k,
    read_labels,
    read_live_challenge,
    read_spaq,
    read_tid2013,
)
from clipiq.data.paired import (
    ImagePair,
    PairedImageDataset,
    SyntheticPairDataset,
    find_div2k_pairs,
    find_pairs,
    find_srf_pairs,
)
from clipiq.data.splits import Split, few_shot, official_split, repeated_splits, split_by_group

__all__ = [
    "IQADataset",
    "IQALabels",
    "IQASample",
    "ImageLoadError",
    "ImagePair",
    "LabelFileError",
    "PairedImageDataset",
    "Split",
    "SyntheticPairDataset",
    "few_shot",
    "find_div2k_pairs",
    "find_pairs",
    "find_srf_pairs",
    "list_images",
    "load_image",
    "official_split",
    "open_image",
    "read_csiq",
    "read_csv_labels",
    "read_dhd",
    "read_exbedde",
    "read_kadid10k",
    "read_koniq10k",
    "read_labels",
    "read_live_challenge",
    "read_spaq",
    "read_tid2013",
    "repeated_splits",
    "save_image",
    "skip_bad_collate",
    "split_by_group",
]
