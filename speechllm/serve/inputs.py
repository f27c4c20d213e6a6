"""From a request to what ``SpeechModel.generate`` takes: waveform, instruction, decoding options.

All audio goes through :func:`speechllm.audio.load_audio` on the uploaded *bytes* (never a path
a client names), with the server's :class:`AudioLimits`; its :class:`AudioError` becomes a 400
that says what is wrong.  The declared content type and file name are not trusted: libsndfile
sniffs the format from the bytes.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from starlette.concurrency import run_in_threadpool

from speechllm.api import model_decode_options
from speechllm.audio import AudioError, AudioLimits, load_audio
from speechllm.decoding import DecodeOptions
from speechllm.serve.errors import APIError
from speechllm.serve.schemas import AudioPart, ChatRequest, TextPart

TRANSLATE_INSTRUCTION = "Translate the speech into English."
HINT_TEMPLATE = "{instruction} Words that may occur: {prompt}"


async def decode_upload(data: bytes, rate: int, limits: AudioLimits, name: str, param: str) -> np.ndarray:
    """Uploaded bytes -> mono float32 at ``rate``; decoding runs off the event loop."""
    if len(data) > limits.max_bytes:
        raise APIError(413, f"{name}: file too large: {len(data)} bytes > {limits.max_bytes}", param=param,
                       code="file_too_large")
    if not data:
        raise APIError(400, f"{name}: empty file (0 bytes)", param=param, code="invalid_audio")
    try:
        return await run_in_threadpool(load_audio, data, rate, limits=limits, name=name)
    except AudioError as err:
        raise APIError(400, str(err), param=param, code="invalid_audio") from None


def decode_base64(data: str, limits: AudioLimits, param: str) -> bytes:
    if data.startswith("data:"):  # a data URL: data:audio/wav;base64,....
        data = data.partition(",")[2]
    if len(data) * 3 // 4 > limits.max_bytes + 3:
        raise APIError(413, f"{param}: audio too large: over {limits.max_bytes} bytes", param=param,
                       code="file_too_large")
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64", param=param, code="invalid_base64") from None


async def chat_audio(request: ChatRequest, rate: int, limits: AudioLimits) -> tuple[np.ndarray, str | None]:
    """The conversation's one audio clip, and the last user message's text as the instruction
    (None when it has none: the model's default task, transcription)."""
    audio = [(m, p, part) for m, msg in enumerate(request.messages) if isinstance(msg.content, list)
             for p, part in enumerate(msg.content) if isinstance(part, AudioPart)]
    if len(audio) != 1:
        raise APIError(400, f"messages: exactly one input_audio content part is needed, got {len(audio)}",
                       param="messages", code="invalid_audio")
    m, p, part = audio[0]
    param = f"messages.{m}.content.{p}.input_audio.data"
    raw = decode_base64(part.input_audio.data, limits, param)
    wave = await decode_upload(raw, rate, limits, f"input_audio ({part.input_audio.format})", param)
    users = [msg for msg in request.messages if msg.role == "user"]
    if not users:
        raise APIError(400, "messages: no user message", param="messages", code="invalid_value")
    content = users[-1].content
    texts = [content] if isinstance(content, str) else [c.text for c in content or [] if isinstance(c, TextPart)]
    instruction = "\n".join(t.strip() for t in texts if t and t.strip())
    return wave, instruction or None


def transcription_instruction(model, prompt: str | None) -> str | None:
    """None (the model's own transcription instruction) unless a prompt hint can be given.
    Only a Speech LLM takes free instructions; Whisper's and the cascade's ``generate`` have
    no context input, so they ignore the hint."""
    from speechllm.model import SpeechLLM

    if not prompt or not prompt.strip() or not isinstance(model, SpeechLLM):
        return None
    return HINT_TEMPLATE.format(instruction=model.prompt.config.instruction, prompt=prompt.strip())


def decode_options(max_new_tokens: int, temperature: float | None = None, top_p: float | None = None,
                   requested_tokens: int | None = None, *, model=None, transcription: bool = False) -> DecodeOptions:
    """A request's decoding options, never more tokens than the server's cap.

    For ``transcription`` they start from ``model``'s recommended ones, as ``speechllm.transcribe`` does
    (api.model_decode_options: a checkpoint's ``decode:``, e.g. beam 4 with its CTC head, long clips in
    pieces); otherwise from greedy.  A temperature > 0 samples instead, one sequence (no beams)."""
    asked: dict = {"max_new_tokens": min(requested_tokens or max_new_tokens, max_new_tokens)}
    if temperature:
        asked.update(do_sample=True, temperature=temperature, top_p=top_p or 1.0, num_beams=1)
    return model_decode_options(model, transcription, **asked)
