import numpy as np
import pytest

from speechllm import api
from speechllm.audio import load_audio, write_audio
from speechllm.segment import split_long, split_points

RATE = 16000


def bursts(seconds: list[float], gap: float = 0.4, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Noise bursts of the given lengths separated by ``gap`` s of near-silence; also the silent spans."""
    rng = np.random.default_rng(seed)
    parts, silences, pos = [], [], 0
    for i, s in enumerate(seconds):
        if i:
            n = int(gap * RATE)
            parts.append(0.001 * rng.standard_normal(n))
            silences.append((pos, pos + n))
            pos += n
        n = int(s * RATE)
        parts.append(0.3 * rng.standard_normal(n))
        pos += n
    return np.concatenate(parts).astype(np.float32), silences


def test_short_clips_stay_whole():
    wave, _ = bursts([2.0, 3.0])
    assert split_points(wave, RATE, 10.0) == []
    assert len(split_long(wave, RATE, 10.0)) == 1


def test_long_clips_are_cut_in_pauses_into_short_pieces():
    wave, silences = bursts([3.0, 2.5, 4.0, 3.5, 2.0, 3.0])  # 18 s of sound + 2 s of pauses
    points = split_points(wave, RATE, 8.0)
    assert points  # 20 s > 8 s
    for p in points:  # every cut lies inside a pause, not in a burst
        assert any(a <= p < b for a, b in silences), p
    pieces = split_long(wave, RATE, 8.0)
    assert all(len(x) <= 8.0 * RATE for x in pieces)
    assert np.array_equal(np.concatenate(pieces), wave)  # nothing lost or duplicated


def test_a_clip_without_pauses_is_still_cut_to_length():
    wave = (0.3 * np.random.default_rng(1).standard_normal(int(25 * RATE))).astype(np.float32)
    pieces = split_long(wave, RATE, 6.0)
    assert all(len(x) <= 6.0 * RATE for x in pieces) and sum(map(len, pieces)) == len(wave)


@pytest.mark.parametrize("bad", [dict(max_seconds=0.0), dict(max_seconds=5.0, balance=0.5)])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        split_points(np.zeros(RATE * 20, dtype=np.float32), RATE, **bad)


class LengthModel:
    """A stand-in SpeechModel whose transcript of a clip is its length in samples."""

    name, sampling_rate, tokenizer = "lengths", RATE, None

    def __init__(self):
        self.calls = []

    def generate(self, waveforms, instructions=None, options=None, streamer=None):
        self.calls.append([len(w) for w in waveforms])
        return [str(len(w)) for w in waveforms]


def test_transcription_joins_the_pieces_and_chat_keeps_whole_clips(tmp_path):
    paths = []
    for name, seconds in [("long", [3.0, 3.0, 3.0, 3.0]), ("short", [2.0])]:
        paths.append(tmp_path / f"{name}.wav")
        write_audio(paths[-1], bursts(seconds)[0], RATE)
    long, short = (load_audio(p, RATE) for p in paths)
    model = LengthModel()
    texts = api.transcribe(paths, model=model, max_segment_seconds=5.0, batch_size=2)
    pieces = split_long(long, RATE, 5.0)
    assert len(pieces) > 1
    assert texts == [" ".join(str(len(p)) for p in pieces), str(len(short))]
    assert max(len(c) for c in model.calls) <= 2  # the pieces are decoded in batches of batch_size
    model.calls.clear()
    assert api.chat(paths[0], "Summarize.", model=model, max_segment_seconds=5.0) == str(len(long))
    assert model.calls == [[len(long)]]
