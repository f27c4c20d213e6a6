"""Audio input and output: decode anything libsndfile reads, or take an array, and return mono float32.

`load_audio` is the one entry point every other part of speechllm uses for audio. It follows the contract of
openai/whisper's ``load_audio`` (mono float32 in [-1, 1] at 16 kHz) but decodes in-process with soundfile
(libsndfile: wav, flac, ogg/vorbis, ogg/opus, mp3, ...) instead of shelling out to ffmpeg, and resamples with
soxr at "HQ" quality. Sources are a file path, raw bytes (an upload to the server) or a numpy array / torch
tensor with its ``source_rate``.

Every bad input raises `AudioError` (a ``ValueError``) whose message names the source and the problem; nothing
from deep inside soundfile or numpy escapes. Limits (`AudioLimits`) are checked as early as possible: file size
before opening, duration from the header before decoding, so an hours-long file is never read into memory.

`probe_audio` reads only the header. `write_audio` is the matching writer (tests, TTS output).
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

AudioLike = Union[str, os.PathLike, bytes, np.ndarray, "torch.Tensor"]

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_ARRAY_CHANNELS = 8  # an array axis longer than this is time, so (T, C) and (C, T) are never ambiguous
_BLOCK_FRAMES = 1 << 16  # frames decoded per read; bounds the peak memory beyond the mono result
_SALVAGE_FRAMES = 1024  # smaller reads used to recover the decodable part of a damaged file
_RESAMPLE_QUALITY = "HQ"


class AudioError(ValueError):
    """Audio that cannot be used; ``str(err)`` is ``"<source>: <reason>"``."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self):  # args hold the formatted message, so pickling (DataLoader workers) needs this
        return (type(self), (self.source, self.reason))


@dataclass
class AudioLimits:
    """What `load_audio` accepts. ``max_bytes`` applies to files and bytes and is checked before decoding."""

    min_seconds: float = 0.1
    max_seconds: float = 3600.0
    max_bytes: int = 2**31


@dataclass(frozen=True)
class AudioInfo:
    """What `probe_audio` learns from a header. ``format``/``subtype`` are libsndfile's names ("WAV", "PCM_16")."""

    source: str
    duration: float  # seconds
    sampling_rate: int
    channels: int
    frames: int  # samples per channel
    format: str  # "WAV", "FLAC", "OGG", "MP3", ...; "ARRAY" for arrays
    subtype: str  # "PCM_16", "FLOAT", "VORBIS", ...; the dtype name for arrays


# ---------------------------------------------------------------------------------------------- public API


