"""The FastAPI app: OpenAI's audio and chat routes over any ``SpeechModel``, plus the web demo.

    GET  /                          the demo page (static/, shipped in the package; no CDN)
    GET  /health                    liveness and queue figures (no key needed)
    GET  /v1/models                 the one model served
    POST /v1/audio/transcriptions   multipart: file, model, prompt, response_format, temperature, stream
    POST /v1/audio/translations     the same, into English
    POST /v1/chat/completions       messages with ``input_audio`` parts; ``stream: true`` gives SSE
    GET  /v1/audio/voices           TTS voices (empty when speechllm.tts has none)
    POST /v1/audio/speech           text -> wav, when a voice is installed

Every model call goes through the :class:`~speechllm.serve.batching.Batcher`; every ``/v1``
request through the :class:`~speechllm.serve.guard.Guard` first.

Transcriptions decode as ``speechllm.transcribe`` does: with the model's recommended options (a
checkpoint's ``decode:``, e.g. beam 4 with its CTC head; temperature > 0 samples instead), and in
json/text a clip longer than ``max_segment_seconds`` is cut at its pauses (speechllm.segment) and the
pieces' transcripts joined; srt/vtt/verbose_json decode each Silero-VAD span with the same options, a span
longer than ``max_segment_seconds`` cut the same way into segments of their own.  ``stream: true``
decodes greedily, token by token, whole clips: beam search cannot stream.
Translations and chat completions with text are instructions: greedy (or sampled), whole clips; a chat
completion with audio only asks for the transcription and is decoded as one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from speechllm.audio import AudioLimits
from speechllm.segment import join_pieces, piece_bounds, split_long
from speechllm.serve import reply
from speechllm.serve.batching import Batcher, Job, Overloaded
from speechllm.serve.config import ServeConfig
from speechllm.serve.errors import APIError, error_body, install_error_handlers
from speechllm.serve.guard import Guard
from speechllm.serve.inputs import (TRANSLATE_INSTRUCTION, chat_audio, decode_options, decode_upload,
                                    transcription_instruction)
from speechllm.serve.schemas import (ChatRequest, ResponseFormat, SpeechRequest, chat_chunk, chat_completion,
                                     new_id, verbose_transcription)
from speechllm.serve.segments import Segment, speech_spans, to_srt, to_vtt

log = logging.getLogger(__name__)
STATIC = resources.files("speechllm.serve") / "static"
MULTIPART_SLACK = 1 << 20  # form fields and boundaries around the file


@dataclass
class Server:
    """What the routes share: the config, the model, its id and the batcher."""

    config: ServeConfig
    model: Any
    name: str
    batcher: Batcher
    started: float = 0.0

    @property
    def rate(self) -> int:
        """The model's input rate."""
        return int(self.model.sampling_rate)

    @property
    def limits(self) -> AudioLimits:
        return AudioLimits(max_seconds=self.config.max_audio_seconds, max_bytes=self.config.max_upload_bytes)

    def check_model(self, model: str) -> None:
        if model != self.name:
            raise APIError(404, f"model {model!r} is not served here; this server serves {self.name!r}",
                           param="model", code="model_not_found")

    def timeout(self, waves: list[np.ndarray]) -> float:
        """A request's deadline in seconds: ``request_timeout_s`` plus ``timeout_per_audio_s`` per second
        of its audio, so that a long upload (decoded in many pieces, beam search) is not cut off by a
        limit sized for short clips."""
        seconds = sum(len(w) for w in waves) / self.rate
        return self.config.request_timeout_s + self.config.timeout_per_audio_s * seconds

    async def generate(self, waves: list[np.ndarray], instructions: list[str | None], options) -> list[str]:
        timeout = self.timeout(waves)
        try:
            return await self.batcher.generate(waves, instructions, options, timeout)
        except BaseException as err:
            raise _as_api_error(err, timeout) from None

    def open_stream(self, wave: np.ndarray, instruction: str | None, options) -> Job:
        timeout = self.timeout([wave])
        try:
            return self.batcher.open_stream(wave, instruction, options, timeout)
        except Overloaded as err:
            raise _as_api_error(err, timeout) from None


