"""Decoding options shared by every model in the API (Speech LLM, Whisper, cascade).

CLI flags mirror these names: ``--max-new-tokens``, ``--num-beams``, ``--do-sample`` ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = dataclasses.asdict(self)
        if not self.do_sample:  # keep HF from warning about unused sampling knobs
            kwargs.pop("temperature"), kwargs.pop("top_p")
        return kwargs
