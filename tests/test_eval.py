"""WER/CER scoring against hand-counted edits, the evaluation loop end to end with a fake model, and the
PocketSphinx baseline."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from lhotse import CutSet

from speechllm.audio import write_audio
from speechllm.data import make_cut, save_manifest
from speechllm.evaluate import evaluate, score, utterance_errors
from tests.conftest import tone


def test_wer_cer_hand_counted():
    # utt 1: "the" deleted (1 word, "the " 4 chars); utt 2: "there" inserted (1 word, "there " 6 chars)
    # words: 2 edits / 8 reference words; chars: 10 edits / (22 + 11) reference characters
    r = score(["the cat sat on the mat", "hello world"], ["the cat sat on mat", "hello there world"])
    assert r["wer"] == pytest.approx(2 / 8)
    assert r["cer"] == pytest.approx(10 / 33)
    assert (r["substitutions"], r["deletions"], r["insertions"], r["ref_words"]) == (0, 1, 1, 8)


def test_whisper_normaliser_applied_before_wer():
    ref, hyp = "Mr. Smith paid twenty-five dollars for the colour TV.", "mister smith paid $25 for the color tv"
    r = score([ref], [hyp])
    assert r["wer"] == 0.0 and r["cer"] == 0.0
    # raw: "Mr."/"mister", "Smith"/"smith", "twenty-five"/"$25", "colour"/"color", "TV."/"tv" substituted and
    # "dollars" deleted: 6 edits over 9 reference words
    assert r["raw_wer"] == pytest.approx(6 / 9)


def test_cer_for_chinese_ignores_spaces_and_empty_refs_are_skipped():
    r = score(["广州市房地产", "Hmm."], ["广州 房地产", "x"], ["zh", "en"])  # a filler normalises to nothing
    assert r["cer"] == pytest.approx(1 / 6) and r["scored"] == 1 and r["skipped"] == 1
    assert utterance_errors("Hello, world!", "hello word") == ("hello world", "hello word", 1, 2)


class FakeASR:
    """Answers "hello world" to every clip and records the batch sizes it was called with."""

    name = "fake-asr"
    sampling_rate = 16000

    def __init__(self):
        self.batches: list[int] = []

    def generate(self, waveforms, instructions=None, options=None, streamer=None):
        self.batches.append(len(waveforms))
        assert all(w.dtype == np.float32 and w.ndim == 1 for w in waveforms)
        return ["hello world"] * len(waveforms)


def test_evaluate_end_to_end(tmp_path):
    (tmp_path / "audio").mkdir()
    a = write_audio(tmp_path / "audio" / "a.flac", tone(1.0), 16000)
    b = write_audio(tmp_path / "audio" / "b.flac", tone(2.0, seed=1), 16000)
    cuts = [make_cut("u1", a, text="Hello, world.", split="test"),
            make_cut("u2", b, text="hello there world", split="test", start=0.5, duration=1.0),  # a segment
            make_cut("u3", b, text="goodbye", split="test"),
            make_cut("u4", a, text=None, split="test")]  # no reference: not evaluated
    manifest = save_manifest(cuts, tmp_path / "test.jsonl.gz")
    model = FakeASR()
    result = evaluate(manifest, model, out=tmp_path / "out", batch_size=2)
    # u1: 0 edits / 2 words; u2: "there" deleted, 1 / 3; u3: 1 substitution + 1 insertion, 2 / 1
    assert result["wer"] == pytest.approx(3 / 6)
    assert result["n"] == 3 and result["splits"] == ["test"] and model.batches == [2, 1]
    assert result["audio_seconds"] == pytest.approx(1.0 + 1.0 + 2.0)
    assert result["rtf"] > 0 and result["peak_rss_mib"] > 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["n"] == 3
    assert "| fake-asr |" in (tmp_path / "out" / "results.md").read_text()
    with open(tmp_path / "out" / "hyps.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(r["id"], r["errors"], r["ref_words"]) for r in rows] == [("u1", "0", "2"), ("u2", "1", "3"),
                                                                      ("u3", "2", "1")]
    assert evaluate(CutSet.from_cuts(cuts), model, limit=1, out=tmp_path / "one")["n"] == 1


def test_pocketsphinx_baseline_contract():
    pytest.importorskip("pocketsphinx")
    from speechllm.baselines_extra import PocketSphinxASR

    model = PocketSphinxASR()
    out = model.generate([tone(0.5), tone(0.3, seed=2)], ["ignored", None])
    assert model.sampling_rate == 16000 and model.name == "pocketsphinx"
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


@pytest.mark.slow
def test_cli_eval_whisper_on_an4(tmp_path, shared_data, monkeypatch, capsys):
    from speechllm.cli import main

    monkeypatch.setenv("SPEECHLLM_SHARED_DATA", str(shared_data))
    assert main(["eval", "an4:test", "--model", "whisper-tiny.en", "--limit", "2", "--out", str(tmp_path)]) == 0
    assert "| whisper-tiny.en | an4:test | test | 2 |" in capsys.readouterr().out
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["wer"] <= 0.5  # seen: 0.5 ("RUBOUT" -> "rub out", "C Q Q F" -> "cqqf")
