"""ASR evaluation: WER/CER after Whisper's normaliser, raw WER, real-time factor and peak memory.

    result = evaluate("an4:test", model="whisper-tiny.en", out="runs/eval/an4-whisper")

The protocol follows Whisper's paper (Radford et al. 2022): hypotheses and references both go through
`speechllm.text_norm.normalize` (Whisper's English normaliser, or the basic one for other languages)
before jiwer counts word (WER) and character (CER) edits over the whole set. ``raw_wer`` is jiwer on the
texts as written (case and punctuation count), for comparison with papers that do not normalise.
Speed is the real-time factor: seconds spent in ``api.generate`` (audio decoding included) per second of
audio; model loading is timed apart. ``peak_rss_mib`` is the process's peak resident memory.

``out`` receives ``results.json``, ``results.md`` and ``hyps.tsv`` (one row per utterance).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import logging
import os
import platform
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
from tqdm import tqdm

from speechllm.text_norm import normalize

log = logging.getLogger(__name__)

NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}  # CER ignores spaces in these


def _char_text(text: str, language: str | None) -> str:
    return text.replace(" ", "") if language in NO_SPACE_LANGUAGES else text


def score(references: Sequence[str], hypotheses: Sequence[str], languages: Sequence[str | None] | None = None
          ) -> dict[str, Any]:
    """Corpus WER, CER (both after normalisation) and raw WER; pairs whose normalised reference is empty are
    left out (counted in ``skipped``)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    languages = list(languages) if languages is not None else ["en"] * len(references)
    rows = [(r, h, lang, normalize(r, lang), normalize(h, lang))
            for r, h, lang in zip(references, hypotheses, languages)]
    kept = [row for row in rows if row[3]]
    if not kept:
        raise ValueError("no reference with any words after normalisation: nothing to score")
    words = jiwer.process_words([k[3] for k in kept], [k[4] for k in kept])
    chars = jiwer.process_characters([_char_text(k[3], k[2]) for k in kept],
                                     [_char_text(k[4], k[2]) for k in kept])
    raw = jiwer.process_words([" ".join(k[0].split()) for k in kept], [" ".join(k[1].split()) for k in kept])
    return {"wer": words.wer, "cer": chars.cer, "raw_wer": raw.wer, "substitutions": words.substitutions,
            "deletions": words.deletions, "insertions": words.insertions,
            "ref_words": words.hits + words.substitutions + words.deletions,
            "scored": len(kept), "skipped": len(rows) - len(kept)}


def utterance_errors(reference: str, hypothesis: str, language: str | None = "en") -> tuple[str, str, int, int]:
    """(normalised reference, normalised hypothesis, word edits, reference words) for one utterance."""
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:
        return ref, hyp, len(hyp.split()), 0
    out = jiwer.process_words(ref, hyp)
    return ref, hyp, out.substitutions + out.deletions + out.insertions, len(ref.split())


# ---------------------------------------------------------------------------------------------- running


def _audio_sources(cuts: list, tmp: Path) -> list[str]:
    """A file per cut for api.generate: the recording itself, or the segment written to ``tmp``."""
    from speechllm.audio import write_audio
    from speechllm.data.manifest import audio_path, is_whole_file, load_cut_audio

    sources = []
    for cut in cuts:
        if is_whole_file(cut):
            sources.append(audio_path(cut))
        else:
            path = tmp / f"{cut.id}.flac"
            sources.append(os.fspath(write_audio(path, load_cut_audio(cut), 16000)))
    return sources


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in text).strip("_")[-80:]