def load_audio(
    source: AudioLike,
    sampling_rate: int = 16000,
    *,
    source_rate: int | None = None,
    limits: AudioLimits | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Load ``source`` as mono float32 in [-1, 1] at ``sampling_rate``; shape (T,).

    ``source`` is a path, the bytes of an audio file, or an array/tensor shaped (T,), (T, C) or (C, T) with
    C <= 8, given with its ``source_rate``. Integer arrays are scaled by their type's range (int16 / 32768,
    uint8 centred on 128). Channels are averaged. Float input peaking above 1 is scaled down to peak 1 (with a
    warning) rather than clipped. A truncated file yields what decodes, with a warning. ``name`` replaces the
    source's name in errors and logs (e.g. an upload's file name).

    Raises `AudioError` for anything unusable: unreadable or non-audio data, zero samples, NaN/inf, all-zero
    (silent) audio, duration or size outside ``limits``, a sample rate outside [1000, 384000].
    """
    limits = limits or AudioLimits()
    _check_target_rate(sampling_rate)
    label = _label(source, name)
    if _is_array(source):
        if source_rate is None:
            raise AudioError(label, "an array needs source_rate (its sample rate in Hz)")
        rate = _check_source_rate(source_rate, label)
        mono = _array_to_mono(source, rate, label, limits)
    else:
        if source_rate is not None:
            raise ValueError(f"{label}: source_rate is only for arrays; files carry their own sample rate")
        mono, rate = _decode(source, label, limits)
    return _resample(mono, rate, sampling_rate)


def probe_audio(source: AudioLike, *, source_rate: int | None = None, name: str | None = None) -> AudioInfo:
    """Describe ``source`` from its header without decoding it; arrays need ``source_rate``."""
    label = _label(source, name)
    if _is_array(source):
        if source_rate is None:
            raise AudioError(label, "an array needs source_rate (its sample rate in Hz)")
        rate = _check_source_rate(source_rate, label)
        arr = _as_numpy(source)
        axis = _channel_axis(arr, label)
        channels = 1 if axis is None else arr.shape[axis]
        frames = arr.shape[0] if axis is None else arr.shape[1 - axis]
        return AudioInfo(label, frames / rate, rate, channels, frames, "ARRAY", arr.dtype.name)
    with _open(_opener(source, label, AudioLimits(max_bytes=sys.maxsize)), label) as f:
        return AudioInfo(label, f.frames / f.samplerate, f.samplerate, f.channels, f.frames, f.format, f.subtype)


def write_audio(
    path: str | os.PathLike,
    samples: np.ndarray | torch.Tensor,
    sampling_rate: int,
    *,
    subtype: str | None = None,
    format: str | None = None,
) -> Path:
    """Write ``samples`` shaped (T,) or (T, C) to ``path``; format from the suffix, subtype libsndfile's default."""
    if _is_tensor(samples):
        samples = samples.detach().cpu().float().numpy()
    sf.write(os.fspath(path), np.asarray(samples), sampling_rate, subtype=subtype, format=format)
    return Path(path)


# ---------------------------------------------------------------------------------------------- sources


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported; never import it here
    return torch is not None and isinstance(x, torch.Tensor)


def _is_array(source) -> bool:
    return isinstance(source, np.ndarray) or _is_tensor(source)


def _label(source, name: str | None) -> str:
    if name is not None:
        return name
    if _is_array(source):
        return "<array>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    raise TypeError(f"audio source must be a path, bytes, numpy array or torch tensor, not {type(source).__name__}")


def _check_target_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sampling_rate={rate} is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz")


def _check_source_rate(rate, label: str) -> int:
    """The rate as an int; a whole float such as 16000.0 is accepted, anything else is an AudioError."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or rate != int(rate):
        raise AudioError(label, f"sample rate must be a whole number of Hz, not {rate!r}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(label, f"sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]")
    return int(rate)


def _check_size(size: int, label: str, limits: AudioLimits) -> None:
    if size == 0:
        raise AudioError(label, "empty file (0 bytes)")
    if size > limits.max_bytes:
        raise AudioError(label, f"file too large: {size} bytes > max_bytes={limits.max_bytes}")


def _opener(source, label: str, limits: AudioLimits) -> Callable[[], sf.SoundFile]:
    """Check what can be checked without libsndfile; return a function opening a fresh decoder."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), label, limits)
        return lambda: sf.SoundFile(io.BytesIO(data))
    path = os.fsdecode(source)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise AudioError(label, "is a directory, not an audio file")
        if stat.S_ISREG(st.st_mode):
            _check_size(st.st_size, label, limits)
        with open(path, "rb"):  # libsndfile reports every OS failure as "System error"; Python names it
            pass
    except FileNotFoundError:
        raise AudioError(label, "file not found") from None
    except PermissionError:
        raise AudioError(label, "permission denied") from None
    except OSError as e:
        raise AudioError(label, f"cannot read file ({e.strerror or e})") from None
    return lambda: sf.SoundFile(path)


def _open(opener: Callable[[], sf.SoundFile], label: str) -> sf.SoundFile:
    """Open a decoder, turning libsndfile's errors into AudioError; the sample rate is checked here."""
    try:
        f = opener()
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(label, _open_failure(e)) from None
    try:
        _check_source_rate(f.samplerate, label)
    except AudioError:
        f.close()
        raise
    return f


