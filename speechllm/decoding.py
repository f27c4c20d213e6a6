"""Decoding options shared by every model in the API (Speech LLM, Whisper, cascade).

CLI flags mirror these names: ``--max-new-tokens``, ``--num-beams``, ``--do-sample`` ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


SPEECHLLM_OPTIONS = ("ctc_weight", "ctc_top_k", "ctc_max_length_ratio", "max_segment_seconds")


@dataclass
class DecodeOptions:
    """Decoding knobs shared by every model in the API (flag names equal these names)."""

    max_new_tokens: int = 128
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    use_cache: bool = True
    # beam search ranks finished hypotheses by log-prob / length ** length_penalty (transformers' own
    # default 1.0: per-token average; 0: the plain sum)
    length_penalty: float = 1.0
    # > 0: no n-gram of generated tokens occurs twice (transformers' no_repeat_ngram_size; 0: off) — a
    # guard against the letter loops ("t t t t ...") joint CTC decoding can fall into
    no_repeat_ngram_size: int = 0
    # joint CTC / LLM decoding (Speech LLMs with a CTC head, speechllm.ctc): the weight of the
    # CTC prefix score, and how many of the LLM's best next tokens it rescores per hypothesis
    ctc_weight: float = 0.0
    ctc_top_k: int = 8
    # > 0: a hypothesis that has spelled more than this many times the characters of the head's best
    # path (+ 10) must end: a cap on hallucinated continuations and letter loops (0: no cap)
    ctc_max_length_ratio: float = 0.0
    # > 0: transcription (no instruction) cuts clips longer than this many seconds at their quietest
    # points and joins the pieces' transcripts (speechllm.segment; 0: whole clips)
    max_segment_seconds: float = 0.0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = dataclasses.asdict(self)
        for name in SPEECHLLM_OPTIONS:  # speechllm's own, not transformers'
            kwargs.pop(name)
        if not self.do_sample:  # keep HF from warning about unused sampling knobs
            kwargs.pop("temperature"), kwargs.pop("top_p")
        return kwargs


def decode_options(**decode: Any) -> DecodeOptions:
    """:class:`DecodeOptions` from keyword arguments, with a clear error for unknown names."""
    known = {f.name for f in dataclasses.fields(DecodeOptions)}
    unknown = sorted(set(decode) - known)
    if unknown:
        raise TypeError(f"unknown decoding option(s) {unknown}; known: {sorted(known)}")
    return DecodeOptions(**decode)
