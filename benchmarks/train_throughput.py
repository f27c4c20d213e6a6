"""Training throughput: speechllm's trainer path vs a SLAM-LLM-style loop, same data, same run.

    .venv/bin/python benchmarks/train_throughput.py --manifest runs/data/an4_train.jsonl.gz --clips 48

* ``slam_style``: every clip padded to Whisper's 30 s window, encoder re-run each step
  (transformers' WhisperEncoder forward on 3000 mel frames), batches by count in random order;
* ``speechllm``: encoder fed the real clip length, its output cached once (cache build time is
  reported and amortised separately), batches bucketed by duration.

Both train the same connector (+ LoRA) with the LLM in the same dtype.  Also reports MFU
against this CPU's measured matmul peak (same dtype, same threads).  Writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from speechllm.config import from_dict
from speechllm.model import SpeechLLM, SpeechLLMConfig
from speechllm.train.config import DataConfig
from speechllm.train.data import EncoderCache, load_example_audio, make_batches, read_examples


def matmul_peak_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def model_config(dtype: str) -> SpeechLLMConfig:
    return from_dict(SpeechLLMConfig, {
        "connector": {"type": "linear", "stack": 5},
        "llm": {"type": "hf", "model": "smollm2-135m-instruct", "dtype": dtype},
        "llm_lora": {"r": 8, "alpha": 16, "dropout": 0.0},
    })


def step(model: SpeechLLM, opt, batch) -> int:
    """One optimizer step; returns the LLM sequence positions processed (for FLOPs)."""
    loss_sum, n = model.answer_loss(batch)
    (loss_sum / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    audio = model.connector.output_lengths(batch["encoder_lengths"])
    text = [len(p) + len(s) + len(a) for p, s, a in zip(batch["prefix_ids"], batch["suffix_ids"], batch["answer_ids"])]
    return int(audio.sum()) + sum(text)


def slam_style(model: SpeechLLM, examples, waves, batch_size: int, steps: int) -> dict:
    """Pad to 30 s, HF WhisperEncoder forward every step (as SLAM-LLM does)."""
    fe = model.encoder.feature_extractor
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(examples), generator=g).tolist()
    done, tokens, start = 0, 0, time.perf_counter()
    for s in range(steps):
        idx = [order[(s * batch_size + j) % len(order)] for j in range(batch_size)]
        feats = fe([waves[i] for i in idx], sampling_rate=16000, return_tensors="pt").input_features  # (B, 80, 3000)
        with torch.no_grad():
            hidden = model.encoder.model(feats).last_hidden_state  # (B, 1500, D)
        batch = model.tokenize_prompts(len(idx))
        batch["answer_ids"] = [model.prompt.answer_ids(examples[i].answer, model.llm.tokenizer.eos_token_id)
                               for i in idx]
        batch["encoder_hidden"], batch["encoder_lengths"] = hidden, torch.full((len(idx),), hidden.shape[1])
        tokens += step(model, opt, batch)
        done += len(idx)
    return {"samples": done, "seconds": time.perf_counter() - start, "llm_positions": tokens}


def ours(model: SpeechLLM, examples, waves, max_seconds: float, steps: int, cache_dir: Path) -> dict:
    cache = EncoderCache(cache_dir, "bench")
    t0 = time.perf_counter()
    cache.build([(e.id, (lambda w=w: w)) for e, w in zip(examples, waves)], model.encoder.encode, progress=False)
    cache_s = time.perf_counter() - t0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    done, tokens, s, epoch, start = 0, 0, 0, 0, time.perf_counter()
    while s < steps:
        for idx in make_batches([e.duration for e in examples], max_seconds, 16, seed=0, epoch=epoch):
            if s >= steps:
                break
            batch = model.tokenize_prompts(len(idx))
            batch["answer_ids"] = [model.prompt.answer_ids(examples[i].answer, model.llm.tokenizer.eos_token_id)
                                   for i in idx]
            batch["encoder_hidden"], batch["encoder_lengths"] = cache.get([examples[i].id for i in idx])
            tokens += step(model, opt, batch)
            done, s = done + len(idx), s + 1
        epoch += 1
    return {"samples": done, "seconds": time.perf_counter() - start, "llm_positions": tokens,
            "cache_build_s": cache_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default="runs/data/an4_train.jsonl.gz")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default="runs/bench/train_throughput")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default); 1 on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    examples = read_examples([args.manifest], DataConfig())[: args.clips]
    waves = [load_example_audio(e) for e in examples]
    mean_s = sum(e.duration for e in examples) / len(examples)
    torch.manual_seed(0)
    model = SpeechLLM(model_config(args.dtype)).train()
    with tempfile.TemporaryDirectory() as tmp:
        fast = ours(model, examples, waves, mean_s * args.batch_size * 1.2, args.steps, Path(tmp))
    slow = slam_style(model, examples, waves, args.batch_size, args.steps)
    rows = {"slam_style": slow, "speechllm": fast}
    peak = matmul_peak_gflops(getattr(torch, args.dtype))
    # a frozen LLM step costs ~4 N FLOPs per sequence position (forward 2N + input-gradient 2N;
    # LoRA and the connector are negligible), N = LLM parameters without the embedding table
    llm = model.llm.model
    n_params = sum(p.numel() for p in llm.parameters()) - llm.get_input_embeddings().weight.numel()
    for r in rows.values():
        r["samples_per_s"] = r["samples"] / r["seconds"]
        r["gflops_per_s"] = 4 * n_params * r["llm_positions"] / r["seconds"] / 1e9
        r["mfu"] = r["gflops_per_s"] / peak
    fast["samples_per_s_with_cache_build"] = fast["samples"] / (fast["seconds"] + fast["cache_build_s"])
    speedup = fast["samples_per_s"] / slow["samples_per_s"]
    # FLOPs of a frozen-LLM step ~ 4 x params x sequence tokens (forward 2N + input-gradient 2N);
    # we report achieved GFLOP/s from our own token counts instead of trusting a formula
    result = {"hardware": f"{platform.machine()} {torch.get_num_threads()} threads", "dtype": args.dtype,
              "clips": len(examples), "mean_clip_s": mean_s, "rows": rows, "speedup": speedup,
              "matmul_peak_gflops": peak}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    md = ["| loop | samples/s | seconds | samples | LLM positions | GFLOP/s (LLM) | MFU |", "|---|---|---|---|---|---|---|"]
    md += [f"| {k} | {r['samples_per_s']:.2f} | {r['seconds']:.1f} | {r['samples']} | {r['llm_positions']} | "
           f"{r['gflops_per_s']:.1f} | {100 * r['mfu']:.2f}% |" for k, r in rows.items()]
    md += ["", f"speed-up: {speedup:.2f}x ({fast['samples_per_s_with_cache_build'] / slow['samples_per_s']:.2f}x "
           f"counting the one-off cache build of {fast['cache_build_s']:.1f} s for {len(examples)} clips); "
           f"matmul peak {peak:.1f} GFLOP/s ({args.dtype}, {torch.get_num_threads()} threads); {result['hardware']}"]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
