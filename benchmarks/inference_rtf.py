"""Inference speed: a Speech LLM against Whisper tiny.en (HF greedy, 30 s windows), same clips,
same run, batched decoding with the KV cache.  RTFx = audio seconds / decode seconds.

    .venv/bin/python benchmarks/inference_rtf.py --model speechllm-asr-tiny --threads 1
    .venv/bin/python benchmarks/inference_rtf.py --threads 1 --recommended   # the Speech LLM decodes as its
        # checkpoint recommends for transcription (beam 4 + CTC head); Whisper stays greedy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

import speechllm
from speechllm.data.importers import import_dataset
from speechllm.data.manifest import load_cut_audio


def rtfx(model, waves, batch_size: int, options=None) -> tuple[float, float]:
    def run(batch):  # as speechllm.api.generate transcribes: long clips in pieces when the options say so
        if options is not None and options.max_segment_seconds > 0:
            return speechllm.api.transcribe_in_pieces(model, batch, options.max_segment_seconds, options, batch_size)
        return model.generate(batch, options=options)

    run(waves[:1])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(waves), batch_size):
        run(waves[i : i + batch_size])
    seconds = time.perf_counter() - start
    return sum(len(w) for w in waves) / 16000 / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="speechllm-asr-tiny")
    parser.add_argument("--set", default="ljspeech_sample")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/inference_rtf")
    parser.add_argument("--recommended", action="store_true",
                        help="decode the Speech LLM with its checkpoint's recommended options (default: greedy)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    waves = [load_cut_audio(c) for c in import_dataset(args.set)]
    rows = {}
    for name in (args.model, "whisper-tiny.en"):
        model = speechllm.load_model(name)
        options = speechllm.api.model_decode_options(model) if args.recommended and name == args.model else None
        x, seconds = rtfx(model, waves, args.batch_size, options)
        rows[name] = {"rtfx": x, "seconds": seconds, "decode": dataclasses.asdict(options) if options else "greedy"}
    rows["ratio"] = rows[args.model]["rtfx"] / rows["whisper-tiny.en"]["rtfx"]
    result = {"set": args.set, "clips": len(waves), "audio_s": sum(len(w) for w in waves) / 16000,
              "batch_size": args.batch_size, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    md = [f"| model | RTFx | seconds ({len(waves)} clips, {result['audio_s']:.0f} s audio) |", "|---|---|---|"]
    md += [f"| {k} ({'recommended decoding' if v['decode'] != 'greedy' else 'greedy'}) | {v['rtfx']:.1f} | "
           f"{v['seconds']:.1f} |" for k, v in rows.items() if k != "ratio"]
    md.append(f"\n{args.model} is {rows['ratio']:.2f}x Whisper tiny.en's speed (batch {args.batch_size}, "
              f"{result['threads']} threads)")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
