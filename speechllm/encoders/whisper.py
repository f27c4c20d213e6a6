"""Whisper's encoder fed the real clip length (no padding to 30 s).

transformers' ``WhisperEncoder.forward`` insists on exactly 3000 mel frames; a Speech LLM
does not need that (FACTS.md: a connector trained on truncated features works fine and the
audio tokens shrink ~6x for 5 s clips), so this module runs the same weights with its own
forward that slices the positional embeddings.  Clips longer than Whisper's 30 s window are
encoded window by window and the outputs concatenated (long-form audio).

Padded positions are zeroed between the two convolutions and masked out of self-attention,
so a clip encodes to the same vectors alone or in a batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from speechllm.encoders.base import AudioEncoder, EncoderConfig, LayerSelector, padding_mask
from speechllm.registry import ENCODERS


@dataclass
class WhisperEncoderConfig(EncoderConfig):
    type: str = "whisper"
    model: str = "whisper-tiny.en"


class WhisperAudioEncoder(AudioEncoder):
    def __init__(self, config: WhisperEncoderConfig):
        super().__init__()
        from transformers import WhisperFeatureExtractor, WhisperModel

        from speechllm.embedded import resolve_model

        path = resolve_model(config.model)
        whisper = WhisperModel.from_pretrained(path)
        self.model = whisper.encoder  # the decoder is dropped with `whisper`
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(path)
        self.sampling_rate = self.feature_extractor.sampling_rate
        self.hop_length = self.feature_extractor.hop_length
        self.window_frames = self.model.config.max_source_positions * 2  # mel frames per 30 s window
        self.output_dim = self.model.config.d_model
        self.selector = LayerSelector(len(self.model.layers), config.layer, config.weighted_layers)

    def prepare(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel per clip (no 30 s padding), zero-padded to the longest: (B, n_mels, F).  On a GPU
        encoder the STFT runs there (the CPU front end would otherwise bound a training step)."""
        return whisper_log_mel(self.feature_extractor, waveforms, self.model.conv1.weight.device)

    def preparer(self):
        return functools.partial(whisper_log_mel, self.feature_extractor)

    def output_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        frames = torch.as_tensor(sample_lengths) // self.hop_length
        full, rest = frames // self.window_frames, frames % self.window_frames
        # conv2 has stride 2, kernel 3, padding 1: F frames -> (F - 1) // 2 + 1
        return full * (self.window_frames // 2) + torch.where(rest > 0, (rest - 1) // 2 + 1, 0)

    def forward(self, features: torch.Tensor, sample_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame_lengths = sample_lengths.to(features.device) // self.hop_length
        windows = []
        for start in range(0, features.shape[-1], self.window_frames):
            window_lengths = (frame_lengths - start).clamp(0, self.window_frames)
            chunk = features[..., start : start + self.window_frames]
            windows.append(self._encode_window(chunk, window_lengths))
        if len(windows) == 1:
            return windows[0]
        return _concat_valid(windows)

    def _encode_window(self, mel: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.model
        mel = mel.to(enc.conv1.weight.dtype)
        x = nn.functional.gelu(enc.conv1(mel))  # (B, n_mels, F) -> (B, D, F)
        x = x * padding_mask(frame_lengths, x.shape[-1])[:, None, :]  # as conv2's zero padding sees it alone
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (B, D, F) -> (B, F', D), F' = (F-1)//2+1
        lengths = torch.where(frame_lengths > 0, (frame_lengths - 1) // 2 + 1, 0)
        hidden = x + enc.embed_positions.weight[: x.shape[1]]
        hidden = nn.functional.dropout(hidden, p=enc.dropout, training=self.training)
        mask = _attention_mask(lengths.clamp(min=1), hidden)
        outputs = []
        for layer in enc.layers[: self.selector.layers_needed]:
            hidden = layer(hidden, mask)
            outputs.append(hidden)
        if self.selector.layers_needed == len(enc.layers):
            outputs[-1] = enc.layer_norm(outputs[-1])
        return self.selector(outputs), lengths


def whisper_log_mel(fe, waveforms: list[np.ndarray],
                    device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel per clip, each cut to its real length, zero-padded to the longest: (B, n_mels, F), on
    ``device`` (default the CPU).  The operations of transformers' torch front end
    (``_torch_extract_fbank_features``, each clip with its own max for the -8 floor), without its
    round trip through NumPy; its ``dither`` (0 for Whisper checkpoints) is not applied."""
    device = device or torch.device("cpu")
    window = torch.hann_window(fe.n_fft, device=device)
    filters = torch.from_numpy(fe.mel_filters).to(device, torch.float32).T
    lengths = [len(w) for w in waveforms]
    longest = max(lengths) // fe.hop_length
    batch = torch.zeros(len(waveforms), filters.shape[0], longest, device=device)
    for i, wave in enumerate(waveforms):
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(device, non_blocking=True)
        stft = torch.stft(x, fe.n_fft, fe.hop_length, window=window, return_complex=True)
        log_spec = (filters @ (stft[..., :-1].abs() ** 2)).clamp(min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        n = lengths[i] // fe.hop_length
        batch[i, :, :n] = ((log_spec + 4.0) / 4.0)[:, :n]
    return batch, torch.tensor(lengths)


def _attention_mask(lengths: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
    """Additive (B, 1, T, T) mask hiding padded keys; None when nothing is padded."""
    T = hidden.shape[1]
    if bool((lengths >= T).all()):
        return None
    valid = padding_mask(lengths, T)  # (B, T)
    mask = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
    mask = mask.masked_fill(~valid, torch.finfo(hidden.dtype).min)
    return mask[:, None, None, :].expand(-1, 1, T, T)


def _concat_valid(windows: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Join per-window outputs, keeping each clip's valid frames: -> (B, sum T_w, D)."""
    lengths = torch.stack([l for _, l in windows]).sum(0)
    first = windows[0][0]
    out = first.new_zeros(first.shape[0], int(lengths.max()), first.shape[-1])
    for b in range(first.shape[0]):
        pos = 0
        for hidden, window_lengths in windows:
            n = int(window_lengths[b])
            out[b, pos : pos + n] = hidden[b, :n]
            pos += n
    return out, lengths


@ENCODERS.register("whisper", WhisperEncoderConfig)
def build_whisper_encoder(config: WhisperEncoderConfig) -> WhisperAudioEncoder:
    return WhisperAudioEncoder(config)
