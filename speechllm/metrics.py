"""WER/CER with Whisper's English text normaliser (as the Whisper paper scores), via jiwer.

The bundled tiny.en ships no ``normalizer.json`` (the British->American spelling map), so
the normaliser runs with an empty map; every other rule (numbers, punctuation, fillers,
contractions) applies.
"""

from __future__ import annotations

import functools
from typing import Sequence


@functools.lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalize(text: str) -> str:
    return _normalizer()(text)


def _pairs(refs: Sequence[str], hyps: Sequence[str], norm: bool) -> tuple[list[str], list[str]]:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if norm:
        refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    keep = [i for i, r in enumerate(refs) if r.strip()]  # jiwer cannot score empty references
    return [refs[i] for i in keep], [hyps[i] for i in keep]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str], norm: bool = True) -> float:
    import jiwer

    r, h = _pairs(refs, hyps, norm)
    return float(jiwer.wer(r, h)) if r else 0.0


def char_error_rate(refs: Sequence[str], hyps: Sequence[str], norm: bool = True) -> float:
    import jiwer

    r, h = _pairs(refs, hyps, norm)
    return float(jiwer.cer(r, h)) if r else 0.0
