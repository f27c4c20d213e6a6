"""The one manifest format of speechllm: lhotse's CutSet JSONL (``*.jsonl`` or ``*.jsonl.gz``).

Each line is a lhotse ``MonoCut``: the recording (audio path, sampling rate, duration) and one
supervision carrying the label (lhotse's own fields ``text``, ``speaker``, ``gender``, ``language``)
plus speechllm's fields in ``supervision.custom``:

    task         "asr" (default), "ast", "sqa", ...      instruction  the text prompt, or absent for plain ASR
    answer       the target when it is not the transcript voice        the TTS voice of a synthetic clip
    split        "train" / "val" / "test" (test/dev data is for evaluation only)

Audio paths that are relative are taken relative to the manifest's folder, so a synthesized corpus
can be moved as a whole; `load_manifest` makes them absolute. Errors in a manifest raise
`ManifestError` naming the file and the line.

`iter_examples` turns cuts into what a trainer or evaluator iterates: (waveform at 16 kHz as
`speechllm.audio.load_audio` returns it, text, meta).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut.set import deserialize_cut

from speechllm.audio import load_audio, probe_audio

CUSTOM_FIELDS = ("task", "instruction", "answer", "voice", "split")


class ManifestError(ValueError):
    """A malformed manifest; the message starts with ``<file>:<line>:`` where a line is to blame."""


class Example(NamedTuple):
    """One item for a trainer: ``waveform`` (T,) float32 at the requested rate, its ``text``, ``meta``."""

    waveform: np.ndarray
    text: str | None
    meta: dict[str, Any]


# ---------------------------------------------------------------------------------------------- building


def make_cut(cut_id: str, audio: str | os.PathLike, *, text: str | None = None, speaker: str | None = None,
             gender: str | None = None, language: str | None = "en", start: float = 0.0,
             duration: float | None = None, **custom: Any) -> MonoCut:
    """A cut for one clip (or a ``start``/``duration`` segment of it); ``custom`` keys: CUSTOM_FIELDS or more.

    The header is read (not the samples) to learn rate, channels and length; errors are AudioErrors.
    """
    info = probe_audio(audio)
    channels = list(range(info.channels))
    recording = Recording(id=cut_id, sources=[AudioSource(type="file", channels=channels,
                                                                     source=os.fspath(Path(audio).resolve()))],
                          sampling_rate=info.sampling_rate, num_samples=info.frames, duration=info.duration,
                          channel_ids=channels)
    if duration is None:
        duration = info.duration - start
    if start < 0 or duration <= 0 or start + duration > info.duration + 1e-3:
        raise ValueError(f"{cut_id}: segment [{start}, {start + duration}] s is outside {audio} "
                         f"({info.duration:.3f} s)")
    custom = {k: v for k, v in custom.items() if v is not None}
    supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, text=text,
                                     speaker=speaker, gender=gender, language=language,
                                     custom={"task": "asr", **custom})
    return MonoCut(id=cut_id, start=start, duration=duration, channel=0, recording=recording,
                   supervisions=[supervision])


def save_manifest(cuts: Iterable[MonoCut], path: str | os.PathLike, *, relative: bool = True) -> Path:
    """Write ``cuts`` as CutSet JSONL (gzipped for ``.gz``); audio under the manifest's folder is written
    relative to it when ``relative``. The file is replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    tmp = path.with_name(f".{path.name}.tmp")
    with _open_text(tmp, "wt") as f:
        for cut in cuts:
            d = cut.to_dict()
            if relative:
                for src in d.get("recording", {}).get("sources", []):
                    src["source"] = _relative_to(src["source"], root)
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- reading


def load_manifest(path: str | os.PathLike) -> CutSet:
    """Read a CutSet JSONL written by `save_manifest` (or by lhotse); relative audio paths become absolute.

    Raises `ManifestError` naming file and line for invalid JSON, a line that is not a cut, a cut without
    a recording or supervision, or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = path.parent.resolve()
    cuts, seen = [], {}
    with _open_text(path, "rt") as f:
        for lineno, line in _lines(f, path):
            where = f"{path}:{lineno}"
            raw = _json_object(line, where)
            if raw.get("type") not in ("MonoCut", "Cut"):
                raise ManifestError(f"{where}: not a lhotse cut (\"type\" is {raw.get('type')!r}, expected "
                                    "\"MonoCut\"); convert other formats with `speechllm data import`")
            try:
                cut = deserialize_cut(raw)
            except (KeyError, TypeError, ValueError, AssertionError) as e:
                raise ManifestError(f"{where}: malformed cut ({type(e).__name__}: {e})") from None
            if cut.recording is None or not cut.recording.sources:
                raise ManifestError(f"{where}: cut {cut.id!r} has no recording")
            if not cut.supervisions:
                raise ManifestError(f"{where}: cut {cut.id!r} has no supervision (text/label)")
            if cut.id in seen:
                raise ManifestError(f"{where}: duplicate cut id {cut.id!r} (first on line {seen[cut.id]})")
            seen[cut.id] = lineno
            for src in cut.recording.sources:
                if src.type == "file" and not os.path.isabs(src.source):
                    src.source = os.fspath(root / src.source)
            cuts.append(cut)
    if not cuts:
        raise ManifestError(f"{path}: empty manifest (no cuts)")
    return CutSet.from_cuts(cuts)


def meta_of(cut: MonoCut) -> dict[str, Any]:
    """A flat dict of a cut's labels: id, audio, duration, sampling_rate, text, speaker, gender, language and
    the custom fields."""
    sup = cut.supervisions[0]
    return {"id": cut.id, "audio": audio_path(cut), "start": cut.start, "duration": cut.duration,
            "sampling_rate": cut.sampling_rate, "text": sup.text, "speaker": sup.speaker, "gender": sup.gender,
            "language": sup.language, **(sup.custom or {})}


def audio_path(cut: MonoCut) -> str:
    return cut.recording.sources[0].source


def is_whole_file(cut: MonoCut) -> bool:
    return cut.start == 0 and abs(cut.duration - cut.recording.duration) < 1e-3


def load_cut_audio(cut: MonoCut, sampling_rate: int = 16000) -> np.ndarray:
    """The cut's samples, mono float32 (T,) at ``sampling_rate``, decoded by `load_audio`."""
    wave = load_audio(audio_path(cut), sampling_rate)
    if is_whole_file(cut):
        return wave
    start = round(cut.start * sampling_rate)
    return wave[start : start + round(cut.duration * sampling_rate)]  # (T_file,) -> (T_cut,)


def iter_examples(cuts: Iterable[MonoCut], sampling_rate: int = 16000) -> Iterator[Example]:
    """Yield (waveform, text, meta) for each cut, decoding audio lazily with `load_audio`."""
    for cut in cuts:
        meta = meta_of(cut)
        yield Example(load_cut_audio(cut, sampling_rate), meta["text"], meta)


# ---------------------------------------------------------------------------------------------- helpers


def _open_text(path: Path, mode: str) -> io.TextIOBase:
    if path.suffix == ".gz" or path.name.endswith(".gz.tmp"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _lines(f, path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; undecodable bytes or a broken gzip name the file."""
    try:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, line
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise ManifestError(f"{path}: cannot read as UTF-8 JSON lines ({e})") from None


def _json_object(line: str, where: str) -> dict:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _relative_to(source: str, root: Path) -> str:
    p = Path(source)
    if not p.is_absolute():
        return source
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:
        return source
