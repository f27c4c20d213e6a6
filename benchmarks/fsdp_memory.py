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
    peaks: dict[int, float] = {}
    while proc.poll() is None:
        try:
            for child in launcher.children(recursive=True):
                rss = child.memory_info().rss / 2**20
                peaks[child.pid] = max(peaks.get(child.pid, 0.0), rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{parallel} failed:\n{out[-4000:]}")
    return {"parallel": parallel, "wall_s": time.perf_counter() - start,
            "peak_rss_mib_per_process": sorted(round(v, 1) for v in peaks.values())[-2:]}


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
    lines = ["| parallel | peak RSS per process (MiB) | wall s | losses |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['parallel']} | {', '.join(f'{v:.0f}' for v in r['peak_rss_mib_per_process'])} | "
                     f"{r['wall_s']:.0f} | {', '.join(f'{v:.4f}' for v in r['losses'])} |")
    lines.append(f"\nmax |w_ddp - w_fsdp| over {len(a)} saved tensors after {args.steps} steps: {diff:.2e}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
