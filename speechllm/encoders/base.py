"""The audio-encoder contract shared by every registered encoder.

An encoder turns raw mono waveforms into a sequence of hidden vectors:

    features, sample_lengths = encoder.prepare(waveforms)     # front end (log-mel, normalised wave)
    hidden, hidden_lengths = encoder(features, sample_lengths)  # (B, T, D), (B,)

``output_lengths(sample_lengths)`` gives ``hidden_lengths`` from the clip lengths in samples
without running anything; the prompt builder relies on it to know how many audio
embeddings a clip becomes.  Layer choice (last, a chosen layer, a learned weighted sum of
layers — SUPERB's recipe) is common to all encoders and lives in :class:`LayerSelector`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from speechllm.registry import ENCODERS, ComponentConfig


@dataclass
class EncoderConfig(ComponentConfig):
    """Common encoder options.

    model: an embedded model name (``speechllm models``), a Hub id or a local folder.
    layer: which layer's output to use; -1 is the final output, 1..N the N-th block's output.
    weighted_layers: learn a softmax-weighted sum of all block outputs instead of one layer.
    """

    model: str = ""
    layer: int = -1
    weighted_layers: bool = False


EncoderConfig.registry = ENCODERS


class LayerSelector(nn.Module):
    """Picks one layer's output or a learned softmax-weighted sum of all of them."""

    def __init__(self, num_layers: int, layer: int, weighted: bool):
        super().__init__()
        if not weighted and not (layer == -1 or 1 <= layer <= num_layers):
            raise ValueError(f"layer={layer} is out of range: use -1 or 1..{num_layers}")
        self.num_layers = num_layers
        self.layer = num_layers if layer == -1 else layer
        self.weighted = weighted
        self.layer_weights = nn.Parameter(torch.zeros(num_layers)) if weighted else None

    @property
    def layers_needed(self) -> int:
        """Blocks that must run: later blocks are skipped when a single early layer is chosen."""
        return self.num_layers if self.weighted else self.layer

    def forward(self, hidden_per_layer: list[torch.Tensor]) -> torch.Tensor:
        if not self.weighted:
            return hidden_per_layer[self.layer - 1]
        weights = torch.softmax(self.layer_weights, dim=0)
        stacked = torch.stack(hidden_per_layer, dim=0)  # (L, B, T, D)
        return torch.einsum("l,lbtd->btd", weights.to(stacked.dtype), stacked)


class AudioEncoder(nn.Module):
    """Base class: subclasses hold the pretrained network as ``self.model``."""

    sampling_rate: int = 16000
    output_dim: int = 0

    def prepare(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def output_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def preparer(self):
        """A picklable stand-in for :meth:`prepare` (waves -> features, sample lengths) for worker
        processes; subclasses return something lighter than the whole module."""
        return self.prepare

    def encode(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """prepare + forward, on the encoder's device."""
        features, sample_lengths = self.prepare(waveforms)
        device = next(self.parameters()).device
        return self(features.to(device), sample_lengths.to(device))


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
