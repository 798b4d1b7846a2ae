"""core.studies.results: best lrs, comparisons and the trend along an axis, read back from runs
made by hand (the naming rules of core.studies.plan place them)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from core.runs import Run
from core.studies.plan import final_experiment, non_embedding_params, point_steps, sweep_experiment
from core.studies.results import best_lrs, comparison_records, point_records, scaling_rows, summary_text
from core.studies.study import load_study

LADDER = """
preset = "micro"
variants = ["swiglu", "dual"]
seeds = [0, 1]
tokens_per_param = 2.0
lrs = [1e-3, 3e-3]
overrides = ["eval_every=2", "checkpoint_every=2", "log_every=2"]
[select]
fraction = 0.25
[axis]
rungs = [{name = "d32", set = ["model.hidden_size=32", "model.intermediate_size=128"]}, {name = "d64"}]
"""
RECIPE = """
preset = "micro"
steps = 2
lrs = [1e-3, 2e-3, 4e-3]
shared_lr = 2e-3
[select]
"""


def study_file(tmp_path, text: str, name: str = "t"):
    """A study read from a file `name`.toml written in `tmp_path`."""
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_study(path)


def fake(root, experiment, variant, seed, loss, metrics=None, status="completed"):
    """A finished run of `experiment` with final val loss `loss`."""
    run = Run.at(root, experiment, f"{variant}-s{seed}")
    run.write_config({"variant": variant, "seed": seed})
    run.write_summary({"final_val_loss": loss})
    run.append_metrics({"step": 1, "val/loss": loss, **(metrics or {})})
    run.write_status(status)


def test_ladder_rungs_grow_and_hold_tokens_per_parameter():
    for name in ("cpu-scaling", "gpu-scaling"):
        study = load_study(name)
        sizes = [non_embedding_params(study, p) for p in study.points]
        assert sizes == sorted(sizes) and len(sizes) >= 4, name
    cpu = load_study("cpu-scaling")
    assert point_steps(cpu, cpu.points[2]) == 400  # the tiny rung (d128-L4) is tiny's 400 steps
    assert sizes[-1] / sizes[0] > 5  # gpu-scaling spans more than 5x


def test_recipe_best_lr_and_comparisons_by_hand(tmp_path):
    study = study_file(tmp_path, RECIPE)
    point = study.points[0]
    for lr, swiglu, dual in ((1e-3, 5.0, 6.0), (2e-3, 5.5, 5.2)):
        fake(tmp_path, final_experiment(study, point, lr), "swiglu", 0, swiglu)
        fake(tmp_path, final_experiment(study, point, lr), "dual", 0, dual)
    fake(tmp_path, final_experiment(study, point, 4e-3), "dual", 0, 1.0, status="failed")  # never wins
    fake(tmp_path, final_experiment(study, point, 4e-3), "swiglu", 1, 1.0)  # not the selection seed
    assert best_lrs(study, point, tmp_path) == {"swiglu": 1e-3, "dual": 2e-3}
    records = comparison_records(study, tmp_path)
    assert {(r["variant"], r["summary"]["final_val_loss"]) for r in records["best_lr"]} == {
        ("swiglu", 5.0), ("dual", 5.2)}
    assert {r["variant"] for r in records["shared_lr"]} == {"swiglu", "dual"}
    assert "at the shared lr 0.002" in summary_text(study, tmp_path)


def test_ladder_best_lrs_and_rows_by_hand(tmp_path):
    study = study_file(tmp_path, LADDER)
    rung = study.points[0]
    for lr, swiglu, dual in ((1e-3, 5.0, 6.0), (3e-3, 5.5, 5.2)):
        fake(tmp_path, sweep_experiment(study, rung, lr), "swiglu", 0, swiglu)
        fake(tmp_path, sweep_experiment(study, rung, lr), "dual", 0, dual)
    fake(tmp_path, sweep_experiment(study, rung, 3e-3), "moe", 0, math.nan)  # never a best
    assert best_lrs(study, rung, tmp_path) == {"swiglu": 1e-3, "dual": 3e-3}
    swiglu, dual = [5.0, 5.1, 5.3], [5.2, 5.25, 5.5]
    for seed, (a, b) in enumerate(zip(swiglu, dual)):
        fake(tmp_path, final_experiment(study, rung, 1e-3), "swiglu", seed, a)
        fake(tmp_path, final_experiment(study, rung, 3e-3), "dual", seed, b,
             {"routing/L0/sparse_weight": 0.2 + seed, "routing/L1/sparse_weight": 0.4 + seed})
    second = study.points[1]  # its sweep done and the dual seeds training, no baseline yet
    fake(tmp_path, sweep_experiment(study, second, 1e-3), "swiglu", 0, 5.0)
    fake(tmp_path, sweep_experiment(study, second, 1e-3), "dual", 0, 5.1)
    fake(tmp_path, final_experiment(study, second, 1e-3), "dual", 0, 5.1)
    rows = scaling_rows(study, tmp_path)
    assert [r["rung"] for r in rows] == ["d32"]  # the second rung has nothing to compare yet
    row = rows[0]["variants"]["dual"]
    welch = scipy_stats.ttest_ind(dual, swiglu, equal_var=False).confidence_interval(0.95)
    assert row["delta"] == pytest.approx(np.mean(dual) - np.mean(swiglu))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((welch.low, welch.high))
    assert row["routing/sparse_weight"] == pytest.approx(np.mean([0.2, 0.4, 1.2, 1.4, 2.2, 2.4]))
    assert math.isnan(rows[0]["variants"]["swiglu"]["routing/sparse_weight"])
    assert len(point_records(study, rung, tmp_path)) == 6
    assert "d32" in summary_text(study, tmp_path)


def test_an_axis_over_an_ffn_option_compares_variants_under_the_studys_labels(tmp_path):
    study = study_file(tmp_path, 'preset = "micro"\nseeds = [0, 1]\n[axis]\nkey = "model.ffn_hidden"\n'
                                 'values = [128, 256]\n')
    for point in study.points:
        width, experiment = point.name.split("=")[1], final_experiment(study, point, None)
        for seed in (0, 1):  # the runs record their variant with the point's option in the label
            fake(tmp_path, experiment, f"swiglu+ffn_hidden={width}", seed, 5.0 + seed)
            fake(tmp_path, experiment, f"dual+ffn_hidden={width}", seed, 4.9 + seed)
    rows = scaling_rows(study, tmp_path)
    assert [r["rung"] for r in rows] == ["ffn_hidden=128", "ffn_hidden=256"]
    assert rows[0]["variants"]["dual"]["delta"] == pytest.approx(-0.1)
