"""The app's tables: rounded for reading (the API and CSV keep full precision)."""

import pytest

from core.health import EXPLANATIONS
from ui.tables import RECOMPUTING, duration, estimate_text, health_note, results_table, runs_table


@pytest.mark.parametrize("seconds, text", [(None, ""), (4.4, "4 s"), (59.6, "1 min 00 s"),
                                           (200, "3 min 20 s"), (7500, "2 h 05 min")])
def test_durations(seconds, text):
    assert duration(seconds) == text


def test_runs_table_rounds_losses_and_shows_eta():
    rows = [{"run": "dual-s0", "variant": "dual", "seed": 0, "state": "running", "step": 10, "steps": 40,
             "progress": 0.25, "eta_s": 95.2, "train_loss": 6.3265370843801065, "val_loss": None,
             "error": None, "job": "12_3"}]
    frame = runs_table(rows)
    assert list(frame.columns)[8] == "eta" and frame["eta"][0] == "1 min 35 s"
    assert frame["job"][0] == "12_3"  # a cluster run's SLURM job
    assert frame["train_loss"][0] == 6.3265 and frame["progress"][0] == "25%"


def test_results_table_shows_the_cells_every_table1_shows():
    rows = [{"variant": "dual", "seeds": 3, "val_loss": "5.647 ± 0.062", "delta_vs_baseline": -0.009234567,
             "p_value": 0.82749123, "ci_low": -0.0912345, "ci_high": 0.07277, "boot_low": -0.05,
             "boot_high": 0.03, "p_paired": 0.5123, "paired_seeds": 3, "mde": 0.2111111,
             "seeds_needed": 180.0, "peak_mem_gb": 1.30456, "tok_s": 8202.4, "params": 2034836}]
    shown = results_table(rows).iloc[0]
    assert (shown["delta"], shown["p (Welch)"], shown["peak mem GB"], shown["tok/s"]) == (
        "-0.0092", "0.827", "1.30", "8,202")
    assert shown["95% CI (Welch)"] == "[-0.0912, +0.0728]" and shown["p (paired by seed)"] == "0.512 (3)"
    assert (shown["MDE (80%)"], shown["seeds for 80%"]) == ("0.2111", "180")
    assert shown["health"] == "-"
    flagged = results_table([{**rows[0], "health": "dead_units L1 (2/3)"}]).iloc[0]
    assert flagged["health"] == "dead_units L1 (2/3)"


def test_health_note_explains_the_alarms_shown():
    note = health_note([{"health": "ok"}, {"health": "dead_units L1 (2/3); aux_blowup (1/3)"}])
    assert note.splitlines() == [f"- **dead_units**: {EXPLANATIONS['dead_units']}",
                                 f"- **aux_blowup**: {EXPLANATIONS['aux_blowup']}"]
    assert health_note([{"health": "ok"}]) == ""


def test_estimate_text_says_when_it_is_still_measuring():
    pending = {"runs": 2, "concurrent": 1, "pending": 2, "seconds": None, "step_s": {}, "errors": [],
               "plan": "two"}
    assert "Estimating" in estimate_text(pending, "two")
    done = {**pending, "pending": 0, "seconds": 130.0, "step_s": {"swiglu": 0.0425, "dual": 0.0494}}
    assert "Estimated wall time on this machine: 2 min 10 s" in estimate_text(done, "two")
    assert "Cannot estimate" in estimate_text({**pending, "errors": ["dual: no CUDA"]}, "two")


def test_an_estimate_is_never_shown_under_another_grid():
    """README's screenshot read "7 min 41 s for 6 run(s)" under a grid of 2: an estimate computed
    for another plan says it is being recomputed instead."""
    six = {"runs": 6, "concurrent": 1, "pending": 0, "seconds": 461.0, "step_s": {"swiglu": 0.1},
           "errors": [], "plan": "six-runs"}
    assert estimate_text(six, "two-runs") == RECOMPUTING
    assert estimate_text({**six, "errors": ["dual: no CUDA"]}, "two-runs") == RECOMPUTING
    assert estimate_text(six, None) == ""  # no grid listed (the form cannot launch): no line
    assert "7 min 41 s** for 6 run(s)" in estimate_text(six, "six-runs")
