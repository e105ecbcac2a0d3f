"""The quality and degradation vocabulary: CLIP-IQA's antonym pairs, degradation phrases, level words and the
description builder. Metrics, dense maps, training and region descriptions all read their words from here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The quality pair first; the rest are the attribute pairs of the CLIP-IQA paper (positive, negative).
ATTRIBUTE_PROMPTS: dict[str, tuple[str, str]] = {
    "quality": ("Good photo.", "Bad photo."),
    "brightness": ("Bright photo.", "Dark photo."),
    "noisiness": ("Clean photo.", "Noisy photo."),
    "colorfulness": ("Colorful photo.", "Dull photo."),
    "sharpness": ("Sharp photo.", "Blurry photo."),
    "contrast": ("High contrast photo.", "Low contrast photo."),
    "complexity": ("Complex photo.", "Simple photo."),
    "natural": ("Natural photo.", "Synthetic photo."),
    "happy": ("Happy photo.", "Sad photo."),
    "scary": ("Scary photo.", "Peaceful photo."),
    "new": ("New photo.", "Old photo."),
    "warm": ("Warm photo.", "Cold photo."),
    "real": ("Real photo.", "Abstract photo."),
    "beautiful": ("Beautiful photo.", "Ugly photo."),
    "lonely": ("Lonely photo.", "Sociable photo."),
    "relaxing": ("Relaxing photo.", "Stressful photo."),
}

# Distinct vocabulary per degradation type of clipiq.degrade (descriptions and zero-shot type prompts).
DEGRADATION_PHRASES: dict[str, str] = {
    "gaussian_blur": "gaussian blur",
    "motion_blur": "motion blur",
    "defocus_blur": "defocus blur",
    "gaussian_noise": "gaussian noise",
    "poisson_gaussian_noise": "sensor noise",
    "impulse_noise": "salt and pepper noise",
    "jpeg": "jpeg compression artifacts",
    "quantization": "color quantization",
    "banding": "color banding",
    "low_light": "low light",
    "over_exposure": "overexposure",
    "haze": "haze",
    "contrast_change": "low contrast",
    "saturation_change": "faded colors",
    "color_cast": "a color cast",
    "pixelate": "pixelation",
    "resize_blur": "upscaling blur",
}
LEVEL_WORDS = {1: "very slight", 2: "slight", 3: "moderate", 4: "strong", 5: "severe"}
CLEAN_TEXTS = ("a sharp, clean photo", "a good photo", "a clean, high quality photo")

# Which attribute pair of ATTRIBUTE_PROMPTS a degradation type moves.
ATTRIBUTE_OF_DEGRADATION: dict[str, str] = {
    "gaussian_blur": "sharpness", "motion_blur": "sharpness", "defocus_blur": "sharpness",
    "resize_blur": "sharpness", "pixelate": "sharpness",
    "gaussian_noise": "noisiness", "poisson_gaussian_noise": "noisiness", "impulse_noise": "noisiness",
    "low_light": "brightness", "over_exposure": "brightness",
    "saturation_change": "colorfulness", "contrast_change": "contrast", "haze": "contrast",
}


def describe(recipe: Sequence[tuple[str, int]], rng: np.random.Generator, p_level_word: float = 0.7) -> str:
    """A natural-language description of a degradation recipe (clean when empty)."""
    if not recipe:
        return CLEAN_TEXTS[int(rng.integers(len(CLEAN_TEXTS)))]
    parts = []
    for name, level in recipe:
        phrase = DEGRADATION_PHRASES[name]
        # Sometimes drop the severity word so level-free zero-shot prompts are in distribution.
        parts.append(phrase if rng.random() < 1.0 - p_level_word else f"{LEVEL_WORDS[level]} {phrase}")
    lead = "a bad photo with" if max(lv for _, lv in recipe) >= 4 and rng.random() < 0.3 else "a photo with"
    return f"{lead} {' and '.join(parts)}"


__all__ = [
    "ATTRIBUTE_OF_DEGRADATION",
    "ATTRIBUTE_PROMPTS",
    "CLEAN_TEXTS",
    "DEGRADATION_PHRASES",
    "LEVEL_WORDS",
    "describe",
]
