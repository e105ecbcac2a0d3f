"""Layer 1, the core every other package stands on: config, devices, image checks, errors, the registry
type, safe tensor files and hub file records. It imports nothing else from clipiq."""

from clipiq.core.config import apply_overrides, load_config, merge, parse_value, yaml_load
from clipiq.core.device import PRECISIONS, autocast, resolve_device, resolve_precision
from clipiq.core.errors import (
    CheckpointError,
    ClipIQError,
    ConfigError,
    ImageLoadError,
    UnknownNameError,
    WeightsError,
)
from clipiq.core.hub import HubFile, HubRegistry
from clipiq.core.image import LUMA_WEIGHTS, RANGE_TOLERANCE, check_image_batch, pil_to_tensor
from clipiq.core.registry import Registry
from clipiq.core.tensors import load_tensors, load_trainable_state, save_tensors, trainable_state

__all__ = [
    "LUMA_WEIGHTS",
    "PRECISIONS",
    "RANGE_TOLERANCE",
    "CheckpointError",
    "ClipIQError",
    "ConfigError",
    "HubFile",
    "HubRegistry",
    "ImageLoadError",
    "Registry",
    "UnknownNameError",
    "WeightsError",
    "apply_overrides",
    "autocast",
    "check_image_batch",
    "load_config",
    "load_tensors",
    "load_trainable_state",
    "merge",
    "parse_value",
    "pil_to_tensor",
    "resolve_device",
    "resolve_precision",
    "save_tensors",
    "trainable_state",
    "yaml_load",
]
