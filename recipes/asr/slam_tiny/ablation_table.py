"""Tables of the connector ablation (RESULTS.md step 10) from the runs' own logs.

    .venv/bin/python recipes/asr/slam_tiny/ablation_table.py [NAME ...]   (default: linear5 linear10 mlp5 qformer5)

A name's phases are chained in order: NAME (from scratch), then the run named RUN_cN beside each run RUN
(ablate_connectors.sh names a CONTINUE=N phase from RUN so, e.g. NAME_c400, NAME_c400_c300), each one's steps
counted on from the last.  Train loss at step S is the mean of the logged means over the 50 steps ending at S.  Dev loss / WER are each phase's end-of-run
evaluation; val is eval/RUN/results.json where that phase was decoded on val.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

WINDOW = 50


def read_phases(root: Path, name: str) -> list[dict]:
    """The phases of ``name`` that have a log, each with its step offset, train losses and end evaluation."""
    phases, offset, run = [], 0, name
    while (log := root / run / "log.jsonl").is_file():
        train, dev, times = {}, None, []
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if "dev_loss" in rec:
                dev = rec
            elif "loss" in rec:
                train[offset + rec["step"]] = rec["loss"]
                times.append(rec["time"])
        if len(train) < 2:
            break
        steps = max(train) - offset
        every = min(train) - offset  # the log's interval: its first line comes after that many steps
        # scale the logged span (step `every` to the last) to the whole phase (no dev eval)
        minutes = (max(times) - min(times)) / 60 * steps / (steps - every)
        val_file = root / "eval" / run / "results.json"
        phases.append({"run": run, "offset": offset, "end": offset + steps, "every": every, "train": train,
                       "dev": dev, "minutes": minutes,
                       "val": json.loads(val_file.read_text()) if val_file.is_file() else None})
        offset += steps
        following = [d.name for d in root.glob(f"{run}_c*") if re.fullmatch(re.escape(run) + r"_c\d+", d.name)]
        if len(following) > 1:
            print(f"{run} is continued by several runs ({', '.join(sorted(following))}): "
                  "the chain stops here", file=sys.stderr)
        if len(following) != 1:
            break
        run = following[0]
    return phases


def window_loss(train: dict[int, float], step: int, every: int = 10) -> float | None:
    """Mean of the logged ``every``-step means over the WINDOW steps ending at ``step`` (None if any is missing)."""
    vals = [train[s] for s in range(step - WINDOW + every, step + 1, every) if s in train]
    return sum(vals) / len(vals) if len(vals) == WINDOW // every else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["linear5", "linear10", "mlp5", "qformer5"])
    ap.add_argument("--root", type=Path, default=Path("runs/asr/ablation"))
    ap.add_argument("--steps", default="250,300,400,500,600,650,700,750,800,850,900,950")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    runs = {n: read_phases(args.root, n) for n in args.names}
    print("train loss, mean of the 50 steps ending at:\n")
    print("| connector | " + " | ".join(map(str, steps)) + " |")
    print("|---" * (len(steps) + 1) + "|")
    for name, phases in runs.items():
        train = {k: v for p in phases for k, v in p["train"].items()}
        every = phases[0]["every"] if phases else 10
        cells = [window_loss(train, s, every) for s in steps]
        print(f"| {name} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    print("\nend of each phase:\n")
    print("| run | steps in all | dev loss | dev WER | val WER / CER | minutes (≈, phase) |")
    print("|---|---|---|---|---|---|")
    for phases in runs.values():
        for p in phases:
            dev = p["dev"]
            devs = ("–", "–") if dev is None else (f"{dev['dev_loss']:.3f}", f"{100 * dev['dev_wer']:.1f}")
            val = p["val"]
            vals = "–" if val is None else f"{100 * val['wer']:.1f} / {100 * val['cer']:.1f}"
            print(f"| {p['run']} | {p['end']} | {devs[0]} | {devs[1]} | {vals} | {p['minutes']:.0f} |")


if __name__ == "__main__":
    main()
