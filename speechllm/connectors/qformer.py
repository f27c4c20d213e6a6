"""Window-level Q-Former (SALMONN, Tang et al., 2024): the encoder output is cut into
windows of ``window`` frames; in each, ``num_queries`` learned queries attend to the window's
frames through a small transformer (self-attention among queries, cross-attention to the
frames, FFN), and the query outputs are mapped into the LLM's embedding space.  A clip of T
frames becomes ceil(T / window) * num_queries embeddings, so the token rate is set by the
window and query count rather than by the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechllm.connectors.base import Connector, ConnectorConfig, ceil_div, zero_padding
from speechllm.registry import CONNECTORS


@dataclass
class QFormerConnectorConfig(ConnectorConfig):
    type: str = "qformer"
    window: int = 17  # SALMONN: 17 Whisper frames ~ 0.33 s
    num_queries: int = 1
    num_layers: int = 2
    hidden_dim: int = 768
    num_heads: int = 8


class QFormerConnector(Connector):
    def __init__(self, config: QFormerConnectorConfig, input_dim: int, output_dim: int):
        super().__init__(input_dim, output_dim)
        self.window, self.num_queries = config.window, config.num_queries
        d = config.hidden_dim
        self.in_proj = nn.Linear(input_dim, d)
        self.window_positions = nn.Parameter(torch.randn(config.window, d) * 0.02)
        self.queries = nn.Parameter(torch.randn(config.num_queries, d) * 0.02)
        layer = nn.TransformerDecoderLayer(
            d, config.num_heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerDecoder(layer, config.num_layers, norm=nn.LayerNorm(d))
        self.out_proj = nn.Linear(d, output_dim)

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        return ceil_div(input_lengths, self.window) * self.num_queries

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = hidden.shape
        w = self.window
        n_windows = -(-T // w)
        x = nn.functional.pad(self.in_proj(hidden), (0, 0, 0, n_windows * w - T))  # (B, nW*w, d)
        x = x.reshape(B * n_windows, w, -1) + self.window_positions  # (B, nW*w, d) -> (B*nW, w, d)
        frame_idx = torch.arange(n_windows * w, device=x.device).reshape(n_windows, w)
        valid = frame_idx[None] < lengths.to(x.device)[:, None, None]  # (B, nW, w)
        valid = valid.reshape(B * n_windows, w)
        valid[~valid.any(dim=1)] = True  # windows wholly past the clip: attend anywhere, zeroed below
        queries = self.queries.expand(B * n_windows, -1, -1)  # (B*nW, n, d)
        out = self.blocks(queries, x, memory_key_padding_mask=~valid)  # (B*nW, n, d)
        embeds = self.out_proj(out.reshape(B, n_windows * self.num_queries, -1))  # -> (B, nW*n, H)
        out_lengths = self.output_lengths(lengths)
        return zero_padding(embeds, out_lengths), out_lengths


@CONNECTORS.register("qformer", QFormerConnectorConfig)
def build_qformer_connector(config: QFormerConnectorConfig, input_dim: int, output_dim: int) -> QFormerConnector:
    return QFormerConnector(config, input_dim, output_dim)
