import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open

from core.config import apply_overrides, preset
from core.runs import Run
from core.training.trainer import lr_at
from tests.conftest import FAST, REPO, run_cli


def _losses(run: Run, key: str) -> list[tuple[int, float]]:
    records, _ = run.read_metrics(0)
    return [(r["step"], r[key]) for r in records if key in r]


def test_lr_schedule_warmup_then_cosine():
    config = apply_overrides(preset("micro"), ["lr=1.0", "warmup_steps=10", "steps=110",
                                               "min_lr_ratio=0.1"])
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(110, config) == pytest.approx(0.1)


@pytest.mark.parametrize("ffn", ["swiglu", "dual"])
def test_micro_loss_falls_well_below_uniform(micro_experiment, ffn):
    root, experiment, _ = micro_experiment
    run = Run.at(root, experiment, f"{ffn}-s0")
    assert run.read_status()["state"] == "completed"
    val = _losses(run, "val/loss")
    assert val[-1][0] == 40
    assert val[-1][1] < math.log(4096) - 1.5  # ln(vocab) = 8.32
    summary = run.read_summary()
    assert summary["final_val_loss"] == val[-1][1] and summary["params_total"] > 0
    config = run.read_config()
    assert config["variant"] == ffn and config["seed"] == 0 and config["model"]["ffn"] == ffn
    assert (run.file("model.safetensors")).exists() and (run.file("tokenizer.json")).exists()
    if ffn == "dual":
        records, _ = run.read_metrics(0)
        last = [r for r in records if "val/loss" in r][-1]
        assert 0 < last["routing/L0/sparse_weight"] < 1 and 0 < last["sparsity/L1/zero_frac"] < 1
        assert last["threshold/L0/theta"] != 0.5  # theta learned
        assert -1 <= last["interference/L0/cosine"] <= 1 and "routing/L0/mutual_info" in last
        assert set(run.read_summary()["knockout"]) == {"mix", "dense_only", "sparse_only"}


def test_seeds_differ_and_rerun_is_identical(micro_experiment, tmp_path):
    root, experiment, _ = micro_experiment
    s0, s1 = (_losses(Run.at(root, experiment, f"swiglu-s{s}"), "train/loss") for s in (0, 1))
    assert s0 != s1
    again = run_cli("core.train", "--ffn", "swiglu", "--seed", "0", "--run-dir", str(tmp_path / "r"),
                    "--no-progress", "--threads", "2", *FAST)
    assert again.returncode == 0, again.stderr
    again_losses = _losses(Run(tmp_path / "r"), "train/loss")
    assert [s for s, _ in again_losses] == [s for s, _ in s0]
    assert [v for _, v in again_losses] == pytest.approx([v for _, v in s0], abs=1e-6)


def _start(run_dir, *extra):
    cmd = [sys.executable, "-m", "core.train", "--ffn", "dual", "--seed", "3", "--run-dir", str(run_dir),
           "--no-progress", "--threads", "1", "--steps", "60", "--set", "checkpoint_every=10",
           "--set", "log_every=2", "--set", "eval_every=10", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full = _start(tmp_path / "full")
    victim = _start(tmp_path / "victim")
    run = Run(tmp_path / "victim")
    deadline = time.time() + 120
    while run.read_status().get("step", 0) < 24 and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert run.read_status()["state"] == "running" and not run.is_alive()
    refused = run_cli("core.train", "--run-dir", str(run.path))  # no --resume: refused, untouched
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = _start(tmp_path / "victim", "--resume")
    assert resumed.wait(300) == 0, resumed.stderr.read().decode()
    assert full.wait(300) == 0
    reference = Run(tmp_path / "full")
    for key in ("train/loss", "val/loss", "routing/L1/sparse_weight", "threshold/L0/theta",
                "interference/L0/cosine"):
        got, want = _losses(run, key), _losses(reference, key)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "unknown preset"),
    (["--ffn", "nonexistent"], "unknown ffn 'nonexistent'; registered: swiglu, geglu"),
    (["--set", "nonsense=1"], "unknown key"),
    (["--set", "lr=fast"], "expected float"),
    (["--experiment", "../evil"], "invalid experiment name"),
    (["--experiment", "a/b"], "invalid experiment name"),
    (["--run", ".hidden"], "invalid run name"),
    (["--data", "/nonexistent/corpus.txt"], "no such file"),
    (["--data", "fineweb"], "builtin"),
    (["--data", "hf:owner/name"], "builtin"),
])
def test_bad_input_is_one_clear_error_and_no_files(tmp_path, args, message):
    result = run_cli("core.train", "--runs-dir", str(tmp_path / "runs"), "--no-progress", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_different_config_in_existing_run_is_refused(tmp_path):
    first = run_cli("core.train", "--run-dir", str(tmp_path / "r"), "--no-progress", "--steps", "2",
                    "--set", "eval_every=1")
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "r" / "config.json").read_text()
    result = run_cli("core.train", "--run-dir", str(tmp_path / "r"), "--no-progress", "--steps", "3")
    assert result.returncode == 2 and "different config" in result.stderr
    assert (tmp_path / "r" / "config.json").read_text() == before


