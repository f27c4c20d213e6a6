"""``SpeechLLM``: audio encoder -> connector -> causal LLM, composed, not inherited.

Follows the SLAM-ASR / Ultravox / SALMONN layout: encoder hidden states are projected
into the LLM's embedding space and spliced into the chat prompt where the audio goes
(see :mod:`speechllm.prompt`).  Each part has a trainable flag; LoRA (peft) can be injected
into the LLM and/or the encoder.

Batch dict (``SpeechLLM.make_batch`` builds it; ``forward`` consumes it):

    features        encoder input, (B, ...) — log-mel (B, n_mels, F) or waveform (B, S)
    sample_lengths  (B,) clip lengths in samples
    encoder_hidden  optional (B, T, D) cached encoder output; replaces features when given
    encoder_lengths (B,) valid frames of encoder_hidden
    prefix_ids      list of B lists: prompt tokens before the audio span
    suffix_ids      list of B lists: prompt tokens after it
    answer_ids      list of B lists: target tokens incl. EOS (absent at generation time)
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from speechllm.connectors import ConnectorConfig
from speechllm.connectors.linear import LinearConnectorConfig
from speechllm.ctc import CTCHead, CTCHeadConfig, CTCPrefixLogitsProcessor, char_ids
from speechllm.decoding import DecodeOptions, decode_options
from speechllm.encoders import EncoderConfig
from speechllm.encoders.whisper import WhisperEncoderConfig
from speechllm.llms import LLMConfig
from speechllm.llms.hf import HFCausalLMConfig
from speechllm.prompt import PromptBuilder, PromptConfig
from speechllm.registry import CONNECTORS, ENCODERS, LLMS

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class TrainableConfig:
    """Which parts train.  A frozen part with LoRA trains only its LoRA weights."""

    encoder: bool = False
    connector: bool = True
    llm: bool = False
    lora: bool = True  # the LoRA weights of llm_lora / encoder_lora (false: keep them as loaded)
    ctc_head: bool = True


@dataclass
class SpeechLLMConfig:
    encoder: EncoderConfig = field(default_factory=WhisperEncoderConfig)
    connector: ConnectorConfig = field(default_factory=LinearConnectorConfig)
    llm: LLMConfig = field(default_factory=HFCausalLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    llm_lora: LoraConfig | None = None
    encoder_lora: LoraConfig | None = None
    # a character CTC head on the encoder output: trained with an auxiliary loss, used by joint
    # CTC / LLM decoding (``DecodeOptions.ctc_weight``; see speechllm.ctc)
    ctc_head: CTCHeadConfig | None = None
    # this checkpoint's recommended decoding for transcription (DecodeOptions fields, e.g.
    # {num_beams: 4, ctc_weight: 0.1}); options given by the caller win (api.model_decode_options)
    decode: dict[str, Any] = field(default_factory=dict)


class SpeechLLM(nn.Module):
    def __init__(self, config: SpeechLLMConfig):
        super().__init__()
        self.config = config
        self.encoder = ENCODERS.build(config.encoder)
        self.llm = LLMS.build(config.llm)
        self.connector = CONNECTORS.build(config.connector, input_dim=self.encoder.output_dim,
                                          output_dim=self.llm.hidden_size)
        self.prompt = PromptBuilder(self.llm.tokenizer, config.prompt)
        self.ctc_head = CTCHead(self.encoder.output_dim, config.ctc_head) if config.ctc_head is not None else None
        self._check_decode_defaults()
        self._apply_lora_and_trainable()

    # ---- parts and parameters -------------------------------------------------------
    def _apply_lora_and_trainable(self) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        trainable = self.config.trainable
        self.encoder.model.requires_grad_(trainable.encoder)
        self.llm.model.requires_grad_(trainable.llm)
        self.connector.requires_grad_(trainable.connector)
        if self.ctc_head is not None:
            self.ctc_head.requires_grad_(trainable.ctc_head)
        for part, lora in ((self.llm.model, self.config.llm_lora), (self.encoder.model, self.config.encoder_lora)):
            if lora is not None:
                peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=list(lora.target_modules))
                inject_adapter_in_model(peft_config, part)
        for name, param in self.named_parameters():
            if "lora_" in name:
                param.requires_grad_(trainable.lora)
            adapter = "lora_" in name or not name.startswith(("encoder.model.", "llm.model."))
            if adapter and param.dtype != torch.float32:
                # adapter weights stay fp32 under a bf16 LLM, trained or not: AdamW updates of ~1e-4
                # relative size vanish in bf16's 8-bit mantissa, and a frozen LoRA loaded into bf16
                # would be rounded (peft computes LoRA in its weights' dtype)
                param.data = param.data.float()

    def _check_decode_defaults(self) -> None:
        from speechllm.config import ConfigError

        try:
            decode_options(**self.config.decode)
        except TypeError as err:
            raise ConfigError(f"decode: {err}") from None
        if self.config.decode.get("ctc_weight", 0) and self.ctc_head is None:
            raise ConfigError("decode.ctc_weight needs a CTC head (model.ctc_head)")

    @property
    def decode_defaults(self) -> dict[str, Any]:
        """The checkpoint's recommended decoding options for transcription (config ``decode``)."""
        return dict(self.config.decode)

    def is_base_parameter(self, name: str) -> bool:
        """True for weights recoverable from the pretrained base models (not saved)."""
        if "lora_" in name:
            return False
        if name.startswith("encoder.model."):
            return not self.config.trainable.encoder
        if name.startswith("llm.model."):
            return not self.config.trainable.llm
        return False

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """Connector, LoRA, layer weights and any unfrozen part: what a checkpoint stores."""
        return {k: v for k, v in self.state_dict().items() if not self.is_base_parameter(k)}

    def parameter_counts(self) -> dict[str, int]:
        counts = {"trainable": sum(p.numel() for p in self.parameters() if p.requires_grad)}
        for part in ("encoder", "connector", "llm"):
            counts[part] = sum(p.numel() for p in getattr(self, part).parameters())
        return counts

    # ---- lengths and inputs -----------------------------------------------------------
    def audio_token_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """How many audio embeddings each clip becomes; the prompt span has this size."""
        return self.connector.output_lengths(self.encoder.output_lengths(torch.as_tensor(sample_lengths)))

    def make_batch(self, waveforms: Sequence[np.ndarray], answers: Sequence[str] | None = None,
                   instructions: Sequence[str | None] | None = None) -> dict[str, Any]:
        """Raw mono waveforms at the encoder's rate (+ answers for training) -> batch dict."""
        features, sample_lengths = self.encoder.prepare(list(waveforms))
        batch = {"features": features, "sample_lengths": sample_lengths}
        batch.update(self.tokenize_prompts(len(waveforms), instructions))
        if answers is not None:
            eos = self.llm.tokenizer.eos_token_id
            batch["answer_ids"] = [self.prompt.answer_ids(a, eos) for a in answers]
            batch["answer_texts"] = list(answers)
        return batch

    def tokenize_prompts(self, n: int, instructions: Sequence[str | None] | None = None) -> dict[str, list]:
        instructions = list(instructions) if instructions is not None else [None] * n
        if len(instructions) != n:
            raise ValueError(f"{len(instructions)} instructions for {n} clips")
        segments = [self.prompt.segments(i) for i in instructions]
        return {"prefix_ids": [s[0] for s in segments], "suffix_ids": [s[1] for s in segments]}

    def encoder_output(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's (B, T, D) output and (B,) lengths, or its cached output; computed once per
        batch dict (the connector and the CTC head both read it)."""
        device = self.device
        if "encoder_hidden" not in batch:
            hidden, lengths = self.encoder(batch["features"].to(device), batch["sample_lengths"].to(device))
            batch["encoder_hidden"], batch["encoder_lengths"] = hidden, lengths  # one batch, one graph
            return hidden, lengths
        return batch["encoder_hidden"].to(device), batch["encoder_lengths"].to(device)

    def encode_audio(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder (or its cached output) then connector: -> (B, N, H) embeddings, (B,) lengths."""
        hidden, lengths = self.encoder_output(batch)
        # the connector keeps its own (fp32) weights even under a bf16 LLM, so AdamW updates
        # are not lost to bf16 rounding; its output is cast to the LLM's dtype
        connector_dtype = next(self.connector.parameters()).dtype
        embeds, embed_lengths = self.connector(hidden.to(connector_dtype), lengths)
        return embeds.to(self.llm.dtype), embed_lengths

    def build_inputs(self, batch: dict[str, Any], audio: torch.Tensor, audio_lengths: torch.Tensor,
                     padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Splice prompt, audio and answer embeddings per sample and pad to (B, L, H)."""
        answers = batch.get("answer_ids") or [[] for _ in batch["prefix_ids"]]
        texts = [prefix + suffix + answer for prefix, suffix, answer in
                 zip(batch["prefix_ids"], batch["suffix_ids"], answers)]
        ids = torch.tensor([t for text in texts for t in text], dtype=torch.long)
        embedded = self.llm.embed(ids.to(self.device)).split([len(t) for t in texts])  # one lookup for all
        rows, labels = [], []
        for i, (prefix, suffix, answer) in enumerate(zip(batch["prefix_ids"], batch["suffix_ids"], answers)):
            text, n_audio, p = embedded[i], int(audio_lengths[i]), len(prefix)
            rows.append(torch.cat([text[:p], audio[i, :n_audio], text[p:]], dim=0))
            labels.append([IGNORE_INDEX] * (p + n_audio + len(suffix)) + list(answer))
        return pad_embeddings(rows, labels, padding_side, self.device)

    def save_pretrained(self, directory, dtype: torch.dtype | None = None, int8: bool = False) -> None:
        from speechllm.checkpoint import save_checkpoint

        save_checkpoint(self, directory, dtype, int8=int8)

    @classmethod
    def from_pretrained(cls, directory, overrides: list[str] | None = None) -> "SpeechLLM":
        from speechllm.checkpoint import load_checkpoint

        return load_checkpoint(directory, overrides)

    @property
    def sampling_rate(self) -> int:
        """The rate the encoder expects; callers resample to it (``SpeechModel`` protocol)."""
        return self.encoder.sampling_rate

    @property
    def tokenizer(self):
        """The tokenizer that decodes generated ids (used for streaming)."""
        return self.llm.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    # ---- training and generation --------------------------------------------------------
    def forward(self, batch: dict[str, Any]):
        """Causal-LM loss on the answer tokens only (prompt and audio positions are -100)."""
        audio, audio_lengths = self.encode_audio(batch)
        inputs = self.build_inputs(batch, audio, audio_lengths, padding_side="right")
        return self.llm(**inputs)

    def answer_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy over the answer tokens and their count.

        Trainers divide by the token count of the whole (accumulated, all-rank) batch, so the
        gradient matches one big batch however it is split.
        """
        audio, audio_lengths = self.encode_audio(batch)
        inputs = self.build_inputs(batch, audio, audio_lengths, padding_side="right")
        targets = inputs.pop("labels")[:, 1:]  # position t predicts token t+1
        keep = targets != IGNORE_INDEX
        where = torch.nn.functional.pad(keep, (0, 1))  # (B, L-1) -> (B, L): last position predicts nothing
        logits = self.llm.logits_where(inputs["inputs_embeds"], inputs["attention_mask"], where)
        loss_sum = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
        return loss_sum, int(keep.sum())

    def ctc_loss(self, batch: dict[str, Any], head_output: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, int]:
        """Summed CTC loss of the head over the answers' characters (``batch["answer_texts"]``) and
        the character count; like :meth:`answer_loss`, trainers divide by the global count.
        ``head_output``: the head's (log-probs, lengths) for this batch when the caller has them."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head (config model.ctc_head)")
        log_probs, out_lengths = head_output or self.ctc_head(*self.encoder_output(batch))
        targets = [torch.tensor(char_ids(t), dtype=torch.long) for t in batch["answer_texts"]]
        target_lengths = torch.tensor([len(t) for t in targets])
        loss_sum = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets).to(log_probs.device),
                                                out_lengths, target_lengths.to(log_probs.device), blank=0,
                                                reduction="sum", zero_infinity=True)
        return loss_sum, int(target_lengths.sum())

    @torch.no_grad()
    def generate_ids(self, batch: dict[str, Any], options: DecodeOptions | None = None,
                     streamer=None) -> torch.Tensor:
        """New token ids (B, N) for a batch built without answers; prompts are left-padded."""
        options = options or DecodeOptions()
        audio, audio_lengths = self.encode_audio(batch)
        prompt_only = {k: v for k, v in batch.items() if k != "answer_ids"}
        inputs = self.build_inputs(prompt_only, audio, audio_lengths, padding_side="left")
        inputs.pop("labels")  # generation needs no targets
        kwargs = options.generate_kwargs()
        if options.ctc_weight > 0:
            if self.ctc_head is None:
                raise ValueError("ctc_weight > 0 needs a model with a CTC head (config model.ctc_head)")
            hidden, lengths = self.encoder_output(batch)
            log_probs, ctc_lengths = self.ctc_head(hidden, lengths)
            kwargs["logits_processor"] = [CTCPrefixLogitsProcessor(
                log_probs.cpu(), ctc_lengths.cpu(), self.llm.tokenizer, options.ctc_weight,
                num_beams=options.num_beams, top_k=options.ctc_top_k,
                max_length_ratio=options.ctc_max_length_ratio)]
        with warnings.catch_warnings():  # n-grams of the answer only are what we ask for (the prompt is embeds)
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            return self.llm.generate(**inputs, streamer=streamer, **kwargs)

    def generate_from_batch(self, batch: dict[str, Any], options: DecodeOptions | None = None,
                            streamer=None) -> list[str]:
        new_ids = self.generate_ids(batch, options, streamer)
        return [t.strip() for t in self.llm.tokenizer.batch_decode(new_ids, skip_special_tokens=True)]

    def generate(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str | None] | None = None,
                 options: DecodeOptions | None = None, streamer=None) -> list[str]:
        """Answer each clip (mono, at ``encoder.sampling_rate``) given its instruction."""
        batch = self.make_batch(waveforms, instructions=instructions)
        return self.generate_from_batch(batch, options, streamer=streamer)


def pad_embeddings(rows: list[torch.Tensor], labels: list[list[int]] | None, side: str,
              device: torch.device) -> dict[str, torch.Tensor]:
    """Pad (L_i, H) rows into inputs_embeds (B, L, H), attention_mask (B, L) and, when
    ``labels`` are given, labels (B, L) with -100 on padding."""
    longest = max(r.shape[0] for r in rows)
    B, H = len(rows), rows[0].shape[1]
    embeds = rows[0].new_zeros(B, longest, H)
    mask = torch.zeros(B, longest, dtype=torch.long)  # built on the CPU, moved once
    label_tensor = torch.full((B, longest), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        n = row.shape[0]
        span = slice(longest - n, longest) if side == "left" else slice(0, n)
        embeds[i, span] = row
        mask[i, span] = 1
        if labels is not None:
            label_tensor[i, span] = torch.tensor(labels[i], dtype=torch.long)
    out = {"inputs_embeds": embeds, "attention_mask": mask.to(device)}
    if labels is not None:
        out["labels"] = label_tensor.to(device)
    return out
