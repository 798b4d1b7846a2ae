"""Wall-time estimates: which config fields set a step's cost, the calibration command, the cache."""

import json
import subprocess
import time

import torch

import core.jobs.estimate as estimate
import core.training.cli as cli
from core.config import RunConfig, apply_overrides, preset
from tests.conftest import run_cli


def test_cost_key_ignores_what_does_not_change_a_step():
    base = preset("micro")
    same = apply_overrides(base, ["seed=3", "steps=7", "lr=0.1", "eval_every=5", "data.max_bytes=10"])
    assert estimate.cost_key(same) == estimate.cost_key(base)
    for change in ("ffn=dual", "batch_size=8", "seq_len=64", "compile=true", "hidden_size=32"):
        assert estimate.cost_key(apply_overrides(base, [change])) != estimate.cost_key(base), change


def test_calibration_command_rebuilds_the_same_config():
    config = apply_overrides(preset("tiny"), ["ffn=dual", "ffn_share=none", "router_z_loss=0.01",
                                              "batch_size=8", "device=cpu"])
    command = estimate.calibration_command(config)
    assert command[1:5] == ["-m", "core.train", "--preset", "micro"] and "--time-steps" in command
    overrides = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    rebuilt = apply_overrides(preset("micro"), overrides)
    assert rebuilt.model == config.model and rebuilt.train == config.train


def test_run_seconds_adds_start_up_steps_and_evaluations():
    config = apply_overrides(preset("micro"), ["steps=100", "eval_every=30", "diagnostics=false"])
    timing = estimate.StepTime(step_s=0.5, eval_s=2.0, startup_s=3.0, micro_batch=16, device="cpu")
    assert estimate.run_seconds(config, timing) == 3.0 + 100 * 0.5 + 4 * 2.0  # evals at 30/60/90/100
    with_knockout = apply_overrides(config, ["diagnostics=true"])
    assert estimate.run_seconds(with_knockout, timing) == 3.0 + 50 + 7 * 2.0


def test_step_times_measure_once_in_the_background_then_read_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_measure(config: RunConfig) -> estimate.StepTime:
        calls.append(config.model.ffn)
        return estimate.StepTime(0.25, 1.0, 2.0, 16, "cpu")

    monkeypatch.setattr(estimate, "measure", fake_measure)
    times = estimate.StepTimes(tmp_path / "times.json")
    config = preset("micro")
    assert times.get(config) is None  # queued
    deadline = time.time() + 10
    while times.get(config) is None and time.time() < deadline:
        time.sleep(0.05)
    assert times.get(apply_overrides(config, ["seed=5"])) == estimate.StepTime(0.25, 1.0, 2.0, 16, "cpu")
    assert calls == ["swiglu"]
    assert json.loads((tmp_path / "times.json").read_text())  # cached on disk for the next app


def test_a_failed_calibration_is_reported_not_retried(tmp_path, monkeypatch):
    def broken(config):
        raise ValueError("error: no CUDA device")

    monkeypatch.setattr(estimate, "measure", broken)
    times = estimate.StepTimes(tmp_path / "times.json")
    config = preset("micro")
    times.get(config)
    deadline = time.time() + 10
    while times.error(config) is None and time.time() < deadline:
        time.sleep(0.05)
    assert times.error(config) == "error: no CUDA device" and times.get(config) is None


def test_time_steps_cli_prints_one_json_line():
    result = run_cli("core.train", "--preset", "micro", "--ffn", "dual", "--time-steps", "2", timeout=120)
    assert result.returncode == 0, result.stderr
    timed = json.loads(result.stdout.strip().splitlines()[-1])
    assert timed["micro_batch"] == 16 and timed["device"] == "cpu"
    assert 0 < timed["step_s"] < 10 and 0 < timed["eval_s"] < 10
    bad = run_cli("core.train", "--preset", "micro", "--time-steps", "-1")
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1


def test_a_compiled_run_is_timed_compiled_with_time_for_its_compilation(monkeypatch):
    """The step is timed through torch.compile (after the same gradient self-check) as training
    runs it, the warm-up step is reported apart, and the calibration waits long enough for it."""
    compiled, checked = [], []

    def fake_compile(model):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(cli, "require_compiled_gradients", lambda model, device: checked.append(model.ffn))
    config = apply_overrides(preset("micro"), ["ffn=dual", "compile=true", "batch_size=2", "seq_len=16"])
    timed = cli.time_steps(config, 2)
    assert len(compiled) == 1 and checked == ["dual"] and timed["compile"] is True
    assert timed["first_step_s"] > 0 and timed["step_s"] > 0

    timeouts = []

    def fake_run(command, timeout):
        timeouts.append(timeout)
        line = json.dumps({"step_s": 0.5, "first_step_s": 30.5, "eval_s": 1.0, "micro_batch": 2,
                           "device": "cpu"})
        return subprocess.CompletedProcess(command, 0, stdout=line + "\n", stderr="")

    monkeypatch.setattr(estimate, "run_to_end", fake_run)
    timing = estimate.measure(config)
    eager = estimate.measure(apply_overrides(config, ["compile=false"]))
    compile_wait = estimate.CALIBRATION_TIMEOUT_S + estimate.COMPILE_TIMEOUT_S
    assert timeouts == [compile_wait, estimate.CALIBRATION_TIMEOUT_S]
    assert timing.step_s == 0.5 and eager.step_s == 0.5