def _as_api_error(err: BaseException, timeout: float) -> BaseException:
    if isinstance(err, APIError):
        return err
    if isinstance(err, Overloaded):
        return APIError(503, f"server overloaded ({err}); retry shortly", code="overloaded",
                        headers={"Retry-After": "1"})
    if isinstance(err, TimeoutError):
        return APIError(504, f"request timed out after {timeout:g} s", code="timeout")
    if isinstance(err, Exception):
        log.error("model failed: %r", err)
        return APIError(500, "the model failed on this input", code="model_error")
    return err  # CancelledError and friends pass through


def create_app(config: ServeConfig | None = None, model: Any = None) -> FastAPI:
    """The app for ``config``; ``model`` (an object) skips loading ``config.model``."""
    from speechllm.api import load_model

    config = config or ServeConfig()
    model = load_model(model if model is not None else config.model)
    name = config.model_name or getattr(model, "name", None) or str(config.model)
    batcher = Batcher(model, config.max_batch_size, config.batch_wait_ms / 1000, config.max_queue)
    server = Server(config, model, name, batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        server.started = time.time()
        yield
        batcher.stop()

    app = FastAPI(title="speechllm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    install_error_handlers(app)
    max_body = config.max_upload_bytes * 4 // 3 + MULTIPART_SLACK  # base64 in JSON is 4/3 the bytes
    app.add_middleware(Guard, api_key=config.api_key, max_body_bytes=max_body,
                       max_concurrent=config.max_concurrent)
    _add_routes(app, server)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _add_routes(app: FastAPI, server: Server) -> None:
    config = server.config

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": server.name, "queued": server.batcher.queued,
                "batches": server.batcher.batches_run, "clips": server.batcher.clips_run}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": int(server.started),
                                            "owned_by": "speechllm"}]}

    async def audio_task(task: str, file: UploadFile, model: str, prompt: str | None, fmt: ResponseFormat,
                         temperature: float, language: str | None, stream: bool) -> Response:
        server.check_model(model)
        if stream and fmt not in ("json", "text"):
            raise APIError(400, f"stream is only for response_format json or text, not {fmt}",
                           param="stream", code="invalid_value")
        data = await file.read(config.max_upload_bytes + 1)
        wave = await decode_upload(data, server.rate, server.limits,
                                   f"file {file.filename!r}" if file.filename else "file", "file")
        del data
        instruction = (TRANSLATE_INSTRUCTION if task == "translate"
                       else transcription_instruction(server.model, prompt))
        # transcription decodes as the model recommends; a streamed answer stays greedy, token by token
        # (transformers' streamers refuse beam search), and translation is an instruction like chat's
        options = decode_options(config.max_new_tokens, temperature, model=server.model,
                                 transcription=task == "transcribe" and not stream)
        if stream:
            return _sse(_transcript_events(server.open_stream(wave, instruction, options), server))
        if fmt in ("json", "text"):
            text = await _answer_in_pieces(server, wave, instruction, options)
            return PlainTextResponse(text) if fmt == "text" else _json({"text": text})
        rate = server.rate
        spans = await run_in_threadpool(_segment_spans, wave, rate, options.max_segment_seconds)
        texts = await server.generate([wave[a:b] for a, b in spans], [instruction] * len(spans), options)
        segments = [Segment(a / rate, b / rate, t) for (a, b), t in zip(spans, texts)]
        if fmt == "srt":
            return PlainTextResponse(to_srt(segments))
        if fmt == "vtt":
            return PlainTextResponse(to_vtt(segments), media_type="text/vtt")
        return _json(verbose_transcription("translate" if task == "translate" else "transcribe",
                                           language or "unknown", len(wave) / rate, segments, temperature))

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form(...),
                             prompt: str | None = Form(None), response_format: ResponseFormat = Form("json"),
                             temperature: float = Form(0.0, ge=0, le=1), language: str | None = Form(None),
                             stream: bool = Form(False)) -> Response:
        return await audio_task("transcribe", file, model, prompt, response_format, temperature, language, stream)

    @app.post("/v1/audio/translations")
    async def translations(file: UploadFile = File(...), model: str = Form(...),
                           prompt: str | None = Form(None), response_format: ResponseFormat = Form("json"),
                           temperature: float = Form(0.0, ge=0, le=1), stream: bool = Form(False)) -> Response:
        return await audio_task("translate", file, model, prompt, response_format, temperature, "en", stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> Response:
        server.check_model(request.model)
        wave, instruction = await chat_audio(request, server.rate, server.limits)
        # audio without text asks for its transcription (as speechllm.generate reads None): decoded as one
        options = decode_options(config.max_new_tokens, request.temperature, request.top_p,
                                 request.max_completion_tokens or request.max_tokens, model=server.model,
                                 transcription=instruction is None and not request.stream)
        if request.stream:
            return _sse(_chat_events(server.open_stream(wave, instruction, options), server))
        return _json(chat_completion(server.name, await _answer_in_pieces(server, wave, instruction, options)))

    @app.get("/v1/audio/voices")
    async def voices() -> dict:
        return {"voices": await run_in_threadpool(reply.voices) if config.tts else []}

    @app.post("/v1/audio/speech")
    async def speech(request: SpeechRequest) -> Response:
        if not config.tts:
            raise APIError(503, "text-to-speech is turned off on this server", code="tts_unavailable")
        wav = await run_in_threadpool(reply.synthesize_wav, request.input, request.voice)
        return Response(wav, media_type="audio/wav")


def _segment_spans(wave: np.ndarray, rate: int, max_seconds: float) -> list[tuple[int, int]]:
    """Subtitle segments (sample bounds): the Silero-VAD speech regions, a region longer than
    ``max_seconds`` (when > 0) cut at its pauses into segments of their own."""
    spans = speech_spans(wave, rate)
    if max_seconds <= 0:
        return spans
    return [(a + start, a + end) for a, b in spans for start, end in piece_bounds(wave[a:b], rate, max_seconds)]


async def _answer_in_pieces(server: Server, wave: np.ndarray, instruction: str | None, options) -> str:
    """The answer for one clip; past ``options.max_segment_seconds`` (set for transcription only) the
    clip is cut at its pauses and its pieces, one request to the batcher, are joined as
    ``api.transcribe_in_pieces`` joins them."""
    if options.max_segment_seconds <= 0:
        return (await server.generate([wave], [instruction], options))[0]
    pieces = await run_in_threadpool(split_long, wave, server.rate, options.max_segment_seconds)
    return join_pieces(await server.generate(pieces, [instruction] * len(pieces), options))


def _json(body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), media_type="application/json")


