"""SLAM-ASR's connector: stack k consecutive encoder frames, then one linear layer
(Ma et al., 2024, "An Embarrassingly Simple Approach for LLM with Strong ASR Capacity")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechllm.connectors.base import Connector, ConnectorConfig, ceil_div, stack_frames, zero_padding
from speechllm.registry import CONNECTORS


@dataclass
class LinearConnectorConfig(ConnectorConfig):
    type: str = "linear"
    stack: int = 5


class LinearConnector(Connector):
    def __init__(self, config: LinearConnectorConfig, input_dim: int, output_dim: int):
        super().__init__(input_dim, output_dim)
        if config.stack < 1:
            raise ValueError(f"stack must be >= 1, got {config.stack}")
        self.stack = config.stack
        self.proj = nn.Linear(input_dim * config.stack, output_dim)

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        return ceil_div(input_lengths, self.stack)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = zero_padding(hidden, lengths)  # so a padded batch stacks like the clip alone
        out_lengths = self.output_lengths(lengths)
        embeds = self.proj(stack_frames(hidden, self.stack))  # (B, T/k, D*k) -> (B, T/k, H)
        return zero_padding(embeds, out_lengths), out_lengths


@CONNECTORS.register("linear", LinearConnectorConfig)
def build_linear_connector(config: LinearConnectorConfig, input_dim: int, output_dim: int) -> LinearConnector:
    return LinearConnector(config, input_dim, output_dim)
