"""Manifests, importers (shared sets, SLAM-LLM, Kaldi), evaluation-sentence filtering, synthetic speech cache,
augmentation."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from speechllm.audio import write_audio
from speechllm.data import (ManifestError, import_dataset, import_kaldi_dir, import_shared, import_slam_jsonl,
                            iter_examples, load_manifest, make_cut, save_manifest)
from speechllm.data.augment import AugmentConfig, Augmenter, add_noise, pink_noise, speed_perturb
from speechllm.data.texts import eval_sentence_keys, load_texts, remove_eval_sentences
from tests.conftest import tone

# (set, split, count) as stated in each folder's SOURCE.md
SHARED_COUNTS = [
    ("an4", "train", 948), ("an4", "test", 130),
    ("librispeech_samples", "test-clean", 4), ("librispeech_samples", "train-clean-100", 40),
    ("ljspeech_sample", None, 32), ("en_vctk_4spk", None, 40), ("en_cmu_arctic_cathy_cc0", None, 420),
    ("whisper_jfk", None, 1), ("fsdd", "train", 2700), ("fsdd", "test", 300), ("zh_mandarin_fixtures", None, 3),
]


@pytest.fixture
def clips(tmp_path) -> list[Path]:
    """Three short 16 kHz FLAC files under tmp_path/audio."""
    (tmp_path / "audio").mkdir()
    return [write_audio(tmp_path / "audio" / f"c{i}.flac", tone(seconds, seed=i), 16000)
            for i, seconds in enumerate((0.5, 0.8, 1.2))]


@pytest.mark.parametrize("name,split,count", SHARED_COUNTS)
def test_shared_importer_counts(shared_data, name, split, count):
    cuts = import_shared(name, split, root=shared_data / name)
    assert len(cuts) == count
    assert all(Path(c.recording.sources[0].source).is_file() for c in cuts)


def test_shared_importer_fields(shared_data):
    an4 = import_shared("an4", "test", root=shared_data / "an4")
    sup = an4[0].supervisions[0]
    assert (sup.text, sup.speaker, sup.gender, sup.language) == ("RUBOUT G M E F THREE NINE", "fcaw", "F", "en")
    assert sup.custom == {"task": "asr", "split": "test"}
    zh = import_shared("zh_mandarin_fixtures", root=shared_data / "zh_mandarin_fixtures")
    assert zh[0].supervisions[0].text == "广州市房地产中介协会分析" and zh[0].supervisions[0].language == "zh"
    lib = import_shared("librispeech_samples", "train-clean-100", root=shared_data / "librispeech_samples")
    assert all(c.supervisions[0].text is None for c in lib)  # speaker/gender only


def test_iter_examples_resamples_to_16k(shared_data):
    cuts = import_shared("fsdd", "test", root=shared_data / "fsdd")  # 8 kHz wavs
    wave, text, meta = next(iter_examples(cuts))
    assert meta["sampling_rate"] == 8000 and text == "zero" and wave.dtype == np.float32
    assert abs(len(wave) - meta["duration"] * 16000) <= 2


def test_save_load_roundtrip_relative_paths(tmp_path, clips):
    cuts = [make_cut(f"u{i}", p, text=f"text {i}", speaker="s", split="train", voice="flite:slt")
            for i, p in enumerate(clips)]
    path = save_manifest(cuts, tmp_path / "m.jsonl.gz")
    with gzip.open(path, "rt") as f:
        raw = [json.loads(line) for line in f]
    assert raw[0]["recording"]["sources"][0]["source"] == "audio/c0.flac"  # relative to the manifest's folder
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("moved"))
    back = load_manifest(moved / "m.jsonl.gz")
    assert [c.id for c in back] == ["u0", "u1", "u2"]
    assert back[1].recording.sources[0].source == str(moved / "audio" / "c1.flac")
    wave, text, meta = next(iter_examples(back))
    assert len(wave) == 8000 and text == "text 0"
    assert meta["voice"] == "flite:slt" and meta["split"] == "train" and meta["task"] == "asr"


def test_slam_jsonl_importer(tmp_path, clips):
    lines = [{"key": "a", "source": "audio/c0.flac", "target": "hello"},
             {"key": "b", "source": str(clips[1]), "target": "world", "prompt": "Transcribe the audio."}]
    (tmp_path / "slam.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cuts = import_slam_jsonl(tmp_path / "slam.jsonl", split="train")
    assert [c.supervisions[0].text for c in cuts] == ["hello", "world"]
    assert cuts[1].supervisions[0].custom["instruction"] == "Transcribe the audio."
    assert abs(cuts[0].duration - 0.5) < 1e-6
    assert len(import_dataset(tmp_path / "slam.jsonl")) == 2  # format sniffed from the first line


def test_kaldi_dir_importer_with_segments(tmp_path, clips):
    d = tmp_path / "kaldi"
    d.mkdir()
    (d / "wav.scp").write_text(f"rec1 {clips[2]}\n")
    (d / "segments").write_text("utt1 rec1 0.0 0.5\nutt2 rec1 0.5 1.2\n")
    (d / "text").write_text("utt1 HELLO THERE\nutt2 GENERAL  KENOBI\n")
    (d / "utt2spk").write_text("utt1 spk1\nutt2 spk2\n")
    cuts = import_dataset(d)
    assert [c.supervisions[0].text for c in cuts] == ["HELLO THERE", "GENERAL KENOBI"]
    assert [c.supervisions[0].speaker for c in cuts] == ["spk1", "spk2"]
    waves = [w for w, _, _ in iter_examples(cuts)]
    assert [len(w) for w in waves] == [8000, 11200]  # 0.5 s and 0.7 s at 16 kHz


def test_kaldi_dir_importer_without_segments(tmp_path, clips):
    d = tmp_path / "kaldi"
    d.mkdir()
    (d / "wav.scp").write_text("u0 ../audio/c0.flac\nu1 ../audio/c1.flac\n")  # relative to the data dir
    (d / "text").write_text("u0 A\nu1 B C\n")
    cuts = import_kaldi_dir(d)
    assert [c.duration for c in cuts] == [0.5, 0.8]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_manifests_name_file_and_line(tmp_path, clips):
    good = json.dumps(make_cut("u0", clips[0], text="x").to_dict())
    bad_json = _write(tmp_path / "a.jsonl", good + "\n{not json\n")
    with pytest.raises(ManifestError, match=r"a\.jsonl:2: invalid JSON"):
        load_manifest(bad_json)
    dup = _write(tmp_path / "b.jsonl", good + "\n\n" + good + "\n")
    with pytest.raises(ManifestError, match=r"b\.jsonl:3: duplicate cut id 'u0' \(first on line 1\)"):
        load_manifest(dup)
    slam_like = _write(tmp_path / "c.jsonl", '{"key": "k", "source": "x.wav", "target": "t"}\n')
    with pytest.raises(ManifestError, match=r"c\.jsonl:1: not a lhotse cut"):
        load_manifest(slam_like)
    broken = _write(tmp_path / "d.jsonl", json.dumps({"type": "MonoCut", "id": "x"}) + "\n")
    with pytest.raises(ManifestError, match=r"d\.jsonl:1: malformed cut"):
        load_manifest(broken)
    with pytest.raises(ManifestError, match=r"e\.jsonl:2: SLAM-LLM line lacks \['target'\]"):
        import_slam_jsonl(_write(tmp_path / "e.jsonl", '{"key":"a","source":"audio/c0.flac","target":"t"}\n'
                                                       '{"key":"b","source":"audio/c1.flac"}\n'))
    with pytest.raises(ManifestError, match=r"f\.jsonl:1: audio file 'nope\.wav' not found"):
        import_slam_jsonl(_write(tmp_path / "f.jsonl", '{"key":"a","source":"nope.wav","target":"t"}\n'))
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    _write(kaldi / "wav.scp", "r1 sox x.wav -t wav - |\n")
    _write(kaldi / "text", "r1 hi\n")
    with pytest.raises(ManifestError, match="piped commands are not supported"):
        import_kaldi_dir(kaldi)
    _write(kaldi / "wav.scp", f"r1 {clips[0]}\n")
    _write(kaldi / "segments", "u1 r1 0.0\n")
    with pytest.raises(ManifestError, match=r"segments:1: expected"):
        import_kaldi_dir(kaldi)


def test_eval_sentences_removed_from_training_text(shared_data):
    keys = eval_sentence_keys(shared_data)
    vctk = "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob."
    arctic = "Author of the danger trail, Philip Steels, etc."  # in cmuarctic.data and the cathy set
    texts = ["A sentence nobody evaluates on.", vctk.upper().replace(",", ""), "  " + arctic.lower() + " ",
             "He hoped there would be stew for dinner, turnips and carrots and bruised potatoes and fat mutton "
             "pieces to be ladled out in thick peppered flour fattened sauce.",  # LibriSpeech test-clean
             "A sentence nobody evaluates on!"]  # a repeat after normalisation
    assert remove_eval_sentences(texts, keys) == ["A sentence nobody evaluates on."]
    train = load_texts("train", root=shared_data)
    assert len(train) > 40_000
    from speechllm.text_norm import text_key

    assert not {text_key(t) for t in train} & keys
    # the recipe scripts slice one seeded order: a permutation, the same every call, the sources mixed
    shuffled = load_texts("train", root=shared_data, shuffle_seed=0)
    assert shuffled == load_texts("train", root=shared_data, shuffle_seed=0) != train
    assert sorted(shuffled) == sorted(train)


def test_synth_cache_skips_done_clips(tmp_path):
    from speechllm.data.synth import build_synth_set
    from speechllm.tts import ENGINES

    if not ENGINES["espeak"].available():
        pytest.skip("espeak-ng not installed")
    texts = ["The first short sentence.", "A second one.", "And the third."]
    first = build_synth_set(texts, ["espeak:en-us", "espeak:en+f3"], tmp_path, exclude_eval=False)
    assert (first.synthesized, first.cached, first.failed) == (3, 0, 0)
    assert [c.supervisions[0].custom["voice"] for c in first.cuts] == ["espeak:en-us", "espeak:en+f3", "espeak:en-us"]
    files = sorted(tmp_path.glob("audio/*/*.flac"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = build_synth_set(texts + ["A fourth."], ["espeak:en-us", "espeak:en+f3"], tmp_path, exclude_eval=False)
    assert (again.synthesized, again.cached) == (1, 3)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    cuts = load_manifest(first.manifest)
    assert len(cuts) == 4 and cuts[0].sampling_rate == 16000


def test_synth_refuses_held_out_voice_for_training(tmp_path):
    from speechllm.data.synth import HELD_OUT_VOICES, build_synth_set

    with pytest.raises(ValueError, match="held out of training"):
        build_synth_set(["x y z"], [HELD_OUT_VOICES[0]], tmp_path, split="train")


def test_speed_perturb_lengths():
    wave = tone(1.0)
    assert [len(speed_perturb(wave, f)) for f in (0.9, 1.0, 1.1)] == [17778, 16000, 14545]


def test_add_noise_hits_requested_snr():
    wave, noise = tone(1.0), pink_noise(5000, np.random.default_rng(1))  # shorter noise is tiled
    mixed = add_noise(wave, noise, 10.0)
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((mixed - wave).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.01


def test_augmenter_is_deterministic_per_key(tmp_path):
    augment = Augmenter(AugmentConfig(noise_prob=1.0, gain_prob=1.0, seed=3))
    wave = tone(1.0)
    a, b = augment(wave, key="utt-1"), Augmenter(AugmentConfig(noise_prob=1.0, gain_prob=1.0, seed=3))(wave, "utt-1")
    assert np.array_equal(a, b) and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    outs = [augment(wave, key=f"utt-{i}") for i in range(12)]
    assert {len(o) for o in outs} == {17778, 16000, 14545}  # every speed gets drawn
    noise_clip = write_audio(tmp_path / "noise.flac", pink_noise(4000, np.random.default_rng(0)) * 0.1, 16000)
    save_manifest([make_cut("n0", noise_clip)], tmp_path / "noise.jsonl")
    cfg = AugmentConfig(speeds=(1.0,), noise_prob=1.0, gain_prob=0.0, snr_db=(20.0, 20.0),
                        noise_manifest=str(tmp_path / "noise.jsonl"))
    mixed = Augmenter(cfg)(wave, key="x")
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((mixed - wave).astype(np.float64) ** 2))
    assert len(mixed) == len(wave) and abs(snr - 20.0) < 0.05


def test_cli_data_import(tmp_path, shared_data, monkeypatch, capsys):
    from speechllm.cli import main

    monkeypatch.setenv("SPEECHLLM_SHARED_DATA", str(shared_data))
    assert main(["data", "import", "en_vctk_4spk", "--out", str(tmp_path / "vctk.jsonl.gz")]) == 0
    assert "40 cuts" in capsys.readouterr().out
    assert len(load_manifest(tmp_path / "vctk.jsonl.gz")) == 40
    assert main(["data", "import", "nope", "--out", str(tmp_path / "x.jsonl")]) == 2


def test_manifest_written_with_a_relative_folder_loads_from_anywhere(tmp_path, monkeypatch):
    """Regression: a relative output folder used to store cwd-relative audio paths."""
    from speechllm.audio import write_audio
    from speechllm.data.manifest import load_cut_audio, load_manifest, make_cut, save_manifest
    from tests.conftest import tone

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus" / "audio").mkdir(parents=True)
    write_audio("corpus/audio/a.wav", tone(0.5), 16000)
    save_manifest([make_cut("a", "corpus/audio/a.wav", text="hi")], "corpus/m.jsonl.gz")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (cut,) = list(load_manifest(tmp_path / "corpus" / "m.jsonl.gz"))
    assert len(load_cut_audio(cut)) == 8000
