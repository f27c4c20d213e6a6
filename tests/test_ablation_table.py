"""The connector-ablation summary (recipes/asr/slam_tiny/ablation_table.py) chains a run's phases correctly."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "recipes/asr/slam_tiny/ablation_table.py"


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("ablation_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_phase(root: Path, run: str, losses: list[float], dev: tuple[float, float], val=None, t0=0.0):
    (root / run).mkdir(parents=True)
    lines = [{"step": 10 * (i + 1), "loss": loss, "lr": 1e-3, "time": t0 + 60.0 * (i + 1)}
             for i, loss in enumerate(losses)]
    lines.append({"step": 10 * len(losses), "dev_loss": dev[0], "dev_wer": dev[1]})
    (root / run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if val is not None:
        (root / "eval" / run).mkdir(parents=True)
        (root / "eval" / run / "results.json").write_text(json.dumps({"wer": val[0], "cer": val[1]}))


def test_phases_chain_and_window(tmp_path, table):
    write_phase(tmp_path, "lin", [5.0] * 5 + [4.0] * 5, (3.9, 1.2), val=(1.5, 0.9))  # steps 10..100
    write_phase(tmp_path, "lin_c400", [3.0, 2.0, 1.0], (1.1, 0.6))  # steps 110..130
    phases = table.read_phases(tmp_path, "lin")
    assert [p["run"] for p in phases] == ["lin", "lin_c400"]
    assert [(p["offset"], p["end"]) for p in phases] == [(0, 100), (100, 130)]
    assert phases[0]["val"] == {"wer": 1.5, "cer": 0.9} and phases[1]["val"] is None
    assert phases[1]["dev"]["dev_wer"] == 0.6
    # 10 logged steps span 9 minutes: the phase took 10
    assert phases[0]["minutes"] == pytest.approx(10.0)
    train = {k: v for p in phases for k, v in p["train"].items()}
    assert table.window_loss(train, 50) == pytest.approx(5.0)
    assert table.window_loss(train, 100) == pytest.approx(4.0)
    assert table.window_loss(train, 130) == pytest.approx((4.0 + 4.0 + 3.0 + 2.0 + 1.0) / 5)
    assert table.window_loss(train, 140) is None  # not enough steps logged


def test_missing_run_has_no_phases(tmp_path, table):
    assert table.read_phases(tmp_path, "absent") == []
