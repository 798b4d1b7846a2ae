"""core.launch: commands and records of runs, built without torch."""

import subprocess
import sys

import torch

from core.config import preset
from core.jobs import launch
from core.jobs.launch import MALLOC_ENV, grid, run_record, train_command
from core.runs import Run
from core.training.trainer import run_record as trainer_record
from tests.conftest import REPO

ORCHESTRATION = ("core.jobs.launch", "core.jobs.executors", "core.jobs.local", "core.jobs.manager",
                 "core.jobs.runner", "core.jobs.sweep", "core.jobs.recovery", "core.jobs.remote",
                 "core.jobs.rows", "core.jobs.estimate", "core.lifecycle", "core.runs", "core.sweep",
                 "core.sharing.hub", "core.studies.study", "core.studies.run", "core.studies.sweep",
                 "core.studies.results", "core.studies.manifest", "core.trackers", "core.train")


def test_orchestration_imports_no_torch():
    code = (f"import sys, {', '.join(ORCHESTRATION)}\n"
            "from core.jobs.launch import grid\n"
            "grid('micro', ['swiglu', 'dual+ffn_share=none'], [0, 1], ['lr=0.01'], 5)\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_train_cli_reexecutes_once_with_the_tuned_allocator(monkeypatch):
    """``python -m core.train`` replaces itself before importing torch (imported once, not twice:
    ~2 s of every run's start), and the replacement, which has MALLOC_ENV, does not again."""
    calls = []
    monkeypatch.setattr(launch.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(launch.platform, "system", lambda: "Linux")
    monkeypatch.setattr(sys, "argv", ["core/train.py", "--preset", "micro"])
    for key in (*MALLOC_ENV, "WORLD_SIZE", "EXPLORER_NO_MALLOC_TUNING"):
        monkeypatch.delenv(key, raising=False)
    launch.reexec_with_malloc_env()
    (executable, argv, env), = calls
    assert argv == [sys.executable, "-m", "core.train", "--preset", "micro"]
    assert all(env[key] == value for key, value in MALLOC_ENV.items())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    launch.reexec_with_malloc_env()  # the re-executed process
    assert len(calls) == 1


def test_run_record_versions_match_the_trainer():
    config = preset("micro")
    ours, theirs = run_record(config, "cpu"), trainer_record(config, torch.device("cpu"))
    assert ours["versions"]["torch"] == torch.__version__
    # orchestration writes config.json before the device is known: the trainer adds the precision
    assert ours["precision"] is None and theirs["precision"]["dtype"] in ("fp32", "bf16")
    assert ours == {**theirs, "precision": None}


def test_train_command_reproduces_the_cell(tmp_path):
    cell = grid("micro", ["dual+ffn_share=none"], [3], ["lr=0.01"], 7)[0]
    command = train_command(Run(tmp_path / "r"), cell.flags, threads=2, resume=True, trackers=("wandb",))
    assert command[:3] == [sys.executable, "-m", "core.train"]
    assert command[-3:] == ["--log-to", "wandb", "--resume"]
    assert command[command.index("--variant"):][:2] == ["--variant", "dual+ffn_share=none"]
