"""Importers: every labelled speech set in ``shared/data``, SLAM-LLM JSONL and Kaldi data dirs -> CutSet.

`import_dataset` is the entry point (``speechllm data import NAME_OR_DIR``). Shared sets are named by
their folder (``an4``, ``fsdd``, ...; `SHARED_SETS` lists them); a split is picked with ``split=`` or
``an4:test``. Each set's SOURCE.md gives the counts the importers are tested against. Sets that are
evaluation-only for us (LJ Speech sample, VCTK 4 speakers, ARCTIC cathy, JFK, Mandarin fixtures) get
``split="test"``; AN4, FSDD and LibriSpeech keep their own splits.

Bring-your-own formats:
* SLAM-LLM JSONL, one ``{"key", "source", "target"}`` per line (SLAM-LLM's ``speech_dataset``), with
  optional ``prompt``/``instruction``; relative ``source`` paths are relative to the JSONL file.
* A Kaldi data dir: ``wav.scp`` (id -> file; piped commands are refused) and ``text``, optional
  ``utt2spk`` and ``segments``. Relative paths are tried against the data dir, then the working dir.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from lhotse import CutSet, MonoCut

from speechllm.data.manifest import ManifestError, load_manifest, make_cut

JFK_TEXT = ("And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")  # whisper_jfk/SOURCE.md
VCTK_GENDER = {"p225": "F", "p226": "M", "p227": "M", "p228": "F"}  # en_vctk_4spk/SOURCE.md


def shared_data_dir() -> Path:
    """``$SPEECHLLM_SHARED_DATA``, else ``shared/data`` beside the repository."""
    env = os.environ.get("SPEECHLLM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


# ---------------------------------------------------------------------------------------------- shared sets


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def _tsv(path: Path, delimiter: str = "\t") -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f, delimiter=delimiter)


def _an4(root: Path) -> Iterator[MonoCut]:
    for r in _jsonl(root / "manifest.jsonl"):
        yield make_cut(r["id"], root / r["audio"], text=r["text"], speaker=r["speaker"], gender=r["gender"],
                       split=r["split"])


def _librispeech_samples(root: Path) -> Iterator[MonoCut]:
    for r in _jsonl(root / "manifest.jsonl"):  # train-clean-100 rows have text null (speaker/gender only)
        yield make_cut(r["id"], root / r["audio"], text=r["text"], speaker=r["speaker"], gender=r["gender"],
                       split=r["split"])


def _ljspeech_sample(root: Path) -> Iterator[MonoCut]:
    for line in (root / "metadata.psv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            utt, text = line.split("|", 1)
            yield make_cut(utt, root / "wavs" / f"{utt}.wav", text=text, speaker="LJ", gender="F", split="test")


def _en_vctk_4spk(root: Path) -> Iterator[MonoCut]:
    for r in _tsv(root / "transcripts.tsv"):
        yield make_cut(r["utt_id"], root / r["path"], text=r["transcript"], speaker=r["speaker"],
                       gender=VCTK_GENDER.get(r["speaker"]), split="test")


def _en_cmu_arctic_cathy_cc0(root: Path) -> Iterator[MonoCut]:
    for r in _tsv(root / "transcripts.tsv"):
        yield make_cut(r["utt_id"], root / r["path"], text=r["transcript"], speaker="cathy", gender="F",
                       split="test")


def _whisper_jfk(root: Path) -> Iterator[MonoCut]:
    yield make_cut("jfk", root / "jfk.flac", text=JFK_TEXT, speaker="jfk", gender="M", split="test")


def _fsdd(root: Path) -> Iterator[MonoCut]:
    for r in _tsv(root / "manifest.csv", ","):
        yield make_cut(Path(r["path"]).stem, root / r["path"], text=r["text"], speaker=r["speaker"], gender="M",
                       split=r["split"])


def _zh_mandarin_fixtures(root: Path) -> Iterator[MonoCut]:
    for r in _tsv(root / "transcripts.tsv"):
        yield make_cut(Path(r["path"]).stem, root / r["path"], text=r["transcript"], language="zh", split="test")


SHARED_SETS: dict[str, Callable[[Path], Iterator[MonoCut]]] = {
    "an4": _an4,
    "librispeech_samples": _librispeech_samples,
    "ljspeech_sample": _ljspeech_sample,
    "en_vctk_4spk": _en_vctk_4spk,
    "en_cmu_arctic_cathy_cc0": _en_cmu_arctic_cathy_cc0,
    "whisper_jfk": _whisper_jfk,
    "fsdd": _fsdd,
    "zh_mandarin_fixtures": _zh_mandarin_fixtures,
}


def import_shared(name: str, split: str | None = None, root: str | os.PathLike | None = None) -> CutSet:
    """A set of ``shared/data`` by folder name, optionally one split of it."""
    if name not in SHARED_SETS:
        raise ValueError(f"unknown shared set {name!r}; known: {sorted(SHARED_SETS)}")
    folder = Path(root) if root is not None else shared_data_dir() / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: shared set {name!r} not found (set SPEECHLLM_SHARED_DATA?)")
    cuts = [c for c in SHARED_SETS[name](folder) if split is None or c.supervisions[0].custom["split"] == split]
    if not cuts:
        raise ValueError(f"{name}: no cuts in split {split!r}")
    return CutSet.from_cuts(cuts)


# ---------------------------------------------------------------------------------------------- SLAM-LLM


def import_slam_jsonl(path: str | os.PathLike, split: str | None = None) -> CutSet:
    """SLAM-LLM's ``{"key", "source", "target"[, "prompt"]}`` JSONL -> CutSet."""
    path = Path(path)
    cuts, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            missing = [k for k in ("key", "source", "target") if not isinstance(row, dict) or k not in row]
            if missing:
                raise ManifestError(f"{where}: SLAM-LLM line lacks {missing} (needs key, source, target)")
            key = str(row["key"])
            if key in seen:
                raise ManifestError(f"{where}: duplicate key {key!r}")
            seen.add(key)
            audio = _resolve(row["source"], path.parent, where)
            instruction = row.get("instruction", row.get("prompt"))
            cuts.append(make_cut(key, audio, text=row["target"], instruction=instruction, split=split))
    if not cuts:
        raise ManifestError(f"{path}: no lines")
    return CutSet.from_cuts(cuts)


