"""Any transformers causal LM — a Hub id, a local folder, a ``.gguf`` file, or an embedded
name — as a Speech-LLM back-end (``type: hf``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from speechllm.llms.base import LLMConfig
from speechllm.registry import LLMS


@dataclass
class HFCausalLMConfig(LLMConfig):
    type: str = "hf"
    model: str = "smollm2-135m-instruct"
    attn_implementation: str = "sdpa"


class HFCausalLM(nn.Module):
    """Holds ``self.model`` (a ``PreTrainedModel``) and ``self.tokenizer``."""

    def __init__(self, config: HFCausalLMConfig):
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from speechllm.embedded import resolve_model

        source = resolve_model(config.model)
        kwargs: dict = {}
        if source.endswith(".gguf"):  # transformers dequantizes GGUF through the `gguf` package
            path = Path(source)
            source, kwargs["gguf_file"] = str(path.parent), path.name
        self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(
            source, dtype=config.dtype.torch, attn_implementation=config.attn_implementation, **kwargs
        )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def eos_token_ids(self) -> list[int]:
        """Tokens that end an answer: the tokenizer's EOS plus the generation config's."""
        ids = {self.tokenizer.eos_token_id}
        gen = self.model.generation_config.eos_token_id
        ids.update(gen if isinstance(gen, list) else [gen])
        return sorted(i for i in ids if i is not None)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None):
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)

    def logits_where(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     where: torch.Tensor) -> torch.Tensor:
        """Next-token logits only at positions where ``where`` (B, L) is True: -> (N, V).

        Running the LM head over a 49k vocabulary at every prompt and audio position is the
        largest activation in a Speech-LLM step; training needs it only at answer positions.
        """
        decoder = self.model.get_decoder()
        hidden = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        return self.model.get_output_embeddings()(hidden[where])  # (N, H) -> (N, V)

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """Returns only the new token ids, (B, N)."""
        return self.model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **kwargs,
        )


@LLMS.register("hf", HFCausalLMConfig)
def build_hf_llm(config: HFCausalLMConfig) -> HFCausalLM:
    return HFCausalLM(config)
