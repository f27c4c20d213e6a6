"""Self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM, data2vec-audio) via
transformers' ``AutoModel`` — the SUPERB family, with the last, a chosen, or a learned
weighted sum of layers.

Waveforms are normalised per clip like their feature extractors do.  Models whose first
conv layer uses group norm (the ``*-base`` wav2vec2/HuBERT checkpoints) normalise over time
including padding, so batched outputs differ slightly from one-by-one for those; models with
``feat_extract_norm == "layer"`` take an attention mask and do not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from speechllm.encoders.base import AudioEncoder, EncoderConfig, LayerSelector, padding_mask
from speechllm.registry import ENCODERS


@dataclass
class HFSSLEncoderConfig(EncoderConfig):
    type: str = "hf_ssl"
    model: str = "facebook/hubert-base-ls960"
    spec_augment: bool = False


class HFSSLEncoder(AudioEncoder):
    def __init__(self, config: HFSSLEncoderConfig):
        super().__init__()
        from transformers import AutoFeatureExtractor, AutoModel

        from speechllm.embedded import resolve_model

        path = resolve_model(config.model)
        # LayerDrop would drop entries from hidden_states and break layer selection;
        # SpecAugment masking is a training choice the recipe makes, off by default here.
        self.model = AutoModel.from_pretrained(path, layerdrop=0.0, apply_spec_augment=config.spec_augment)
        try:
            extractor = AutoFeatureExtractor.from_pretrained(path)
            self.normalize = bool(getattr(extractor, "do_normalize", True))
            self.sampling_rate = int(getattr(extractor, "sampling_rate", 16000))
        except (OSError, ValueError):
            self.normalize, self.sampling_rate = True, 16000
        cfg = self.model.config
        self.use_attention_mask = getattr(cfg, "feat_extract_norm", "layer") == "layer"
        self.output_dim = cfg.hidden_size
        self.selector = LayerSelector(cfg.num_hidden_layers, config.layer, config.weighted_layers)

    def prepare(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised waveforms, zero-padded: (B, S)."""
        return normalized_waves(waveforms, self.normalize)

    def preparer(self):
        return functools.partial(normalized_waves, normalize=self.normalize)

    def output_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        return self.model._get_feat_extract_output_lengths(torch.as_tensor(sample_lengths)).long()

    def forward(self, features: torch.Tensor, sample_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sample_lengths = sample_lengths.to(features.device)
        mask = padding_mask(sample_lengths, features.shape[1]).long() if self.use_attention_mask else None
        out = self.model(
            features.to(next(self.model.parameters()).dtype), attention_mask=mask, output_hidden_states=True
        )
        # hidden_states[0] is the CNN+projection output, [1..N] the transformer blocks
        hidden = self.selector(list(out.hidden_states[1:]))
        return hidden, self.output_lengths(sample_lengths)


def normalized_waves(waveforms: list[np.ndarray], normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip zero-mean unit-variance (if ``normalize``) waveforms, zero-padded: (B, S)."""
    longest = max(len(w) for w in waveforms)
    batch = torch.zeros(len(waveforms), longest)
    for i, wave in enumerate(waveforms):
        x = torch.as_tensor(wave, dtype=torch.float32)
        if normalize:
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        batch[i, : len(x)] = x
    return batch, torch.tensor([len(w) for w in waveforms])


@ENCODERS.register("hf_ssl", HFSSLEncoderConfig)
def build_hf_ssl_encoder(config: HFSSLEncoderConfig) -> HFSSLEncoder:
    return HFSSLEncoder(config)
