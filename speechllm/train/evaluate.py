"""Dev-set metrics during training: token loss over the dev set and greedy-decode WER on
its first ``run.eval_decode_items`` clips (:func:`speechllm.evaluate.score`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from speechllm.decoding import DecodeOptions
from speechllm.train.data import make_batches

if TYPE_CHECKING:
    from speechllm.train.loop import Trainer


@torch.no_grad()
def dev_metrics(trainer: "Trainer", dev: list) -> dict:
    from speechllm.evaluate import score

    model = trainer.model.eval()
    cfg = trainer.cfg
    batches = make_batches([e.duration for e in dev], cfg.data.max_batch_seconds, cfg.data.max_batch_size,
                           seed=0, epoch=0)
    loss, tokens = 0.0, 0
    for idx in batches:
        batch = trainer.make_batch([dev[i] for i in idx], 0, train=False)
        loss_sum, n = model.answer_loss(batch)
        loss, tokens = loss + float(loss_sum), tokens + n
    metrics = {"dev_loss": loss / max(tokens, 1)}
    n_decode = min(cfg.run.eval_decode_items, len(dev))
    if n_decode:
        hyps, refs = [], []
        for start in range(0, n_decode, cfg.data.max_batch_size):
            idx = list(range(start, min(n_decode, start + cfg.data.max_batch_size)))
            examples = [dev[i] for i in idx]
            batch = trainer.make_batch(examples, 0, train=False)
            batch.pop("answer_ids")
            longest = max(len(model.llm.tokenizer.encode(e.answer)) for e in examples)
            hyps += model.generate_from_batch(batch, DecodeOptions(max_new_tokens=2 * longest + 10))
            refs += [e.answer for e in examples]
        metrics["dev_wer"] = score(refs, hyps)["wer"]
        metrics["dev_samples"] = [{"ref": r, "hyp": h} for r, h in zip(refs[:3], hyps[:3])]  # to eyeball in the log
    return metrics
