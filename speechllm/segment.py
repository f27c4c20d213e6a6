"""Cut long audio at its quietest points so a model trained on short clips transcribes it piece by piece.

A Speech LLM trained on sentences of a few seconds degrades on longer input: on 40 LibriSpeech train-clean
clips (pseudo-labelled dev, recipes/asr/slam_tiny/RESULTS.md) the default model's WER was 23% on clips under
12 s and 46% on longer ones, which fell into letter loops and early stops.  `split_points` cuts a clip
longer than ``max_seconds`` where its short-time energy, smoothed over ``window`` seconds, is lowest — in
read or conversational speech, a pause — searching only the middle part of the clip (``balance``) so the
pieces stay comparable in length, and recursing until every piece is short enough.  Deterministic, needs
no model; ~0.4 ms per second of audio (measured on a 10-minute clip on this 2-core CPU).

`split_long` returns the pieces and `join_pieces` joins their transcripts: `speechllm.api.generate` and the
server's transcription route (speechllm.serve.app) do both when the decoding option ``max_segment_seconds``
is set (the shipped model's checkpoint sets it).  Unlike the server's Silero-VAD spans
(speechllm.serve.segments, for subtitle timestamps), the pieces here cover the whole clip: no audio is
dropped, however quiet.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FRAME_SECONDS = 0.01


def _smoothed_energy(wave: np.ndarray, hop: int, width: int) -> np.ndarray:
    """Mean square per ``hop``-sample frame, averaged over ``width`` frames centred on each."""
    n = len(wave) // hop
    frames = wave[: n * hop].astype(np.float64).reshape(n, hop)
    energy = (frames * frames).mean(axis=1)
    return np.convolve(energy, np.ones(width) / width, mode="same") if n >= width else energy


def split_points(wave: np.ndarray, rate: int, max_seconds: float, *, window: float = 0.2,
                 balance: float = 0.3) -> list[int]:
    """Sample indices at which to cut ``wave`` so that no piece is longer than ``max_seconds``.

    Each cut lies at the centre of the quietest ``window``-second stretch within the middle of the piece
    being cut (from ``balance`` to ``1 - balance`` of its length).  Sorted; empty when the clip is short.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if not 0 <= balance < 0.5:
        raise ValueError(f"balance must be in [0, 0.5), got {balance}")
    max_len = int(max_seconds * rate)
    if len(wave) <= max_len:
        return []
    hop = max(1, int(round(FRAME_SECONDS * rate)))
    smooth = _smoothed_energy(wave, hop, max(1, int(round(window / FRAME_SECONDS))))
    cuts: list[int] = []

    def cut(start: int, end: int) -> None:  # samples [start, end)
        if end - start <= max_len:
            return
        lo = (start + int(balance * (end - start))) // hop
        hi = min(max((start + int((1 - balance) * (end - start))) // hop, lo + 1), len(smooth))
        # the quietest frame of the middle part; the plain middle if it has no whole frame
        point = (lo + int(np.argmin(smooth[lo:hi]))) * hop + hop // 2 if lo < hi else (start + end) // 2
        point = min(max(point, start + 1), end - 1)
        cuts.append(point)
        cut(start, point)
        cut(point, end)

    cut(0, len(wave))
    return sorted(cuts)


def piece_bounds(wave: np.ndarray, rate: int, max_seconds: float, **kwargs) -> list[tuple[int, int]]:
    """(start, end) sample bounds of the pieces `split_points` makes; together they cover ``wave``."""
    bounds = [0, *split_points(wave, rate, max_seconds, **kwargs), len(wave)]
    return list(zip(bounds, bounds[1:]))


def split_long(wave: np.ndarray, rate: int, max_seconds: float, **kwargs) -> list[np.ndarray]:
    """``wave`` cut at `split_points` (a list with ``wave`` itself when it is short enough)."""
    return [wave[a:b] for a, b in piece_bounds(wave, rate, max_seconds, **kwargs)]


def join_pieces(texts: Sequence[str]) -> str:
    """One clip's transcript from those of its `split_long` pieces, in order (empty ones dropped)."""
    return " ".join(text.strip() for text in texts if text.strip())
