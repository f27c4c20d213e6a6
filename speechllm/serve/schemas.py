"""Wire formats of the OpenAI audio and chat APIs that the server speaks (request models are
validated by pydantic; responses are plain dicts in OpenAI's field names).

References: OpenAI API reference (audio/transcriptions, audio/translations, chat/completions
with ``input_audio`` parts, audio/speech) and vLLM's OpenAI-compatible server, which serves
Qwen2-Audio, Ultravox and Whisper behind the same routes.
"""

from __future__ import annotations

import time
import uuid
import zlib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


class InputAudio(BaseModel):
    data: str = Field(min_length=1, description="base64 audio bytes (a data: URL prefix is accepted)")
    format: Literal["wav", "mp3", "flac", "ogg"] = "wav"  # informative: the bytes are sniffed


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class AudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[Union[TextPart, AudioPart], Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1, description="one choice per request")


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech (text -> speech), offered when a TTS voice is installed."""

    model_config = ConfigDict(extra="ignore")

    input: str = Field(min_length=1, max_length=4096)
    model: str = "tts"
    voice: str | None = None
    response_format: Literal["wav"] = "wav"


# ---- responses ---------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_completion(model: str, text: str) -> dict[str, Any]:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def chat_chunk(chunk_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def verbose_transcription(task: str, language: str, duration: float, segments: list, temperature: float) -> dict:
    """OpenAI's verbose_json.  Per-segment ``avg_logprob``/``no_speech_prob`` are not reported: the
    models' ``generate`` returns text only; ``tokens`` is left empty for the same reason."""
    return {
        "task": task, "language": language, "duration": round(duration, 3),
        "text": " ".join(s.text for s in segments if s.text).strip(),
        "segments": [{"id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                      "tokens": [], "temperature": temperature, "compression_ratio": compression_ratio(s.text)}
                     for i, s in enumerate(segments)],
    }
