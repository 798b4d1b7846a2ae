"""core.launch: commands and records of runs, built without torch."""

import subprocess
import sys

import torch

from core.config import preset
from core.jobs.launch import grid, run_record, train_command
from core.runs import Run
from core.training.trainer import run_record as trainer_record
from tests.conftest import REPO

ORCHESTRATION = ("core.jobs.launch", "core.jobs.executors", "core.jobs.local", "core.jobs.manager",
                 "core.jobs.runner", "core.jobs.sweep", "core.jobs.recovery", "core.jobs.remote",
                 "core.jobs.rows", "core.jobs.estimate", "core.lifecycle", "core.runs", "core.sweep",
                 "core.sharing.hub", "core.studies.study", "core.studies.run", "core.studies.sweep",
                 "core.studies.results", "core.studies.manifest", "core.trackers")


def test_orchestration_imports_no_torch():
    code = (f"import sys, {', '.join(ORCHESTRATION)}\n"
            "from core.jobs.launch import grid\n"
            "grid('micro', ['swiglu', 'dual+ffn_share=none'], [0, 1], ['lr=0.01'], 5)\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


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
