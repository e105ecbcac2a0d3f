"""Shared fixtures: the real images in ../shared/data (skipped with a reason where absent) and the devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _need(sub: str) -> Path:
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"shared data not found at {p} (set CLIPIQ_SHARED_DATA to the shared/data folder)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data."""
    return _need("")


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """Clean photos (kodak24, mcmaster18, sunhays80)."""
    return _need("photos")


@pytest.fixture(scope="session")
def sr_dir() -> Path:
    """Set5/Set14 super-resolution pairs."""
    return _need("sr")


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The small example images bundled in the repo."""
    return REPO / "examples"


@pytest.fixture(scope="session", params=["cpu", "cuda"])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each device a test should pass on; the CUDA case skips where no GPU is visible."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available (torch.cuda.is_available() is False)")
    return torch.device(request.param)
