"""Training on tiny models: loss falls, SIGKILL + --resume equals an uninterrupted run,
torchrun with 2 processes equals one process for the same global batch, bucketing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechllm.audio import write_audio
from speechllm.train.data import make_batches
from tests.conftest import tone

WORDS = ["hello world", "the quick fox", "ask not", "speech models listen", "tiny tokenizer", "lazy dog"]


def write_manifest(folder: Path, n: int = 24) -> Path:
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for i in range(n):
        path = folder / f"clip{i}.flac"
        write_audio(path, tone(0.4 + 0.05 * (i % 7), freq=150 + 40 * (i % 6), seed=i), 16000)
        rec = Recording.from_file(path, recording_id=f"clip{i}")
        sup = SupervisionSegment(id=f"clip{i}", recording_id=f"clip{i}", start=0, duration=rec.duration,
                                 text=WORDS[i % 6])
        cut = rec.to_cut()
        cut.supervisions = [sup]
        cuts.append(cut)
    manifest = folder / "train.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    return manifest


def write_config(folder: Path, tiny_dirs: dict, manifest: Path, **overrides) -> Path:
    cfg = folder / "train.yaml"
    cfg.write_text(f"""# speechllm train {cfg}
model:
  encoder: {{type: whisper, model: {tiny_dirs['whisper']}}}
  connector: {{type: linear, stack: 2}}
  llm: {{type: hf, model: {tiny_dirs['llm']}}}
  llm_lora: {{r: 2, alpha: 4, dropout: {overrides.get('dropout', 0.1)}}}
data:
  train: [{manifest}]
  dev_fraction: 0.2
  max_batch_seconds: 2.0
  max_batch_size: 4
  augment: {{speeds: [0.9, 1.0, 1.1], noise_prob: {overrides.get('noise_prob', 0.0)}, gain_prob: 0.0}}