def evaluate(manifest: Any, model: Any = None, *, limit: int | None = None, out: str | os.PathLike | None = None,
             batch_size: int = 8, **decode: Any) -> dict[str, Any]:
    """Transcribe the cuts of ``manifest`` (a CutSet, or anything `speechllm.data.import_dataset` takes: a
    manifest file, ``an4:test``, a Kaldi dir ...) with ``model`` (a name `speechllm.api.load_model` accepts,
    or a model object) and score them. ``limit`` keeps the first N cuts. Returns the results dict, and
    writes it with the hypotheses under ``out`` (default ``runs/eval/<model>/<manifest>``)."""
    from lhotse import CutSet

    from speechllm import api
    from speechllm.data import import_dataset, meta_of

    cuts = manifest if isinstance(manifest, CutSet) else import_dataset(manifest)
    manifest_name = "<CutSet>" if isinstance(manifest, CutSet) else os.fspath(manifest)
    cuts = [c for c in cuts if c.supervisions[0].text]
    cuts = cuts[:limit] if limit is not None else cuts
    if not cuts:
        raise ValueError(f"{manifest_name}: no cuts with a reference text to evaluate")
    metas = [meta_of(c) for c in cuts]

    t0 = time.perf_counter()
    speech_model = api.load_model(model or api.DEFAULT_MODEL)
    load_s = time.perf_counter() - t0
    hyps: list[str] = []
    decode_s = 0.0
    with tempfile.TemporaryDirectory(prefix="speechllm-eval-") as tmp:
        for start in tqdm(range(0, len(cuts), batch_size), desc="evaluating", unit="batch", dynamic_ncols=True):
            batch = cuts[start : start + batch_size]
            sources = _audio_sources(batch, Path(tmp))
            instructions = [m.get("instruction") for m in metas[start : start + batch_size]]
            t0 = time.perf_counter()
            hyps += api.generate(sources, instructions, model=speech_model, batch_size=batch_size, **decode)
            decode_s += time.perf_counter() - t0

    audio_s = sum(m["duration"] for m in metas)
    result = {
        "model": getattr(speech_model, "name", str(model)), "manifest": manifest_name,
        "splits": sorted({str(m.get("split")) for m in metas}), "n": len(cuts), "audio_seconds": round(audio_s, 3),
        **score([m["text"] for m in metas], hyps, [m["language"] for m in metas]),
        "load_seconds": round(load_s, 3), "decode_seconds": round(decode_s, 3), "rtf": decode_s / audio_s,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "batch_size": batch_size, "decode_options": dataclasses.asdict(api.model_decode_options(
            speech_model, all(m.get("instruction") is None for m in metas), **decode)),
        "normalizer": "whisper-english (en) / whisper-basic (other languages)", "hardware": hardware(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    out = Path(out) if out is not None else Path("runs/eval") / _slug(result["model"]) / _slug(manifest_name)
    write_results(result, metas, hyps, out)
    result["out"] = os.fspath(out)
    return result


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


# ---------------------------------------------------------------------------------------------- output


def write_results(result: dict[str, Any], metas: list[dict], hyps: list[str], out: Path) -> None:
    """``results.json``, ``results.md`` and ``hyps.tsv`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown_table([result]), encoding="utf-8")
    with open(out / "hyps.tsv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["id", "duration", "errors", "ref_words", "ref", "hyp", "ref_norm", "hyp_norm"])
        for meta, hyp in zip(metas, hyps):
            ref_n, hyp_n, errors, n = utterance_errors(meta["text"], hyp, meta["language"])
            w.writerow([meta["id"], f"{meta['duration']:.3f}", errors, n, meta["text"], hyp, ref_n, hyp_n])
    log.info("%s: WER %.2f%% CER %.2f%% on %d utterances -> %s", result["model"], 100 * result["wer"],
             100 * result["cer"], result["n"], out)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per result: model, set, split, n, WER, CER, raw WER, RTF, peak RSS."""
    lines = ["| model | set | split | n | WER % | CER % | raw WER % | RTF | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['manifest']} | {','.join(r['splits'])} | {r['n']} | "
                     f"{100 * r['wer']:.2f} | {100 * r['cer']:.2f} | {100 * r['raw_wer']:.2f} | {r['rtf']:.3f} | "
                     f"{r['peak_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"
