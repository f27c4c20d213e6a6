"""LLM back-ends: each module registers one ``type``."""

from speechllm.llms import hf  # noqa: F401  (registers it)
from speechllm.llms.base import DType, LLMConfig

__all__ = ["DType", "LLMConfig"]
