"""Training configuration: model + data + optimisation + run, one YAML, dotted overrides.

    speechllm train recipes/asr/slam_tiny/config.yaml optim.max_steps=10 run.out_dir=runs/x
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from speechllm.data.augment import AugmentConfig
from speechllm.model import SpeechLLMConfig


class Schedule(str, Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # lhotse CutSet manifests (jsonl / jsonl.gz)
    dev: list[str] = field(default_factory=list)  # carved from training data, never a test split
    dev_fraction: float = 0.0  # if no dev manifest: hold out this share of train (by id hash)
    dev_max_items: int = 200
    max_batch_seconds: float = 60.0  # bucketing: total audio per batch
    max_batch_size: int = 16
    min_seconds: float = 0.2
    max_seconds: float = 30.0
    cache_encoder: bool = True  # frozen encoder: compute its output once, reuse every epoch
    cache_dir: str = ""  # where that cache lives (default: run.out_dir/encoder_cache); runs may share one
    # off unless the config asks: speeds (1.0,), no noise, no gain
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(speeds=(1.0,), noise_prob=0.0, gain_prob=0.0))


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    schedule: Schedule = Schedule.cosine
    min_lr_ratio: float = 0.05
    max_steps: int = 1000
    grad_accum: int = 1
    clip_norm: float = 1.0
    # objective: llm_loss_weight * (LLM loss per answer token) + ctc_loss_weight * (CTC loss per
    # character; only for a model with model.ctc_head).  llm_loss_weight 0 skips the LLM's passes:
    # training a CTC head alone on a frozen encoder is then a fraction of a step's cost
    llm_loss_weight: float = 1.0
    ctc_loss_weight: float = 0.3


@dataclass
class RunConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    save_every: int = 100
    eval_decode_items: int = 50  # greedy-decode this many dev clips for WER at each eval
    threads: int = 0  # 0: torch's default
    init_from: str = ""  # a checkpoint folder whose saved weights (connector, LoRA, ...) start this run
    init_new_lora: bool = False  # init_from may lack LoRA weights this config adds (they start as a zero update)
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when available)
    time_budget_s: float = 0.0  # > 0: after calibrate_steps, shrink max_steps to what fits this wall time
    calibrate_steps: int = 30
    cache_workers: int = 0  # processes preparing encoder-cache inputs (audio, features); 0: in-process
    ddp_backend: str = "gloo"
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated model) or "fsdp" (transformer blocks sharded)
    prefetch: bool = False  # assemble the next step's batches in a thread while this step runs (GPU)


@dataclass
class TrainConfig:
    model: SpeechLLMConfig = field(default_factory=SpeechLLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
