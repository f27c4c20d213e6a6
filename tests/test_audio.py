"""Tests for speechllm.audio: every bad input is an AudioError naming the source, good inputs decode exactly."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import AudioError, AudioInfo, AudioLimits, load_audio, probe_audio, write_audio


def tone(freq: float = 440.0, rate: int = 16000, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


def wav_bytes(x: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- bad inputs
# Each case builds its source in tmp_path: (source, load_audio kwargs, the source's name, a word of the reason).


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _truncated_wav(tmp: Path) -> Path:  # header promises 1 s, only the 44-byte header is there
    return _file(tmp, "cut.wav", wav_bytes(tone())[:44])


def _truncated_flac(tmp: Path) -> Path:  # STREAMINFO says 16000 frames, no audio frame follows
    return _file(tmp, "cut.flac", wav_bytes(tone(), fmt="FLAC")[:44])


def _directory(tmp: Path) -> Path:
    (tmp / "folder.wav").mkdir()
    return tmp / "folder.wav"


def _nan_wav(tmp: Path) -> Path:
    x = tone()
    x[100] = np.nan
    return _file(tmp, "nan.wav", wav_bytes(x, subtype="FLOAT"))


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)
BAD_CASES = {
    "missing": (lambda t: t / "missing.wav", {}, "not found"),
    "directory": (_directory, {}, "directory"),
    "empty_file": (lambda t: _file(t, "empty.wav", b""), {}, "empty"),
    "text_file": (lambda t: _file(t, "notes.wav", b"just some text\n" * 20), {}, "not a recognised audio format"),
    "png_file": (lambda t: _file(t, "picture.png", PNG), {}, "not a recognised audio format"),
    "truncated_header": (lambda t: _file(t, "head.wav", wav_bytes(tone())[:30]), {}, "truncated"),
    "truncated_wav": (_truncated_wav, {}, "truncated"),
    "truncated_flac": (_truncated_flac, {}, "truncated"),
    "zero_samples": (lambda t: _file(t, "nothing.wav", wav_bytes(np.zeros(0, np.float32))), {}, "zero samples"),
    "too_short": (lambda t: _file(t, "blip.wav", wav_bytes(tone(seconds=0.05))), {}, "too short"),
    "too_long": (lambda t: _file(t, "long.wav", wav_bytes(tone())), {"limits": AudioLimits(max_seconds=0.5)}, "long"),
    "too_big": (lambda t: _file(t, "big.wav", wav_bytes(tone())), {"limits": AudioLimits(max_bytes=1000)}, "too large"),
    "nan_file": (_nan_wav, {}, "nan"),
    "silent_file": (lambda t: _file(t, "quiet.wav", wav_bytes(np.zeros(16000, np.float32))), {}, "silent"),
    "rate_too_low": (lambda t: _file(t, "low.wav", wav_bytes(tone(rate=500), rate=500)), {}, "sample rate"),
    "rate_too_high": (
        lambda t: _file(t, "high.wav", wav_bytes(tone(rate=768000, seconds=0.2), rate=768000)),
        {},
        "sample rate",
    ),
    "bytes_empty": (lambda t: b"", {}, "empty"),
    "bytes_text": (lambda t: b"<html>not audio</html>" * 10, {}, "not a recognised audio format"),
    "bytes_png": (lambda t: PNG, {}, "not a recognised audio format"),
    "bytes_too_big": (lambda t: wav_bytes(tone()), {"limits": AudioLimits(max_bytes=100)}, "too large"),
    "array_no_rate": (lambda t: tone(), {}, "source_rate"),
    "array_rate_low": (lambda t: tone(), {"source_rate": 999}, "sample rate"),
    "array_rate_high": (lambda t: tone(), {"source_rate": 384001}, "sample rate"),
    "array_rate_fraction": (lambda t: tone(), {"source_rate": 16000.5}, "sample rate"),
    "array_0d": (lambda t: np.array(0.5, np.float32), {"source_rate": 16000}, "shape"),
    "array_3d": (lambda t: np.ones((1, 2, 16000), np.float32), {"source_rate": 16000}, "shape"),
    "array_9_channels": (lambda t: np.ones((9, 16000), np.float32), {"source_rate": 16000}, "shape"),
    "array_empty": (lambda t: np.zeros(0, np.float32), {"source_rate": 16000}, "zero samples"),
    "array_no_channels": (lambda t: np.zeros((16000, 0), np.float32), {"source_rate": 16000}, "zero samples"),
    "array_nan": (lambda t: np.where(np.arange(16000) == 5, np.nan, tone()), {"source_rate": 16000}, "nan"),
    "array_inf": (lambda t: np.where(np.arange(16000) == 5, np.inf, tone()), {"source_rate": 16000}, "infinite"),
    "array_silent": (lambda t: np.zeros((16000, 2), np.int16), {"source_rate": 16000}, "silent"),
    "array_uint8_silent": (lambda t: np.full(16000, 128, np.uint8), {"source_rate": 16000}, "silent"),
    "array_int64": (lambda t: np.ones(16000, np.int64), {"source_rate": 16000}, "dtype"),
    "array_complex": (lambda t: np.ones(16000, np.complex64), {"source_rate": 16000}, "dtype"),
    "array_too_short": (lambda t: tone(seconds=0.05), {"source_rate": 16000}, "too short"),
    "array_too_long": (lambda t: tone(), {"source_rate": 16000, "limits": AudioLimits(max_seconds=0.5)}, "too long"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_audio_error_naming_source_and_problem(case, tmp_path):
    make, kwargs, word = BAD_CASES[case]
    source = make(tmp_path)
    expected_name = str(source) if isinstance(source, Path) else "<bytes>" if isinstance(source, bytes) else "<array>"
    with pytest.raises(AudioError) as excinfo:
        load_audio(source, **kwargs)
    err = excinfo.value
    assert err.source == expected_name
    assert expected_name in str(err) and word in str(err).lower(), str(err)
    assert err.__cause__ is None or isinstance(err.__cause__, AudioError)  # no library traceback chained in


def test_name_overrides_source_in_errors():
    with pytest.raises(AudioError, match=r"^upload\.mp3: not a recognised"):
        load_audio(b"garbage bytes" * 10, name="upload.mp3")


def test_audio_error_survives_pickling():  # DataLoader workers send exceptions across processes
    err = pickle.loads(pickle.dumps(AudioError("x.wav", "silent")))
    assert (err.source, err.reason, str(err)) == ("x.wav", "silent", "x.wav: silent")


def test_too_long_is_caught_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "hour.wav", tone(seconds=2.0), 16000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file whose header already exceeds max_seconds")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioError, match="too long"):
        load_audio(path, limits=AudioLimits(max_seconds=1.0))


def test_bad_target_rate_is_a_value_error():
    with pytest.raises(ValueError, match="sampling_rate"):
        load_audio(tone(), 100, source_rate=16000)


# ---------------------------------------------------------------------------------------------- good inputs


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resampling_keeps_length_and_pitch(rate, tmp_path):
    path = write_audio(tmp_path / f"tone_{rate}.wav", tone(rate=rate), rate)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert abs(len(x) - 16000) <= 1
    assert abs(peak_hz(x, 16000) - 440.0) <= 1.0
    assert np.abs(x).max() <= 1.0
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.01)  # resampling keeps the level


def test_target_rate_other_than_16k():
    x = load_audio(tone(rate=16000), 24000, source_rate=16000.0)  # a whole float rate is accepted
    assert abs(len(x) - 24000) <= 1 and abs(peak_hz(x, 24000) - 440.0) <= 1.0


# (format, subtype, suffix, largest allowed sample error); lossy codecs are checked by pitch instead
LOSSLESS = [
    ("WAV", "PCM_U8", "wav", 1 / 128),
    ("WAV", "PCM_16", "wav", 1 / 2**15),
    ("WAV", "PCM_24", "wav", 1 / 2**23),
    ("WAV", "PCM_32", "wav", 1e-7),
    ("WAV", "FLOAT", "wav", 0.0),
    ("FLAC", "PCM_16", "flac", 1 / 2**15),
    ("FLAC", "PCM_24", "flac", 1 / 2**23),
]


@pytest.mark.parametrize("fmt,subtype,suffix,atol", LOSSLESS, ids=[f"{f}-{s}" for f, s, *_ in LOSSLESS])
def test_lossless_round_trip(fmt, subtype, suffix, atol, tmp_path):
    x = tone()
    path = write_audio(tmp_path / f"a.{suffix}", x, 16000, subtype=subtype, format=fmt)
    info = probe_audio(path)
    assert (info.format, info.subtype, info.frames, info.sampling_rate) == (fmt, subtype, 16000, 16000)
    np.testing.assert_allclose(load_audio(path), x, rtol=0, atol=atol * 1.01)


LOSSY = [("OGG", "VORBIS", "ogg"), ("OGG", "OPUS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")]


@pytest.mark.parametrize("fmt,subtype,suffix", LOSSY, ids=[s for _, s, _ in LOSSY])
def test_lossy_round_trip(fmt, subtype, suffix, tmp_path):
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    path = write_audio(tmp_path / f"a.{suffix}", tone(rate=48000), 48000, subtype=subtype, format=fmt)
    x = load_audio(path)
    assert abs(len(x) - 16000) <= 0.01 * 16000  # encoders may pad a frame
    assert abs(peak_hz(x, 16000) - 440.0) <= 2.0
    assert 0.4 < np.abs(x).max() <= 1.0


def test_stereo_file_downmix_averages_channels(tmp_path):
    left, right = tone(440.0, amp=0.6), tone(1000.0, amp=0.2)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")  # (T, 2)
    assert probe_audio(path).channels == 2
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("layout", ["(T, C)", "(C, T)"])
def test_array_channel_axis_is_the_smaller_one(layout):
    stereo = np.stack([tone(440.0), tone(1000.0, amp=0.3)], axis=1)  # (T, 2)
    arr = stereo if layout == "(T, C)" else stereo.T
    np.testing.assert_allclose(load_audio(arr, source_rate=16000), stereo.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize(
    "dtype,full_scale,zero",
    [(np.int16, 2**15, 0), (np.int32, 2**31, 0), (np.int8, 2**7, 0), (np.uint8, 2**7, 128)],
)
def test_integer_arrays_are_scaled_by_their_range(dtype, full_scale, zero):
    half = tone(amp=0.5) * full_scale + zero  # a tone at half of full scale, as integers
    x = load_audio(np.round(half).astype(dtype), source_rate=16000)
    np.testing.assert_allclose(x, tone(amp=0.5), atol=1.0 / full_scale + 1e-6)


def test_bytes_equal_path(tmp_path):
    for fmt, suffix in [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")]:
        path = write_audio(tmp_path / f"a.{suffix}", tone(rate=22050), 22050, format=fmt)
        np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))
        assert probe_audio(path.read_bytes()).source == "<bytes>"


def test_torch_tensor_equals_numpy():
    torch = pytest.importorskip("torch")
    x = tone(rate=8000)
    expected = load_audio(x, source_rate=8000)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(x).requires_grad_(), source_rate=8000), expected)
    np.testing.assert_allclose(load_audio(torch.from_numpy(x).bfloat16(), source_rate=8000), expected, atol=4e-3)


def test_very_quiet_audio_is_fine():
    x = load_audio(tone(amp=1e-6), source_rate=16000)
    assert 0 < np.abs(x).max() < 2e-6


def test_float_beyond_full_scale_is_scaled_down_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="speechllm.audio"):
        x = load_audio(tone(amp=4.0), source_rate=16000)
    assert np.abs(x).max() == pytest.approx(1.0)
    assert "peak" in caplog.text and "<array>" in caplog.text


@pytest.mark.parametrize("fmt,suffix", [("WAV", "wav"), ("FLAC", "flac")])
def test_truncated_file_decodes_what_is_there_with_a_warning(fmt, suffix, tmp_path, caplog):
    data = wav_bytes(tone(seconds=2.0), fmt=fmt)
    path = _file(tmp_path, f"half.{suffix}", data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="speechllm.audio"):
        x = load_audio(path)
    assert 0.1 * 16000 <= len(x) < 2 * 16000
    np.testing.assert_allclose(x, tone(seconds=2.0)[: len(x)], atol=1e-4)  # what decodes is the real audio
    assert "truncated" in caplog.text and "half." in caplog.text


def test_probe_reads_the_header(tmp_path):
    path = write_audio(tmp_path / "s.flac", np.zeros((44100 * 3, 2), np.float32) + 0.1, 44100)
    assert probe_audio(path) == AudioInfo(str(path), 3.0, 44100, 2, 132300, "FLAC", "PCM_16")
    info = probe_audio(np.zeros((2, 800), np.int16), source_rate=8000)
    assert (info.duration, info.channels, info.frames, info.format, info.subtype) == (0.1, 2, 800, "ARRAY", "int16")
    with pytest.raises(AudioError, match="not found"):
        probe_audio(tmp_path / "none.wav")
