"""Training data: examples from lhotse manifests, duration bucketing, augmentation, and an
on-disk cache of frozen-encoder outputs.

* Batches are formed by total audio duration, not by count (bucketing: similar lengths
  together, little padding), in an order fixed by (seed, epoch) so a resumed run sees
  exactly the batches it would have seen.
* Augmentation is :class:`speechllm.data.augment.Augmenter`, keyed by (epoch, example id).
* With a frozen encoder (no encoder LoRA, no waveform-level noise/gain), its output is
  computed once per (clip, speed factor) and stored in safetensors shards; each step then
  costs only connector + LLM (FACTS.md: the encoder and feature extraction are ~10% of a step
  on the real clip length, far more for a SLAM-style 30 s padded window).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from speechllm.data.augment import speed_perturb
from speechllm.data.manifest import load_cut_audio
from speechllm.train.config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class Example:
    id: str
    duration: float
    answer: str
    instruction: str | None
    cut: Any  # the lhotse Cut: knows where its audio is


def read_examples(paths: Sequence[str], config: DataConfig) -> list[Example]:
    """Read CutSet manifests (:func:`speechllm.data.manifest.load_manifest`); the target is the
    custom ``answer`` field (instruction tasks) or else the transcript."""
    from speechllm.data.manifest import load_manifest, meta_of

    out, skipped = [], 0
    for path in paths:
        for cut in load_manifest(path):
            meta = meta_of(cut)
            answer = meta.get("answer") or meta["text"] or ""
            if not answer or not (config.min_seconds <= cut.duration <= config.max_seconds):
                skipped += 1
                continue
            out.append(Example(cut.id, float(cut.duration), answer.strip(), meta.get("instruction"), cut))
    if skipped:
        log.info("skipped %d cuts (no text or duration outside [%s, %s] s)", skipped, config.min_seconds,
                 config.max_seconds)
    return out


def split_dev(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """Hold out a stable share of examples by id hash (independent of order and seed)."""
    def held(e: Example) -> bool:
        return int(hashlib.sha1(e.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction

    return [e for e in examples if not held(e)], [e for e in examples if held(e)]


def make_batches(durations: Sequence[float], max_seconds: float, max_size: int, seed: int,
                 epoch: int) -> list[list[int]]:
    """Bucket indices into batches of <= max_seconds total (padded length x count) and
    <= max_size items; batch order shuffled by (seed, epoch)."""
    rng = random.Random(seed * 100003 + epoch)
    order = sorted(range(len(durations)), key=lambda i: (durations[i], rng.random()))
    batches, current, longest = [], [], 0.0
    for i in order:
        longest_if = max(longest, durations[i])
        if current and (longest_if * (len(current) + 1) > max_seconds or len(current) >= max_size):
            batches.append(current)
            current, longest_if = [], durations[i]
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def load_example_audio(example: Example, rate: int = 16000) -> np.ndarray:
    return load_cut_audio(example.cut, rate)


class EncoderCache:
    """Frozen-encoder outputs on disk, fp16, in safetensors shards with a JSON index.

    The folder is keyed by a hash of the encoder config, so a changed encoder never reads
    a stale cache.  Shards are written whole and renamed into place; the index is updated
    after, so an interrupted build loses at most one shard's work.
    """

    def __init__(self, root: Path, encoder_key: str, shard_size: int = 512, writer: str = "0"):
        self.dir = Path(root) / hashlib.sha1(encoder_key.encode()).hexdigest()[:12]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "encoder.txt").write_text(encoder_key)
        self.shard_size = shard_size
        self.writer = writer  # each data-parallel rank writes its own shards and index file
        self.index: dict[str, str] = {}
        for index_file in sorted(self.dir.glob("index-*.json")):
            self.index.update(json.loads(index_file.read_text()))
        self._own = {k: v for k, v in self.index.items() if v.startswith(f"shard-{writer}-")}
        self._handles: dict[str, Any] = {}

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.index]

    def build(self, items: list[tuple[str, Any]], encode, batch_size: int = 8, progress: bool = True,
              workers: int = 0) -> None:
        """items: (key, make_waveform) pairs still missing; encode: an AudioEncoder, or any function
        waves -> (hidden, lengths).

        With ``workers > 0`` and an AudioEncoder, audio loading and the encoder's CPU front end
        (``preparer()``: log-mel, normalisation) run in a spawned process pool (the makers must
        then be picklable) while this process runs the forward pass on the encoder's device.
        """
        from tqdm import tqdm

        chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        bar = tqdm(total=len(items), desc="encoder cache", disable=not progress, unit="clip")
        pending: dict[str, torch.Tensor] = {}
        for chunk, (hidden, lengths) in zip(chunks, _encoded_chunks(chunks, encode, workers)):
            for (key, _), h, n in zip(chunk, hidden, lengths):
                pending[key] = h[: int(n)].to(torch.float16).cpu().contiguous()
            if len(pending) >= self.shard_size:
                self._flush(pending)
                pending = {}
            bar.update(len(chunk))
        if pending:
            self._flush(pending)
        bar.close()

    def _flush(self, tensors: dict[str, torch.Tensor]) -> None:
        number = len(list(self.dir.glob(f"shard-{self.writer}-*.safetensors")))  # never reuse a name
        name = f"shard-{self.writer}-{number:05d}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file(tensors, str(tmp))
        tmp.rename(self.dir / name)
        self._own.update({k: name for k in tensors})
        self.index.update({k: name for k in tensors})
        index_tmp = self.dir / f".index-{self.writer}.json.tmp"
        index_tmp.write_text(json.dumps(self._own))
        index_tmp.replace(self.dir / f"index-{self.writer}.json")

    def get(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> padded (B, T, D) float32 hidden states and (B,) lengths."""
        tensors = []
        for key in keys:
            shard = self.index[key]
            if shard not in self._handles:
                self._handles[shard] = safe_open(str(self.dir / shard), framework="pt")
            tensors.append(self._handles[shard].get_tensor(key).float())
        lengths = torch.tensor([t.shape[0] for t in tensors])
        out = torch.zeros(len(tensors), int(lengths.max()), tensors[0].shape[1])
        for i, t in enumerate(tensors):
            out[i, : t.shape[0]] = t
        return out, lengths


