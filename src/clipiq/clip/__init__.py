"""The CLIP backbone: architectures, tokenizer, weights registry, loaders and preprocessing."""

from clipiq.clip.config import ARCHITECTURES, CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
from clipiq.clip.dense import DenseMaps, dense_features, dense_maps, pair_probabilities
from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP, TowerOutput, build_model
from clipiq.clip.preprocess import Preprocess
from clipiq.clip.prompts import DeepPrompts, TextPrompts
from clipiq.clip.stem_cache import StemCache, use_stem_cache
from clipiq.clip.tokenizer import tokenize

__all__ = [
    "ARCHITECTURES",
    "CLIP",
    "CLIPConfig",
    "DeepPrompts",
    "DenseMaps",
    "Preprocess",
    "StemCache",
    "PreprocessConfig",
    "TextPrompts",
    "TextConfig",
    "TowerOutput",
    "VisionConfig",
    "build_model",
    "dense_features",
    "dense_maps",
    "load_clip",
    "pair_probabilities",
    "tokenize",
    "use_stem_cache",
]
