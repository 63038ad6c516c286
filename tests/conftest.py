"""Shared fixtures: offline settings, a tiny random chat model, the GSM8K files beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trl_lab.testing import save_tiny_chat_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama (hidden 32, 2 layers) plus tokenizer, loadable by path like any hub model."""
    return save_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def shared_gsm8k() -> Path:
    if not (SHARED_GSM8K / "test.jsonl").exists():
        pytest.skip(f"GSM8K files not found at {SHARED_GSM8K} (../shared beside the checkout)")
    return SHARED_GSM8K
