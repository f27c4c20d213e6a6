"""The training loop: connector-only (SLAM-ASR), + LoRA, + encoder, or full fine-tuning,
single process or data-parallel under ``torchrun`` (gloo on CPU).

* Loss is the summed answer-token cross-entropy divided by the token count of the whole
  optimizer step (all micro-batches, all ranks), and gradients are summed across ranks, so a
  step's update is the same however the global batch is split.
* State (trainable weights, optimizer, scheduler, RNG, data position) is written atomically
  to ``out_dir/last`` every ``save_every`` steps; ``resume=True`` continues exactly there.
* ``out_dir/best`` keeps the checkpoint with the lowest dev WER (dev loss when no decode).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from speechllm.checkpoint import write_checkpoint
from speechllm.config import save_yaml, to_dict
from speechllm.ctc import char_ids
from speechllm.model import SpeechLLM
from speechllm.paths import atomic_directory
from speechllm.registry import ENCODERS
from speechllm.train.config import Schedule, TrainConfig
from speechllm.data.augment import Augmenter
from speechllm.train.fsdp import (all_reduce_replicated_grads, clip_grad_norm, full_saved_state, load_full_state,
                                  load_optimizer_state, optimizer_state, shard_model)
from speechllm.train.data import (EncoderCache, Example, WaveMaker, cache_key, load_example_audio, make_batches,
                                  read_examples, split_dev)

log = logging.getLogger(__name__)
STATE_FILE = "train_state.pt"


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = math.inf
    max_steps: int = 0  # 0: optim.max_steps; set once by run.time_budget_s calibration


def lr_factor(step: int, cfg, max_steps: int | None = None) -> float:
    """Linear warmup, then cosine / linear decay to ``min_lr_ratio`` or constant."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == Schedule.constant:
        return 1.0
    max_steps = max_steps or cfg.max_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == Schedule.cosine else 1 - frac
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


