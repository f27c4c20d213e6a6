"""Synthetic speech corpora: sentences x TTS voices -> 16 kHz FLAC clips + a CutSet manifest.

    build_synth_set(load_texts("train"), ["piper:joe", "flite:slt"], "runs/synth/train", jobs=2)

Clips are content-addressed: ``<out>/audio/<voice>/<sha1(voice, text)>.flac``, so a re-run (or a run with
more sentences or voices) synthesizes only what is missing. Each sentence is spoken by ``voices_per_text``
voices taken in rotation, so the voice mix is balanced and deterministic. Work is spread over a process
pool (``jobs``; TTS is CPU-bound), with a tqdm bar on stderr.

Evaluation hygiene (data README): for ``split="train"`` every evaluation sentence is removed first
(`speechllm.data.texts.remove_eval_sentences`), and the voices in `HELD_OUT_VOICES` are refused: flite's
``awb`` (a Scottish-accented male voice, unlike every training voice) never appears in training, so a
test set spoken by it measures generalisation to an unseen voice.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lhotse import CutSet
from tqdm import tqdm

from speechllm.data.manifest import make_cut, save_manifest
from speechllm.tts import ENGINES, parse_voice

log = logging.getLogger(__name__)

HELD_OUT_VOICES = ("flite:awb",)
TRAIN_VOICES = ("piper:joe", "flite:kal", "flite:slt", "flite:rms", "espeak:en-us", "espeak:en+f3")
SAMPLING_RATE = 16000
MANIFEST_NAME = "manifest.jsonl.gz"


@dataclass
class SynthResult:
    """What `build_synth_set` did: the manifest written, its cuts, and how many clips were made anew."""

    manifest: Path
    cuts: CutSet
    synthesized: int
    cached: int
    failed: int


def clip_key(voice: str, text: str) -> str:
    """The content address of a clip: sha1 of voice and text (first 20 hex digits)."""
    return hashlib.sha1(f"{voice}\x00{text}".encode()).hexdigest()[:20]


def voice_slug(voice: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in voice)


def clip_path(out: Path, voice: str, text: str) -> Path:
    return out / "audio" / voice_slug(voice) / f"{clip_key(voice, text)}.flac"


def _synthesize_clip(task: tuple[str, str, str]) -> str | None:
    """Worker: speak ``text`` with ``voice`` into ``path`` (16 kHz FLAC, written atomically); the error or None."""
    from speechllm.audio import AudioError, load_audio, write_audio
    from speechllm.tts import TTSError, synthesize

    voice, text, path = task
    try:
        samples, rate = synthesize(text, voice)
        wave = load_audio(samples, SAMPLING_RATE, source_rate=rate, name=f"{voice}: {text[:40]!r}")
    except (TTSError, AudioError, ValueError) as e:
        return str(e)
    tmp = f"{path}.{os.getpid()}.tmp"
    write_audio(tmp, wave, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
    return None


def _assign(texts: Sequence[str], voices: Sequence[str], voices_per_text: int) -> list[tuple[str, str]]:
    """(voice, text) pairs: text i is spoken by voices i, i+1, ... (mod len(voices))."""
    k = min(voices_per_text, len(voices))
    return [(voices[(i + j) % len(voices)], t) for i, t in enumerate(texts) for j in range(k)]


def _check_voices(voices: Sequence[str], split: str, allow_held_out: bool) -> None:
    if not voices:
        raise ValueError("no voices given")
    for v in voices:
        engine, _ = parse_voice(v)
        if not ENGINES[engine].available():
            raise ValueError(f"voice {v!r} needs {engine}, which is not installed ({ENGINES[engine].install_hint})")
        if split == "train" and v in HELD_OUT_VOICES and not allow_held_out:
            raise ValueError(f"voice {v!r} is held out of training (voice-generalisation test); use it for "
                             "split='test', or pass allow_held_out=True")


def build_synth_set(texts: Iterable[str] | str | os.PathLike, voices: Sequence[str] | str,
                    out: str | os.PathLike, *, limit: int | None = None, jobs: int = 1, voices_per_text: int = 1,
                    split: str = "train", exclude_eval: bool = True, allow_held_out: bool = False) -> SynthResult:
    """Speak ``texts`` (sentences, or a file with one per line) with ``voices`` into ``out``.

    ``limit`` keeps the first N sentences (after filtering). Writes ``out/manifest.jsonl.gz`` (CutSet; each
    supervision has custom ``voice`` and ``split``) and returns a `SynthResult`. Clips that fail to
    synthesize are logged and left out of the manifest.
    """
    from speechllm.data.texts import read_text_file, remove_eval_sentences

    out = Path(out)
    voices = [v.strip() for v in voices.split(",")] if isinstance(voices, str) else list(voices)
    _check_voices(voices, split, allow_held_out)
    if isinstance(texts, (str, os.PathLike)):
        texts = read_text_file(texts)
    texts = [" ".join(t.split()) for t in texts if t and t.strip()]
    if split == "train" and exclude_eval:
        texts = remove_eval_sentences(texts)
    texts = texts[:limit] if limit is not None else texts
    pairs = _assign(texts, voices, voices_per_text)
    todo = [(v, t, os.fspath(clip_path(out, v, t))) for v, t in pairs if not clip_path(out, v, t).is_file()]
    for v in voices:
        (out / "audio" / voice_slug(v)).mkdir(parents=True, exist_ok=True)
    errors = _run(todo, jobs)
    failed = {(v, t) for (v, t, _), err in zip(todo, errors) if err is not None}
    for (v, t, _), err in zip(todo, errors):
        if err is not None:
            log.warning("skipped %s %r: %s", v, t[:60], err)
    cuts = [make_cut(f"{voice_slug(v)}_{clip_key(v, t)}", clip_path(out, v, t), text=t, speaker=v, split=split,
                     voice=v) for v, t in pairs if (v, t) not in failed]
    manifest = save_manifest(cuts, out / MANIFEST_NAME)
    log.info("%s: %d clips (%d new, %d cached, %d failed)", manifest, len(cuts), len(todo) - len(failed),
             len(pairs) - len(todo), len(failed))
    return SynthResult(manifest, CutSet.from_cuts(cuts), len(todo) - len(failed), len(pairs) - len(todo), len(failed))


def _run(todo: list[tuple[str, str, str]], jobs: int) -> list[str | None]:
    """Synthesize ``todo`` in-process (jobs <= 1) or in a spawned process pool; errors in input order."""
    bar = dict(total=len(todo), desc="synthesizing", unit="clip", disable=not todo, dynamic_ncols=True)
    if jobs <= 1 or len(todo) < 2:
        return [_synthesize_clip(task) for task in tqdm(todo, **bar)]
    # spawn, not fork: a Piper voice loaded in the parent (e.g. by the server) leaves onnxruntime state that
    # hangs a forked child. Scripts calling this with jobs > 1 need the usual `if __name__ == "__main__":`.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(tqdm(pool.map(_synthesize_clip, todo, chunksize=4), **bar))
