"""The public Python API: load any model by name and transcribe or chat with audio.

    import speechllm
    speechllm.transcribe("clip.flac")                                  # default model
    speechllm.chat("clip.flac", "Who might have said this?", model="cascade")
    m = speechllm.load_model("runs/asr/best")                          # a checkpoint folder

A model name is one of: a named model (``speechllm models``: ``whisper-tiny.en``,
``cascade`` ...), a checkpoint folder, or a model YAML config (an untrained connector).
The CLI is a thin layer over these functions; its flags are these keyword names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from speechllm.audio import AudioLike, load_audio
from speechllm.decoding import DecodeOptions, decode_options
from speechllm.segment import join_pieces, split_long

log = logging.getLogger(__name__)

DEFAULT_MODEL = "speechllm-asr-tiny"  # the Speech LLM trained by recipes/asr/slam_tiny
ASSETS_DIR = Path(__file__).parent / "assets"  # checkpoints shipped in the package


class SpeechModel(Protocol):
    name: str
    sampling_rate: int  # the rate generate() expects its waveforms at
    tokenizer: Any  # decodes the token ids generate() streams

    def generate(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str | None] | None = None,
                 options: DecodeOptions | None = None, streamer: Any = None) -> list[str]: ...


def _whisper() -> SpeechModel:
    from speechllm.baselines import WhisperASR

    return WhisperASR("whisper-tiny.en")


def _cascade() -> SpeechModel:
    from speechllm.baselines import Cascade

    return Cascade("whisper-tiny.en", "smollm2-135m-instruct")


def _pocketsphinx() -> SpeechModel:
    from speechllm.baselines_extra import pocketsphinx_model

    return pocketsphinx_model()


def _shipped_asr() -> SpeechModel:
    from speechllm.model import SpeechLLM

    return SpeechLLM.from_pretrained(ASSETS_DIR / "asr-slam-tiny").eval()


NAMED_MODELS: dict[str, tuple[str, Callable[[], SpeechModel]]] = {
    "whisper-tiny.en": ("Whisper tiny.en with its own decoder (end-to-end ASR baseline)", _whisper),
    "cascade": ("Whisper tiny.en -> SmolLM2-135M-Instruct (ASR -> LLM cascade baseline)", _cascade),
    "speechllm-asr-tiny": ("Speech LLM trained here: Whisper tiny.en encoder -> linear connector -> SmolLM2-135M "
                           "+ LoRA (recipes/asr/slam_tiny, see its RESULTS.md); the default", _shipped_asr),
    "pocketsphinx": ("CMU PocketSphinx, default en-us model (pre-LLM HMM-GMM ASR baseline)", _pocketsphinx),
}

_LOADED: dict[str, SpeechModel] = {}


def load_model(model: str | SpeechModel = DEFAULT_MODEL, *, overrides: list[str] | None = None,
               cache: bool = True) -> SpeechModel:
    """A model by name, checkpoint folder or YAML config; loaded models are reused."""
    if not isinstance(model, str):
        return model
    key = f"{model}|{overrides}"
    if cache and key in _LOADED:
        return _LOADED[key]
    loaded = _load(model, overrides)
    if not getattr(loaded, "name", None):
        loaded.name = model
    if cache:
        _LOADED[key] = loaded
    return loaded


def _load(model: str, overrides: list[str] | None) -> SpeechModel:
    from speechllm.checkpoint import is_checkpoint

    if model in NAMED_MODELS:
        return NAMED_MODELS[model][1]()
    path = Path(model).expanduser()
    if path.is_dir() and is_checkpoint(path):
        from speechllm.model import SpeechLLM

        return SpeechLLM.from_pretrained(path, overrides).eval()
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from speechllm.config import load_config
        from speechllm.model import SpeechLLM, SpeechLLMConfig

        return SpeechLLM(load_config(SpeechLLMConfig, path, overrides)).eval()
    raise ValueError(f"unknown model {model!r}: not one of {sorted(NAMED_MODELS)}, "
                     "a checkpoint folder or a model YAML")


def _as_list(audio: AudioLike | Sequence[AudioLike]) -> tuple[list[AudioLike], bool]:
    if isinstance(audio, (list, tuple)):
        return list(audio), False
    return [audio], True


def generate(audio: AudioLike | Sequence[AudioLike], instructions: str | Sequence[str | None] | None = None, *,
             model: str | SpeechModel = DEFAULT_MODEL, batch_size: int = 8, **decode: Any) -> list[str]:
    """Answer each clip; ``decode`` takes :class:`DecodeOptions` fields (max_new_tokens, num_beams...)."""
    clips, _ = _as_list(audio)
    if instructions is None or isinstance(instructions, str):
        instructions = [instructions] * len(clips)
    if len(instructions) != len(clips):
        raise ValueError(f"{len(instructions)} instructions for {len(clips)} clips")
    speech_model = load_model(model)
    transcription = all(i is None for i in instructions)
    options = model_decode_options(speech_model, transcription, **decode)
    segment = options.max_segment_seconds if transcription else 0.0
    out: list[str] = []
    for start in range(0, len(clips), batch_size):  # decode audio per batch: memory stays bounded
        waves = [load_audio(c, speech_model.sampling_rate) for c in clips[start : start + batch_size]]
        if segment > 0:
            out += transcribe_in_pieces(speech_model, waves, segment, options, batch_size)
        else:
            out += speech_model.generate(waves, instructions[start : start + batch_size], options)
    return out


def transcribe_in_pieces(speech_model: SpeechModel, waves: list[np.ndarray], max_seconds: float,
                          options: DecodeOptions, batch_size: int) -> list[str]:
    """Transcripts of ``waves``, each cut at its quiet points into pieces of <= ``max_seconds``
    (speechllm.segment) that are decoded in batches and joined with spaces."""
    pieces, owner = [], []
    for i, wave in enumerate(waves):
        for piece in split_long(wave, speech_model.sampling_rate, max_seconds):
            pieces.append(piece)
            owner.append(i)
    texts: list[str] = []
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start : start + batch_size]
        texts += speech_model.generate(chunk, [None] * len(chunk), options)
    per_clip: list[list[str]] = [[] for _ in waves]
    for i, text in zip(owner, texts):
        per_clip[i].append(text)
    return [join_pieces(parts) for parts in per_clip]


def transcribe(audio: AudioLike | Sequence[AudioLike], *, model: str | SpeechModel = DEFAULT_MODEL,
               **kwargs: Any) -> str | list[str]:
    """Speech -> text.  One clip gives a string, a list gives a list."""
    clips, single = _as_list(audio)
    texts = generate(clips, None, model=model, **kwargs)
    return texts[0] if single else texts


def chat(audio: AudioLike | Sequence[AudioLike], prompt: str, *, model: str | SpeechModel = DEFAULT_MODEL,
         **kwargs: Any) -> str | list[str]:
    """Speech + text instruction -> text."""
    clips, single = _as_list(audio)
    texts = generate(clips, prompt, model=model, **kwargs)
    return texts[0] if single else texts


def model_decode_options(speech_model: Any, transcription: bool = True, **decode: Any) -> DecodeOptions:
    """Decoding options for ``speech_model``: for plain transcription (no instruction), the model's own
    recommended ones (a Speech LLM checkpoint's ``decode:``, e.g. beam search with its CTC head) under
    those given here; for instructions, the given ones over the defaults of :class:`DecodeOptions`."""
    defaults = dict(getattr(speech_model, "decode_defaults", None) or {}) if transcription else {}
    return decode_options(**{**defaults, **decode})
