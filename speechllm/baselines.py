"""The baselines every Speech LLM is compared with, as models of the same API:

* ``WhisperASR`` — an end-to-end ASR model (Whisper with its own decoder).  Its decoder was
  trained on 30 s windows and cannot stop on truncated encoder output (FACTS.md), so clips
  are padded to 30 s; longer clips are cut into 30 s windows and the texts joined.
* ``Cascade`` — ASR then a text LLM that answers the instruction from the transcript
  (the "ASR -> LLM" pipeline of the survey's early-LLM stage).

Both implement ``generate(waveforms, instructions=None, options=None, streamer=None)``
like :class:`speechllm.model.SpeechLLM`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from speechllm.decoding import DecodeOptions
from speechllm.llms.base import DType

log = logging.getLogger(__name__)

CASCADE_TEMPLATE = 'Here is a transcript of an audio clip:\n"{transcript}"\n\n{instruction}'


class WhisperASR:
    """Whisper's own encoder-decoder (any checkpoint: embedded name, Hub id or folder)."""

    def __init__(self, model: str = "whisper-tiny.en", dtype: DType = DType.float32):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from speechllm.embedded import resolve_model

        path = resolve_model(model)
        self.name = model
        self.processor = WhisperProcessor.from_pretrained(path)
        self.model = WhisperForConditionalGeneration.from_pretrained(path, dtype=DType(dtype).torch).eval()
        self.sampling_rate = self.processor.feature_extractor.sampling_rate
        self.window = self.processor.feature_extractor.n_samples  # 30 s
        self.tokenizer = self.processor.tokenizer

    def _windows(self, waveforms: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        pieces, owners = [], []
        for i, wave in enumerate(waveforms):
            for start in range(0, max(len(wave), 1), self.window):
                pieces.append(wave[start : start + self.window])
                owners.append(i)
        return pieces, owners

    @torch.no_grad()
    def generate(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str | None] | None = None,
                 options: DecodeOptions | None = None, streamer=None) -> list[str]:
        options = options or DecodeOptions()
        if instructions and any(instructions):
            log.debug("Whisper ignores instructions; it only transcribes")
        pieces, owners = self._windows(waveforms)
        features = self.processor.feature_extractor(
            pieces, sampling_rate=self.sampling_rate, return_tensors="pt"
        ).input_features.to(self.model.dtype)  # (N, n_mels, 3000): padded to 30 s
        kwargs = options.generate_kwargs()
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], self.model.config.max_target_positions - 4)
        ids = self.model.generate(features, streamer=streamer, **kwargs)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        joined = [""] * len(waveforms)
        for owner, text in zip(owners, texts):
            joined[owner] = f"{joined[owner]} {text.strip()}".strip()
        return joined


class Cascade:
    """ASR (Whisper) -> text LLM.  Without an instruction it returns the transcript."""

    def __init__(self, asr: str = "whisper-tiny.en", llm: str = "smollm2-135m-instruct",
                 system: str | None = None, template: str = CASCADE_TEMPLATE):
        from speechllm.llms.hf import HFCausalLM, HFCausalLMConfig

        self.name = "cascade"
        self.asr = WhisperASR(asr)
        self.llm = HFCausalLM(HFCausalLMConfig(model=llm)).eval()
        self.system, self.template = system, template
        self.sampling_rate = self.asr.sampling_rate
        self.tokenizer = self.llm.tokenizer  # decodes what generate streams (the LLM's answer)

    def prompt_ids(self, transcript: str, instruction: str) -> list[int]:
        user = self.template.format(transcript=transcript, instruction=instruction)
        messages = ([{"role": "system", "content": self.system}] if self.system is not None else []) + [
            {"role": "user", "content": user}
        ]
        text = self.llm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.llm.tokenizer.encode(text, add_special_tokens=False)

    @torch.no_grad()
    def generate(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str | None] | None = None,
                 options: DecodeOptions | None = None, streamer=None) -> list[str]:
        from speechllm.model import pad_embeddings

        options = options or DecodeOptions()
        transcripts = self.asr.generate(waveforms, options=DecodeOptions(num_beams=options.num_beams))
        instructions = list(instructions) if instructions is not None else [None] * len(waveforms)
        todo = [i for i, ins in enumerate(instructions) if ins]
        if not todo:
            return transcripts
        rows = [self.llm.embed(torch.tensor(self.prompt_ids(transcripts[i], instructions[i]))) for i in todo]
        inputs = pad_embeddings(rows, None, "left", rows[0].device)
        ids = self.llm.generate(**inputs, streamer=streamer, **options.generate_kwargs())
        answers = self.llm.tokenizer.batch_decode(ids, skip_special_tokens=True)
        out = list(transcripts)
        for i, answer in zip(todo, answers):
            out[i] = answer.strip()
        return out
