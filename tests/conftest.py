"""Shared fixtures: the real images with expert masks in ../shared/data (beside the clone)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-image data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy machine; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