def _open_failure(e: Exception) -> str:
    detail = getattr(e, "error_string", "") or ""
    if getattr(e, "code", None) == 1 or "not recognised" in detail:  # SF_ERR_UNRECOGNISED_FORMAT
        return "not a recognised audio format (is it an audio file?)"
    return "malformed or truncated audio header" + (f" ({detail.strip()})" if detail.strip() else "")


# ---------------------------------------------------------------------------------------------- decoding


def _decode(source, label: str, limits: AudioLimits) -> tuple[np.ndarray, int]:
    """Decode a file or bytes to mono float32 at its own rate; limits checked from the header first."""
    opener = _opener(source, label, limits)
    with _open(opener, label) as f:
        rate, declared = f.samplerate, f.frames
        header_note = _header_mismatch(f)
        if declared / rate > limits.max_seconds:
            raise AudioError(label, _too_long(declared / rate, limits))
        max_frames = int(limits.max_seconds * rate) + 1
        blocks, error = _read_blocks(f, max_frames, label, limits)
    if error is not None:
        blocks += _salvage(opener, sum(len(b.mono) for b in blocks), max_frames)
    frames = sum(len(b.mono) for b in blocks)
    if frames == 0:
        if error is None and header_note is None and declared == 0:
            raise AudioError(label, "zero samples")
        raise AudioError(label, "truncated or corrupt: no samples decode" + (f" ({error})" if error else ""))
    if error is not None or frames < declared:
        why = error or "the stream ends early"
        logger.warning("%s: truncated? decoded %d of %d frames the header declares (%s)", label, frames, declared, why)
    elif header_note is not None:
        note = "header sizes disagree with the file length"
        logger.warning("%s: truncated? %s (%s); decoded %d frames", label, note, header_note, frames)
    return _checked_mono(blocks, rate=rate, label=label, limits=limits), rate


def _header_mismatch(f: sf.SoundFile) -> str | None:
    """libsndfile's log notes "X (should be Y)" when a RIFF/data size disagrees with the file length."""
    notes = [line.strip() for line in f.extra_info.splitlines() if "should be" in line]
    return notes[-1] if notes else None  # the last is the data chunk's, the one that says how much audio is missing


@dataclass
class _Block:
    """A decoded stretch, downmixed at once so a long multichannel file never sits in memory undownmixed."""

    mono: np.ndarray  # (n,) float32, the channel mean
    nonzero: bool  # any sample of any channel is non-zero (L = -R downmixes to zeros but is not silent)

    @classmethod
    def of(cls, x: np.ndarray) -> _Block:
        return cls(x.mean(axis=1, dtype=np.float32), bool(x.any()))  # (n, C) -> (n,)


def _read_blocks(f: sf.SoundFile, max_frames: int, label: str, limits: AudioLimits):
    """Decode until the end or a decode error; returns (blocks, libsndfile's error message or None)."""
    blocks: list[_Block] = []
    frames = 0
    while True:
        try:
            block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)  # (n, C)
        except (sf.LibsndfileError, RuntimeError) as e:
            return blocks, str(getattr(e, "error_string", "") or e).strip()
        if len(block) == 0:
            return blocks, None
        blocks.append(_Block.of(block))
        frames += len(block)
        if frames > max_frames:  # the header undercounted; stop before the whole file is in memory
            raise AudioError(label, _too_long(frames / f.samplerate, limits))


