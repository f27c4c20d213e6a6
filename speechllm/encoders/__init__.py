"""Audio encoders: each module registers one ``type``."""

from speechllm.encoders import hf_ssl, whisper  # noqa: F401  (registers them)
from speechllm.encoders.base import AudioEncoder, EncoderConfig

__all__ = ["AudioEncoder", "EncoderConfig"]
