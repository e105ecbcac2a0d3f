"""Camera-pipeline composites: named chains of degradations that look like authentic capture distortions.

Each recipe lists its steps in pipeline order (scene and exposure, optics, sensor, then compression) with the
range of levels each step may take; ``camera_recipe`` draws the levels and ``compose`` applies the chain.
"""

from __future__ import annotations

import numpy as np

from clipiq.degrade.registry import DEGRADATIONS, NUM_LEVELS, Compose, compose

Step = tuple[str, tuple[int, int]]

#: name -> ((degradation, (lowest level, highest level)), ...) in the order a camera would apply them.
CAMERA_RECIPES: dict[str, tuple[Step, ...]] = {
    "low_light_gain_jpeg": (("low_light", (1, 4)), ("poisson_gaussian_noise", (2, 5)), ("jpeg", (1, 4))),
    "defocus_noise": (("defocus_blur", (1, 5)), ("poisson_gaussian_noise", (1, 3))),
    "defocus_noise_jpeg": (("defocus_blur", (1, 4)), ("poisson_gaussian_noise", (1, 3)), ("jpeg", (1, 4))),
    "motion_low_light": (("low_light", (1, 4)), ("motion_blur", (1, 4)), ("poisson_gaussian_noise", (1, 4))),
    "shake_jpeg": (("motion_blur", (1, 4)), ("jpeg", (1, 4))),
    "over_exposure_jpeg": (("over_exposure", (1, 4)), ("jpeg", (1, 4))),
    "cast_low_contrast_noise": (("color_cast", (1, 4)), ("contrast_change", (1, 4)),
                                ("poisson_gaussian_noise", (1, 3))),
    "haze_soft_jpeg": (("haze", (1, 4)), ("gaussian_blur", (1, 3)), ("jpeg", (1, 3))),
    "faded_noisy_jpeg": (("saturation_change", (1, 4)), ("gaussian_noise", (1, 3)), ("jpeg", (1, 3))),
    "upscaled_jpeg": (("resize_blur", (1, 4)), ("jpeg", (2, 5))),
}


def _check_recipes() -> None:
    for name, steps in CAMERA_RECIPES.items():
        for deg, (lo, hi) in steps:
            if deg not in DEGRADATIONS or not 1 <= lo <= hi <= NUM_LEVELS:
                raise ValueError(f"camera recipe {name!r}: bad step {deg!r} {lo}-{hi}")


_check_recipes()


def camera_recipe(name: str, rng: np.random.Generator | int | None = None) -> list[tuple[str, int]]:
    """Draw the levels of camera recipe ``name``: ``[(degradation, level), ...]`` in pipeline order."""
    if name not in CAMERA_RECIPES:
        raise KeyError(f"unknown camera recipe {name!r}; expected one of {', '.join(CAMERA_RECIPES)}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return [(deg, int(gen.integers(lo, hi + 1))) for deg, (lo, hi) in CAMERA_RECIPES[name]]


def camera_composite(name: str, rng: np.random.Generator | int | None = None, seed: int | None = None) -> Compose:
    """The ``compose`` chain of camera recipe ``name`` with levels drawn from ``rng``."""
    return compose(camera_recipe(name, rng), seed=seed)


__all__ = ["CAMERA_RECIPES", "camera_composite", "camera_recipe"]
