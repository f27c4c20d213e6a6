"""Shared fixtures: tiny random models on disk (built once per session), synthetic audio,
and the location of ../shared/data.  Tests never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.tiny_models import make_tiny_llm, make_tiny_ssl, make_tiny_whisper  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "llm": str(make_tiny_llm(root / "llm")),
        "whisper": str(make_tiny_whisper(root / "whisper")),
        **{family: str(make_tiny_ssl(root / family, family)) for family in ("wav2vec2", "hubert", "wavlm")},
    }


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-like test signal: a harmonic tone plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3 * freq * t)
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
