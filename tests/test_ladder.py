"""core.ladder: a model-size ladder with a short lr sweep per rung."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from core.runs import Run
from core.studies import ladder
from core.studies.ladder import (
    LADDERS,
    Ladder,
    Rung,
    best_lrs,
    final_experiment,
    rung_steps,
    scaling_rows,
    sweep_experiment,
)

MICRO = Ladder("micro", (Rung("d32", ("model.hidden_size=32", "model.intermediate_size=128")),
                         Rung("d64", ())), tokens_per_param=2.0, lrs=(1e-3, 3e-3), seeds=(0, 1),
               overrides=("eval_every=2", "checkpoint_every=2", "log_every=2"))


def test_ladders_grow_and_hold_tokens_per_parameter():
    for name, each in LADDERS.items():
        sizes = [ladder.non_embedding_params(each, rung) for rung in each.rungs]
        assert sizes == sorted(sizes) and len(sizes) >= 4, name
        for rung, size in zip(each.rungs, sizes):
            train = ladder._cells(each, rung, ["swiglu"], [0], [], None)[0].config.train
            tokens = rung_steps(each, rung) * train.batch_size * train.seq_len
            assert abs(tokens / size - each.tokens_per_param) / each.tokens_per_param < 0.01, (name, rung)
    cpu = LADDERS["cpu-scaling"]
    assert rung_steps(cpu, cpu.rungs[2]) == 400  # the tiny rung (d128-L4) is tiny's 400 steps
    assert sizes[-1] / sizes[0] > 5  # gpu-scaling spans more than 5x


def _fake(root, experiment, variant, seed, loss, metrics=None):
    run = Run.at(root, experiment, f"{variant}-s{seed}")
    run.write_config({"variant": variant, "seed": seed})
    run.write_summary({"final_val_loss": loss})
    run.append_metrics({"step": 1, "val/loss": loss, **(metrics or {})})
    run.write_status("completed")


def test_best_lrs_and_rows_by_hand(tmp_path, monkeypatch):
    monkeypatch.setitem(LADDERS, "t", MICRO)
    rung = MICRO.rungs[0]
    for lr, swiglu, dual in ((1e-3, 5.0, 6.0), (3e-3, 5.5, 5.2)):
        _fake(tmp_path, sweep_experiment("t", rung, lr), "swiglu", 0, swiglu)
        _fake(tmp_path, sweep_experiment("t", rung, lr), "dual", 0, dual)
    _fake(tmp_path, sweep_experiment("t", rung, 3e-3), "moe", 0, math.nan)  # never a best
    assert best_lrs("t", rung, tmp_path) == {"swiglu": 1e-3, "dual": 3e-3, }
    swiglu, dual = [5.0, 5.1, 5.3], [5.2, 5.25, 5.5]
    for seed, (a, b) in enumerate(zip(swiglu, dual)):
        _fake(tmp_path, final_experiment("t", rung, 1e-3), "swiglu", seed, a)
        _fake(tmp_path, final_experiment("t", rung, 3e-3), "dual", seed, b,
              {"routing/L0/sparse_weight": 0.2 + seed, "routing/L1/sparse_weight": 0.4 + seed})
    second = MICRO.rungs[1]  # its sweep done and the dual seeds training, no baseline yet
    _fake(tmp_path, sweep_experiment("t", second, 1e-3), "swiglu", 0, 5.0)
    _fake(tmp_path, sweep_experiment("t", second, 1e-3), "dual", 0, 5.1)
    _fake(tmp_path, final_experiment("t", second, 1e-3), "dual", 0, 5.1)
    rows = scaling_rows("t", tmp_path)
    assert [r["rung"] for r in rows] == ["d32"]  # the second rung has nothing to compare yet
    row = rows[0]["variants"]["dual"]
    welch = scipy_stats.ttest_ind(dual, swiglu, equal_var=False).confidence_interval(0.95)
    assert row["delta"] == pytest.approx(np.mean(dual) - np.mean(swiglu))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((welch.low, welch.high))
    assert row["routing/sparse_weight"] == pytest.approx(np.mean([0.2, 0.4, 1.2, 1.4, 2.2, 2.4]))
    assert math.isnan(rows[0]["variants"]["swiglu"]["routing/sparse_weight"])
    assert "d32" in ladder.summary_text("t", tmp_path)


@pytest.mark.slow
def test_micro_ladder_runs_sweep_then_seeds_at_the_best_lr(tmp_path, monkeypatch):
    monkeypatch.setitem(LADDERS, "mini", MICRO)
    codes = ladder.run_ladder("mini", tmp_path, progress=False)
    assert codes and all(code == 0 for code in codes.values())
    for rung in MICRO.rungs:
        best = best_lrs("mini", rung, tmp_path)
        assert set(best) == {"swiglu", "dual"}
        runs = {r.name: r for r in (Run(p["path"]) for p in ladder.rung_records("mini", rung, tmp_path))}
        assert sorted(runs) == ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
        config = runs["dual-s1"].read_config()
        assert config["train"]["lr"] == best["dual"] and config["train"]["steps"] == rung_steps(MICRO, rung)
    rows = scaling_rows("mini", tmp_path)
    assert rows[0]["non_embedding"] < rows[1]["non_embedding"]
    assert math.isfinite(rows[1]["variants"]["dual"]["routing/sparse_weight"])
