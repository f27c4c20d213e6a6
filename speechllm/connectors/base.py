"""The connector contract: encoder hidden states -> LLM input embeddings.

    embeds, embed_lengths = connector(hidden, hidden_lengths)   # (B, T, D) -> (B, T', H)

``output_lengths(input_lengths)`` must equal what ``forward`` returns, so the prompt builder
can size the audio span from clip lengths alone.  Padded positions of the output are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechllm.registry import CONNECTORS, ComponentConfig


@dataclass
class ConnectorConfig(ComponentConfig):
    pass


ConnectorConfig.registry = CONNECTORS


class Connector(nn.Module):
    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def stack_frames(hidden: torch.Tensor, k: int) -> torch.Tensor:
    """Concatenate every k consecutive frames, zero-padding the tail: (B, T, D) -> (B, ceil(T/k), D*k)."""
    B, T, D = hidden.shape
    pad = (-T) % k
    if pad:
        hidden = nn.functional.pad(hidden, (0, 0, 0, pad))
    return hidden.reshape(B, (T + pad) // k, D * k)


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the positions of (B, T, H) beyond each row's length."""
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * valid[..., None].to(x.dtype)


def ceil_div(lengths: torch.Tensor, k: int) -> torch.Tensor:
    return torch.div(torch.as_tensor(lengths) + k - 1, k, rounding_mode="floor")