def _sse(events: AsyncIterator[dict | str]) -> StreamingResponse:
    async def frames() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)}\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream_errors(job: Job, server: Server) -> AsyncIterator[tuple[str, Any]]:
    """The job's events; a failure or timeout becomes one ``("error", body)`` event."""
    timeout = server.timeout(job.waves)
    try:
        async for kind, value in server.batcher.events(job):
            if kind == "error":
                err = _as_api_error(value, timeout)
                yield "error", error_body(err.status_code, err.message, code=err.code)
                return
            yield kind, value
    except TimeoutError:
        yield "error", error_body(504, f"request timed out after {timeout:g} s", code="timeout")


async def _chat_events(job: Job, server: Server) -> AsyncIterator[dict | str]:
    chunk_id = new_id("chatcmpl")
    yield chat_chunk(chunk_id, server.name, {"role": "assistant", "content": ""})
    async for kind, value in _stream_errors(job, server):
        if kind == "delta":
            yield chat_chunk(chunk_id, server.name, {"content": value})
        elif kind == "done":
            yield chat_chunk(chunk_id, server.name, {}, finish="stop")
        else:
            yield value
    yield "[DONE]"


async def _transcript_events(job: Job, server: Server) -> AsyncIterator[dict]:
    async for kind, value in _stream_errors(job, server):
        if kind == "delta":
            yield {"type": "transcript.text.delta", "delta": value}
        elif kind == "done":
            yield {"type": "transcript.text.done", "text": value}
        else:
            yield value
