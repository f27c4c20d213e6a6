"""Contract tests run over every registered encoder and connector on tiny random models:
output shapes, ``output_lengths`` agreeing with ``forward``, gradient flow, batch
independence, dtype, and save -> load round trips."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechllm.config import from_dict
from speechllm.connectors import ConnectorConfig
from speechllm.encoders import EncoderConfig
from speechllm.registry import CONNECTORS, ENCODERS
from tests.conftest import tone

TINY_CONNECTORS = {
    "linear": {"type": "linear", "stack": 3},
    "mlp": {"type": "mlp", "stack": 2, "hidden_dim": 24},
    "conv": {"type": "conv", "kernel_size": 5, "stride": 3, "hidden_dim": 24},
    "qformer": {"type": "qformer", "window": 4, "num_queries": 2, "hidden_dim": 16, "num_heads": 2, "num_layers": 1},
}
# (type, tiny model dir): hf_ssl runs over the three SSL families it serves
TINY_ENCODERS = [("whisper", "whisper"), ("hf_ssl", "wav2vec2"), ("hf_ssl", "hubert"), ("hf_ssl", "wavlm")]


def test_every_registered_component_has_a_tiny_config():
    assert sorted(TINY_CONNECTORS) == CONNECTORS.names()
    assert sorted({t for t, _ in TINY_ENCODERS}) == ENCODERS.names()


@pytest.fixture(scope="module", params=TINY_ENCODERS, ids=[d for _, d in TINY_ENCODERS])
def encoder(request, tiny_dirs):
    kind, folder = request.param
    return ENCODERS.build(from_dict(EncoderConfig, {"type": kind, "model": tiny_dirs[folder]})).eval()


CLIPS = [tone(1.3, seed=0), tone(0.45, seed=1), tone(0.8, seed=2)]


def test_encoder_output_lengths_match_forward(encoder):
    features, sample_lengths = encoder.prepare(CLIPS)
    hidden, lengths = encoder(features, sample_lengths)
    assert hidden.shape == (3, int(lengths.max()), encoder.output_dim)
    assert torch.equal(lengths, encoder.output_lengths(sample_lengths))


def test_encoder_clip_alone_equals_clip_in_batch(encoder):
    if not getattr(encoder, "use_attention_mask", True):
        pytest.skip("group-norm SSL models normalise over padding")
    batched, lengths = encoder.encode(CLIPS)
    for i, clip in enumerate(CLIPS):
        alone, n = encoder.encode([clip])
        assert int(n[0]) == int(lengths[i])
        torch.testing.assert_close(batched[i, : n[0]], alone[0], atol=1e-5, rtol=1e-4)


def test_encoder_gradient_reaches_weights(encoder):
    encoder.train()
    hidden, _ = encoder.encode(CLIPS[:2])
    hidden.pow(2).mean().backward()
    grads = [p.grad for p in encoder.model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    encoder.zero_grad()
    encoder.eval()


@pytest.mark.parametrize("layer", [1, -1])
def test_encoder_layer_choice(tiny_dirs, layer):
    cfg = from_dict(EncoderConfig, {"type": "whisper", "model": tiny_dirs["whisper"], "layer": layer})
    enc = ENCODERS.build(cfg).eval()
    first, _ = enc.encode(CLIPS[:1])
    full = ENCODERS.build(from_dict(EncoderConfig, {"type": "whisper", "model": tiny_dirs["whisper"]})).eval()
    last, _ = full.encode(CLIPS[:1])
    assert torch.equal(first, last) == (layer == -1)


def test_weighted_layers_learn(tiny_dirs):
    cfg = from_dict(EncoderConfig, {"type": "whisper", "model": tiny_dirs["whisper"], "weighted_layers": True})
    enc = ENCODERS.build(cfg)
    hidden, _ = enc.encode(CLIPS[:1])
    hidden.sum().backward()
    assert enc.selector.layer_weights.grad is not None and enc.selector.layer_weights.grad.abs().sum() > 0


def test_whisper_long_audio_is_encoded_in_windows(tiny_dirs):
    enc = ENCODERS.build(from_dict(EncoderConfig, {"type": "whisper", "model": tiny_dirs["whisper"]})).eval()
    long_clip = tone(31.0)
    hidden, lengths = enc.encode([long_clip, tone(1.0)])
    assert int(lengths[0]) == 1500 + 50  # 30 s window -> 1500 frames, 1 s rest -> 50
    assert torch.equal(lengths, enc.output_lengths(torch.tensor([len(long_clip), 16000])))
    assert hidden.shape[1] == int(lengths[0])


def test_whisper_log_mel_equals_the_feature_extractor(tiny_dirs):
    """Our batched front end (which also runs on the encoder's GPU) gives transformers' own features."""
    from speechllm.encoders.whisper import whisper_log_mel

    enc = ENCODERS.build(from_dict(EncoderConfig, {"type": "whisper", "model": tiny_dirs["whisper"]}))
    fe = enc.feature_extractor
    waves = [tone(0.7, seed=1), tone(2.3, freq=300, seed=2), tone(1.01, seed=3)]
    got, lengths = whisper_log_mel(fe, waves)
    assert lengths.tolist() == [len(w) for w in waves]
    for i, wave in enumerate(waves):
        ref = fe(wave, sampling_rate=fe.sampling_rate, padding="longest", truncation=False,
                 return_tensors="pt").input_features[0][:, : len(wave) // fe.hop_length]
        torch.testing.assert_close(got[i, :, : ref.shape[1]], ref, atol=1e-5, rtol=0)
        assert not got[i, :, ref.shape[1]:].any()  # zero padding after the clip


@pytest.fixture(params=sorted(TINY_CONNECTORS))
def connector(request):
    torch.manual_seed(0)
    return CONNECTORS.build(from_dict(ConnectorConfig, TINY_CONNECTORS[request.param]), input_dim=8, output_dim=12)


def test_connector_shapes_and_lengths(connector):
    lengths = torch.tensor([17, 5, 1])
    hidden = torch.randn(3, 17, 8)
    out, out_lengths = connector(hidden, lengths)
    assert torch.equal(out_lengths, connector.output_lengths(lengths))
    assert out.shape == (3, int(out_lengths.max()), 12)
    for i in range(3):  # padding positions are zero, valid ones not
        assert out[i, out_lengths[i]:].abs().sum() == 0
        assert out[i, : out_lengths[i]].abs().sum() > 0


def test_connector_ignores_padding(connector):
    """A sequence alone gives the same embeddings as when padded in a batch with garbage after it."""
    hidden = torch.randn(1, 7, 8)
    alone, n = connector(hidden, torch.tensor([7]))
    padded = torch.cat([hidden, 100 * torch.randn(1, 6, 8)], dim=1)
    batched, m = connector(padded, torch.tensor([7]))
    assert torch.equal(n, m)
    torch.testing.assert_close(batched[:, : n[0]], alone, atol=1e-5, rtol=1e-4)


def test_connector_gradient_flow(connector):
    hidden = torch.randn(2, 9, 8, requires_grad=True)
    out, _ = connector(hidden, torch.tensor([9, 4]))
    out.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    assert all(p.grad is not None for p in connector.parameters())


def test_connector_save_load_round_trip(connector, tmp_path):
    save_file(connector.state_dict(), str(tmp_path / "c.safetensors"))
    name = type(connector).__name__.replace("Connector", "").lower()
    twin = CONNECTORS.build(from_dict(ConnectorConfig, TINY_CONNECTORS[name]), input_dim=8, output_dim=12)
    twin.load_state_dict(load_file(str(tmp_path / "c.safetensors")))
    hidden, lengths = torch.randn(2, 9, 8), torch.tensor([9, 6])
    torch.testing.assert_close(twin(hidden, lengths)[0], connector(hidden, lengths)[0], atol=0, rtol=0)


def test_connector_bf16(connector):
    connector.to(torch.bfloat16)
    out, _ = connector(torch.randn(2, 9, 8, dtype=torch.bfloat16), torch.tensor([9, 3]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_linear_connector_value_is_pinned():
    """Frame stacking order: output = W @ [h_0; h_1] + b, pinned under a fixed init."""
    torch.manual_seed(0)
    conn = CONNECTORS.build(from_dict(ConnectorConfig, {"type": "linear", "stack": 2}), input_dim=2, output_dim=1)
    with torch.no_grad():
        conn.proj.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        conn.proj.bias.zero_()
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    out, lengths = conn(hidden, torch.tensor([3]))
    assert lengths.tolist() == [2]
    assert out[0, :, 0].tolist() == [1 + 20 + 300 + 4000, 5 + 60]  # second window zero-padded
