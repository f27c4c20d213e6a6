"""Waveform augmentation for training: speed perturbation, additive noise at a random SNR, gain.

Follows the common Kaldi/lhotse recipe: speed perturbation by resampling (factors 0.9/1.0/1.1, Ko et al.
2015 — pitch and tempo change together), then noise mixed at an SNR drawn uniformly in a range (white or
pink noise generated here, or clips from a noise manifest, as in MUSAN-style augmentation), then a random
gain. All randomness comes from a generator seeded by (config seed, example key), so an example gets the
same augmentation whatever the order or the DataLoader worker it lands in.

    augment = Augmenter(AugmentConfig(noise_prob=0.5, snr_db=(5, 20)))
    wave = augment(wave, key=meta["id"])                      # (T,) -> (T',), T' = T / speed
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import soxr

from speechllm.data.manifest import load_cut_audio, load_manifest


@dataclass
class AugmentConfig:
    """What `Augmenter` does to each clip; probabilities are per clip."""

    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)  # drawn uniformly; (1.0,) turns speed perturbation off
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)  # SNR range, uniform in dB
    noise_types: tuple[str, ...] = ("white", "pink")  # generated noise, used when noise_manifest is None
    noise_manifest: str | None = None  # a CutSet of noise clips, mixed instead of generated noise
    gain_prob: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 6.0)
    seed: int = 0


# ---------------------------------------------------------------------------------------------- primitives


def speed_perturb(wave: np.ndarray, factor: float, sampling_rate: int = 16000) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (pitch shifts too): (T,) -> (round(T / factor),)."""
    if factor == 1.0:
        return wave
    # read the samples as if taken at rate*factor, then resample to rate: duration scales by 1/factor
    return soxr.resample(wave, sampling_rate * factor, sampling_rate, quality="HQ").astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped by 1/sqrt(f) in the frequency domain, unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))  # (n//2+1,)
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # keep DC finite
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (pink / (pink.std() + 1e-12)).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wave + a * noise`` with ``a`` set so that power(wave) / power(a * noise) = 10^(snr_db / 10).

    ``noise`` is tiled or cut to the length of ``wave``."""
    if len(noise) < len(wave):
        noise = np.tile(noise, -(-len(wave) // len(noise)))
    noise = noise[: len(wave)]
    p_signal = float(np.mean(wave.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2))
    if p_signal == 0.0 or p_noise == 0.0:
        return wave
    scale = np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (wave + scale * noise).astype(np.float32)


def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    return (wave * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def _limit(wave: np.ndarray) -> np.ndarray:
    """Scale down to peak 1 rather than clip: clipping adds distortion the model would learn."""
    peak = float(np.abs(wave).max(initial=0.0))
    return wave / peak if peak > 1.0 else wave


# ---------------------------------------------------------------------------------------------- augmenter


class Augmenter:
    """Applies `AugmentConfig` to mono float32 clips at ``sampling_rate``; deterministic per (seed, key)."""

    def __init__(self, config: AugmentConfig | None = None, sampling_rate: int = 16000):
        self.config = config or AugmentConfig()
        self.sampling_rate = sampling_rate
        self._noise_cuts = list(load_manifest(self.config.noise_manifest)) if self.config.noise_manifest else None
        self._calls = 0

    def rng(self, key: str | int | None) -> np.random.Generator:
        """A generator for one example: keyed examples repeat exactly; unkeyed ones follow a call counter."""
        if key is None:
            key, self._calls = f"#{self._calls}", self._calls + 1
        salt = key if isinstance(key, int) else zlib.crc32(str(key).encode("utf-8"))
        return np.random.default_rng([self.config.seed, salt])

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self._noise_cuts:
            noise = load_cut_audio(self._noise_cuts[rng.integers(len(self._noise_cuts))], self.sampling_rate)
            offset = int(rng.integers(len(noise))) if len(noise) > n else 0
            return np.roll(noise, -offset)  # a random starting point; add_noise tiles short noise
        kind = self.config.noise_types[rng.integers(len(self.config.noise_types))]
        if kind not in ("white", "pink"):
            raise ValueError(f"unknown noise type {kind!r}: 'white' or 'pink' (or give noise_manifest)")
        return white_noise(n, rng) if kind == "white" else pink_noise(n, rng)

    def draw(self, key: str | int | None = None) -> "Draw":
        """The random choices for one example (every draw happens whether or not it is used, so one knob
        does not reshuffle the others).  Trainers that cache speed-perturbed encoder outputs use ``speed``."""
        c, rng = self.config, self.rng(key)
        speed = float(c.speeds[rng.integers(len(c.speeds))])
        use_noise, snr = rng.random() < c.noise_prob, rng.uniform(*c.snr_db)
        use_gain, gain = rng.random() < c.gain_prob, rng.uniform(*c.gain_db)
        return Draw(speed, snr if use_noise else None, gain if use_gain else None, rng)

    @property
    def waveform_level(self) -> bool:
        """True if noise or gain can apply: outputs then differ per draw and cannot be cached."""
        return self.config.noise_prob > 0 or self.config.gain_prob > 0

    def __call__(self, wave: np.ndarray, key: str | int | None = None) -> np.ndarray:
        """Augment ``wave`` (T,) float32; returns (T',) float32 with T' = T / speed, peak <= 1."""
        d = self.draw(key)
        out = speed_perturb(np.asarray(wave, dtype=np.float32), d.speed, self.sampling_rate)
        if d.snr_db is not None:
            out = add_noise(out, self._noise(len(out), d.rng), d.snr_db)
        if d.gain_db is not None:
            out = apply_gain(out, d.gain_db)
        return _limit(out)


@dataclass
class Draw:
    speed: float
    snr_db: float | None  # None: no noise
    gain_db: float | None  # None: no gain
    rng: np.random.Generator  # continues the example's stream (noise samples)
