"""Whole tiny SpeechLLM: prompt layout, loss masking, generation consistency, checkpoints,
LoRA, configs."""

from __future__ import annotations

import pytest
import torch

from speechllm.checkpoint import WEIGHTS_FILE
from speechllm.config import ConfigError, from_dict, load_config
from speechllm.decoding import DecodeOptions
from speechllm.model import IGNORE_INDEX, SpeechLLM, SpeechLLMConfig
from speechllm.prompt import AUDIO_MARKER
from tests.conftest import tone

CLIPS = [tone(1.2, seed=0), tone(0.5, seed=1), tone(0.9, seed=2)]


def tiny_config(tiny_dirs, **extra) -> SpeechLLMConfig:
    data = {
        "encoder": {"type": "whisper", "model": tiny_dirs["whisper"]},
        "connector": {"type": "linear", "stack": 4},
        "llm": {"type": "hf", "model": tiny_dirs["llm"]},
    }
    data.update(extra)
    return from_dict(SpeechLLMConfig, data)


@pytest.fixture(scope="module")
def model(tiny_dirs):
    torch.manual_seed(0)
    return SpeechLLM(tiny_config(tiny_dirs)).eval()


def test_prompt_uses_chat_template_around_audio(model):
    prefix, suffix = model.prompt.segments("Say it.")
    text = model.llm.tokenizer.decode(prefix) + AUDIO_MARKER + model.llm.tokenizer.decode(suffix)
    assert text == f"<|im_start|>user\n{AUDIO_MARKER}\nSay it.<|im_end|>\n<|im_start|>assistant\n"


def test_audio_span_and_labels(model):
    batch = model.make_batch(CLIPS, answers=["hello world", "the fox", "ask not"])
    audio, lengths = model.encode_audio(batch)
    assert torch.equal(lengths, model.audio_token_lengths(batch["sample_lengths"]))
    inputs = model.build_inputs(batch, audio, lengths)
    for i in range(3):
        n_prompt = len(batch["prefix_ids"][i]) + int(lengths[i]) + len(batch["suffix_ids"][i])
        answer = batch["answer_ids"][i]
        row = inputs["labels"][i]
        assert (row[:n_prompt] == IGNORE_INDEX).all()
        assert row[n_prompt : n_prompt + len(answer)].tolist() == answer
        assert (row[n_prompt + len(answer) :] == IGNORE_INDEX).all()
        assert int(inputs["attention_mask"][i].sum()) == n_prompt + len(answer)
        # the audio embeddings sit right after the prefix
        p = len(batch["prefix_ids"][i])
        torch.testing.assert_close(inputs["inputs_embeds"][i, p : p + lengths[i]], audio[i, : lengths[i]])
    assert answer[-1] == model.llm.tokenizer.eos_token_id


def test_loss_only_on_answer_tokens(model):
    """Changing the prompt text changes the loss; the loss equals the CE on answer tokens alone."""
    batch = model.make_batch(CLIPS[:1], answers=["hello world"])
    out = model(batch)
    audio, lengths = model.encode_audio(batch)
    inputs = model.build_inputs(batch, audio, lengths)
    logits = model.llm(inputs["inputs_embeds"], inputs["attention_mask"]).logits[0]
    labels = inputs["labels"][0]
    keep = labels[1:] != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:-1][keep], labels[1:][keep])
    torch.testing.assert_close(out.loss, manual)
    loss_sum, n_tokens = model.answer_loss(batch)
    assert n_tokens == int(keep.sum())
    torch.testing.assert_close(loss_sum / n_tokens, manual)


def test_forward_backward_reaches_connector_only(model):
    model.train()
    loss = model(model.make_batch(CLIPS[:2], answers=["a b", "c"])).loss
    loss.backward()
    assert all(p.grad is not None for p in model.connector.parameters())
    assert all(p.grad is None for p in model.llm.parameters())
    assert all(p.grad is None for p in model.encoder.model.parameters())
    model.zero_grad()
    model.eval()


def _ids(model, clips, **opts):
    options = DecodeOptions(**{"max_new_tokens": 6, **opts})
    ids = model.generate_ids(model.make_batch(clips), options)
    pad = model.llm.tokenizer.pad_token_id
    return [[t for t in row.tolist() if t != pad] for row in ids]


def test_batched_generation_equals_one_by_one(model):
    batched = _ids(model, CLIPS)
    single = [_ids(model, [c])[0] for c in CLIPS]
    assert batched == single
    assert all(len(row) > 0 for row in batched)


def test_generation_with_cache_equals_without(model):
    assert _ids(model, CLIPS, use_cache=True) == _ids(model, CLIPS, use_cache=False)


def test_beam_search_and_sampling_run(model):
    beams = _ids(model, CLIPS[:2], num_beams=3)
    torch.manual_seed(0)
    sampled = _ids(model, CLIPS[:2], do_sample=True, temperature=0.7, top_p=0.9)
    assert len(beams) == len(sampled) == 2


def test_beam_search_runs_the_prompt_once_per_clip(model, monkeypatch):
    """The prompt's cache is computed once per clip and copied to the beams: the same answers as
    transformers' own prefill (which runs each prompt num_beams times), for a fraction of the work."""
    positions = []
    layer = model.llm.model.get_decoder().layers[0]
    hook = layer.register_forward_hook(lambda mod, args, out: positions.append(args[0].shape[0] * args[0].shape[1]))
    try:
        shared = _ids(model, CLIPS, num_beams=3, max_new_tokens=6)
        shared_work = sum(positions)
        positions.clear()
        monkeypatch.setattr(model.llm, "shared_prefill", lambda *args: None)  # transformers' prefill
        repeated = _ids(model, CLIPS, num_beams=3, max_new_tokens=6)
        repeated_work = sum(positions)
    finally:
        hook.remove()
    assert shared == repeated  # CLIPS differ in length: left-padded prompts
    assert shared_work < 0.5 * repeated_work


