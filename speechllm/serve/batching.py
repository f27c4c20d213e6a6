"""Dynamic batching: requests that arrive together share one ``model.generate`` call.

One worker thread owns the model.  Requests wait in a bounded queue; the worker takes the
oldest, waits up to ``wait_s`` for more with the same decoding options, and runs them as one
batch of at most ``max_batch_size`` clips (the scheme of TorchServe's and Triton's dynamic
batchers); one request with more clips (a long transcription's pieces) runs in several.
Requests batch by their whole :class:`DecodeOptions`: all transcriptions share the model's
recommended ones (beam search included), so they batch together.  A full queue raises
:class:`Overloaded` at once, so overload is answered quickly instead of piling up.  Each job has
a deadline; expired or cancelled jobs are skipped, and a batch whose jobs have all gone stops
generating (a streamer that raises ends HF ``generate``; beam search, which takes no streamer,
stops between forwards).

A streamed job runs alone (transformers' text streamers take batch 1) and sends its text
pieces to an asyncio queue as events ``("delta", text)`` then ``("done", full_text)`` or
``("error", exception)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np
from transformers.generation.streamers import BaseStreamer, TextStreamer

from speechllm.decoding import DecodeOptions

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 and let the client retry."""


class _Aborted(Exception):
    """Raised from a streamer to stop ``generate`` when nobody waits for the answer any more."""


@dataclass(eq=False)
class Job:
    """One request: ``waves`` are mono clips at the model's rate, answered in one batch."""

    waves: list[np.ndarray]
    instructions: list[str | None]
    options: DecodeOptions
    deadline: float  # time.monotonic() after which nobody wants the answer
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    events: asyncio.Queue | None = None  # set for a streamed job
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def key(self) -> tuple:
        return dataclasses.astuple(self.options)

    def gone(self) -> bool:
        return self.future.cancelled() or time.monotonic() > self.deadline

    def emit(self, kind: str, value: Any) -> None:
        if self.loop is not None and self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class _StreamSink(TextStreamer):
    """Text pieces of a batch-1 generation to the job's event queue; aborts when the job is gone."""

    def __init__(self, tokenizer, job: Job):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.job, self.sent = job, False

    def put(self, value) -> None:
        if self.job.gone():
            raise _Aborted
        if value.dim() > 1 and value.shape[0] > 1:  # a clip split into windows: no deltas, text at the end
            return
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.sent = True
            self.job.emit("delta", text)


class _CancelWatch(BaseStreamer):
    """Stops a batch's generation once every job in it has timed out or been cancelled."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def put(self, value) -> None:
        if all(job.gone() for job in self.jobs):
            raise _Aborted

    def end(self) -> None:
        pass


def _tokenizer_of(model) -> Any:
    """The tokenizer that decodes ``model.generate``'s tokens (part of the SpeechModel protocol)."""
    return getattr(model, "tokenizer", None)


