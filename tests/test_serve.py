"""The OpenAI-compatible server, tested as users use it: the official ``openai`` client and raw
HTTP against a real uvicorn server on 127.0.0.1 (a free port), serving a tiny random Speech LLM.

The tiny LLM's saved weights answer only newlines, so the fixture re-draws them (seed 0, std 0.5):
answers then differ per clip and instruction, and a mix-up between batched requests shows."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import sys
import time
import types
from pathlib import Path

import httpx2 as httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import torch

from speechllm.audio import load_audio
from speechllm.decoding import DecodeOptions
from speechllm.serve import BackgroundServer, ServeConfig, create_app, reply
from speechllm.serve.inputs import transcription_instruction
from speechllm.serve.segments import Segment, speech_spans, to_srt, to_vtt
from tests.conftest import tone

NAME = "tiny-speechllm"
TOKENS = 12


@pytest.fixture(scope="module")
def tiny_model(tiny_dirs, tmp_path_factory):
    from speechllm.config import load_config
    from speechllm.model import SpeechLLM, SpeechLLMConfig

    yaml = tmp_path_factory.mktemp("serve") / "tiny.yaml"
    yaml.write_text(f"encoder: {{type: whisper, model: {tiny_dirs['whisper']}}}\n"
                    f"connector: {{type: linear, stack: 4}}\nllm: {{type: hf, model: {tiny_dirs['llm']}}}\n")
    torch.manual_seed(0)
    model = SpeechLLM(load_config(SpeechLLMConfig, yaml)).eval()
    with torch.no_grad():
        for p in model.llm.model.parameters():
            p.normal_(std=0.5)
    return model


def _config(**kw) -> ServeConfig:
    base = dict(model_name=NAME, max_new_tokens=TOKENS, max_audio_seconds=60, request_timeout_s=30)
    return ServeConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def url(tiny_model):
    with BackgroundServer(create_app(_config(batch_wait_ms=20), tiny_model)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def wav_bytes(wave: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def expected(model, data: bytes, instruction: str | None = None) -> str:
    """What the library itself answers for this audio: the server must say the same."""
    return model.generate([load_audio(data, 16000)], [instruction], DecodeOptions(max_new_tokens=TOKENS))[0]


def audio_message(data: bytes, text: str | None = None, fmt: str = "wav") -> list[dict]:
    content = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}]
    if text is not None:
        content.insert(0, {"type": "text", "text": text})
    return [{"role": "user", "content": content}]


CLIP = wav_bytes(tone(1.5))


# ---- the OpenAI API, through the official client -------------------------------------------------
def test_models_health_and_page(url, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<script src=\"static/app.js\">" in page.text
    for asset in ("app.js", "style.css"):
        body = httpx.get(f"{url}/static/{asset}").text
        assert "http://" not in body and "https://" not in body  # no CDN: works offline


def test_transcription_equals_library(client, tiny_model):
    want = expected(tiny_model, CLIP)
    assert want  # the re-drawn tiny LLM says something
    got = client.audio.transcriptions.create(model=NAME, file=("clip.wav", CLIP))
    assert got.text == want
    text = client.audio.transcriptions.create(model=NAME, file=("clip.wav", CLIP), response_format="text")
    assert text.strip() == want
    translated = client.audio.translations.create(model=NAME, file=("clip.wav", CLIP))
    assert translated.text == expected(tiny_model, CLIP, "Translate the speech into English.")


def test_segment_formats(client, tiny_model):
    verbose = client.audio.transcriptions.create(model=NAME, file=("clip.wav", CLIP), response_format="verbose_json")
    assert verbose.duration == pytest.approx(1.5)
    assert [(s.start, s.end) for s in verbose.segments] == [(0.0, 1.5)]  # a tone is no speech: one whole segment
    assert verbose.segments[0].text == verbose.text == expected(tiny_model, CLIP)
    srt = client.audio.transcriptions.create(model=NAME, file=("clip.wav", CLIP), response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    vtt = client.audio.transcriptions.create(model=NAME, file=("clip.wav", CLIP), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")


def test_chat_with_input_audio(client, tiny_model):
    reply_ = client.chat.completions.create(model=NAME, messages=audio_message(CLIP, "Who is speaking?"))
    assert reply_.choices[0].message.content == expected(tiny_model, CLIP, "Who is speaking?")
    assert reply_.choices[0].finish_reason == "stop"
    audio_only = client.chat.completions.create(model=NAME, messages=audio_message(CLIP))
    assert audio_only.choices[0].message.content == expected(tiny_model, CLIP)  # no text: the default task


def test_chat_streaming_equals_plain(client):
    messages = audio_message(CLIP, "Describe the sound.")
    plain = client.chat.completions.create(model=NAME, messages=messages).choices[0].message.content
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    deltas = [c.choices[0].delta.content or "" for c in chunks]
    assert sum(bool(d) for d in deltas) > 1  # streamed token by token, not in one piece
    assert "".join(deltas).strip() == plain


def test_transcription_streaming_sse(url, client):
    plain = client.audio.transcriptions.create(model=NAME, file=("clip.wav", CLIP)).text
    with httpx.stream("POST", f"{url}/v1/audio/transcriptions", files={"file": ("c.wav", CLIP)},
                      data={"model": NAME, "stream": "true"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == {"type": "transcript.text.done", "text": plain}
    assert "".join(e["delta"] for e in events[:-1]).strip() == plain


def test_prompt_hint_reaches_a_speech_llm_only(tiny_model):
    assert transcription_instruction(tiny_model, None) is None
    hinted = transcription_instruction(tiny_model, "Kubernetes, Pyannote")
    assert hinted.startswith(tiny_model.prompt.config.instruction) and "Kubernetes, Pyannote" in hinted
    assert transcription_instruction(types.SimpleNamespace(), "Kubernetes") is None  # Whisper, cascade: no input


# ---- transcription decodes as the checkpoint recommends ------------------------------------------------
class RecordingModel:
    """Answers "p0", "p1"... (one per clip, numbered across calls) and records what each ``generate``
    got; like the shipped checkpoint, it recommends beam 4, CTC weight 0.1 and pieces of <= 8 s."""

    sampling_rate = 16000
    name = NAME
    decode_defaults = {"num_beams": 4, "ctc_weight": 0.1, "max_segment_seconds": 8}

    def __init__(self):
        self.calls: list[tuple[list[np.ndarray], list[str | None], DecodeOptions]] = []

    def generate(self, waveforms, instructions=None, options=None, streamer=None):
        first = sum(len(waves) for waves, _, _ in self.calls)
        self.calls.append((list(waveforms), list(instructions), options))
        return [f"p{first + i}" for i in range(len(waveforms))]


BEAM = DecodeOptions(max_new_tokens=TOKENS, num_beams=4, ctc_weight=0.1, max_segment_seconds=8)
GREEDY = DecodeOptions(max_new_tokens=TOKENS)
# 17 s with two 0.5 s pauses: longer than 8 s, so transcription cuts it (at the pauses)
LONG = wav_bytes(np.concatenate([tone(5.0), np.zeros(8000, np.float32), tone(6.0, freq=300, seed=1),
                                 np.zeros(8000, np.float32), tone(5.0, freq=260, seed=2)]))


def _transcribe(base: str, data: bytes = CLIP, **form) -> httpx.Response:
    return httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("c.wav", data)},
                      data={"model": NAME, **form}, timeout=30)


def test_transcription_gets_the_recommended_decoding():
    model = RecordingModel()
    with BackgroundServer(create_app(_config(), model)) as base:
        assert _transcribe(base).json() == {"text": "p0"}
        assert _transcribe(base, response_format="srt").text.startswith("1\n00:00:00,000 --> 00:00:01,500\np1")
        assert _transcribe(base, temperature="0.5").json() == {"text": "p2"}
    (_, _, plain), (_, _, spans), (_, _, sampled) = model.calls
    assert plain == spans == BEAM  # the VAD spans of srt get the same options
    # a temperature samples as before (one sequence), the rest of the recommendation stays
    assert sampled == DecodeOptions(max_new_tokens=TOKENS, do_sample=True, temperature=0.5, ctc_weight=0.1,
                                    max_segment_seconds=8)


def test_long_transcription_is_decoded_in_pieces_and_joined_in_order():
    model = RecordingModel()
    with BackgroundServer(create_app(_config(max_batch_size=2), model)) as base:
        text = _transcribe(base, LONG, response_format="text").text
    pieces = [wave for waves, _, _ in model.calls for wave in waves]
    assert len(pieces) == 3 and all(len(p) <= 8 * 16000 for p in pieces)
    assert np.array_equal(np.concatenate(pieces), load_audio(LONG, 16000))  # the whole clip, in order
    assert text == "p0 p1 p2"
    # one request, two forwards of at most max_batch_size clips, all with the recommended options
    assert [(len(waves), instructions, options) for waves, instructions, options in model.calls] == [
        (2, [None, None], BEAM), (1, [None], BEAM)]


def test_long_speech_region_becomes_timed_segments_of_at_most_8_s():
    model = RecordingModel()
    with BackgroundServer(create_app(_config(), model)) as base:
        body = _transcribe(base, LONG, response_format="verbose_json").json()
    segments = body["segments"]
    pieces = [wave for waves, _, _ in model.calls for wave in waves]
    assert len(segments) == len(pieces) >= 3 and all(len(p) <= 8 * 16000 for p in pieces)
    assert all(0 < s["end"] - s["start"] <= 8.0 for s in segments)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(segments, segments[1:]))  # in time order
    assert [s["text"].strip() for s in segments] == [f"p{i}" for i in range(len(pieces))]
    assert all(options == BEAM for _, _, options in model.calls)


def test_translation_chat_and_streaming_decode_whole_clips_greedily():
    model = RecordingModel()
    with BackgroundServer(create_app(_config(), model)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
        assert client.audio.translations.create(model=NAME, file=("c.wav", LONG)).text == "p0"
        assert client.chat.completions.create(model=NAME, messages=audio_message(LONG, "Summarize it.")
                                              ).choices[0].message.content == "p1"
        with httpx.stream("POST", f"{base}/v1/audio/transcriptions", files={"file": ("c.wav", LONG)},
                          data={"model": NAME, "stream": "true"}) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == {"type": "transcript.text.done", "text": "p2"}
    wave = load_audio(LONG, 16000)
    assert len(model.calls) == 3
    for waves, _, options in model.calls:
        assert len(waves) == 1 and np.array_equal(waves[0], wave) and options == GREEDY


def test_chat_with_audio_only_is_a_transcription():
    model = RecordingModel()
    with BackgroundServer(create_app(_config(), model)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
        answer = client.chat.completions.create(model=NAME, messages=audio_message(LONG)).choices[0].message.content
    pieces = [wave for waves, _, _ in model.calls for wave in waves]
    assert answer == " ".join(f"p{i}" for i in range(len(pieces))) and len(pieces) == 3
    assert np.array_equal(np.concatenate(pieces), load_audio(LONG, 16000))
    assert all(instructions == [None] * len(waves) and options == BEAM for waves, instructions, options in model.calls)


def test_beam_search_transcriptions_still_share_forwards():
    model = RecordingModel()
    with BackgroundServer(create_app(_config(batch_wait_ms=300), model)) as base:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(lambda _: _transcribe(base).json()["text"], range(4)))
    assert sorted(texts) == ["p0", "p1", "p2", "p3"]
    assert len(model.calls) < 4 and all(options == BEAM for _, _, options in model.calls)


def test_transcription_equals_library_with_recommended_decoding(tiny_model, monkeypatch):
    """The real tiny model recommending beam 2 and pieces of <= 1 s: the server says what
    ``speechllm.transcribe`` says, which is not the greedy whole-clip answer."""
    import speechllm

    monkeypatch.setattr(tiny_model.config, "decode", {"num_beams": 2, "max_segment_seconds": 1.0})
    data = wav_bytes(np.concatenate([tone(0.8), np.zeros(4800, np.float32), tone(0.9, freq=330, seed=1)]))
    want = speechllm.transcribe(data, model=tiny_model, max_new_tokens=TOKENS)
    assert want and want != expected(tiny_model, data)
    with BackgroundServer(create_app(_config(), tiny_model)) as base:
        assert _transcribe(base, data).json() == {"text": want}


# ---- concurrency ----------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_not_mixed_up(tiny_model):
    clips = [wav_bytes(tone(1.0 + 0.25 * i, freq=180 + 40 * i, seed=i)) for i in range(8)]
    with BackgroundServer(create_app(_config(batch_wait_ms=100), tiny_model)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda c: client.audio.transcriptions.create(model=NAME, file=("c.wav", c)).text,
                                clips))
        health = httpx.get(f"{base}/health").json()
    assert health["clips"] == 8 and health["batches"] < 8  # some requests shared a forward
    alone = [expected(tiny_model, c) for c in clips]
    assert got == alone


class SlowModel:
    """The tiny model behind a fixed delay (or an error), to fill the queue on purpose."""

    def __init__(self, model, delay: float = 0.0, fail: bool = False):
        self.model, self.delay, self.fail = model, delay, fail
        self.sampling_rate = 16000
        self.name = NAME

    def generate(self, waveforms, instructions=None, options=None, streamer=None):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("secret internal detail /opt/model.bin")
        return self.model.generate(waveforms, instructions, options)


def test_overload_is_refused_fast_and_server_recovers(tiny_model):
    config = _config(max_batch_size=1, max_queue=1, max_concurrent=3)
    delay = 1.0
    with BackgroundServer(create_app(config, SlowModel(tiny_model, delay=delay))) as base, \
            httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=20)) as http:
        http.get("/health")

        def post(_):
            start = time.monotonic()
            r = http.post("/v1/audio/transcriptions", files={"file": ("c.wav", CLIP)}, data={"model": NAME})
            return r.status_code, time.monotonic() - start, r.json()

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(post, range(10)))
        codes = [code for code, _, _ in results]
        assert codes.count(200) >= 1 and set(codes) <= {200, 429, 503}
        refused = [(t, body) for code, t, body in results if code in (429, 503)]
        assert len(refused) >= 5
        assert all(t < delay / 2 and body["error"]["message"] for t, body in refused), results  # no waiting
        assert post(0)[0] == 200  # and it keeps answering


def test_timeout_and_model_failure_answer_cleanly(tiny_model):
    slow = SlowModel(tiny_model, delay=0.6)
    with BackgroundServer(create_app(_config(request_timeout_s=0.2, timeout_per_audio_s=0), slow)) as base:
        r = httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("c.wav", CLIP)}, data={"model": NAME})
        assert r.status_code == 504 and r.json()["error"]["message"] == "request timed out after 0.2 s"
    # the deadline grows with the audio: 0.2 s + 1 s per second of the 1.5 s clip outlasts the delay
    with BackgroundServer(create_app(_config(request_timeout_s=0.2, timeout_per_audio_s=1), slow)) as base:
        r = httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("c.wav", CLIP)}, data={"model": NAME})
        assert r.status_code == 200 and r.json()["text"]
    with BackgroundServer(create_app(_config(), SlowModel(tiny_model, fail=True))) as base:
        r = httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("c.wav", CLIP)}, data={"model": NAME})
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "the model failed on this input"
        assert "secret" not in r.text and "Traceback" not in r.text
        assert httpx.get(f"{base}/health").status_code == 200


# ---- security ---------------------------------------------------------------------------------------
def test_api_key(tiny_model):
    with BackgroundServer(create_app(_config(api_key="s3cret"), tiny_model)) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = httpx.get(f"{base}/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{base}/health").status_code == 200 and httpx.get(f"{base}/").status_code == 200
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert good.audio.transcriptions.create(model=NAME, file=("c.wav", CLIP)).text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="nope", max_retries=0).models.list()


def test_binds_localhost_by_default():
    assert ServeConfig().host == "127.0.0.1" and ServeConfig().max_upload_bytes == 25 * 1024 * 1024


def _wave_with(value: float) -> bytes:
    wave = tone(1.0)
    wave[100] = value
    return wav_bytes(wave, subtype="FLOAT")


def _header_rate(rate: int) -> bytes:
    data = bytearray(CLIP)
    data[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate
    return bytes(data)


def _flac() -> bytes:
    return wav_bytes(tone(1.0), fmt="FLAC")


BAD_UPLOADS = {  # name: (make the file bytes, HTTP status, words the message must contain)
    "empty file": (lambda: b"", 400, "empty"),
    "text bytes": (lambda: b"hello, I am not audio at all" * 10, 400, "not a recognised audio format"),
    "random bytes": (lambda: np.random.default_rng(0).bytes(4000), 400, "audio"),
    "truncated wav header": (lambda: CLIP[:30], 400, "audio"),
    "truncated flac header": (lambda: _flac()[:60], 400, "file"),
    "zero-length wav": (lambda: wav_bytes(np.zeros(0, np.float32)), 400, "zero samples"),
    "too short": (lambda: wav_bytes(tone(0.01)), 400, "too short"),
    "silent": (lambda: wav_bytes(np.zeros(16000, np.float32)), 400, "silent"),
    "NaN samples": (lambda: _wave_with(float("nan")), 400, "NaN"),
    "inf samples": (lambda: _wave_with(float("inf")), 400, "infinite"),
    "two hours long": (lambda: wav_bytes(np.tile(np.float32([0.1, -0.1]), 3_600_000), 1000, "PCM_U8"), 400,
                       "too long"),
    "absurd sample rate": (lambda: _header_rate(10), 400, "sample rate"),
    "file over 25 MB": (lambda: b"\0" * (25 * 1024 * 1024 + 10), 413, "too large"),
    "body over the request limit": (lambda: b"\0" * (40 * 1024 * 1024), 413, "too large"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_uploads(url, name):
    make, status, words = BAD_UPLOADS[name]
    data = make()
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("x.wav", data, "audio/wav")},
                   data={"model": NAME}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words.lower() in error["message"].lower() and error["type"]
    assert "Traceback" not in r.text


def _chat(messages, **kw) -> dict:
    return {"model": NAME, "messages": messages, **kw}


BAD_REQUESTS = {  # name: (route, httpx keyword arguments, status, words)
    "json to a multipart route": ("transcriptions", {"json": {"model": NAME, "file": "x"}}, 400, "file"),
    "malformed multipart": ("transcriptions", {"content": b"--x\r\nnonsense", "headers": {
        "content-type": "multipart/form-data; boundary=x"}}, 400, "file"),
    "missing file": ("transcriptions", {"data": {"model": NAME}}, 400, "file"),
    "missing model": ("transcriptions", {"files": {"file": ("c.wav", CLIP)}}, 400, "model"),
    "a path instead of a file": ("transcriptions", {"data": {"model": NAME, "file": "/etc/passwd"}}, 400, "file"),
    "unknown model": ("transcriptions", {"files": {"file": ("c.wav", CLIP)}, "data": {"model": "whisper-1"}},
                      404, "not served"),
    "bad response_format": ("transcriptions", {"files": {"file": ("c.wav", CLIP)},
                                               "data": {"model": NAME, "response_format": "xml"}}, 400,
                            "response_format"),
    "temperature not a number": ("transcriptions", {"files": {"file": ("c.wav", CLIP)},
                                                    "data": {"model": NAME, "temperature": "hot"}}, 400,
                                 "temperature"),
    "temperature out of range": ("transcriptions", {"files": {"file": ("c.wav", CLIP)},
                                                    "data": {"model": NAME, "temperature": "7"}}, 400,
                                 "temperature"),
    "stream with srt": ("transcriptions", {"files": {"file": ("c.wav", CLIP)},
                                           "data": {"model": NAME, "stream": "true", "response_format": "srt"}},
                        400, "stream"),
    "garbage base64": ("chat", {"json": _chat([{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "@@not base64!!", "format": "wav"}}]}])}, 400, "base64"),
    "base64 of text": ("chat", {"json": _chat(audio_message(b"just some text, no audio"))}, 400, "audio format"),
    "no audio part": ("chat", {"json": _chat([{"role": "user", "content": "hello"}])}, 400, "input_audio"),
    "two audio parts": ("chat", {"json": _chat(audio_message(CLIP) + audio_message(CLIP))}, 400, "exactly one"),
    "missing messages": ("chat", {"json": {"model": NAME}}, 400, "messages"),
    "messages not a list": ("chat", {"json": _chat("hi")}, 400, "messages"),
    "unknown part type": ("chat", {"json": _chat([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])}, 400, "messages"),
    "n=2": ("chat", {"json": _chat(audio_message(CLIP), n=2)}, 400, "n"),
    "max_tokens=0": ("chat", {"json": _chat(audio_message(CLIP), max_tokens=0)}, 400, "max_tokens"),
    "invalid json": ("chat", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
                     "json"),
    "plain text body": ("chat", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 400, "body"),
    "unknown chat model": ("chat", {"json": {**_chat(audio_message(CLIP)), "model": "gpt-4o"}}, 404, "not served"),
}
ROUTES = {"transcriptions": "/v1/audio/transcriptions", "chat": "/v1/chat/completions"}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests(url, name):
    route, kwargs, status, words = BAD_REQUESTS[name]
    r = httpx.post(f"{url}{ROUTES[route]}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words.lower() in error["message"].lower(), error
    assert "Traceback" not in r.text


def test_chunked_upload_without_length_is_cut_off(url):
    """No Content-Length to check up front: the bytes are counted as they arrive."""
    head = (b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" + NAME.encode() +
            b"\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\n")

    def body():
        yield head
        for _ in range(40):
            yield b"\0" * (1 << 20)
        yield b"\r\n--b--\r\n"

    r = httpx.post(f"{url}/v1/audio/transcriptions", content=body(),
                   headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60)
    assert r.status_code == 413 and "too large" in r.json()["error"]["message"]


def test_unknown_routes_answer_in_openai_shape(url):
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["message"] == "no route /v1/nothing"
    r = httpx.get(f"{url}/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["message"]


def _ogg() -> bytes:
    return wav_bytes(tone(1.0), fmt="OGG", subtype="VORBIS")


def _mp3() -> bytes:
    return wav_bytes(tone(1.0), fmt="MP3", subtype="MPEG_LAYER_III")


UNUSUAL_BUT_FINE = {
    "8-bit": lambda: wav_bytes(tone(1.0), subtype="PCM_U8"),
    "24-bit": lambda: wav_bytes(tone(1.0), subtype="PCM_24"),
    "32-bit float": lambda: wav_bytes(tone(1.0), subtype="FLOAT"),
    "stereo": lambda: wav_bytes(np.stack([tone(1.0), tone(1.0, freq=330)], axis=1)),
    "8 kHz": lambda: wav_bytes(tone(1.0, rate=8000), rate=8000),
    "44.1 kHz": lambda: wav_bytes(tone(1.0, rate=44100), rate=44100),
    "flac": _flac,
    "ogg vorbis": _ogg,
    "mp3": _mp3,
    "float beyond full scale": lambda: wav_bytes(3 * tone(1.0), subtype="FLOAT"),
    "truncated halfway": lambda: CLIP[: len(CLIP) // 2],  # what decodes is used (audio.py's contract)
}


@pytest.mark.parametrize("name", list(UNUSUAL_BUT_FINE))
def test_unusual_audio_is_accepted(client, name):
    data = UNUSUAL_BUT_FINE[name]()
    # a wrong declared content type does not matter: the bytes are sniffed
    assert isinstance(client.audio.transcriptions.create(model=NAME, file=("x.bin", data, "text/plain")).text, str)


def test_still_serving_after_the_bad_inputs(client, tiny_model):
    assert client.audio.transcriptions.create(model=NAME, file=("c.wav", CLIP)).text == expected(tiny_model, CLIP)


# ---- spoken replies, segments, CLI --------------------------------------------------------------------
def test_tts_when_present_and_absent(url, monkeypatch):
    fake = types.SimpleNamespace(list_voices=lambda: ["fake:beep"],
                                 synthesize=lambda text, voice=None: (tone(0.5, rate=22050), 22050))
    monkeypatch.setattr(reply, "_voices", None)
    monkeypatch.setattr(reply, "_tts", lambda: fake)
    assert httpx.get(f"{url}/v1/audio/voices").json() == {"voices": ["fake:beep"]}
    r = httpx.post(f"{url}/v1/audio/speech", json={"input": "hello", "voice": "fake:beep"})
    assert r.status_code == 200 and sf.info(io.BytesIO(r.content)).samplerate == 22050
    assert httpx.post(f"{url}/v1/audio/speech", json={"input": "hi", "voice": "nope"}).status_code == 400
    monkeypatch.setattr(reply, "_voices", None)
    monkeypatch.setattr(reply, "_tts", lambda: None)  # speechllm.tts missing: no reply audio, no crash
    assert httpx.get(f"{url}/v1/audio/voices").json() == {"voices": []}
    r = httpx.post(f"{url}/v1/audio/speech", json={"input": "hello"})
    assert r.status_code == 503 and "no text-to-speech voice" in r.json()["error"]["message"]
    monkeypatch.setattr(reply, "_voices", None)


def test_subtitle_formats_pinned():
    segments = [Segment(0.0, 1.25, "hello"), Segment(61.5, 3723.004, "world")]
    assert to_srt(segments) == ("1\n00:00:00,000 --> 00:00:01,250\nhello\n\n"
                                "2\n00:01:01,500 --> 01:02:03,004\nworld\n")
    assert to_vtt(segments) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nhello\n\n"
                                "00:01:01.500 --> 01:02:03.004\nworld\n")


def test_vad_segments_real_speech(shared_data):
    wave = load_audio(shared_data / "whisper_jfk" / "jfk.flac", 16000)
    spans = speech_spans(wave, 16000)
    assert len(spans) >= 2  # JFK pauses between phrases
    assert all(0 <= a < b <= len(wave) for a, b in spans) and spans == sorted(spans)
    assert speech_spans(tone(1.0), 16000) == [(0, 16000)]  # no speech found: the whole clip


def test_cli_serve_flags_are_config_fields(monkeypatch):
    from speechllm import cli

    calls = {}
    monkeypatch.setattr("speechllm.serve.serve", lambda model, **kw: calls.update(model=model, **kw))
    monkeypatch.setenv("SPEECHLLM_API_KEY", "from-env")
    assert cli.main(["serve", "--model", "cascade", "--port", "0", "--max-batch-size", "1", "--no-tts"]) == 0
    assert calls["model"] == "cascade" and calls["port"] == 0 and calls["max_batch_size"] == 1
    assert calls["tts"] is False and calls["api_key"] == "from-env" and calls["host"] == "127.0.0.1"


@pytest.mark.slow
def test_whisper_tiny_en_over_the_api(shared_data):
    """The bundled Whisper through the server: verbose_json segments on real speech, streaming."""
    with BackgroundServer(create_app(ServeConfig(model="whisper-tiny.en"))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with open(shared_data / "whisper_jfk" / "jfk.flac", "rb") as f:
            verbose = client.audio.transcriptions.create(model="whisper-tiny.en", file=f,
                                                         response_format="verbose_json")
        assert "what your country can do for you" in verbose.text.lower()
        assert len(verbose.segments) >= 2 and verbose.segments[-1].end <= verbose.duration
        data = (shared_data / "whisper_jfk" / "jfk.flac").read_bytes()
        chunks = client.chat.completions.create(model="whisper-tiny.en", messages=audio_message(data, fmt="flac"),
                                                stream=True)
        assert "country" in "".join(c.choices[0].delta.content or "" for c in chunks).lower()


def test_load_benchmark_smoke(url):
    """benchmarks/serve_load.py's load loop and table, for a moment, against the test server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import serve_load
    finally:
        sys.path.pop(0)
    row = serve_load.load(url, [CLIP], [1.5], clients=2, seconds=0.5, model=NAME)
    assert row["non_2xx"] == 0 and row["ok"] >= 2 and row["requests_per_s"] > 0 and row["p50_ms"] > 0
    report = {"model": NAME, "clients": 2, "seconds_per_mode": 0.5, "max_new_tokens": TOKENS, "clips": "1 tone",
              "machine": "test", "date": "today", "results": {"no batching": {**row, "mean_batch": 1.0,
                                                                              "peak_rss_mib": 1, "speedup": 1.0}}}
    assert "| no batching | " in serve_load.markdown(report)
