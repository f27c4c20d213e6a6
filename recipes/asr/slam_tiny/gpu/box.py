"""The GPU-box side of recipes/asr/slam_tiny/gpu (see README.md there); run from the repo root.

    python3 recipes/asr/slam_tiny/gpu/box.py data  --xfer .xfer/a --work /root/w   # synth + AN4 + encoder cache
    python3 recipes/asr/slam_tiny/gpu/box.py train --xfer .xfer/c --work /root/w   # LLM + training
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import time
from pathlib import Path

CONFIG = "recipes/asr/slam_tiny/config_gpu.yaml"
VOICE_SETS = {
    # session 3: sentence i spoken by voice i mod 7
    "s3": ["flite:kal", "flite:slt", "flite:rms", "espeak:en-us", "espeak:en+f3", "espeak:en+m3", "espeak:en-us+f2"],
    # session 4: 12 slots, half flite (closer to natural speech), half espeak-ng variants incl. British RP and
    # Caribbean English, in an order that gives most sentences another voice than in s3 (no Scottish voice:
    # the held-out flite:awb is Scottish-accented)
    "wide": ["flite:slt", "espeak:en-us+m1", "flite:rms", "espeak:en-gb-x-rp", "flite:kal", "espeak:en+f4",
             "flite:slt", "espeak:en-029", "flite:rms", "espeak:en-us+f2", "flite:kal", "espeak:en+m3"],
}
# session 6: the wide rotation shifted by one slot, so every sentence switches engine (flite <-> espeak-ng)
# against session 4's data: new sentence/voice pairs for the warm-started model and its CTC head
VOICE_SETS["wide1"] = VOICE_SETS["wide"][1:] + VOICE_SETS["wide"][:1]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
START = time.time()


def overrides(work: Path, extra: list[str]) -> list[str]:
    an4, synth = work / "data" / "an4_train.jsonl.gz", work / "data" / "synth_train" / "manifest.jsonl.gz"
    return [f"model.encoder.model={work / 'models' / 'whisper-tiny.en'}",
            f"model.llm.model={work / 'models' / 'smollm2-135m-instruct'}",
            f"data.train=[{an4},{an4},{an4},{synth}]",  # AN4 (the only real speech) seen 3x as often
            f"run.out_dir={work / 'run'}", "run.device=cuda", *extra]


def stage_data(xfer: Path, work: Path, jobs: int, voices: list[str], extra: list[str]) -> None:
    import soundfile as sf
    import torch
    from safetensors.torch import load_file, save_file

    from speechllm.config import load_config
    from speechllm.data.manifest import make_cut, save_manifest
    from speechllm.data.synth import build_synth_set
    from speechllm.train import TrainConfig
    from speechllm.train.loop import train

    t0 = time.time()
    whisper = work / "models" / "whisper-tiny.en"
    whisper.mkdir(parents=True, exist_ok=True)
    for f in (xfer / "whisper-tiny.en").iterdir():
        if f.suffix == ".json":
            (whisper / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(xfer / "whisper-tiny.en" / "encoder.fp16.safetensors"))
    save_file({k: v.float() for k, v in weights.items()}, str(whisper / "model.safetensors"))  # fp16 -> fp32 exact
    an4 = work / "data" / "an4"
    an4.mkdir(parents=True, exist_ok=True)
    cuts = []
    for row in json.loads((xfer / "an4" / "index.json").read_text()):
        wave, rate = sf.read(xfer / "an4" / f"{row['id']}.opus", dtype="float32")
        sf.write(an4 / f"{row['id']}.flac", wave, rate, subtype="PCM_16")
        cuts.append(make_cut(row["id"], an4 / f"{row['id']}.flac", text=row["text"], speaker=row["speaker"],
                             gender=row["gender"], task="asr", split="train"))
    save_manifest(cuts, work / "data" / "an4_train.jsonl.gz", relative=False)
    print(f"AN4: {len(cuts)} clips in {time.time() - t0:.0f} s", flush=True)
    with gzip.open(xfer / "sentences.txt.gz", "rt") as f:
        texts = [line.strip() for line in f if line.strip()]
    t1 = time.time()
    result = build_synth_set(texts, voices, work / "data" / "synth_train", jobs=jobs, exclude_eval=False)
    print(f"synth: {len(result.cuts)} clips ({result.failed} failed) in {time.time() - t1:.0f} s", flush=True)
    cfg = load_config(TrainConfig, CONFIG, overrides(work, [f"run.cache_workers={jobs}", *extra]))
    if cfg.data.cache_encoder:  # otherwise the encoder runs on the GPU each step
        t2 = time.time()
        print("cache:", train(cfg, cache_only=True), f"in {time.time() - t2:.0f} s", flush=True)
    print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")


def stage_train(xfer: Path, work: Path, deadline_s: float, extra: list[str]) -> None:
    """Train so that everything ends ``deadline_s`` after this process started: the time budget of
    the schedule is what is left after loading and any cache work, less a reserve for evaluations."""
    import speechllm.embedded.smollm2 as smollm2
    from speechllm.config import load_config
    from speechllm.runtime import limit_heap_growth
    from speechllm.train import TrainConfig
    from speechllm.train.loop import Trainer

    gguf = work / GGUF_NAME
    if not gguf.exists():
        parts = [work / "gguf.b", xfer / "gguf.c"]
        with open(f"{gguf}.tmp", "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        os.replace(f"{gguf}.tmp", gguf)
    smollm2.gguf_path = lambda: gguf
    t0 = time.time()
    smollm2.ensure_smollm2(work / "models")
    print(f"LLM ready in {time.time() - t0:.0f} s", flush=True)
    limit_heap_growth()
    cfg = load_config(TrainConfig, CONFIG, overrides(work, extra))
    trainer = Trainer(cfg)
    if (work / "run" / "last" / "train_state.pt").exists():
        trainer.resume()
    reserve = 70.0  # dev evaluations, saves, copying out
    left = deadline_s - (time.time() - START) - reserve
    if deadline_s > 0 and not trainer.progress.max_steps:
        cfg.run.time_budget_s = max(30.0, left)  # the box's deadline rules, not the config's budget
    print(f"training with a {cfg.run.time_budget_s:.0f} s budget", flush=True)
    print(trainer.train(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["data", "train"])
    parser.add_argument("--xfer", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/root/w"))
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--voices", choices=sorted(VOICE_SETS), default="wide", help="data: the voice rotation")
    parser.add_argument("--deadline-s", type=float, default=0.0, help="train: end this long after start")
    args, extra = parser.parse_known_args()  # the rest: dotted config overrides
    args.overrides = extra
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.stage == "data":
        stage_data(args.xfer, args.work, args.jobs, VOICE_SETS[args.voices], args.overrides)
    else:
        stage_train(args.xfer, args.work, args.deadline_s, args.overrides)


if __name__ == "__main__":
    main()
