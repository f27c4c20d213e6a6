"""CTC head and joint CTC / LLM decoding: the prefix scorer's probabilities, decoding that follows
the head, training the head alone on a frozen model, and checkpoints that carry it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from speechllm.ctc import CHAR_INDEX, CHARS, CTCPrefixScorer, char_ids, greedy_chars, to_chars
from speechllm.decoding import DecodeOptions
from speechllm.model import SpeechLLM
from tests.conftest import tone
from tests.test_model import tiny_config

HEAD = {"dim": 16, "layers": 1, "heads": 2, "stack": 2, "dropout": 0.0}


def test_to_chars_keeps_letters_digits_apostrophes():
    assert to_chars("It's 21st-Century, café!") == "it's 21st century cafe"
    assert char_ids("a b") == [CHAR_INDEX["a"], CHAR_INDEX[" "], CHAR_INDEX["b"]]


def test_prefix_scorer_matches_ctc_loss_and_prefix_probabilities_add_up():
    torch.manual_seed(0)
    log_probs = torch.randn(7, len(CHARS)).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs)
    for s in ["a", "ab", "aa", "ba b", "abc"]:  # "aa": a repeated label needs a blank between
        target = torch.tensor([char_ids(s)])
        exact = -torch.nn.functional.ctc_loss(log_probs[:, None], target, torch.tensor([7]), torch.tensor([len(s)]),
                                              reduction="sum")
        assert scorer.full_score(s) == pytest.approx(float(exact), abs=1e-4)
    assert scorer.full_score("") == pytest.approx(float(log_probs[:, 0].sum()), abs=1e-6)
    # P(starts with s) = P(is s) + sum over c of P(starts with s + c)
    for s in ["", "a", "ab"]:
        total = math.exp(scorer.full_score(s)) + sum(math.exp(v) for v in scorer.prefix_scores([s + c for c in CHARS[1:]]))
        assert math.exp(scorer.prefix_scores([s])[0]) == pytest.approx(total, rel=1e-6)


def peaked(text: str, frames_per_char: int = 3) -> torch.Tensor:
    """CTC log-probs that spell ``text`` with near certainty (each char, then a blank)."""
    ids = []
    for i in char_ids(text):
        ids += [i] * (frames_per_char - 1) + [0]
    lp = torch.full((len(ids), len(CHARS)), -12.0)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    return lp.log_softmax(-1)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_joint_decoding_follows_a_confident_ctc_head(tiny_dirs, monkeypatch, num_beams):
    torch.manual_seed(0)
    model = SpeechLLM(tiny_config(tiny_dirs, ctc_head=HEAD)).eval()
    wanted = ["hello world", "the lazy dog"]
    lps = [peaked(t) for t in wanted]
    lengths = torch.tensor([lp.shape[0] for lp in lps])
    padded = torch.nn.utils.rnn.pad_sequence(lps, batch_first=True)
    monkeypatch.setattr(model.ctc_head, "forward", lambda hidden, n: (padded, lengths))
    clips = [tone(1.0, seed=0), tone(0.7, seed=1)]
    plain = model.generate(clips, options=DecodeOptions(max_new_tokens=20, num_beams=num_beams))
    assert [to_chars(t) for t in plain] != wanted  # the random LLM alone says something else
    vocab = len(model.llm.tokenizer)
    joint = model.generate(clips, options=DecodeOptions(max_new_tokens=20, num_beams=num_beams, ctc_weight=0.9,
                                                        ctc_top_k=vocab))
    assert [to_chars(t) for t in joint] == wanted
    with pytest.raises(ValueError, match="CTC head"):
        SpeechLLM(tiny_config(tiny_dirs)).generate(clips, options=DecodeOptions(ctc_weight=0.5))


def test_train_the_ctc_head_alone_on_a_trained_model(tmp_path, tiny_dirs):
    """llm_loss_weight 0 + frozen connector and LoRA: only the head changes; a warm start may add
    a head the checkpoint lacks; dev metrics report the head's loss and WER; the saved checkpoint
    decodes jointly."""
    from speechllm.config import load_config
    from speechllm.train import TrainConfig
    from speechllm.train.loop import Trainer
    from tests.test_train import write_config, write_manifest

    manifest = write_manifest(tmp_path)
    Trainer(load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest, max_steps=2))).train()
    base = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    head_only = [f"run.init_from={tmp_path / 'run' / 'last'}", f"run.out_dir={tmp_path / 'head'}",
                 "model.ctc_head.dim=16", "model.ctc_head.heads=2", "model.ctc_head.layers=1",
                 "model.trainable.connector=false", "model.trainable.lora=false",
                 "optim.llm_loss_weight=0", "optim.ctc_loss_weight=1", "data.augment.speeds=[1.0]"]
    trainer = Trainer(load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest, max_steps=6), head_only))
    assert {n.split(".")[0] for n, p in trainer.model.named_parameters() if p.requires_grad} == {"ctc_head"}
    start = {k: v.clone() for k, v in trainer.model.ctc_head.state_dict().items()}
    trainer.train()
    saved = load_file(str(tmp_path / "head" / "last" / "model.safetensors"))
    for k, v in base.items():
        torch.testing.assert_close(saved[k], v)
    assert any(not torch.equal(saved[f"ctc_head.{k}"], v) for k, v in start.items())
    rows = [json.loads(line) for line in (tmp_path / "head" / "log.jsonl").read_text().splitlines()]
    assert any("ctc_loss" in r and "llm_loss" not in r for r in rows)
    dev = [r for r in rows if "dev_ctc_loss" in r]
    assert dev and "dev_loss" not in dev[0] and "dev_ctc_wer" in dev[0]
    model = SpeechLLM.from_pretrained(tmp_path / "head" / "last").eval()
    out = model.generate([tone(0.8)], options=DecodeOptions(max_new_tokens=6, ctc_weight=0.3))
    assert len(out) == 1 and isinstance(out[0], str)
    # the head is trained with the LLM too (the default objective: LLM loss + 0.3 x CTC loss)
    both = Trainer(load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest, max_steps=2),
                               [f"run.out_dir={tmp_path / 'both'}", "model.ctc_head.dim=16", "model.ctc_head.heads=2"]))
    both.train()
    rows = [json.loads(line) for line in (tmp_path / "both" / "log.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "ctc_loss" in r)
    assert step["loss"] == pytest.approx(step["llm_loss"] + 0.3 * step["ctc_loss"], rel=1e-5)


def test_greedy_chars_collapses_repeats_and_blanks():
    lp = peaked("see you")
    assert greedy_chars(lp[None], torch.tensor([lp.shape[0]])) == ["see you"]


def test_checkpoint_decode_defaults_apply_to_transcription_only(tiny_dirs, tmp_path, monkeypatch):
    from speechllm import api
    from speechllm.config import ConfigError

    torch.manual_seed(0)
    model = SpeechLLM(tiny_config(tiny_dirs, ctc_head=HEAD, decode={"num_beams": 2, "ctc_weight": 0.2})).eval()
    model.save_pretrained(tmp_path / "ck")
    loaded = api.load_model(str(tmp_path / "ck"), cache=False)
    seen = []
    monkeypatch.setattr(loaded, "generate", lambda waves, instructions, options: seen.append(options) or [""] * len(waves))
    from speechllm.audio import write_audio

    clip = write_audio(tmp_path / "a.wav", tone(0.5), 16000) or tmp_path / "a.wav"
    api.transcribe(clip, model=loaded)
    api.transcribe(clip, model=loaded, num_beams=1)
    api.chat(clip, "Describe it.", model=loaded)
    assert [(o.num_beams, o.ctc_weight) for o in seen] == [(2, 0.2), (1, 0.2), (1, 0.0)]
    with pytest.raises(ConfigError, match="unknown decoding option"):
        SpeechLLM(tiny_config(tiny_dirs, decode={"beams": 2}))
    with pytest.raises(ConfigError, match="CTC head"):
        SpeechLLM(tiny_config(tiny_dirs, decode={"ctc_weight": 0.2}))


def test_frozen_lora_under_a_bf16_llm_stays_fp32(tiny_dirs, tmp_path):
    """A LoRA loaded but not trained (trainable.lora: false) must not be rounded to the LLM's bf16."""
    torch.manual_seed(0)
    cfg = {"llm": {"type": "hf", "model": tiny_dirs["llm"], "dtype": "bfloat16"}, "llm_lora": {"r": 2, "alpha": 4}}
    trained = SpeechLLM(tiny_config(tiny_dirs, **cfg))
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 1e-3 + 0.0123)
    trained.save_pretrained(tmp_path / "ck")
    frozen = SpeechLLM.from_pretrained(tmp_path / "ck", ["trainable.lora=false", "trainable.connector=false"])
    lora = {n: p for n, p in frozen.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 and not p.requires_grad for p in lora.values())
    ref = dict(trained.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in lora.items())


