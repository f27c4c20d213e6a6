"""Sentence lists for synthetic speech, with every evaluation sentence kept out of training text.

Sources are the natural sentences in ``shared/data/tts_text`` (see its SOURCE.md files), by split:

    train  LibriTTS train-clean-100 subset, LJ Speech train list, VCTK prompts train list (~47k unique)
    val    the three ``val`` lists, minus anything in train (for checkpoint selection, not for reporting)
    test   LJ Speech and VCTK ``test`` lists, minus anything in train/val (synthetic test sets only)

LibriSpeech dev-clean text is not used: sets named dev/test are for evaluation only (data README).

`eval_sentence_keys` collects the sentences of every real evaluation set we report on: the LJ Speech
sample, VCTK 4 speakers, all 1,132 CMU ARCTIC prompts (the cathy set reads 420 of them), LibriSpeech
test-clean and test-other, AN4 test, the JFK line. Training text is compared after `text_key`
normalisation (case, punctuation and spacing ignored), so "Hello, world!" and "HELLO WORLD" match.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
from collections.abc import Iterable
from pathlib import Path

from speechllm.data.importers import JFK_TEXT, shared_data_dir
from speechllm.text_norm import text_key

log = logging.getLogger(__name__)

# (file under tts_text, index of the text column in the "|"-separated line)
TEXT_SOURCES: dict[str, dict[str, tuple[str, int]]] = {
    "train": {"libritts": ("libritts_train_clean_100_subset/train_filelist.txt", 1),
              "ljspeech": ("ljspeech_text/ljs_train_filelist.txt", 1),
              "vctk": ("vctk_prompts/vctk_train_filelist.txt", 2)},
    "val": {"libritts": ("libritts_train_clean_100_subset/val_filelist.txt", 1),
            "ljspeech": ("ljspeech_text/ljs_val_filelist.txt", 1),
            "vctk": ("vctk_prompts/vctk_val_filelist.txt", 2)},
    "test": {"ljspeech": ("ljspeech_text/ljs_test_filelist.txt", 1),
             "vctk": ("vctk_prompts/vctk_test_filelist.txt", 2)},
}
_ARCTIC_PROMPT = re.compile(r'^\(\s*\S+\s+"(.*)"\s*\)\s*$')


def _filelist(path: Path, column: int) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if len(fields) > column and fields[column].strip():
            out.append(fields[column].strip())
    return out


def _unique(texts: Iterable[str], exclude: set[str] = frozenset()) -> list[str]:
    """First occurrence of each sentence (by `text_key`), skipping keys in ``exclude``; order kept."""
    seen, out = set(exclude), []
    for t in texts:
        k = text_key(t)
        if k and k not in seen:
            seen.add(k)
            out.append(t)
    return out


def eval_sentence_keys(root: str | os.PathLike | None = None) -> set[str]:
    """`text_key`s of every evaluation sentence in ``shared/data`` (see the module docstring)."""
    root = Path(root) if root is not None else shared_data_dir()
    texts = [JFK_TEXT]
    texts += [line.split("|", 1)[1] for line in (root / "ljspeech_sample/metadata.psv").read_text().splitlines()
              if "|" in line]
    with open(root / "en_vctk_4spk/transcripts.tsv", encoding="utf-8", newline="") as f:
        texts += [r["transcript"] for r in csv.DictReader(f, delimiter="\t")]
    for line in (root / "en_cmu_arctic_cathy_cc0/cmuarctic.data").read_text(encoding="utf-8").splitlines():
        m = _ARCTIC_PROMPT.match(line)
        if m:
            texts.append(m.group(1))
    with open(root / "en_cmu_arctic_cathy_cc0/transcripts.tsv", encoding="utf-8", newline="") as f:
        texts += [r["transcript"] for r in csv.DictReader(f, delimiter="\t")]  # a0252 differs from the prompt
    for name in ("test-clean.jsonl", "test-other.jsonl"):
        with open(root / "librispeech_test_transcripts" / name, encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    for manifest in ("an4/manifest.jsonl", "librispeech_samples/manifest.jsonl"):
        with open(root / manifest, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        texts += [r["text"] for r in rows if r["text"] and "test" in r["split"]]
    return {k for k in map(text_key, texts) if k}


def remove_eval_sentences(texts: Iterable[str], keys: set[str] | None = None) -> list[str]:
    """``texts`` without evaluation sentences (and without repeats), order kept."""
    texts = list(texts)
    keys = eval_sentence_keys() if keys is None else keys
    kept = _unique(texts, keys)
    log.info("kept %d of %d sentences (evaluation sentences and repeats removed)", len(kept), len(texts))
    return kept


def load_texts(split: str = "train", root: str | os.PathLike | None = None, sources: Iterable[str] | None = None,
               shuffle_seed: int | None = None) -> list[str]:
    """Unique natural sentences of ``split`` (train/val/test) from ``shared/data/tts_text``, with evaluation
    sentences removed; val excludes train sentences, test excludes train and val sentences.
    ``shuffle_seed``: shuffled with ``random.Random(seed)`` (mixing the sources), so that scripts taking
    slices of it (the slam_tiny recipe's prepare.py, synth_more.py, gpu/pack.py) see the same order."""
    if split not in TEXT_SOURCES:
        raise ValueError(f"split must be one of {sorted(TEXT_SOURCES)}, not {split!r}")
    root = Path(root) if root is not None else shared_data_dir()
    exclude = eval_sentence_keys(root)
    for earlier in list(TEXT_SOURCES)[: list(TEXT_SOURCES).index(split)]:
        exclude |= {text_key(t) for t in _read_split(root, earlier, None)}
    texts = _unique(_read_split(root, split, sources), exclude)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(texts)
    return texts


def _read_split(root: Path, split: str, sources: Iterable[str] | None) -> list[str]:
    table = TEXT_SOURCES[split]
    names = list(table) if sources is None else list(sources)
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ValueError(f"unknown text source(s) {unknown} for split {split!r}; known: {sorted(table)}")
    texts: list[str] = []
    for name in names:
        rel, column = table[name]
        texts += _filelist(root / "tts_text" / rel, column)
    return texts


def read_text_file(path: str | os.PathLike) -> list[str]:
    """Sentences of a text file, one per line (blank lines skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]