def _encoded_chunks(chunks: list[list[tuple[str, Any]]], encode, workers: int) -> Iterator[tuple]:
    """(hidden, lengths) per chunk, in order; front end in a pool when asked and possible."""
    preparer = getattr(encode, "preparer", None)
    if workers <= 0 or preparer is None or len(chunks) < 2:
        encode_waves = getattr(encode, "encode", encode)  # an AudioEncoder's prepare + forward
        for chunk in chunks:
            with torch.no_grad():
                yield encode_waves([make() for _, make in chunk])
        return
    import multiprocessing

    device = next(encode.parameters()).device
    # spawn: the parent may hold CUDA or OpenMP state that a forked child must not inherit
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_front_end,
                                                   initargs=(preparer(),)) as pool:
        for features, lengths in pool.imap(_front_end, [[make for _, make in c] for c in chunks], chunksize=2):
            with torch.no_grad():
                yield encode(torch.from_numpy(features).to(device), torch.from_numpy(lengths).to(device))


_PREPARE = None


def _init_front_end(prepare) -> None:
    global _PREPARE
    torch.set_num_threads(1)
    _PREPARE = prepare


def _front_end(makers: list) -> tuple[np.ndarray, np.ndarray]:
    features, lengths = _PREPARE([make() for make in makers])
    return features.numpy(), lengths.numpy()


class WaveMaker:
    """A picklable ``make_waveform``: the example's audio at 16 kHz, speed-perturbed by ``speed``."""

    def __init__(self, example: Example, speed: float = 1.0):
        self.example, self.speed = example, speed

    def __call__(self) -> np.ndarray:
        return speed_perturb(load_example_audio(self.example), self.speed)


def cache_key(example_id: str, speed: float) -> str:
    return example_id if speed == 1.0 else f"{example_id}@sp{speed}"
