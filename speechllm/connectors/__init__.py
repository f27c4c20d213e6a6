"""Connectors (projectors) from encoder space into the LLM's embedding space."""

from speechllm.connectors import conv, linear, mlp, qformer  # noqa: F401  (registers them)
from speechllm.connectors.base import Connector, ConnectorConfig

__all__ = ["Connector", "ConnectorConfig"]