def test_no_repeat_ngram_size_reaches_generation(model):
    def repeated_bigrams(row):
        grams = list(zip(row, row[1:]))
        return len(grams) - len(set(grams))

    free = _ids(model, CLIPS, max_new_tokens=24)
    guarded = _ids(model, CLIPS, max_new_tokens=24, no_repeat_ngram_size=2)
    assert sum(map(repeated_bigrams, free)) > 0  # the random tiny model loops ...
    assert all(repeated_bigrams(row) == 0 for row in guarded)  # ... and the guard stops every repeat


def test_checkpoint_round_trip(model, tmp_path):
    with torch.no_grad():
        for p in model.connector.parameters():
            p.add_(torch.randn_like(p))
    model.save_pretrained(tmp_path / "ck")
    saved = set(model.saved_state_dict())
    assert saved and all(k.startswith("connector.") for k in saved)
    twin = SpeechLLM.from_pretrained(tmp_path / "ck").eval()
    batch = model.make_batch(CLIPS[:2], answers=["x y", "z"])
    torch.testing.assert_close(twin(batch).loss, model(batch).loss, atol=0, rtol=0)
    assert _ids(twin, CLIPS[:2]) == _ids(model, CLIPS[:2])


def test_half_precision_checkpoint_loads_into_fp32(model, tmp_path):
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    twin = SpeechLLM.from_pretrained(tmp_path / "half").eval()
    assert twin.connector.proj.weight.dtype == torch.float32
    torch.testing.assert_close(twin.connector.proj.weight, model.connector.proj.weight.half().float())


def test_lora_weights_are_trained_and_saved(tiny_dirs, tmp_path):
    cfg = tiny_config(tiny_dirs, llm_lora={"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]},
                      encoder_lora={"r": 2, "target_modules": ["q_proj"]})
    m = SpeechLLM(cfg)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any("llm" in n and "lora_" in n for n in trainable)
    assert any("encoder" in n and "lora_" in n for n in trainable)
    assert all(n.startswith("connector.") or "lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_()
    m.save_pretrained(tmp_path / "lora")
    twin = SpeechLLM.from_pretrained(tmp_path / "lora").eval()
    m.eval()  # LoRA dropout off
    batch = m.make_batch(CLIPS[:1], answers=["hi"])
    torch.testing.assert_close(twin(batch).loss, m(batch).loss, atol=0, rtol=0)


def test_corrupt_or_mismatched_checkpoint_is_a_clear_error(model, tmp_path):
    model.save_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="unreadable weights"):
        SpeechLLM.from_pretrained(tmp_path / "ck")
    model.save_pretrained(tmp_path / "ck2")
    with pytest.raises(ConfigError, match="shape"):
        SpeechLLM.from_pretrained(tmp_path / "ck2", overrides=["connector.stack=2"])
    with pytest.raises(ConfigError, match="not a speechllm checkpoint"):
        SpeechLLM.from_pretrained(tmp_path)


def test_config_errors_name_the_key(tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match="connector: unknown key"):
        tiny_config(tiny_dirs, connector={"type": "linear", "stak": 4})
    with pytest.raises(ConfigError, match="connector.type: unknown connector type 'lin'"):
        tiny_config(tiny_dirs, connector={"type": "lin"})
    with pytest.raises(ConfigError, match="connector.stack: expected int"):
        tiny_config(tiny_dirs, connector={"type": "linear", "stack": "four"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoder: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SpeechLLMConfig, bad)
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(SpeechLLMConfig, None, ["novalue"])


def test_dotted_overrides_reach_nested_fields(tiny_dirs, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(f"encoder: {{type: whisper, model: {tiny_dirs['whisper']}}}\n"
                    f"llm: {{type: hf, model: {tiny_dirs['llm']}}}\n")
    cfg = load_config(SpeechLLMConfig, path, ["connector.type=mlp", "connector.stack=3", "prompt.system=Hi"])
    assert (cfg.connector.type, cfg.connector.stack, cfg.prompt.system) == ("mlp", 3, "Hi")


def test_generation_stops_at_the_chat_templates_turn_tokens(model):
    """EOS, and every special token a rendered chat contains (ChatML: <|im_start|>, <|im_end|>), end an
    answer: a model that opens a new turn instead of emitting EOS stops there too."""
    tok = model.llm.tokenizer
    stops = model.llm.eos_token_ids
    assert set(tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])) <= set(stops)
    assert tok.convert_tokens_to_ids("<|endoftext|>") not in stops  # not in the template: padding only
    assert tok.eos_token_id in stops


def test_full_fine_tuning_checkpoint_with_tied_embeddings_round_trips(tiny_dirs, tmp_path):
    """The LLM unfrozen: its tied input embedding and LM head are saved (as two copies) and load back tied."""
    torch.manual_seed(0)
    model = SpeechLLM(tiny_config(tiny_dirs, trainable={"llm": True})).eval()
    lm = model.llm.model
    assert lm.get_input_embeddings().weight is lm.get_output_embeddings().weight
    with torch.no_grad():
        lm.get_input_embeddings().weight.add_(0.01 * torch.randn_like(lm.get_input_embeddings().weight))
    model.save_pretrained(tmp_path / "ck")
    twin = SpeechLLM.from_pretrained(tmp_path / "ck").eval()
    torch.testing.assert_close(twin.llm.model.get_output_embeddings().weight, lm.get_output_embeddings().weight)
    batch = model.make_batch(CLIPS[:2], answers=["x y", "z"])
    torch.testing.assert_close(twin(batch).loss, model(batch).loss, atol=0, rtol=0)
