"""The LLM back-end contract: a causal LM plus its tokenizer, seen through embeddings.

A Speech LLM never feeds token ids alone: it builds ``inputs_embeds`` where audio
embeddings sit between prompt-token embeddings.  So a back-end exposes
``embed(input_ids)``, ``forward(inputs_embeds, attention_mask, labels)`` and
``generate(inputs_embeds, attention_mask, ...)`` plus ``tokenizer`` and ``hidden_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from speechllm.registry import LLMS, ComponentConfig


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"

    @property
    def torch(self) -> torch.dtype:
        return getattr(torch, self.value)


@dataclass
class LLMConfig(ComponentConfig):
    model: str = ""
    dtype: DType = DType.float32


LLMConfig.registry = LLMS