def test_torchrun_two_ranks_matches_one_process(tmp_path):
    common = ["--ffn", "dual", "--seed", "1", "--steps", "6", "--no-progress", "--set", "log_every=1",
              "--set", "eval_every=3", "--set", "checkpoint_every=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = run_cli("core.train", "--run-dir", str(tmp_path / "one"), "--threads", "1", *common, env=env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "core.train", "--run-dir", str(tmp_path / "two"),
                          "--threads", "1", *common], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = Run(tmp_path / "one"), Run(tmp_path / "two")
    # the val set is split across the ranks and pooled: loss and routing metrics as one process
    for key in ("train/loss", "val/loss", "routing/L0/sparse_weight", "threshold/L1/window_frac"):
        assert [v for _, v in _losses(two, key)] == pytest.approx([v for _, v in _losses(one, key)],
                                                                  abs=1e-4)
    assert json.loads(two.file("config.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


@pytest.mark.slow
def test_a_large_global_batch_runs_in_the_memory_of_its_micro_batch(tmp_path):
    """512 sequences a step, 32 micro-batches: the val batch is as large, and used to become
    [512 x 256 x 8192] fp32 logits (4.3 GB, over the limit below) in one piece. One layer: the
    logits' size is the point, and it halves the test's time (62 -> 36 s)."""
    result = run_cli("core.train", "--preset", "tiny", "--ffn", "dual", "--steps", "1",
                     "--set", "train.batch_size=512", "--set", "train.grad_accum=32",
                     "--set", "train.eval_batches=1", "--set", "num_hidden_layers=1",
                     "--run-dir", str(tmp_path / "r"), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = Run(tmp_path / "r").read_summary()
    assert summary["peak_mem_gb"] < 2.5  # the process's peak RSS; measured 0.57 GB
    assert summary["tokens"] == 512 * 256
    assert set(summary["knockout"]) == {"mix", "dense_only", "sparse_only"}


# The report's setup cut to CPU size: its 151,936-row vocabulary and a global batch of 8 in 4
# micro-batches of 2; fewer layers and shorter sequences, the builtin corpus instead of FineWeb.
PAPER_ON_CPU = ["--preset", "paper", "--ffn", "dual", "--data", "builtin", "--steps", "2",
                "--set", "data.tokenizer=bpe", "--set", "data.max_bytes=1000000",
                "--set", "data.val_fraction=0.05",
                "--set", "num_hidden_layers=2", "--set", "seq_len=64", "--set", "max_position_embeddings=64",
                "--set", "batch_size=8", "--set", "grad_accum=4", "--set", "eval_every=1",
                "--set", "eval_batches=2", "--set", "checkpoint_every=1", "--set", "log_every=1"]


@pytest.mark.slow
def test_paper_structure_runs_end_to_end_on_cpu(tmp_path):
    started = time.monotonic()
    result = run_cli("core.train", *PAPER_ON_CPU, "--run-dir", str(tmp_path / "r"), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 120
    run = Run(tmp_path / "r")
    config = json.loads(run.file("config.json").read_text())
    assert config["model"]["vocab_size"] == 151_936 and config["micro_batch"] == 2
    records, _ = run.read_metrics(0)
    assert [r["step"] for r in records if "val/loss" in r] == [1, 2]
    last = records[-1]
    assert {"interference/L0/cosine", "routing/L1/sparse_weight", "threshold/L0/grad"} <= set(last)
    assert set(run.read_summary()["knockout"]) == {"mix", "dense_only", "sparse_only"}
    assert run.checkpoint_dir() is not None and run.read_status()["state"] == "completed"


def _wait_for_step(run: Run, step: int) -> None:
    deadline = time.time() + 120
    while run.read_status().get("step", 0) < step and time.time() < deadline:
        time.sleep(0.05)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_ends_the_run_as_cancelled(tmp_path, sig):
    """SIGINT too when the trainer starts with it ignored (what `python app.py &` passes on)."""
    cmd = [sys.executable, "-m", "core.train", "--ffn", "dual", "--seed", "3", "--run-dir",
           str(tmp_path / "r"), "--no-progress", "--threads", "1", "--steps", "60", "--set", "log_every=2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_ignore_sigint)
    run = Run(tmp_path / "r")
    _wait_for_step(run, 4)
    proc.send_signal(sig)
    proc.wait(60)
    status = run.read_status()
    assert status["state"] == "cancelled" and status["error"] == "interrupted"
    assert not run.is_alive()


def test_sigusr1_checkpoints_ends_as_preempted_and_resumes_exactly(tmp_path):
    full = _start(tmp_path / "full")
    proc = _start(tmp_path / "victim")
    run = Run(tmp_path / "victim")
    _wait_for_step(run, 13)  # between checkpoints (every 10): the signal forces its own
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(60) == 75, proc.stderr.read().decode()
    status = run.read_status()
    assert status["state"] == "preempted"
    with safe_open(str(run.checkpoint_dir() / "model.safetensors"), "pt") as weights:
        assert int(weights.metadata()["step"]) == status["step"]  # checkpointed where it stopped
    assert status["step"] % 10 != 0 and status["step"] < 60
    resumed = _start(tmp_path / "victim", "--resume")
    assert resumed.wait(300) == 0, resumed.stderr.read().decode()
    assert full.wait(300) == 0
    for key in ("train/loss", "val/loss", "threshold/L0/theta"):
        got, want = _losses(run, key), _losses(Run(tmp_path / "full"), key)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)


def test_config_file_reproduces_a_run(micro_experiment, tmp_path):
    root, experiment, _ = micro_experiment
    source = Run.at(root, experiment, "dual-s1")
    again = run_cli("core.train", "--config", str(source.file("config.json")), "--run-dir",
                    str(tmp_path / "again"), "--no-progress", "--threads", "2")
    assert again.returncode == 0, again.stderr
    ours, theirs = Run(tmp_path / "again").read_config(), source.read_config()
    for section in ("model", "train", "data"):
        assert ours[section] == theirs[section]
    got, want = _losses(Run(tmp_path / "again"), "val/loss"), _losses(source, "val/loss")
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read as JSON"), ("{not json", "cannot be read as JSON"),
    ('{"model": {"hidden_size": "big"}}', "not a run config"), ('[1, 2]', "not a run config"),
])
def test_bad_config_file_is_one_message_and_no_files(tmp_path, content, message):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    runs = str(tmp_path / "runs")
    result = run_cli("core.train", "--config", str(path), "--runs-dir", runs, "--no-progress")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
    both = run_cli("core.train", "--config", str(path), "--preset", "micro", "--runs-dir", runs)
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_run_that_cannot_reach_its_tokenizer_fails_in_seconds_and_writes_nothing(tmp_path):
    """#27: offline, `paper` on FineWeb used to measure memory for ~3 min before finding that
    its Hub tokenizer cannot be fetched; every check that needs no compute now comes first."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EXPLORER_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    result = run_cli("core.train", "--preset", "paper", "--data", "fineweb", "--steps", "1",
                     "--runs-dir", str(tmp_path / "runs"), "--no-progress", env=env, timeout=120)
    assert time.monotonic() - started < 10, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("error:") == 1
    assert "tokenizer 'Qwen/Qwen2.5-0.5B' needs the Hugging Face Hub, but HF_HUB_OFFLINE" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_without_disk_for_its_checkpoints_is_refused(tmp_path, monkeypatch):
    import shutil

    from core.training import trainer

    run = Run(tmp_path / "exp" / "r")  # not made yet: its nearest existing folder is asked
    trainer.check_disk(run, 1000)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=23_999))
    with pytest.raises(ValueError, match=r"has 0.00 GB free but the run's checkpoints need about 0.00 GB"):
        trainer.check_disk(run, 1000)  # 1000 parameters x 24 B
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=24_000))
    trainer.check_disk(run, 1000)
