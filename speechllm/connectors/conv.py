"""Convolutional downsampling connector: a strided Conv1d over time, GELU, then a linear
map into the LLM's embedding space (the conv adapters of Qwen-Audio / LLaMA-Omni style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechllm.connectors.base import Connector, ConnectorConfig, zero_padding
from speechllm.registry import CONNECTORS


@dataclass
class ConvConnectorConfig(ConnectorConfig):
    type: str = "conv"
    kernel_size: int = 5
    stride: int = 4
    hidden_dim: int = 1024


class ConvConnector(Connector):
    def __init__(self, config: ConvConnectorConfig, input_dim: int, output_dim: int):
        super().__init__(input_dim, output_dim)
        if config.kernel_size < config.stride:
            raise ValueError("kernel_size must be >= stride, or frames are skipped")
        self.kernel_size, self.stride = config.kernel_size, config.stride
        self.padding = config.kernel_size // 2
        self.conv = nn.Conv1d(input_dim, config.hidden_dim, config.kernel_size, config.stride, self.padding)
        self.proj = nn.Linear(config.hidden_dim, output_dim)

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        lengths = torch.as_tensor(input_lengths)
        out = torch.div(lengths + 2 * self.padding - self.kernel_size, self.stride, rounding_mode="floor") + 1
        return out.clamp(min=1)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = zero_padding(hidden, lengths)
        min_len = self.kernel_size - 2 * self.padding
        if hidden.shape[1] < min_len:  # a clip shorter than the kernel still yields one frame
            hidden = nn.functional.pad(hidden, (0, 0, 0, min_len - hidden.shape[1]))
        x = nn.functional.gelu(self.conv(hidden.transpose(1, 2)))  # (B, D, T) -> (B, hidden, T')
        out_lengths = self.output_lengths(lengths)
        embeds = self.proj(x.transpose(1, 2))  # (B, T', hidden) -> (B, T', H)
        return zero_padding(embeds, out_lengths), out_lengths


@CONNECTORS.register("conv", ConvConnectorConfig)
def build_conv_connector(config: ConvConnectorConfig, input_dim: int, output_dim: int) -> ConvConnector:
    return ConvConnector(config, input_dim, output_dim)
