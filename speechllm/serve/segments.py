"""Segment timestamps for ``verbose_json``, ``srt`` and ``vtt`` without timestamp tokens.

The bundled Whisper tokenizer has no timestamp tokens (FACTS.md), and a Speech LLM has none
either, so segments come from a voice-activity detector instead: Silero VAD (the ``silero-vad``
package, its bundled TorchScript model, CPU) finds the speech regions, each region becomes one
segment with its start/end, and each is decoded as its own clip (all of them in one batch).
Regions are capped at 30 s (Silero's ``max_speech_duration_s``) so every segment fits one
Whisper window.  When the VAD finds no speech, or cannot be loaded, the whole clip is one segment.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

VAD_RATES = (8000, 16000)
MAX_SEGMENT_SECONDS = 30.0
_lock = threading.Lock()  # the Silero model keeps state between calls


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str = ""


@functools.lru_cache(maxsize=1)
def _silero():
    try:
        from silero_vad import get_speech_timestamps, load_silero_vad

        return load_silero_vad(), get_speech_timestamps
    except Exception as err:  # missing package or broken model file: one segment per clip
        log.warning("silero-vad unavailable (%s); segments are whole clips", err)
        return None


def speech_spans(wave: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """Speech regions of a mono clip as (start, end) sample indices; the whole clip if none."""
    whole = [(0, len(wave))]
    vad = _silero()
    if vad is None:
        return whole
    model, get_speech_timestamps = vad
    import torch

    vad_rate = rate if rate in VAD_RATES else 16000
    x = wave if vad_rate == rate else _resample(wave, rate, vad_rate)
    with _lock, torch.inference_mode():
        stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(x)), model, sampling_rate=vad_rate,
                                       min_silence_duration_ms=300, speech_pad_ms=100,
                                       max_speech_duration_s=MAX_SEGMENT_SECONDS)
    scale = rate / vad_rate
    spans = [(int(s["start"] * scale), min(len(wave), int(s["end"] * scale))) for s in stamps]
    return [(a, b) for a, b in spans if b > a] or whole


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    import soxr

    return soxr.resample(wave, rate, target).astype(np.float32)


# ---- subtitle formats --------------------------------------------------------------------------
def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: list[Segment]) -> str:
    blocks = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
              for i, s in enumerate(segments, start=1)]
    return "\n".join(blocks)


def to_vtt(segments: list[Segment]) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)
