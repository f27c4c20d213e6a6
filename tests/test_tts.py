"""TTS voices: output contract and sample rates (FACTS.md), voice reuse, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from speechllm import tts

RATES = {"piper:joe": 22050, "flite:kal": 8000, "flite:slt": 16000, "flite:rms": 16000, "flite:awb": 16000,
         "espeak:en-us": 22050, "espeak:en+f3": 22050}


def _need(voice: str) -> None:
    engine, _ = tts.parse_voice(voice)
    if voice not in tts.list_voices() and not tts.ENGINES[engine].available():
        pytest.skip(f"{engine} not installed")


@pytest.mark.parametrize("voice", sorted(RATES))
def test_voice_speaks_at_its_rate(voice):
    _need(voice)
    samples, rate = tts.synthesize("The quick brown fox jumps over the lazy dog.", voice)
    assert rate == RATES[voice]
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 1.0 < len(samples) / rate < 6.0 and 0.05 < np.abs(samples).max() <= 1.0


def test_piper_voice_is_loaded_once():
    _need("piper:joe")
    tts.synthesize("one", "piper:joe")
    before = tts._piper_voice.cache_info()
    tts.synthesize("two", None)  # the default voice is piper:joe
    after = tts._piper_voice.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses


def test_list_voices_names_engines():
    voices = tts.list_voices()
    assert all(tts.parse_voice(v)[0] in tts.ENGINES for v in voices)


def test_errors_are_clear(monkeypatch):
    with pytest.raises(tts.TTSError, match="engine:name"):
        tts.synthesize("hi", "joe")
    with pytest.raises(tts.TTSError, match="unknown flite voice 'zz'"):
        if not tts.ENGINES["flite"].available():
            pytest.skip("flite not installed")
        tts.synthesize("hi", "flite:zz")
    with pytest.raises(ValueError, match="empty text"):
        tts.synthesize("  ", "flite:slt")
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)  # as if espeak-ng were not installed
    with pytest.raises(tts.TTSError, match="apt-get install espeak-ng"):
        tts.synthesize("hi", "espeak:en-us")
