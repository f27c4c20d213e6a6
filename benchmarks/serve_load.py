"""Load on ``speechllm serve``: dynamic batching vs none, same model, same clips, same run.

    .venv/bin/python benchmarks/serve_load.py --model whisper-tiny.en --clients 16 --seconds 25

For each mode a fresh server process (``python -m speechllm serve``) is started on 127.0.0.1 at a
free port; ``--clients`` threads post transcriptions back to back for ``--seconds``; then the server
is stopped.  Reported per mode: requests answered, non-2xx count, throughput (requests/s and audio
seconds per second), p50/p95 latency, the server's peak RSS (sampled every 50 ms) and the mean batch
size (from /health).  Speed is given as a ratio against the unbatched server measured in the same
run.  Clips: CMU AN4 test utterances from ../shared/data when present, else synthetic tones.
Bounded: at most 32 clients and 60 s of load in all; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
AN4 = ROOT.parent / "shared" / "data" / "an4"
MAX_CLIENTS, MAX_LOAD_SECONDS = 32, 60.0


def clips(n: int = 16) -> tuple[list[bytes], list[float], str]:
    """(file bytes, durations, where from): AN4 test clips, or tones when the data is absent."""
    manifest = AN4 / "manifest.jsonl"
    if manifest.exists():
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        rows = [r for r in rows if r["split"] == "test"][:n]
        return [(AN4 / r["audio"]).read_bytes() for r in rows], [r["duration"] for r in rows], "an4 test"
    import io

    import soundfile as sf

    out, durations = [], []
    for i in range(n):
        seconds = 1.0 + (i % 4)
        t = np.arange(int(seconds * 16000)) / 16000
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t)).astype(np.float32), 16000, format="WAV")
        out.append(buf.getvalue())
        durations.append(seconds)
    return out, durations, "synthetic tones"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``speechllm serve`` in a child process, with its RSS sampled until it stops."""

    def __init__(self, model: str, batch: int, clients: int, max_new_tokens: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "speechllm", "serve", "--model", model, "--model-name", "bench",
               "--port", str(self.port), "--max-batch-size", str(batch), "--max-queue", str(2 * clients),
               "--max-concurrent", str(4 * clients), "--max-new-tokens", str(max_new_tokens), "--no-tts"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.peak_rss, self._stop = 0, threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        proc = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    self._sampler.start()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start in 180 s")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.proc.terminate()  # our own child, by its handle
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(url: str, data: list[bytes], durations: list[float], clients: int, seconds: float,
         model: str = "bench") -> dict:
    """``clients`` threads, each posting back to back for ``seconds``.  Throughput counts the
    answers that arrive within the window; latencies and statuses count every request sent."""
    start = time.monotonic()
    end = start + seconds
    lock = threading.Lock()
    latencies, statuses = [], {}
    in_window, audio_s = 0, 0.0

    def worker(k: int) -> None:
        nonlocal in_window, audio_s
        with httpx.Client(timeout=120) as client:
            i = k
            while time.monotonic() < end:
                j = i % len(data)
                sent = time.monotonic()
                try:
                    code = client.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.flac", data[j])},
                                       data={"model": model}).status_code
                except httpx.HTTPError:
                    code = "connection error"
                done = time.monotonic()
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1
                    if code == 200:
                        latencies.append(done - sent)
                        if done <= end:
                            in_window += 1
                            audio_s += durations[j]
                if code != 200:
                    time.sleep(0.05)  # a refused client backs off a little, as a real one would
                i += clients

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {"ok": len(latencies), "non_2xx": sum(v for k, v in statuses.items() if k != 200),
            "statuses": {str(k): v for k, v in statuses.items()}, "drain_s": round(time.monotonic() - end, 2),
            "requests_per_s": round(in_window / seconds, 3), "audio_s_per_s": round(audio_s / seconds, 3),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 1)}


def run(model: str, clients: int, seconds: float, batch: int, max_new_tokens: int = 64) -> dict:
    clients = min(max(clients, 1), MAX_CLIENTS)
    seconds = min(seconds, MAX_LOAD_SECONDS / 2)
    data, durations, source = clips()
    results = {}
    for mode, size in (("no batching", 1), (f"dynamic batching (max {batch})", batch)):
        with Server(model, size, clients, max_new_tokens) as server:
            load(server.url, data[:2], durations[:2], 2, 2.0)  # warm-up, not counted
            before = server.health()
            row = load(server.url, data, durations, clients, seconds)
            after = server.health()
            batches = after["batches"] - before["batches"]
            row["mean_batch"] = round((after["clips"] - before["clips"]) / batches, 2) if batches else 0.0
            row["peak_rss_mib"] = round(server.peak_rss / 2**20)
        results[mode] = row
    base = results["no batching"]["requests_per_s"]
    for row in results.values():
        row["speedup"] = round(row["requests_per_s"] / base, 2) if base else None
    return {"model": model, "clients": clients, "seconds_per_mode": seconds, "max_new_tokens": max_new_tokens,
            "clips": f"{len(data)} {source}",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "date": time.strftime("%Y-%m-%d"), "results": results}


def markdown(report: dict) -> str:
    lines = [f"# serve_load: {report['model']}, {report['clients']} clients, {report['seconds_per_mode']:g} s per mode",
             "", f"Clips: {report['clips']}; max_new_tokens {report['max_new_tokens']}. "
             f"Machine: {report['machine']}. Date: {report['date']}.", "",
             "| mode | ok | non-2xx | req/s | audio s/s | p50 ms | p95 ms | mean batch | peak RSS MiB | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r in report["results"].items():
        lines.append(f"| {mode} | {r['ok']} | {r['non_2xx']} | {r['requests_per_s']} | {r['audio_s_per_s']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['mean_batch']} | {r['peak_rss_mib']} | {r['speedup']}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en", help="named model, checkpoint folder or model YAML")
    parser.add_argument("--clients", type=int, default=16, help=f"concurrent clients (1-{MAX_CLIENTS})")
    parser.add_argument("--seconds", type=float, default=25.0, help="load per mode (two modes, 60 s in all at most)")
    parser.add_argument("--batch", type=int, default=8, help="max batch size of the batching server")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the server's cap per answer")
    parser.add_argument("--out", default="runs/bench/serve_load", help="writes <out>.json and <out>.md")
    args = parser.parse_args(argv)
    report = run(args.model, args.clients, args.seconds, args.batch, args.max_new_tokens)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
