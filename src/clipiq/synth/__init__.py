"""Layer 5: synthetic data writers and the synthetic ranking benchmark (they use degrade, eval and restore)."""

from clipiq.synth.degraded import DistortedImage, synthesize, write_synthetic_dataset
from clipiq.synth.dehazed import synthetic_dehazed_labels, write_synthetic_dehazed_dataset
from clipiq.synth.local import synthetic_local_labels, write_synthetic_local_dataset
from clipiq.synth.ranking import SyntheticResult, SyntheticRow, synthetic_ranking

__all__ = [
    "DistortedImage",
    "SyntheticResult",
    "SyntheticRow",
    "synthesize",
    "synthetic_dehazed_labels",
    "synthetic_local_labels",
    "synthetic_ranking",
    "write_synthetic_dataset",
    "write_synthetic_dehazed_dataset",
    "write_synthetic_local_dataset",
]
