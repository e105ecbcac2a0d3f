"""Seeded, composable image degradations with 5 severity levels, and a MATLAB-compatible imresize.

Every operation takes a float image (3,H,W) or batch (N,3,H,W) in [0,1] and returns the same shape,
dtype and device, clamped to [0,1]. ``apply(image, name, level, seed)`` looks up the documented level
parameters in ``DEGRADATIONS``; ``compose`` chains several; ``sample_recipe`` draws random chains;
``CAMERA_RECIPES`` names camera-pipeline composites (``camera_recipe`` draws their levels).
"""

from clipiq.degrade._common import linear_to_srgb, srgb_to_linear
from clipiq.degrade.camera import CAMERA_RECIPES, camera_composite, camera_recipe
from clipiq.degrade.docs import degradations_markdown
from clipiq.degrade.kernels import disk_kernel, motion_kernel, motion_trajectory
from clipiq.degrade.lowlight import lowlight_blur_pair, lowlight_blur_params
from clipiq.degrade.ops import (
    banding,
    color_cast,
    contrast_change,
    defocus_blur,
    gaussian_blur,
    gaussian_noise,
    haze,
    impulse_noise,
    jpeg,
    low_light,
    motion_blur,
    over_exposure,
    pixelate,
    poisson_gaussian_noise,
    quantization,
    resize_blur,
    saturation_change,
)
from clipiq.degrade.registry import (
    DEGRADATIONS,
    FAMILIES,
    NUM_LEVELS,
    Compose,
    Degradation,
    apply,
    compose,
    get_degradation,
    sample_recipe,
)
from clipiq.degrade.resize import imresize
from clipiq.degrade.sr_domains import SR_DOMAINS, TARGET_DOMAINS, SRDomain, get_sr_domain, make_lr

__all__ = [
    "CAMERA_RECIPES",
    "DEGRADATIONS",
    "FAMILIES",
    "NUM_LEVELS",
    "SR_DOMAINS",
    "TARGET_DOMAINS",
    "SRDomain",
    "Compose",
    "Degradation",
    "apply",
    "banding",
    "camera_composite",
    "camera_recipe",
    "color_cast",
    "compose",
    "contrast_change",
    "defocus_blur",
    "degradations_markdown",
    "disk_kernel",
    "gaussian_blur",
    "gaussian_noise",
    "get_degradation",
    "get_sr_domain",
    "haze",
    "imresize",
    "impulse_noise",
    "jpeg",
    "linear_to_srgb",
    "low_light",
    "lowlight_blur_pair",
    "lowlight_blur_params",
    "make_lr",
    "motion_blur",
    "motion_kernel",
    "motion_trajectory",
    "over_exposure",
    "pixelate",
    "poisson_gaussian_noise",
    "quantization",
    "resize_blur",
    "sample_recipe",
    "saturation_change",
    "srgb_to_linear",
]
