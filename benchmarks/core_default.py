"""Measure the embedded default Speech LLM (Whisper tiny.en encoder -> untrained linear
connector -> SmolLM2-135M-Instruct) and the baselines on this machine: load times, a
forward+backward step, generation tokens/s, save/load of a checkpoint, peak RSS.

    .venv/bin/python benchmarks/core_default.py --out runs/bench/core_default

Writes ``results.json`` and ``results.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

import speechllm
from speechllm.audio import load_audio
from speechllm.decoding import DecodeOptions

JFK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "whisper_jfk" / "jfk.flac"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/bench/core_default")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default); 1 on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wave = load_audio(JFK, 16000)
    rows: dict[str, float | str] = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}

    model, rows["speechllm_build_s"] = timed(lambda: speechllm.SpeechLLM(speechllm.SpeechLLMConfig()))
    batch = model.make_batch([wave], answers=["And so my fellow Americans, ask not what your country can do for you."])
    model.train()
    out, rows["forward_backward_s"] = timed(lambda: model(batch).loss.backward())
    model.eval()
    options = DecodeOptions(max_new_tokens=args.new_tokens)
    # an untrained connector: the LLM may stop early, so count the tokens it actually made
    ids, gen_s = timed(lambda: model.generate_ids(model.make_batch([wave]), options))
    rows["speechllm_generated_tokens"] = int(ids.shape[1])
    rows["speechllm_tokens_per_s"] = ids.shape[1] / gen_s
    with tempfile.TemporaryDirectory() as tmp:
        _, rows["checkpoint_save_s"] = timed(lambda: model.save_pretrained(Path(tmp) / "ck"))
        rows["checkpoint_bytes"] = (Path(tmp) / "ck" / "model.safetensors").stat().st_size
        _, rows["checkpoint_load_s"] = timed(lambda: speechllm.SpeechLLM.from_pretrained(Path(tmp) / "ck"))
    rows["audio_tokens_for_11s"] = int(model.audio_token_lengths(torch.tensor([len(wave)]))[0])
    rows["peak_rss_after_speechllm_mib"] = peak_rss_mib()

    whisper, rows["whisper_load_s"] = timed(lambda: speechllm.load_model("whisper-tiny.en"))
    text, rows["whisper_transcribe_s"] = timed(lambda: speechllm.transcribe(str(JFK), model=whisper))
    rows["whisper_rtf"] = rows["whisper_transcribe_s"] / (len(wave) / 16000)
    rows["whisper_text"] = text
    cascade, rows["cascade_load_s"] = timed(lambda: speechllm.load_model("cascade"))
    llm = cascade.llm
    prompt = torch.tensor([cascade.prompt_ids("hello", "What is the capital of France?")])
    gen, llm_s = timed(lambda: llm.model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                                 do_sample=False))
    rows["smollm2_tokens_per_s"] = (gen.shape[1] - prompt.shape[1]) / llm_s
    rows["peak_rss_total_mib"] = peak_rss_mib()

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    lines = ["| measure | value |", "|---|---|"] + [
        f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows.items()
    ]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
