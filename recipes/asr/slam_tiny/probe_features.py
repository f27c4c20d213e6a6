"""Which Whisper tiny.en encoder features carry the most for a CTC head?  A diagnostic probe.

The default model feeds the connector and the CTC head the encoder's last layer computed on the clip's
real length (no padding to 30 s).  Whisper itself was trained on 30 s windows, so features of a short clip
computed alone may be worse than the same frames computed inside a zero-padded 30 s window; and a lower
layer may carry more of the phonetic detail a CTC head needs.  This script trains the same fresh CTC head
(same seed, same batches, same steps) on each feature variant and scores it on held-out data:

  U1..U4   layer 1..4 of the encoder, real length (U4 = what the shipped model uses)
  P4 / P2  last / second layer, clip zero-padded to 30 s as Whisper was trained (its frames only kept)

Train clips: a seeded sample of the training manifests (AN4 train + synthetic sentences).  Scored on
``runs/data/synth_val`` (unseen sentences, training voices) and ``runs/data/ls40_pseudo`` (real LibriSpeech
train-clean speech, labelled by Whisper tiny.en: WER there is disagreement with Whisper).  Prints a
Markdown table: dev CTC loss per character, best-path CER and WER after Whisper's normaliser.

  .venv/bin/python recipes/asr/slam_tiny/probe_features.py --train-clips 4000 --steps 500 --variants U4,U2,U3,P4,P2

Session 8 measured it (RESULTS.md step 9): padded and real-length last-layer features give the same head
(val CER 21.9 vs 21.7%), lower layers worse (layer 3: 26.4, layer 2: 31.9).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from speechllm.ctc import CTCHead, CTCHeadConfig, char_ids, greedy_chars
from speechllm.data.manifest import iter_examples, load_manifest
from speechllm.encoders.whisper import WhisperAudioEncoder, WhisperEncoderConfig
from speechllm.evaluate import score

TRAIN = ["runs/data/an4_train.jsonl.gz", "runs/data/synth_train/manifest.jsonl.gz",
         "runs/data/synth_train2/manifest.jsonl.gz"]
DEVS = {"val": "runs/data/synth_val/manifest.jsonl.gz", "ls40": "runs/data/ls40_pseudo/manifest.jsonl.gz"}
WINDOW = 480_000  # 30 s at 16 kHz


@torch.no_grad()
def encode(enc: WhisperAudioEncoder, wave: np.ndarray, padded: bool) -> list[torch.Tensor]:
    """All layers' outputs for the clip's own frames, fp16: the encoder's forward, the inner layers read
    by hooks (the last as the model sees it, after the final layer norm)."""
    n_out = int(enc.output_lengths(torch.tensor([len(wave)]))[0])
    if padded:
        wave = np.pad(wave, (0, WINDOW - len(wave)))
    inner: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: inner.append(out[0] if isinstance(out, tuple) else out))
             for layer in enc.model.layers[:-1]]
    try:
        last, _ = enc(*enc.prepare([wave]))
    finally:
        for hook in hooks:
            hook.remove()
    return [o[0, :n_out].to(torch.float16).clone() for o in [*inner, last]]


def sample_train(n: int, seed: int) -> list:
    cuts = [c for p in TRAIN for c in load_manifest(p)]
    random.Random(seed).shuffle(cuts)
    return cuts[:n]


def featurize(enc, cuts, padded: bool, layers: list[int]) -> tuple[dict[int, list[torch.Tensor]], list[str]]:
    feats: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    texts = []
    t0 = time.time()
    for i, ex in enumerate(iter_examples(cuts)):
        if len(ex.waveform) > WINDOW:
            ex = ex._replace(waveform=ex.waveform[:WINDOW])  # none of the probe's clips is this long
        outs = encode(enc, ex.waveform, padded)
        for l in layers:
            feats[l].append(outs[l - 1])
        texts.append(ex.text)
        if (i + 1) % 500 == 0:
            print(f"  {'padded' if padded else 'real-length'}: {i + 1}/{len(cuts)} clips, {time.time() - t0:.0f} s",
                  flush=True)
    return feats, texts


def batches(lengths: list[int], max_frames: int, rng: random.Random) -> list[list[int]]:
    """Length-sorted buckets of at most max_frames padded frames, in random order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > max_frames:
            out.append(cur)
            cur = []
        cur.append(i)
    out.append(cur)
    rng.shuffle(out)
    return out