def test_prefix_scorer_memory_stays_bounded_while_decoding():
    from speechllm.ctc import CTCPrefixLogitsProcessor

    class Chars:  # a tokenizer whose tokens are single characters
        eos_token_id = 0
        all_special_ids = [0]

        def decode(self, ids, skip_special_tokens=True):
            return "".join(CHARS[i] if i > 2 else " " for i in ids if i)

    lp = peaked("hello world")
    proc = CTCPrefixLogitsProcessor(lp[None], torch.tensor([lp.shape[0]]), Chars(), weight=1.0, num_beams=1,
                                    top_k=len(CHARS))
    ids = torch.zeros(1, 0, dtype=torch.long)
    sizes = []
    for _ in range(11):
        scores = proc(ids, torch.zeros(1, len(CHARS)))
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
        sizes.append(len(proc.scorers[0].states))
    assert Chars().decode(ids[0].tolist()) == "hello world"
    # about this step's candidates (unpruned, the cache would grow by ~39 strings a step)
    assert max(sizes) < 2 * len(CHARS)


def test_int8_checkpoint_is_smaller_and_decodes_like_the_float_one(tiny_dirs, tmp_path):
    """save_pretrained(int8=True): matrices as int8 + a scale per row (each value within half a step of
    its row's scale, plus the fp16 rounding of value and scale), the rest fp16; loads back to float32 and gives the same logits to ~1e-2."""
    from speechllm.checkpoint import INT8_SCALE

    torch.manual_seed(0)
    cfg = {"llm_lora": {"r": 2, "alpha": 4}, "ctc_head": {"dim": 32, "heads": 2, "layers": 1}}
    model = SpeechLLM(tiny_config(tiny_dirs, **cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    model.save_pretrained(tmp_path / "int8", dtype=torch.float16, int8=True)
    raw = load_file(str(tmp_path / "int8" / "model.safetensors"))
    quantized = [k for k in raw if k + INT8_SCALE in raw]
    assert quantized and all(raw[k].dtype == torch.int8 for k in quantized)
    size = {d: (tmp_path / d / "model.safetensors").stat().st_size for d in ("fp16", "int8")}
    assert size["int8"] < 0.75 * size["fp16"]
    own = model.saved_state_dict()
    for k in quantized:
        step = raw[k + INT8_SCALE].float()[:, None]
        assert (raw[k].float() * step - own[k].float()).abs().le(0.57 * step).all()
    loaded = SpeechLLM.from_pretrained(tmp_path / "int8").eval()
    assert all(p.dtype == torch.float32 for n, p in loaded.named_parameters() if "lora_" in n or "ctc_head" in n)
    batch = model.make_batch([tone(0.4, freq=220), tone(0.3, freq=440)], answers=["one two", "three"])
    batch2 = loaded.make_batch([tone(0.4, freq=220), tone(0.3, freq=440)], answers=["one two", "three"])
    with torch.no_grad():
        a, b = model.answer_loss(batch)[0], loaded.answer_loss(batch2)[0]
        ca, cb = model.ctc_loss(batch)[0], loaded.ctc_loss(batch2)[0]
    assert abs(float(a - b)) <= 1e-2 * abs(float(a)) + 1e-3 and abs(float(ca - cb)) <= 1e-2 * abs(float(ca)) + 1e-3
    (tmp_path / "int8" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="unreadable weights"):
        SpeechLLM.from_pretrained(tmp_path / "int8")


def test_a_deeper_head_warm_starts_as_the_same_function(tiny_dirs, tmp_path):
    """init_from a checkpoint with a 1-layer head into a 3-layer head: the first layer loads, the two
    new top layers start as the identity, so the head's log-probs are unchanged; layers missing below
    the top are still an error."""
    from speechllm.checkpoint import load_saved_weights

    torch.manual_seed(0)
    head = {"dim": 32, "heads": 2, "layers": 1, "dropout": 0.0}
    small = SpeechLLM(tiny_config(tiny_dirs, ctc_head=head)).eval()
    small.save_pretrained(tmp_path / "small")
    deep = SpeechLLM(tiny_config(tiny_dirs, ctc_head={**head, "layers": 3})).eval()
    kept = load_saved_weights(deep, tmp_path / "small", new_head_ok=True)
    assert kept and all(k.startswith(("ctc_head.body.layers.1.", "ctc_head.body.layers.2.")) for k in kept)
    batch = small.make_batch([tone(0.4, freq=220)])
    with torch.no_grad():
        ref = small.ctc_head(*small.encoder_output(dict(batch)))[0]
        out = deep.ctc_head(*deep.encoder_output(dict(batch)))[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert deep.ctc_head.body.layers[1].linear1.weight.abs().sum() > 0  # the new layers can still learn
    with pytest.raises(ValueError, match="do not match"):
        load_saved_weights(deep, tmp_path / "small")  # without new_head_ok: the checkpoint is incomplete


class LetterTokenizer:
    """One token per letter or space, and an end-of-text token (for the processor's unit tests)."""

    vocab = list("abcdefghijklmnopqrstuvwxyz ")
    eos_token_id = len(vocab)
    all_special_ids = [len(vocab)]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.vocab[i] for i in ids if i < len(self.vocab))


def test_end_of_text_is_scored_even_outside_the_llms_top_k():
    """A hypothesis that has spelled everything the head heard ends, even when the LLM ranks
    end-of-text below its top k: the CTC prefix score of any further letter is far worse."""
    from speechllm.ctc import CTCPrefixLogitsProcessor

    tok = LetterTokenizer()
    lp = peaked("hi")[None]
    proc = CTCPrefixLogitsProcessor(lp, torch.tensor([lp.shape[1]]), tok, weight=0.2, top_k=2)
    scores = torch.zeros(1, len(tok.vocab) + 1)
    scores[0, tok.vocab.index("e")], scores[0, tok.vocab.index("x")] = 2.0, 1.0  # the LLM leans to more letters
    spelled = torch.tensor([[tok.vocab.index("h"), tok.vocab.index("i")]])
    out = proc(spelled, scores)
    assert int(out[0].argmax()) == tok.eos_token_id
    assert torch.isinf(out[0, tok.vocab.index("a")])  # outside the top k and not the end: ruled out
    early = proc(spelled[:, :1], scores)  # "h": the head still hears an "i", the end must wait
    assert int(early[0].argmax()) != tok.eos_token_id


def test_a_hypothesis_past_the_length_cap_must_end():
    """max_length_ratio: once a hypothesis has spelled more than ratio x the head's best path (+ margin)
    characters, end-of-text is its only continuation, however much the LLM wants more letters."""
    from speechllm.ctc import CTCPrefixLogitsProcessor

    tok = LetterTokenizer()
    lp = peaked("hi there")[None]  # 24 frames, a best path of 8 characters: the cap is 1.5 x 8 + 2 = 14
    scores = torch.zeros(1, len(tok.vocab) + 1)
    scores[0, tok.vocab.index("t")] = 9.0
    scores[0, tok.eos_token_id] = -30.0
    loop = torch.tensor([[tok.vocab.index(c) for c in "hi t t t t t t t"]])  # 16 characters
    capped = CTCPrefixLogitsProcessor(lp, torch.tensor([lp.shape[1]]), tok, weight=0.1, top_k=4,
                                      max_length_ratio=1.5, max_length_margin=2)
    out = capped(loop, scores)
    assert int(out[0].argmax()) == tok.eos_token_id and torch.isfinite(out[0]).sum() == 1
    free = CTCPrefixLogitsProcessor(lp, torch.tensor([lp.shape[1]]), tok, weight=0.1, top_k=4)
    assert int(free(loop, scores)[0].argmax()) == tok.vocab.index("t")  # no cap: the loop goes on
    assert int(capped(loop[:, :2], scores)[0].argmax()) != tok.eos_token_id  # under the cap: unchanged
    # a prefix longer than the head has frames has no CTC probability: it must end, without nan
    short = CTCPrefixLogitsProcessor(peaked("hi")[None], torch.tensor([6]), tok, weight=0.1, top_k=4)
    out = short(loop, scores)
    assert not torch.isnan(out).any() and int(out[0].argmax()) == tok.eos_token_id