# ---------------------------------------------------------------------------------------------- Kaldi


def _kaldi_table(path: Path, min_fields: int, required: bool = True) -> dict[str, list[str]]:
    """``<id> <field>...`` lines -> {id: fields}; the last field keeps its spaces when min_fields == 1."""
    if not path.is_file():
        if required:
            raise ManifestError(f"{path}: missing (a Kaldi data dir needs wav.scp and text)")
        return {}
    table: dict[str, list[str]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        fields = [rest.strip()] if min_fields == 1 else rest.split()
        if len(fields) < min_fields or not fields[0]:
            raise ManifestError(f"{path}:{lineno}: expected '<id> <{min_fields} field(s)>', got {line.strip()!r}")
        if key in table:
            raise ManifestError(f"{path}:{lineno}: duplicate id {key!r}")
        table[key] = fields
    return table


def import_kaldi_dir(path: str | os.PathLike, split: str | None = None, language: str | None = "en") -> CutSet:
    """A Kaldi data dir (wav.scp, text, optional utt2spk and segments) -> CutSet, one cut per utterance."""
    path = Path(path)
    wav_scp = _kaldi_table(path / "wav.scp", 1)
    text = _kaldi_table(path / "text", 0)
    utt2spk = _kaldi_table(path / "utt2spk", 1, required=False)
    segments = _kaldi_table(path / "segments", 3, required=False)
    audio: dict[str, Path] = {}
    for rec, (source,) in wav_scp.items():
        if source.endswith("|"):
            raise ManifestError(f"{path / 'wav.scp'}: {rec}: piped commands are not supported; "
                                "write the audio to files first")
        audio[rec] = _resolve(source, path, f"{path / 'wav.scp'}: {rec}")
    cuts = []
    for utt, words in text.items():
        spk = utt2spk.get(utt, [None])[0]
        if segments:
            if utt not in segments:
                raise ManifestError(f"{path / 'segments'}: no segment for utterance {utt!r} of text")
            rec, start, end = segments[utt][0], segments[utt][1], segments[utt][2]
            if rec not in audio:
                raise ManifestError(f"{path / 'segments'}: {utt}: recording {rec!r} not in wav.scp")
            try:
                start_s, end_s = float(start), float(end)
            except ValueError:
                raise ManifestError(f"{path / 'segments'}: {utt}: start/end not numbers: {start} {end}") from None
            cuts.append(make_cut(utt, audio[rec], text=" ".join(words), speaker=spk, language=language,
                                 start=start_s, duration=end_s - start_s, split=split))
        else:
            if utt not in audio:
                raise ManifestError(f"{path / 'text'}: utterance {utt!r} not in wav.scp (and no segments file)")
            cuts.append(make_cut(utt, audio[utt], text=" ".join(words), speaker=spk, language=language, split=split))
    if not cuts:
        raise ManifestError(f"{path / 'text'}: no utterances")
    return CutSet.from_cuts(cuts)


def _resolve(source: str, base: Path, where: str) -> Path:
    p = Path(source).expanduser()
    candidates = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    raise ManifestError(f"{where}: audio file {source!r} not found")


# ---------------------------------------------------------------------------------------------- dispatch


def import_dataset(source: str | os.PathLike, split: str | None = None) -> CutSet:
    """Anything with audio and labels -> CutSet:

    a shared set name (``an4``, ``an4:test``), a shared set folder, a Kaldi data dir (has ``wav.scp``),
    a CutSet JSONL (lines with ``"type": "MonoCut"``) or a SLAM-LLM JSONL (lines with ``key/source/target``).
    """
    text = os.fspath(source)
    name, _, name_split = text.partition(":")
    split = split or name_split or None
    path = Path(text)
    if not path.exists() and name in SHARED_SETS:
        return import_shared(name, split)
    if path.is_dir():
        if (path / "wav.scp").is_file():
            return import_kaldi_dir(path, split)
        if path.name in SHARED_SETS:
            return import_shared(path.name, split, root=path)
        raise ValueError(f"{path}: not a Kaldi data dir (no wav.scp) nor a shared set folder {sorted(SHARED_SETS)}")
    if path.is_file():
        cuts = load_manifest(path) if _first_type(path) is not None else import_slam_jsonl(path, split)
        if split is not None and _first_type(path) is not None:
            cuts = cuts.filter(lambda c: c.supervisions[0].custom.get("split") == split).to_eager()
        return cuts
    raise FileNotFoundError(f"{text}: no such file or folder, nor a shared set name {sorted(SHARED_SETS)}")


def _first_type(path: Path) -> str | None:
    """The ``type`` of the first JSON line (``MonoCut`` for a CutSet), None for anything else."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return row.get("type") if isinstance(row, dict) else None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return None