class Trainer:
    def __init__(self, config: TrainConfig, cache_only: bool = False):
        self.cfg = config
        self.out = Path(config.run.out_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(config.run.device, int(os.environ.get("LOCAL_RANK", "0")))
        if self.world > 1 and not dist.is_initialized():
            # gloo reduces CPU tensors only; CUDA gradients need nccl
            dist.init_process_group(config.run.ddp_backend if self.device.type == "cpu" else "nccl")
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        _seed_everything(config.run.seed)
        self.augmenter = Augmenter(config.data.augment)
        self.progress = Progress()
        if config.run.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"run.parallel must be 'ddp' or 'fsdp', not {config.run.parallel!r}")
        self.fsdp = config.run.parallel == "fsdp" and self.world > 1
        if cache_only:  # the encoder alone: no LLM, no optimizer
            self.model = None
            self.train_set, self.dev_set = self._read_data()
            self.cache = self._make_cache(ENCODERS.build(config.model.encoder).to(self.device))
            return
        self.model = SpeechLLM(config.model).to(self.device)
        if config.run.init_from:
            self._init_from(Path(config.run.init_from))
        self.train_set, self.dev_set = self._read_data()
        self.cache = self._make_cache(self.model.encoder)  # before sharding: ranks encode different clips
        if self.fsdp:
            log.info("FSDP: %d transformer blocks sharded over %d processes",
                     shard_model(self.model, self.device, self.world), self.world)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                           foreach=False if self.fsdp else None)  # sharded and plain tensors mix
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, o, self.progress.max_steps))

    def _init_from(self, folder: Path) -> None:
        """Start from a checkpoint's saved weights (a warm start; optimizer and schedule begin anew)."""
        from speechllm.checkpoint import load_saved_weights

        try:
            kept = load_saved_weights(self.model, folder, new_lora_ok=self.cfg.run.init_new_lora, new_head_ok=True)
        except ValueError as err:
            raise ValueError(f"run.init_from={folder}: weights that do not fit this model's config ({err})") from None
        log.info("initialised the saved weights from %s%s", folder,
                 f" ({len(kept)} new LoRA / CTC-head weights start from their initialisation)" if kept else "")

    # ---- data ---------------------------------------------------------------------------
    def _read_data(self) -> tuple[list[Example], list[Example]]:
        d = self.cfg.data
        train = read_examples(d.train, d)
        dev = read_examples(d.dev, d) if d.dev else []
        if not dev and d.dev_fraction > 0:
            train, dev = split_dev(train, d.dev_fraction)
        dev = list({e.id: e for e in dev}.values())  # a manifest listed twice (oversampling) is scored once
        if not train:
            raise ValueError(f"no usable training examples in {d.train}")
        log.info("train: %d examples (%.2f h), dev: %d", len(train), sum(e.duration for e in train) / 3600, len(dev))
        return train, dev[: d.dev_max_items]

    def _make_cache(self, encoder) -> EncoderCache | None:
        m, d = self.cfg.model, self.cfg.data
        if not d.cache_encoder or m.trainable.encoder or m.encoder_lora is not None or self.augmenter.waveform_level:
            return None
        key = json.dumps(to_dict(m.encoder), sort_keys=True)
        root = Path(d.cache_dir) if d.cache_dir else self.out / "encoder_cache"
        cache = EncoderCache(root, key, writer=str(self.rank))
        todo = [(cache_key(e.id, s), e, s) for e in self.train_set for s in d.augment.speeds]
        todo += [(cache_key(e.id, 1.0), e, 1.0) for e in self.dev_set]
        todo = [t for t in {t[0]: t for t in todo}.values() if t[0] not in cache.index]  # a repeated manifest: once
        mine = todo[self.rank :: self.world]  # ranks share the work; everyone reads the result
        if mine:
            cache.build([(k, WaveMaker(e, s)) for k, e, s in mine], encoder.eval(), progress=self.rank == 0,
                        workers=self.cfg.run.cache_workers, batch_size=32 if self.device.type == "cuda" else 8)
        if self.world > 1:
            dist.barrier()  # then re-read every rank's index
            cache = EncoderCache(root, key, writer=str(self.rank))
        return cache

    def make_batch(self, examples: list[Example], epoch: int, train: bool) -> dict[str, Any]:
        keys = [f"{epoch}:{e.id}" for e in examples]  # augmentation repeats exactly on resume
        speeds = [self.augmenter.draw(k).speed if train else 1.0 for k in keys]
        model = self.model
        batch = model.tokenize_prompts(len(examples), [e.instruction for e in examples])
        eos = model.llm.tokenizer.eos_token_id
        batch["answer_ids"] = [model.prompt.answer_ids(e.answer, eos) for e in examples]
        batch["answer_texts"] = [e.answer for e in examples]
        if self.cache is not None:
            batch["encoder_hidden"], batch["encoder_lengths"] = self.cache.get(
                [cache_key(e.id, s) for e, s in zip(examples, speeds)])
            return batch
        waves = [self.augmenter(load_example_audio(e), k) if train else load_example_audio(e)
                 for e, k in zip(examples, keys)]
        batch["features"], batch["sample_lengths"] = model.encoder.prepare(waves)
        return batch

    # ---- state -------------------------------------------------------------------------------
    def save(self, name: str, with_state: bool) -> None:
        """Rank 0 writes; under FSDP every rank must call this (the weights are gathered first)."""
        weights = optimizer = None
        if self.fsdp:
            weights = full_saved_state(self.model, keep=self.rank == 0)
            optimizer = optimizer_state(self.model, self.optimizer) if with_state else None
        if self.rank != 0:
            return
        with atomic_directory(self.out / name) as tmp:
            write_checkpoint(self.model, tmp, state=weights)
            if with_state:
                state = {"scheduler": self.scheduler.state_dict(), "progress": vars(self.progress), "rng": _rng_state()}
                if self.fsdp:
                    state["optimizer_by_name"] = optimizer  # full state keyed by parameter name
                else:
                    state["optimizer"] = self.optimizer.state_dict()
                torch.save(state, tmp / STATE_FILE)

    def resume(self) -> bool:
        from speechllm.checkpoint import load_saved_weights

        folder = self.out / "last"
        if not (folder / STATE_FILE).exists():
            log.warning("nothing to resume in %s; starting fresh", folder)
            return False
        state = torch.load(folder / STATE_FILE, weights_only=True)
        load_saved_weights(self.model, folder, copy=load_full_state if self.fsdp else None)
        if "optimizer_by_name" in state:  # written by an FSDP run: keyed by parameter name
            load_optimizer_state(self.model, self.optimizer, state["optimizer_by_name"])
        elif self.fsdp:
            raise ValueError(f"{folder}: saved by a run.parallel=ddp run; resume it with run.parallel=ddp")
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        _set_rng_state(state["rng"])
        log.info("resumed at step %d (epoch %d, batch %d)", self.progress.step, self.progress.epoch,
                 self.progress.batch_in_epoch)
        return True

    # ---- loop ---------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from tqdm import tqdm

        from speechllm.train.evaluate import dev_metrics

        cfg, p = self.cfg, self.progress
        self.out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, self.out / "train_config.yaml")
        logf = _Log(self.out) if self.rank == 0 else None
        bar = tqdm(total=self.max_steps, initial=p.step, disable=self.rank != 0, unit="step")
        durations = [e.duration for e in self.train_set]
        self.model.train()
        t_last, samples_since, losses = time.perf_counter(), 0, []
        t_start, start_step = t_last, p.step
        # time budget: fitted after calibrate_steps, then re-fitted after 2x, 4x, ... as many steps while in
        # the schedule's first half (a GPU's early steps are slow: allocator, kernel choice per new shape).
        # Only the process that starts the schedule fits it; a resumed run keeps the one it saved.
        fit_at, fitting = cfg.run.calibrate_steps, cfg.run.time_budget_s > 0 and not p.max_steps
        aside = 0.0  # seconds spent in evaluations and saves: not training time
        mark = (start_step, 0.0)  # (step, training seconds) the next fit measures its step time from
        pool = ThreadPoolExecutor(1) if cfg.run.prefetch else None
        ahead: tuple | None = None  # (epoch, batch position, future of the step's micro-batches)
        data_wait = 0.0
        while p.step < self.max_steps:
            batches = make_batches(durations, cfg.data.max_batch_seconds * self.world,
                                   cfg.data.max_batch_size * self.world, cfg.run.seed, p.epoch)
            while p.batch_in_epoch < len(batches) and p.step < self.max_steps:
                group = batches[p.batch_in_epoch : p.batch_in_epoch + cfg.optim.grad_accum]
                t_data = time.perf_counter()
                if ahead is not None and ahead[:2] == (p.epoch, p.batch_in_epoch):
                    micro = ahead[2].result()
                else:
                    micro = self._micro_batches(group, p.epoch)
                ahead = None
                nxt = p.batch_in_epoch + len(group)
                if pool is not None and nxt < len(batches) and p.step + 1 < self.max_steps:
                    ahead = (p.epoch, nxt, pool.submit(
                        self._micro_batches, batches[nxt : nxt + cfg.optim.grad_accum], p.epoch))
                data_wait += time.perf_counter() - t_data
                loss, samples = self._step(micro, sum(len(g) for g in group))
                p.batch_in_epoch += len(group)
                p.step += 1
                samples_since += samples
                losses.append(loss)
                bar.update(1)
                if p.step - start_step == cfg.run.calibrate_steps // 2:  # the first half warms up
                    mark = (p.step, time.perf_counter() - t_start - aside)
                if fitting and p.step - start_step == fit_at:
                    trained = time.perf_counter() - t_start - aside
                    self._fit_time_budget(trained, (trained - mark[1]) / (p.step - mark[0]), logf)
                    bar.total = self.max_steps
                    mark, fit_at = (p.step, trained), 2 * fit_at
                    fitting = 2 * p.step < self.max_steps
                if p.step % cfg.run.log_every == 0 or p.step == self.max_steps:
                    now = time.perf_counter()
                    # means over the steps since the last log line; "loss" is the weighted objective
                    mean_loss = sum(x["objective"] for x in losses) / len(losses)
                    row = {"step": p.step, "epoch": p.epoch, "loss": mean_loss, "lr": self.scheduler.get_last_lr()[0],
                           "samples_per_s": samples_since / (now - t_last),
                           "data_wait_share": data_wait / (now - t_last), "time": time.time()}
                    if self.model.ctc_head is not None:
                        row.update({f"{k}_loss": sum(x[k] for x in losses) / len(losses) for k in ("llm", "ctc")
                                    if k in losses[0]})
                    t_last, samples_since, losses, data_wait = now, 0, [], 0.0
                    bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{row['lr']:.2e}", sps=f"{row['samples_per_s']:.1f}")
                    _write(logf, row)
                due = p.step % cfg.run.eval_every == 0 or p.step == self.max_steps
                # other ranks would only repeat it, except under FSDP where each holds a shard of the model
                t_aside = time.perf_counter()
                if self.dev_set and due:
                    score = None
                    if self.rank == 0 or self.fsdp:
                        if ahead is not None:
                            ahead[2].exception()  # let the prefetch finish: the tokenizer is not shared across threads
                        metrics = dev_metrics(self, self.dev_set)
                        _write(logf, {"step": p.step, **metrics})
                        score = next(metrics[k] for k in ("dev_wer", "dev_loss", "dev_ctc_loss") if k in metrics)
                    if self.world > 1:  # rank 0's score decides for all (under FSDP all join save's gather)
                        shared = torch.tensor([float(score or 0.0)], dtype=torch.float64, device=self.device)
                        dist.broadcast(shared, 0)
                        score = float(shared)
                    if score < p.best_metric:
                        p.best_metric = score
                        self.save("best", with_state=False)
                    if self.rank == 0:
                        _plot(self.out)
                    self.model.train()
                if p.step % cfg.run.save_every == 0 or p.step == self.max_steps:
                    self.save("last", with_state=True)
                aside += time.perf_counter() - t_aside
            if p.batch_in_epoch >= len(batches):
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
        if logf:
            logf.close()
            _plot(self.out)
        return {"step": p.step, "best": p.best_metric}

    @property
    def max_steps(self) -> int:
        return self.progress.max_steps or self.cfg.optim.max_steps

    def _fit_time_budget(self, elapsed: float, per_step: float, logf) -> None:
        """Size the schedule so training ends within ``run.time_budget_s`` (wall time of the training
        steps from the first; evaluations and saves come on top) at ``per_step``, the step time of the
        latest window (the second half of the calibration steps, then the steps since the last fit).
        Saved with the state, so a resumed run keeps the same schedule."""
        fits = self.progress.step + int((self.cfg.run.time_budget_s - elapsed) / per_step)
        steps_total = max(self.progress.step + 1, min(self.cfg.optim.max_steps, fits))
        if self.world > 1:  # every rank must stop at the same step
            agreed = torch.tensor(steps_total, device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            steps_total = int(agreed)
        self.progress.max_steps = steps_total
        log.info("time budget %.0f s at %.3f s/step: training for %d steps", self.cfg.run.time_budget_s,
                 per_step, steps_total)
        _write(logf, {"step": self.progress.step, "time_budget_s": self.cfg.run.time_budget_s,
                      "seconds_per_step": per_step, "max_steps": steps_total})

    def _micro_batches(self, group: list[list[int]], epoch: int) -> list[dict[str, Any]]:
        """This rank's share of ``grad_accum`` global batches.  A rank may get nothing from a small
        batch; under FSDP it must still run the forward and backward passes (they gather the shards
        with the other ranks), so it runs one example of the batch with zero weight."""
        micro = []
        for b in group:
            idx = b[self.rank :: self.world]
            if idx:
                micro.append(self.make_batch([self.train_set[i] for i in idx], epoch, train=True))
            elif self.fsdp:
                micro.append({**self.make_batch([self.train_set[b[0]]], epoch, train=True), "weight": 0.0})
        return micro

    def loss_weights(self) -> tuple[float, float]:
        """(LLM, CTC) weights of the objective; CTC only for a model with a CTC head."""
        o = self.cfg.optim
        ctc = o.ctc_loss_weight if self.model.ctc_head is not None else 0.0
        if o.llm_loss_weight <= 0 and ctc <= 0:
            raise ValueError("optim.llm_loss_weight and optim.ctc_loss_weight leave nothing to train "
                             "(a CTC loss needs model.ctc_head)")
        return o.llm_loss_weight, ctc

    def _step(self, micro: list[dict[str, Any]], samples: int) -> tuple[dict[str, float], int]:
        """One optimizer step over this rank's micro-batches; returns the mean losses (LLM per
        token, CTC per character, and the weighted objective)."""
        w_llm, w_ctc = self.loss_weights()
        live = [m for m in micro if m.get("weight", 1.0)]
        counts = torch.tensor([float(sum(len(a) for m in live for a in m["answer_ids"])),
                               float(sum(len(char_ids(t)) for m in live for t in m["answer_texts"]))
                               if w_ctc else 0.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(counts)
        tokens, chars = counts[0].clamp(min=1), counts[1].clamp(min=1)
        sums = torch.zeros(2, dtype=torch.float64)
        for batch in micro:
            weight = batch.get("weight", 1.0)
            objective = 0.0
            if w_llm:
                loss_sum, _ = self.model.answer_loss(batch)
                objective = objective + w_llm * weight * loss_sum / tokens
                sums[0] += float(loss_sum.detach()) * weight
            if w_ctc:
                ctc_sum, _ = self.model.ctc_loss(batch)
                objective = objective + w_ctc * weight * ctc_sum / chars
                sums[1] += float(ctc_sum.detach()) * weight
            objective.backward()
        if self.world > 1:
            all_reduce_replicated_grads(self.params)  # sum, not mean: each rank divided by the global count
            sums = sums.to(self.device)
            dist.all_reduce(sums)
        if self.cfg.optim.clip_norm > 0:
            if self.fsdp:
                clip_grad_norm(self.params, self.cfg.optim.clip_norm)
            else:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        losses = {}
        if w_llm:
            losses["llm"] = float(sums[0]) / float(tokens)
        if w_ctc:
            losses["ctc"] = float(sums[1]) / float(chars)
        losses["objective"] = w_llm * losses.get("llm", 0.0) + w_ctc * losses.get("ctc", 0.0)
        return losses, samples


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> the local rank's GPU when CUDA is available, else the CPU; "cuda" -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but torch sees no CUDA device")
    device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]),
             "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's generator (dropout there)
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class _Log:
    """log.jsonl, mirrored to TensorBoard (``out_dir/tensorboard``) when the tensorboard package is there."""

    def __init__(self, out: Path):
        self.file = open(out / "log.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "time", "epoch"):
                    self.tb.add_scalar(key, value, row["step"])
            self.tb.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _write(logf: _Log | None, row: dict) -> None:
    if logf is not None:
        logf.write(row)


def _plot(out: Path) -> None:
    """loss.png: train and dev loss, and dev WER, against step (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["step"], r["dev_loss"]) for r in rows if "dev_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if dev:
        ax.plot(*zip(*dev), "o-", label="dev loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(loc="upper left")
    wer = [(r["step"], 100 * r["dev_wer"]) for r in rows if "dev_wer" in r]
    if wer:
        ax2 = ax.twinx()
        ax2.plot(*zip(*wer), "s--", color="tab:red", label="dev WER %")
        ax2.set_ylabel("dev WER %")
        ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)


def train(config: TrainConfig, resume: bool = False, cache_only: bool = False) -> dict[str, Any]:
    if cache_only:
        trainer = Trainer(config, cache_only=True)
        n = len(trainer.cache.index) if trainer.cache is not None else 0
        return {"cached_clips": n, "cache": str(trainer.cache.dir) if trainer.cache is not None else None}
    trainer = Trainer(config)
    if resume:
        trainer.resume()
    return trainer.train()
