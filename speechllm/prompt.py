"""Prompt building: the LLM's own chat template with an audio span in the user turn.

The user turn is ``user_template`` (default ``"{audio}\\n{instruction}"``) rendered through
``tokenizer.apply_chat_template`` with a marker where the audio goes; the text is split at
the marker and each side tokenized, so a sample is laid out as

    [prefix ids] [audio embeddings x N] [suffix ids] [answer ids + EOS]

where N comes from ``encoder.output_lengths`` and ``connector.output_lengths`` — the one
place that knows how many audio positions a clip becomes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

AUDIO_MARKER = "<|speechllm_audio|>"


@dataclass
class PromptConfig:
    """system: None uses the chat template's own default (SmolLM2 adds one); "" sends an empty one."""

    system: str | None = None
    instruction: str = "Transcribe the speech to text."
    user_template: str = "{audio}\n{instruction}"

    def __post_init__(self):
        if self.user_template.count("{audio}") != 1:
            raise ValueError(f"prompt.user_template must contain {{audio}} exactly once: {self.user_template!r}")


class PromptBuilder:
    def __init__(self, tokenizer, config: PromptConfig):
        self.tokenizer = tokenizer
        self.config = config

    @functools.lru_cache(maxsize=256)
    def segments(self, instruction: str | None = None, system: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio span, for one (instruction, system) pair."""
        instruction = self.config.instruction if instruction is None else instruction
        system = self.config.system if system is None else system
        user = self.config.user_template.replace("{audio}", AUDIO_MARKER).replace("{instruction}", instruction)
        text = self._render(user, system)
        before, after = text.split(AUDIO_MARKER)
        encode = functools.partial(self.tokenizer.encode, add_special_tokens=False)
        return encode(before), encode(after)

    def answer_ids(self, text: str, eos_token_id: int) -> list[int]:
        """The target tokens: the answer text then EOS (learned so generation stops)."""
        return self.tokenizer.encode(text, add_special_tokens=False) + [eos_token_id]

    def _render(self, user: str, system: str | None) -> str:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # a base LM without a chat template: plain text turns, BOS first if the model uses one
        bos = self.tokenizer.bos_token or ""
        head = f"{system}\n\n" if system else ""
        return f"{bos}{head}{user}\n"