optim: {{lr: 0.01, warmup_steps: 2, max_steps: {overrides.get('max_steps', 12)}, grad_accum: 2}}
run: {{out_dir: {folder / 'run'}, log_every: 1, eval_every: 6, save_every: 2, eval_decode_items: 3, threads: 1}}
""")
    return cfg


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("data"))


def run_cli(*args, env=None, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "speechllm", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def final_params(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def test_make_batches_respects_duration_and_is_seeded():
    durations = [0.5, 3.0, 1.0, 2.0, 0.7, 2.5, 1.2, 0.9]
    batches = make_batches(durations, max_seconds=4.0, max_size=3, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert len(b) <= 3 and max(durations[i] for i in b) * len(b) <= 4.0 or len(b) == 1
    assert batches == make_batches(durations, 4.0, 3, seed=1, epoch=0)
    assert batches != make_batches(durations, 4.0, 3, seed=1, epoch=1)


def test_kill_and_resume_equals_uninterrupted(tmp_path, tiny_dirs, manifest):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir(), cut_dir.mkdir()
    proc = run_cli("train", str(write_config(full_dir, tiny_dirs, manifest)))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    log = [line for line in (full_dir / "run" / "log.jsonl").read_text().splitlines()]
    losses = [eval(l.replace("null", "None"))["loss"] for l in log if '"loss"' in l]
    assert losses[-1] < losses[0]
    assert (full_dir / "run" / "best" / "model.safetensors").exists()

    cfg = write_config(cut_dir, tiny_dirs, manifest)
    proc = run_cli("train", str(cfg))
    state = cut_dir / "run" / "last" / "train_state.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill once a mid-run save exists
        if state.exists() and torch.load(state, weights_only=True)["progress"]["step"] >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    step = torch.load(state, weights_only=True)["progress"]["step"]
    assert 4 <= step < 12, "the run was not interrupted mid-way"
    proc = run_cli("train", str(cfg), "run.prefetch=true", "--resume")  # prefetching changes nothing
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    a, b = final_params(full_dir / "run"), final_params(cut_dir / "run")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, tiny_dirs, manifest):
    """4 steps in one process; waveform noise is on, so the uncached path is covered too (noise is keyed by
    example, so it does not depend on how the batch is split)."""
    one = tmp_path_factory.mktemp("one")
    proc = run_cli("train", str(write_config(one, tiny_dirs, manifest, max_steps=4, dropout=0.0, noise_prob=0.5)))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return final_params(one / "run")


def torchrun(cfg: Path, *args: str, port: int) -> str:
    # per-rank batch limits are halved so the global batch is the same as the single run's
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "speechllm", "train", str(cfg), "data.max_batch_seconds=1.0", "data.max_batch_size=2", *args]
    res = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_torchrun_two_processes_match_one(tmp_path, tiny_dirs, manifest, one_process_run):
    cfg = write_config(tmp_path, tiny_dirs, manifest, max_steps=4, dropout=0.0, noise_prob=0.5)  # dropout masks differ by split
    out = torchrun(cfg, port=29531)
    results = [line for line in out.splitlines() if line.startswith("{") and '"best"' in line]
    assert len(results) == 2 and len(set(results)) == 1, out[-2000:]  # both ranks know the best dev score
    b = final_params(tmp_path / "run")
    for k, v in one_process_run.items():
        torch.testing.assert_close(v, b[k], atol=1e-5, rtol=1e-4)


def test_fsdp_under_torchrun_matches_one_process_across_a_resume(tmp_path, tiny_dirs, manifest, one_process_run):
    """run.parallel=fsdp: the LLM's and encoder's blocks are sharded over 2 processes.  Two steps, stop,
    resume for two more (the warmup covers the first two, so the shorter first schedule changes nothing):
    the gathered weights and optimizer state survive the resume, and the result equals one process."""
    cfg = write_config(tmp_path, tiny_dirs, manifest, max_steps=4, dropout=0.0, noise_prob=0.5)
    torchrun(cfg, "run.parallel=fsdp", "optim.max_steps=2", port=29533)
    state = torch.load(tmp_path / "run" / "last" / "train_state.pt", weights_only=True)
    assert state["progress"]["step"] == 2 and "optimizer_by_name" in state
    torchrun(cfg, "run.parallel=fsdp", "--resume", port=29535)
    b = final_params(tmp_path / "run")
    assert b.keys() == one_process_run.keys()
    for k, v in one_process_run.items():
        torch.testing.assert_close(v, b[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("recipes/**/config*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_configs_parse_and_name_their_command(path):
    from speechllm.config import load_config
    from speechllm.train import TrainConfig

    assert "speechllm train" in path.read_text().splitlines()[0]
    cfg = load_config(TrainConfig, path)
    assert cfg.data.train and cfg.optim.max_steps > 0


def test_encoder_cache_built_by_worker_processes_matches_in_process(tmp_path, tiny_dirs, manifest):
    from speechllm.data.manifest import load_manifest
    from speechllm.encoders.whisper import WhisperAudioEncoder, WhisperEncoderConfig
    from speechllm.train.data import EncoderCache, Example, WaveMaker

    encoder = WhisperAudioEncoder(WhisperEncoderConfig(model=tiny_dirs["whisper"])).eval()
    examples = [Example(c.id, c.duration, "x", None, c) for c in load_manifest(manifest)][:10]
    items = [(f"{e.id}@{s}", WaveMaker(e, s)) for e in examples for s in (0.9, 1.0)]
    serial, pooled = EncoderCache(tmp_path / "a", "k"), EncoderCache(tmp_path / "b", "k")
    serial.build(items, encoder, batch_size=3, progress=False)
    pooled.build(items, encoder, batch_size=3, progress=False, workers=2)
    keys = [k for k, _ in items]
    assert serial.index.keys() == pooled.index.keys() == set(keys)
    (h1, n1), (h2, n2) = serial.get(keys), pooled.get(keys)
    assert torch.equal(n1, n2) and int(n1.min()) > 0
    torch.testing.assert_close(h1, h2, atol=1e-3, rtol=0)  # fp16 storage; same features either way


def test_time_budget_shrinks_the_schedule_and_resume_keeps_it(tmp_path, tiny_dirs, manifest):
    import json

    from speechllm.config import load_config
    from speechllm.train import TrainConfig
    from speechllm.train.loop import Trainer, lr_factor

    cfg_path = write_config(tmp_path, tiny_dirs, manifest, max_steps=10_000)
    cfg = load_config(TrainConfig, cfg_path,
                          ["run.time_budget_s=6", "run.calibrate_steps=3", "run.eval_every=100000",
                           "run.save_every=5", "optim.warmup_steps=2"])
    trainer = Trainer(cfg)
    result = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    budget = [r for r in rows if "time_budget_s" in r]
    assert budget and budget[0]["step"] == 3 and 3 < budget[-1]["max_steps"] < 10_000
    assert [r["step"] for r in budget] == [3 * 2**i for i in range(len(budget))]  # re-fitted at 3, 6, 12, ...
    assert all(2 * r["step"] < r["max_steps"] for r in budget[:-1])  # ... while in the schedule's first half
    assert result["step"] == budget[-1]["max_steps"] == trainer.progress.max_steps
    # the cosine schedule was re-planned for the shorter run: the last step's lr is the floor
    assert lr_factor(result["step"], cfg.optim, trainer.progress.max_steps) == pytest.approx(cfg.optim.min_lr_ratio)
    state = torch.load(tmp_path / "run" / "last" / "train_state.pt", weights_only=True)
    assert state["progress"]["max_steps"] == result["step"]


def test_time_budget_refit_recovers_from_slow_first_steps(tmp_path, tiny_dirs, manifest, monkeypatch):
    """Steps that are slow only at first (a GPU warming up) must not shorten the whole schedule: the
    re-fits at 2x, 4x ... the calibration steps use the recent step time, and the run fills its budget."""
    import json

    from speechllm.config import load_config
    from speechllm.train import TrainConfig
    from speechllm.train.loop import Trainer

    cfg = load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest, max_steps=10_000),
                      ["run.time_budget_s=8", "run.calibrate_steps=4", "run.eval_every=100000", "run.save_every=100000"])
    trainer = Trainer(cfg)
    step = trainer._step

    def warming_step(*args):
        time.sleep(0.4 if trainer.progress.step < 4 else 0.0)  # the calibration window is slow
        return step(*args)

    monkeypatch.setattr(trainer, "_step", warming_step)
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    budget = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if "time_budget_s" in r]
    assert len(budget) >= 2 and budget[0]["seconds_per_step"] > 2 * budget[-1]["seconds_per_step"]
    assert result["step"] == budget[-1]["max_steps"] > 2 * budget[0]["max_steps"]
    assert 0.6 * 8 < wall < 8 + 4  # the budget was used, not a fraction of it


def test_cache_only_builds_every_clip_and_speed_without_the_llm(tmp_path, tiny_dirs, manifest, monkeypatch):
    from speechllm.config import load_config
    from speechllm.train import TrainConfig
    from speechllm.train.loop import Trainer, train

    cfg = load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest))
    monkeypatch.setattr("speechllm.train.loop.SpeechLLM", None)  # loading the LLM would fail the test
    result = train(cfg, cache_only=True)
    monkeypatch.undo()
    trainer = Trainer(cfg)  # a full trainer then finds everything cached
    assert result["cached_clips"] == 3 * len(trainer.train_set) + len(trainer.dev_set) == len(trainer.cache.index)


def test_init_from_starts_from_a_checkpoint_and_refuses_one_that_does_not_fit(tmp_path, tiny_dirs, manifest):
    from safetensors.torch import load_file

    from speechllm.config import load_config
    from speechllm.train import TrainConfig
    from speechllm.train.loop import Trainer

    first = load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest, max_steps=2))
    Trainer(first).train()
    saved = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    cfg = load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest),
                      [f"run.init_from={tmp_path / 'run' / 'last'}", f"run.out_dir={tmp_path / 'second'}"])
    state = Trainer(cfg).model.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(state[k], v)
    wrong = load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest),
                        [f"run.init_from={tmp_path / 'run' / 'last'}", "model.connector.stack=3"])
    with pytest.raises(ValueError, match="do not fit"):
        Trainer(wrong)
    # LoRA on more modules than the checkpoint has: refused unless run.init_new_lora, then the new
    # adapters start as a zero update (the function is the checkpoint's) and the old ones are loaded
    wider = [f"run.init_from={tmp_path / 'run' / 'last'}", "model.llm_lora.target_modules=[q_proj,v_proj,up_proj]"]
    with pytest.raises(ValueError, match="do not fit"):
        Trainer(load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest), wider))
    grown = Trainer(load_config(TrainConfig, write_config(tmp_path, tiny_dirs, manifest), [*wider, "run.init_new_lora=true"]))
    state = grown.model.state_dict()
    new = [k for k in grown.model.saved_state_dict() if k not in saved]
    assert new and all("up_proj.lora_" in k for k in new)
    assert all(state[k].abs().sum() == 0 for k in new if "lora_B" in k)
    for k, v in saved.items():
        torch.testing.assert_close(state[k], v)