def pad(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in xs])
    out = torch.zeros(len(xs), int(lengths.max()), xs[0].shape[-1])
    for i, x in enumerate(xs):
        out[i, : len(x)] = x.float()
    return out, lengths


def run_head(head: CTCHead, feats: list[torch.Tensor], ys: list[torch.Tensor]):
    """Log-probs, their lengths, the summed CTC loss and the number of target characters of a batch."""
    x, xl = pad(feats)
    lp, ol = head(x, xl)
    loss_sum = F.ctc_loss(lp.transpose(0, 1), torch.cat(ys), ol, torch.tensor([len(y) for y in ys]),
                          zero_infinity=True, reduction="sum")
    return lp, ol, loss_sum, sum(len(y) for y in ys)


def train_head(feats, targets, steps: int, seed: int, cfg: CTCHeadConfig, lr: float) -> CTCHead:
    torch.manual_seed(seed)
    head = CTCHead(feats[0].shape[-1], cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    rng = random.Random(seed)
    plan: list[list[int]] = []
    step = 0
    head.train()
    while step < steps:
        if not plan:
            plan = batches([len(f) for f in feats], 8_000, rng)
        idx = plan.pop()
        _, _, loss_sum, chars = run_head(head, [feats[i] for i in idx], [targets[i] for i in idx])
        loss = loss_sum / chars
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 100 == 0:
            print(f"    step {step} loss {loss.item():.3f}", flush=True)
    return head


@torch.no_grad()
def evaluate_head(head, feats, texts) -> dict:
    head.eval()
    total, chars, hyps = 0.0, 0, []
    for i in range(0, len(feats), 16):
        ys = [torch.tensor(char_ids(t)) for t in texts[i : i + 16]]
        lp, ol, loss_sum, n = run_head(head, feats[i : i + 16], ys)
        total += loss_sum.item()
        chars += n
        hyps += greedy_chars(lp, ol)
    s = score(texts, hyps)
    return {"loss": total / chars, "wer": 100 * s["wer"], "cer": 100 * s["cer"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-clips", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--variants", default="U4,P4,U3,U2,P2,U1")
    ap.add_argument("--head-layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/probe_features")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    enc = WhisperAudioEncoder(WhisperEncoderConfig()).eval()
    train_cuts = sample_train(args.train_clips, args.seed)
    dev_cuts = {k: list(load_manifest(p)) for k, p in DEVS.items()}
    cfg = CTCHeadConfig(layers=args.head_layers)
    results = {}
    for padded in (False, True):
        mine = [v for v in variants if v.startswith("P" if padded else "U")]
        if not mine:
            continue
        layers = sorted({int(v[1:]) for v in mine})
        train_feats, train_texts = featurize(enc, train_cuts, padded, layers)
        dev = {k: featurize(enc, c, padded, layers) for k, c in dev_cuts.items()}
        targets = [torch.tensor(char_ids(t)) for t in train_texts]
        for v in mine:
            l = int(v[1:])
            t0 = time.time()
            print(f"{v}: training {args.steps} steps", flush=True)
            head = train_head(train_feats[l], targets, args.steps, args.seed, cfg, args.lr)
            results[v] = {k: evaluate_head(head, f[l], t) for k, (f, t) in dev.items()}
            results[v]["train_s"] = time.time() - t0
            print(v, json.dumps(results[v]), flush=True)
            (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        del train_feats, dev
    print("| features | val loss/char | val CER | val WER | LS40 loss/char | LS40 CER | LS40 WER |")
    print("|---|---|---|---|---|---|---|")
    for v, r in results.items():
        print(f"| {v} | {r['val']['loss']:.3f} | {r['val']['cer']:.2f} | {r['val']['wer']:.2f} | "
              f"{r['ls40']['loss']:.3f} | {r['ls40']['cer']:.2f} | {r['ls40']['wer']:.2f} |")


if __name__ == "__main__":
    main()
