"""Spoken replies through ``speechllm.tts`` when it is installed and has a voice.

The TTS module is imported lazily: without it (or when it fails) the server still runs,
``/v1/audio/voices`` lists nothing and ``/v1/audio/speech`` answers 503, and the web demo
shows no reply player.
"""

from __future__ import annotations

import io
import logging
import threading

import numpy as np

from speechllm.serve.errors import APIError

log = logging.getLogger(__name__)
_lock = threading.Lock()  # TTS engines are not known to be thread-safe
_voices: list[str] | None = None


def _tts():
    try:
        from speechllm import tts

        return tts
    except Exception as err:  # not installed yet, or broken: no reply audio
        log.info("no TTS (%s)", err)
        return None


def voices() -> list[str]:
    """Installed voices, looked up once."""
    global _voices
    if _voices is None:
        tts = _tts()
        try:
            _voices = [str(v) for v in tts.list_voices()] if tts is not None else []
        except Exception as err:
            log.warning("TTS list_voices failed: %s", err)
            _voices = []
    return _voices


def synthesize_wav(text: str, voice: str | None) -> bytes:
    """16-bit PCM wav bytes of ``text``; APIError 503 when no voice works, 400 for an unknown voice."""
    import soundfile as sf

    names = voices()
    if not names:
        raise APIError(503, "no text-to-speech voice is installed on this server", code="tts_unavailable")
    if voice is not None and voice not in names:
        raise APIError(400, f"unknown voice {voice!r}; installed: {names}", param="voice", code="invalid_value")
    try:
        with _lock:
            wave, rate = _tts().synthesize(text, voice)
    except Exception as err:
        log.warning("TTS failed: %r", err)
        raise APIError(503, "text-to-speech failed on this input", code="tts_failed") from None
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), int(rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()
