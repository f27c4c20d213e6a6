"""speechllm: build, train, evaluate, diagnose and serve Speech LLMs
(audio encoder -> connector -> LLM), offline on a CPU with bundled real models."""

from speechllm.api import chat, generate, load_model, transcribe
from speechllm.audio import AudioError, load_audio
from speechllm.config import ConfigError, load_config
from speechllm.decoding import DecodeOptions
from speechllm.model import SpeechLLM, SpeechLLMConfig

__version__ = "0.1.0"
__all__ = ["AudioError", "ConfigError", "DecodeOptions", "SpeechLLM", "SpeechLLMConfig", "chat", "generate",
           "load_audio", "load_config", "load_model", "transcribe"]
