"""core.studies.select: the one best-lr rule (failed, diverged or non-finite runs never win; a tie
goes to the smaller lr)."""

import math

from core.studies.select import best_lrs, usable_loss


def rec(variant: str, loss, status: str = "completed", seed: int = 0, **summary) -> dict:
    return {"variant": variant, "seed": seed, "status": status,
            "summary": {"final_val_loss": loss, **summary}}


def test_lowest_final_loss_wins():
    runs = {1e-3: [rec("swiglu", 5.0), rec("dual", 6.0)], 2e-3: [rec("swiglu", 5.5), rec("dual", 5.2)]}
    assert best_lrs(runs) == {"swiglu": 1e-3, "dual": 2e-3}


def test_nan_inf_missing_failed_and_diverged_runs_never_win():
    runs = {1e-3: [rec("dual", 6.0)],
            2e-3: [rec("dual", math.nan)], 3e-3: [rec("dual", math.inf)], 4e-3: [rec("dual", None)],
            5e-3: [rec("dual", 1.0, status="failed")], 6e-3: [rec("dual", 1.0, status="running")],
            7e-3: [rec("dual", 1.0, diverged=True)], 8e-3: [rec("dual", True)]}
    assert best_lrs(runs) == {"dual": 1e-3}
    assert best_lrs({1e-3: [rec("moe", math.nan)]}) == {}  # no usable run: no best lr at all
    assert usable_loss(rec("dual", 5)) == 5.0


def test_a_tie_goes_to_the_smaller_lr_whatever_the_order():
    runs = {4e-3: [rec("dual", 5.0)], 1e-3: [rec("dual", 5.0)], 2e-3: [rec("dual", 5.1)]}
    assert best_lrs(runs) == {"dual": 1e-3}


def test_only_the_selection_seed_counts():
    runs = {1e-3: [rec("dual", 5.0, seed=0), rec("dual", 4.0, seed=1)], 2e-3: [rec("dual", 4.5, seed=0)]}
    assert best_lrs(runs, seed=0) == {"dual": 2e-3}
    assert best_lrs(runs) == {"dual": 1e-3}
