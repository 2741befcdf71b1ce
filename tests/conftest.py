"""Fixtures shared by every stage's tests: the real-data folder and small
real models (a tiny randomly initialised Llama with the real SmolLM2 tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Keep BLAS/torch to the two cores we have and make runs reproducible.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the repository, see README)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def backbone_dir() -> Path:
    """The converted SmolLM2 directory (converted once from the shipped GGUF)."""
    from notellm.backbone import ensure_default_backbone

    return ensure_default_backbone()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, backbone_dir) -> Path:
    from notellm.encoder import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"), tokenizer_dir=backbone_dir)
