"""DDP vs FSDP under torchrun on the real embedded models: peak memory per process, step time, and
whether the two give the same weights.

    .venv/bin/python benchmarks/fsdp_memory.py --clips 32 --steps 3

Full fine-tuning (every LLM weight trains, fp32: the case where sharding matters) of the embedded
SmolLM2-135M behind the Whisper tiny.en encoder and a linear connector, on the first ``--clips`` AN4
train clips, 2 processes with gloo.  Each configuration runs the same command with
``run.parallel=ddp`` or ``run.parallel=fsdp``; this script samples every process's RSS (psutil, every
0.1 s) and reports each rank's peak.  Writes JSON + Markdown next to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

CONFIG = """# speechllm train (benchmarks/fsdp_memory.py)
model:
  encoder: {{type: whisper, model: whisper-tiny.en}}
  connector: {{type: linear, stack: 5}}
  llm: {{type: hf, model: smollm2-135m-instruct, dtype: float32}}
  trainable: {{encoder: false, connector: true, llm: true}}
data:
  train: [{manifest}]
  dev_fraction: 0.0
  max_batch_seconds: {seconds}
  max_batch_size: 8
  cache_encoder: false
optim: {{lr: 1.0e-5, warmup_steps: 1, max_steps: {steps}}}
run: {{out_dir: {out}, log_every: 1, eval_every: 100000, save_every: 100000, threads: 1}}
"""


def run(config: Path, parallel: str, port: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "speechllm", "train", str(config), f"run.parallel={parallel}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    launcher = psutil.Process(proc.pid)
    samples: list[tuple[float, int, float]] = []  # (wall time, pid, RSS MiB)
    while proc.poll() is None:
        try:
            for child in launcher.children(recursive=True):
                samples.append((time.time(), child.pid, child.memory_info().rss / 2**20))
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{parallel} failed:\n{out[-4000:]}")
    # the training phase ends with the last step's log row; the final checkpoint (gathered under FSDP) follows
    rows = [json.loads(line) for line in (config.parent / parallel / "log.jsonl").read_text().splitlines()]
    end = max(r["time"] for r in rows if "loss" in r)

    def peaks(until: float) -> list[float]:
        best: dict[int, float] = {}
        for t, pid, rss in samples:
            if t <= until:
                best[pid] = max(best.get(pid, 0.0), rss)
        return sorted(round(v, 1) for v in best.values())[-2:]  # the two ranks (the launcher is small)

    def after_steps() -> list[float]:
        """RSS just after each optimizer step (activations freed: weights, gradients, AdamW state), per
        rank, the largest over the steps after the first."""
        best: dict[int, float] = {}
        for step_end in sorted(r["time"] for r in rows if "loss" in r)[1:]:
            for t, pid, rss in samples:
                if step_end <= t <= step_end + 0.3:
                    best[pid] = max(best.get(pid, 0.0), rss)
        return sorted(round(v, 1) for v in best.values())[-2:]

    t0 = samples[0][0] if samples else 0.0
    trace: dict[int, dict[int, float]] = {}  # pid -> {second: max RSS}
    for t, pid, rss in samples:
        second = int(t - t0)
        trace.setdefault(pid, {})[second] = max(trace.get(pid, {}).get(second, 0.0), round(rss))
    step_times = [round(r["time"] - t0, 1) for r in rows if "loss" in r]
    return {"parallel": parallel, "wall_s": time.perf_counter() - start,
            "peak_rss_mib_training": peaks(end), "rss_mib_after_step": after_steps(), "peak_rss_mib_with_save": peaks(float("inf")),
            "step_end_s": step_times, "rss_trace_mib_per_s": [list(v.values()) for v in trace.values()
                                                             if max(v.values()) > 1000]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default="runs/data/an4_train.jsonl.gz")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="runs/bench/fsdp_memory")
    args = parser.parse_args()
    from speechllm.data.manifest import load_manifest, save_manifest

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuts = list(load_manifest(args.manifest))[: args.clips]
    save_manifest(cuts, out / "clips.jsonl.gz", relative=False)
    results = []
    for i, parallel in enumerate(("ddp", "fsdp")):
        config = out / f"{parallel}.yaml"
        config.write_text(CONFIG.format(manifest=out / "clips.jsonl.gz", seconds=40.0, steps=args.steps,
                                        out=out / parallel))
        result = run(config, parallel, 29641 + i)
        rows = [json.loads(line) for line in (out / parallel / "log.jsonl").read_text().splitlines()]
        result["losses"] = [round(r["loss"], 5) for r in rows if "loss" in r]
        result["samples_per_s"] = rows[-1].get("samples_per_s") if rows else None
        results.append(result)
        print(json.dumps(result), flush=True)
    a, b = (load_file(str(out / p / "last" / "model.safetensors")) for p in ("ddp", "fsdp"))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "clips": args.clips, "steps": args.steps, "processes": 2,
              "saved_tensors": len(a), "max_abs_weight_diff_ddp_vs_fsdp": diff, "runs": results}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    lines = ["| parallel | RSS after a step, per process (MiB) | peak RSS, training (MiB) | incl. final save (MiB) "
             "| wall s | losses |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['parallel']} | {', '.join(f'{v:.0f}' for v in r['rss_mib_after_step'])} | "
                     f"{', '.join(f'{v:.0f}' for v in r['peak_rss_mib_training'])} | "
                     f"{', '.join(f'{v:.0f}' for v in r['peak_rss_mib_with_save'])} | {r['wall_s']:.0f} | "
                     f"{', '.join(f'{v:.4f}' for v in r['losses'])} |")
    lines.append(f"\nmax |w_ddp - w_fsdp| over {len(a)} saved tensors after {args.steps} steps: {diff:.2e}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
