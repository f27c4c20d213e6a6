"""Any transformers causal LM — a Hub id, a local folder, a ``.gguf`` file, or an embedded
name — as a Speech-LLM back-end (``type: hf``)."""

from __future__ import annotations

import functools
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

    @functools.cached_property
    def eos_token_ids(self) -> list[int]:
        """Tokens that end an answer: the tokenizer's EOS, the generation config's, and the special
        tokens the chat template puts at turn boundaries (an answer never contains one: a model that
        emits ``<|im_start|>`` is opening the next turn, e.g. one trained where a converter mapped EOS
        to another token)."""
        ids = {self.tokenizer.eos_token_id}
        gen = self.model.generation_config.eos_token_id
        ids.update(gen if isinstance(gen, list) else [gen])
        ids.update(chat_template_special_ids(self.tokenizer))
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
        """Returns only the new token ids, (B, N).

        With beam search, transformers copies every prompt ``num_beams`` times before its prefill, so
        the prompt (hundreds of audio positions) is run ``num_beams`` times over; here it runs once per
        clip and the key/value cache is copied to the beams instead (:meth:`shared_prefill`)."""
        beams = max(int(kwargs.get("num_beams") or 1), int(kwargs.get("num_return_sequences") or 1))
        if beams > 1 and inputs_embeds.shape[1] > 1 and kwargs.get("cache") is None:
            kwargs["cache"] = self.shared_prefill(inputs_embeds, attention_mask, beams)
        return self.model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **kwargs,
        )

    @torch.no_grad()
    def shared_prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, copies: int):
        """The cache of every prompt position but the last, computed once per row and repeated
        ``copies`` times per row (as ``generate`` repeats its inputs); ``generate`` then runs only the
        last position.  Positions follow the mask as ``generate`` numbers them (left padding)."""
        from transformers import DynamicCache

        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        cache = DynamicCache(config=self.model.config)
        self.model.get_decoder()(inputs_embeds=inputs_embeds[:, :-1], attention_mask=attention_mask[:, :-1],
                                 position_ids=positions[:, :-1], cache=cache, use_cache=True)
        cache.batch_repeat_interleave(copies)
        return cache


def chat_template_special_ids(tokenizer) -> set[int]:
    """Ids of the special tokens that a rendered two-turn chat contains (ChatML's <|im_start|> and
    <|im_end|>, Llama 3's header and <|eot_id|> tokens, ...); empty without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return set()
    chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    try:
        rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # a template that needs other roles or fields: keep the EOS-only rule
        return set()
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    special |= set(tokenizer.all_special_tokens)
    return {tokenizer.convert_tokens_to_ids(t) for t in special if t and t in rendered}


@LLMS.register("hf", HFCausalLMConfig)
def build_hf_llm(config: HFCausalLMConfig) -> HFCausalLM:
    return HFCausalLM(config)
