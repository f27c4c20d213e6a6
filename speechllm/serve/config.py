"""``ServeConfig``: what ``speechllm serve`` takes; its flags are these field names."""

from __future__ import annotations

from dataclasses import dataclass

from speechllm.api import DEFAULT_MODEL


@dataclass
class ServeConfig:
    model: str = DEFAULT_MODEL  # named model, checkpoint folder or model YAML
    model_name: str | None = None  # the id clients send and /v1/models lists; default: ``model``
    host: str = "127.0.0.1"  # localhost only unless asked
    port: int = 8000
    api_key: str | None = None  # bearer key for /v1/*; None: open (localhost default makes that safe)
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's limit for audio uploads
    max_audio_seconds: float = 600.0
    max_batch_size: int = 8  # clips per forward; 1 turns dynamic batching off
    batch_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    max_queue: int = 32  # requests waiting for the model; beyond: 503
    max_concurrent: int = 64  # requests in flight (reading, decoding, queued, running); beyond: 429
    request_timeout_s: float = 60.0  # a request's deadline: this much ...
    timeout_per_audio_s: float = 1.0  # ... plus this much per second of its audio (long uploads decode longer)
    max_new_tokens: int = 256  # the most a request may ask for
    tts: bool = True  # offer /v1/audio/speech when speechllm.tts has a voice
