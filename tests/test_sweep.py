import json

import pytest

from core.analysis.stats import table1
from core.jobs.launch import grid
from core.runs import experiment_records
from tests.conftest import FAST, run_cli


def test_sweep_produces_completed_runs_and_a_recomputable_summary(micro_experiment):
    root, experiment, stdout = micro_experiment
    records = experiment_records(root, experiment)
    assert sorted(r["name"] for r in records) == ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
    assert all(r["status"] == "completed" for r in records)
    table = table1(records).set_index("variant")
    for variant in ("swiglu", "dual"):
        finals = []
        for r in records:
            if r["variant"] == variant:
                lines = (root / experiment / r["name"] / "metrics.jsonl").read_text().splitlines()
                finals.append([json.loads(line) for line in lines if "val/loss" in line][-1]["val/loss"])
        mean = sum(finals) / 2
        std = (sum((f - mean) ** 2 for f in finals) / 1) ** 0.5
        assert table.loc[variant, "val_loss_mean"] == pytest.approx(mean, abs=1e-9)
        assert table.loc[variant, "val_loss_std"] == pytest.approx(std, abs=1e-9)
        assert f"{mean:.3f}" in stdout  # the printed summary carries the same numbers


def test_rerun_skips_completed_runs(micro_experiment):
    root, experiment, _ = micro_experiment
    before = {p: p.stat().st_mtime for p in (root / experiment).glob("*/metrics.jsonl")}
    again = run_cli("core.sweep", "--experiment", experiment, "--ffn", "swiglu", "dual", "--seeds", "0", "1",
                    "--runs-dir", str(root), "--no-progress", *FAST)
    assert again.returncode == 0, again.stderr
    assert "4 already completed, 0 to run" in again.stdout
    assert before == {p: p.stat().st_mtime for p in (root / experiment).glob("*/metrics.jsonl")}


def test_grid_validates_up_front():
    with pytest.raises(ValueError, match="at least one seed"):
        grid("micro", ["swiglu"], [], [])
    with pytest.raises(ValueError, match="unknown key"):
        grid("micro", ["swiglu"], [0], ["bogus=1"])
    cells = grid("micro", ["dual+ffn_share=none", "swiglu"], [0, 1], ["lr=0.001"])
    assert [c.name for c in cells] == ["dual+ffn_share=none-s0", "dual+ffn_share=none-s1",
                                       "swiglu-s0", "swiglu-s1"]
    assert all(c.config.train.lr == 0.001 for c in cells)


def test_sweep_bad_input_writes_nothing(tmp_path):
    result = run_cli("core.sweep", "--experiment", "x", "--ffn", "swiglu", "--seeds", "0",
                     "--set", "heads=3", "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and "unknown key" in result.stderr
    assert not (tmp_path / "runs").exists()
