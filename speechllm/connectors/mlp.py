"""Ultravox-style connector: stack k frames, normalise, a gated (SwiGLU) or GELU MLP,
normalise again to the LLM's embedding scale (fixie-ai/ultravox ``UltravoxProjector``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from speechllm.connectors.base import Connector, ConnectorConfig, ceil_div, stack_frames, zero_padding
from speechllm.registry import CONNECTORS


class Activation(str, Enum):
    swiglu = "swiglu"
    gelu = "gelu"


@dataclass
class MLPConnectorConfig(ConnectorConfig):
    type: str = "mlp"
    stack: int = 8
    hidden_dim: int = 1024
    activation: Activation = Activation.swiglu
    output_norm: bool = True


class MLPConnector(Connector):
    def __init__(self, config: MLPConnectorConfig, input_dim: int, output_dim: int):
        super().__init__(input_dim, output_dim)
        self.stack = config.stack
        stacked = input_dim * config.stack
        self.norm_in = nn.RMSNorm(stacked)
        gated = config.activation == Activation.swiglu
        self.fc1 = nn.Linear(stacked, config.hidden_dim * (2 if gated else 1), bias=False)
        self.gated = gated
        self.fc2 = nn.Linear(config.hidden_dim, output_dim, bias=False)
        self.norm_out = nn.RMSNorm(output_dim) if config.output_norm else nn.Identity()

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        return ceil_div(input_lengths, self.stack)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = zero_padding(hidden, lengths)
        out_lengths = self.output_lengths(lengths)
        x = self.fc1(self.norm_in(stack_frames(hidden, self.stack)))  # (B, T/k, D*k) -> (B, T/k, hidden[*2])
        if self.gated:
            gate, value = x.chunk(2, dim=-1)
            x = nn.functional.silu(gate) * value
        else:
            x = nn.functional.gelu(x)
        embeds = self.norm_out(self.fc2(x))  # (B, T/k, hidden) -> (B, T/k, H)
        return zero_padding(embeds, out_lengths), out_lengths


@CONNECTORS.register("mlp", MLPConnectorConfig)
def build_mlp_connector(config: MLPConnectorConfig, input_dim: int, output_dim: int) -> MLPConnector:
    return MLPConnector(config, input_dim, output_dim)