def _salvage(opener: Callable[[], sf.SoundFile], start: int, max_frames: int) -> list[_Block]:
    """After a decode error at a block boundary, re-read from ``start`` in small steps to keep what decodes."""
    blocks: list[_Block] = []
    try:
        with opener() as f:
            f.seek(start)
            while start <= max_frames:
                block = f.read(_SALVAGE_FRAMES, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                blocks.append(_Block.of(block))
                start += len(block)
    except (sf.LibsndfileError, RuntimeError):
        pass  # the damaged part starts here; keep what came before
    return blocks


def _too_long(seconds: float, limits: AudioLimits) -> str:
    return f"too long: {seconds:.1f} s > max_seconds={limits.max_seconds:g}"


# ---------------------------------------------------------------------------------------------- arrays


def _as_numpy(source) -> np.ndarray:
    if _is_tensor(source):
        t = source.detach().cpu()
        if t.is_floating_point() and t.dtype.itemsize < 4:  # bfloat16 has no numpy dtype
            t = t.float()
        return t.numpy()
    return source


def _channel_axis(arr: np.ndarray, label: str) -> int | None:
    """None for (T,); else the smaller axis of a 2-D array, which must hold at most 8 channels."""
    if arr.ndim == 1:
        return None
    if arr.ndim == 2 and min(arr.shape) <= MAX_ARRAY_CHANNELS:
        return int(np.argmin(arr.shape))
    raise AudioError(
        label, f"bad shape {tuple(arr.shape)}: expected (T,), (T, C) or (C, T) with C <= {MAX_ARRAY_CHANNELS}"
    )


def _to_float(arr: np.ndarray, label: str) -> np.ndarray:
    """Scale integer PCM by its type's full range; floats pass through as float32."""
    kind, bits = arr.dtype.kind, arr.dtype.itemsize * 8
    if kind == "f":
        return arr.astype(np.float32, copy=False)
    if kind == "i" and bits <= 32:
        return (arr.astype(np.float64) / 2.0 ** (bits - 1)).astype(np.float32)
    if kind == "u" and bits == 8:  # unsigned 8-bit PCM is centred on 128, as in 8-bit wav
        return (arr.astype(np.float32) - 128.0) / 128.0
    raise AudioError(label, f"unsupported dtype {arr.dtype}: use float, int8/16/32 or uint8 PCM")


def _array_to_mono(source, source_rate: int, label: str, limits: AudioLimits) -> np.ndarray:
    arr = _as_numpy(source)
    axis = _channel_axis(arr, label)
    if arr.size == 0:
        raise AudioError(label, f"zero samples (shape {tuple(arr.shape)})")
    frames = arr.shape[1 - axis] if axis is not None else arr.shape[0]
    if frames / source_rate > limits.max_seconds:
        raise AudioError(label, _too_long(frames / source_rate, limits))
    x = _to_float(arr, label)
    x = x[:, None] if axis is None else (x.T if axis == 0 else x)  # (T,) | (C, T) | (T, C) -> (T, C)
    return _checked_mono([_Block.of(x)], rate=source_rate, label=label, limits=limits)


# ---------------------------------------------------------------------------------------------- shared checks


def _checked_mono(blocks: list[_Block], *, rate: int, label: str, limits: AudioLimits) -> np.ndarray:
    """Validate decoded blocks and join them into mono (T,)."""
    frames = sum(len(b.mono) for b in blocks)
    if frames == 0:
        raise AudioError(label, "zero samples")
    if not all(np.isfinite(b.mono).all() for b in blocks):  # a NaN or inf in any channel survives the mean
        raise AudioError(label, "contains NaN or infinite samples")
    if not any(b.nonzero for b in blocks):
        raise AudioError(label, "silent: every sample is exactly zero")
    if frames / rate < limits.min_seconds:
        raise AudioError(label, f"too short: {frames / rate:.3f} s < min_seconds={limits.min_seconds:g}")
    mono = np.concatenate([b.mono for b in blocks])  # [(n,)] -> (T,)
    peak = float(np.abs(mono).max())
    if peak > 1.0:  # float data beyond full scale; scaling keeps the waveform, clipping would distort it
        logger.warning("%s: peak %.3g exceeds 1.0; scaling down to peak 1.0", label, peak)
        mono /= peak
    return mono


def _resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate != target:
        mono = soxr.resample(mono, rate, target, quality=_RESAMPLE_QUALITY)
        np.clip(mono, -1.0, 1.0, out=mono)  # the resampler's ringing can overshoot full scale slightly
    return np.ascontiguousarray(mono, dtype=np.float32)
