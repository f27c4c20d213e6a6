"""More baselines behind the model API: CMU PocketSphinx, a classic HMM-GMM recogniser.

PocketSphinx 5 (pip ``pocketsphinx``) ships its default US-English acoustic model, a 3-gram language model
and a dictionary; it decodes 16 kHz 16-bit PCM. It is the "what speech recognition looked like before
neural models" floor in the baseline table (FACTS.md: fine on clean read speech, unusable on espeak-ng).
Registered in `speechllm.api.NAMED_MODELS` as ``pocketsphinx``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from speechllm.decoding import DecodeOptions

log = logging.getLogger(__name__)


class PocketSphinxASR:
    """PocketSphinx with its default en-us model; instructions and decoding options are ignored."""

    name = "pocketsphinx"
    sampling_rate = 16000

    def __init__(self, **config: Any):
        """``config``: PocketSphinx options (``hmm``, ``lm``, ``dict``, ``beam`` ...) over the defaults."""
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise ImportError("the pocketsphinx baseline needs: pip install pocketsphinx") from None
        self.decoder = Decoder(samprate=self.sampling_rate, **config)

    def transcribe_one(self, wave: np.ndarray) -> str:
        pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()  # (T,) float32 -> int16 LE bytes
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def generate(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str | None] | None = None,
                 options: DecodeOptions | None = None, streamer: Any = None) -> list[str]:
        if instructions and any(instructions):
            log.debug("pocketsphinx ignores instructions; it only transcribes")
        return [self.transcribe_one(np.asarray(w, dtype=np.float32)) for w in waveforms]


def pocketsphinx_model() -> PocketSphinxASR:
    """The factory for ``api.NAMED_MODELS["pocketsphinx"]``."""
    return PocketSphinxASR()