class Batcher:
    def __init__(self, model, max_batch_size: int = 8, wait_s: float = 0.01, max_queue: int = 32):
        self.model = model
        self.max_batch_size, self.wait_s = max(1, max_batch_size), max(0.0, wait_s)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._tokenizer = _tokenizer_of(model)
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.clips_run = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="speechllm-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)  # waits while full; the worker keeps draining
            except queue.Full:
                log.warning("batcher queue still full at shutdown; leaving the daemon worker behind")
            self._thread.join(timeout)
            self._thread = None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # ---- the async side -------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests already queued") from None
        return job

    async def generate(self, waves: list[np.ndarray], instructions: list[str | None], options: DecodeOptions,
                       timeout: float) -> list[str]:
        """Answers for ``waves``; raises Overloaded, TimeoutError, or what the model raised."""
        job = self.submit(Job(list(waves), list(instructions), options, time.monotonic() + timeout))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout)
        finally:
            job.future.cancel()  # no-op once done; otherwise the worker skips or aborts it

    def open_stream(self, wave: np.ndarray, instruction: str | None, options: DecodeOptions,
                    timeout: float) -> Job:
        """Queue one clip for streaming (raises Overloaded now, before any response starts);
        read its events with :meth:`events`.  Call from the event loop."""
        job = Job([wave], [instruction], options, time.monotonic() + timeout, events=asyncio.Queue(),
                  loop=asyncio.get_running_loop())
        return self.submit(job)

    async def events(self, job: Job) -> AsyncIterator[tuple[str, Any]]:
        """``("delta", text)``... then ``("done", text)`` or ``("error", exc)``; TimeoutError past the deadline."""
        try:
            while True:
                left = job.deadline - time.monotonic()
                kind, value = await asyncio.wait_for(job.events.get(), max(left, 0.001))
                yield kind, value
                if kind != "delta":
                    return
        finally:
            job.future.cancel()  # client gone or timed out: generation stops at its next token

    # ---- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        pending: deque[Job] = deque()
        while True:
            if not pending:
                job = self._queue.get()
                if job is None:
                    return
                pending.append(job)
            self._gather(pending)
            if pending and pending[-1] is None:
                pending.pop()
                for job in pending:
                    self._fail(job, Overloaded("server is shutting down"))
                return
            self._execute(self._take_batch(pending))

    def _gather(self, pending: deque) -> None:
        """Wait up to ``wait_s`` for jobs that can join the batch pending[0] starts."""
        if pending[0].events is not None:
            return  # a streamed job runs alone
        end = time.monotonic() + self.wait_s
        key = pending[0].key
        while sum(len(j.waves) for j in pending if j.key == key and j.events is None) < self.max_batch_size:
            left = end - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            pending.append(job)
            if job is None:
                return

    def _take_batch(self, pending: deque) -> list[Job]:
        first = pending.popleft()
        batch, size = [first], len(first.waves)
        if first.events is not None:
            return batch
        for job in list(pending):
            if job.key == first.key and job.events is None and size + len(job.waves) <= self.max_batch_size:
                pending.remove(job)
                batch.append(job)
                size += len(job.waves)
        return batch

    def _execute(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.gone()]
        for job in batch:
            if job not in live:
                self._fail(job, TimeoutError("timed out in the queue"))
        if not live:
            return
        options = live[0].options
        waves = [w for job in live for w in job.waves]
        instructions = [ins for job in live for ins in job.instructions]
        streamed = live[0].events is not None
        sink = _StreamSink(self._tokenizer, live[0]) if streamed and self._tokenizer is not None else None
        streamer = sink if streamed else (_CancelWatch(live) if options.num_beams == 1 else None)
        try:
            texts = self._generate(waves, instructions, options, streamer, live)
        except _Aborted:
            for job in live:
                self._fail(job, TimeoutError("cancelled or timed out while generating"))
            return
        except Exception as err:  # the model failed on this input; the server keeps going
            log.exception("generate failed on a batch of %d clip(s)", len(waves))
            for job in live:
                self._fail(job, err)
            return
        self.batches_run += -(-len(waves) // self.max_batch_size)  # forwards run
        self.clips_run += len(waves)
        for job in live:
            answers, texts = texts[: len(job.waves)], texts[len(job.waves):]
            if job.events is not None:
                if sink is None or not sink.sent:
                    job.emit("delta", answers[0])
                job.emit("done", answers[0])
            _resolve(job.future, answers)

    def _generate(self, waves, instructions, options, streamer, jobs: list[Job]) -> list[str]:
        """Answers in forwards of at most ``max_batch_size`` clips: one job, a long clip's pieces, may
        bring more.  Beam search gets no streamer (transformers refuses one), so ``jobs`` that are
        all gone stop it between forwards only."""
        if options.num_beams > 1:
            streamer = None
        texts: list[str] = []
        for start in range(0, len(waves), self.max_batch_size):
            if start and all(job.gone() for job in jobs):
                raise _Aborted
            end = start + self.max_batch_size
            texts += self.model.generate(waves[start:end], instructions[start:end], options, streamer=streamer)
        return texts

    def _fail(self, job: Job, err: Exception) -> None:
        job.emit("error", err)
        if not job.future.done():
            try:
                job.future.set_exception(err)
            except concurrent.futures.InvalidStateError:
                pass


def _resolve(future: concurrent.futures.Future, value) -> None:
    if not future.done():
        try:
            future.set_result(value)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            pass
