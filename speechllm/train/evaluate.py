"""Dev-set metrics during training: token loss over the dev set and greedy-decode WER on
its first ``run.eval_decode_items`` clips (:func:`speechllm.evaluate.score`); with a CTC head, its
loss per character and its own best-path WER too.  A run that trains the CTC head alone
(``optim.llm_loss_weight: 0``) skips the LLM's metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from speechllm.ctc import greedy_chars
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
    w_llm, w_ctc = trainer.loss_weights()
    loss, tokens, ctc, chars, ctc_hyps, ctc_refs = 0.0, 0, 0.0, 0, [], []
    for idx in batches:
        batch = trainer.make_batch([dev[i] for i in idx], 0, train=False)
        if w_llm:
            loss_sum, n = model.answer_loss(batch)
            loss, tokens = loss + float(loss_sum), tokens + n
        if model.ctc_head is not None:
            head_output = model.ctc_head(*model.encoder_output(batch))
            ctc_sum, n = model.ctc_loss(batch, head_output)
            ctc, chars = ctc + float(ctc_sum), chars + n
            ctc_hyps += greedy_chars(*head_output)
            ctc_refs += batch["answer_texts"]
    metrics = {"dev_loss": loss / max(tokens, 1)} if w_llm else {}
    if model.ctc_head is not None:
        metrics.update(dev_ctc_loss=ctc / max(chars, 1), dev_ctc_wer=score(ctc_refs, ctc_hyps)["wer"])
    n_decode = min(cfg.run.eval_decode_items, len(dev)) if w_llm else 0
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
