"""core.recipe_report: the lr curve of a recipe and the size trend of a ladder, from fake runs."""

import numpy as np
import pytest

from core.analysis.report import main
from core.runs import Run
from core.studies import ladder, recipes
from core.studies.report import build_recipe_report, delta_figure, lr_figure, lr_losses
from tests.test_ladder import MICRO, _fake


def _lr_recipe(root, monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "t", recipes.Recipe("micro", 2, (1e-3, 2e-3, 4e-3), 2e-3))
    losses = {1e-3: {"swiglu": [5.4], "dual": [5.5]},
              2e-3: {"swiglu": [5.0, 5.2, 5.3], "dual": [5.1, 5.0, 4.9]},
              4e-3: {"swiglu": [5.6], "dual": [5.3]}}
    for lr, by_variant in losses.items():
        for variant, values in by_variant.items():
            for seed, loss in enumerate(values):
                _fake(root, recipes.experiment_name("t", lr), variant, seed, loss)
    return losses


def test_lr_curve_has_mean_and_spread_per_lr(tmp_path, monkeypatch):
    _lr_recipe(tmp_path, monkeypatch)
    losses = lr_losses("t", tmp_path)
    assert list(losses) == ["swiglu", "dual"]  # the baseline first
    fig = lr_figure(losses)
    means = [t for t in fig.data if t.name == "dual"][0]
    assert list(means.x) == [1e-3, 2e-3, 4e-3]
    assert list(means.y) == pytest.approx([5.5, 5.0, 5.3])
    upper = fig.data[3]  # dual's band: upper edge first
    assert upper.y[1] == pytest.approx(5.0 + np.std([5.1, 5.0, 4.9], ddof=1))
    page = build_recipe_report(tmp_path, "t")
    assert "Interior (worse on both sides) for dual, swiglu; at the edge of the grid for none." in page
    assert "Table 1 at each variant's best lr" in page


def test_ladder_report_draws_delta_with_its_interval(tmp_path, monkeypatch):
    monkeypatch.setitem(ladder.LADDERS, "t", MICRO)
    for rung, shift in zip(MICRO.rungs, (0.1, -0.05)):
        for lr in MICRO.lrs:
            _fake(tmp_path, ladder.sweep_experiment("t", rung, lr), "swiglu", 0, 5.0 + lr)
            _fake(tmp_path, ladder.sweep_experiment("t", rung, lr), "dual", 0, 5.0 - lr)
        for seed, noise in enumerate((0.0, 0.02, -0.01)):
            _fake(tmp_path, ladder.final_experiment("t", rung, MICRO.lrs[0]), "swiglu", seed, 5.0 + noise)
            _fake(tmp_path, ladder.final_experiment("t", rung, MICRO.lrs[-1]), "dual", seed,
                  5.0 + shift + 2 * noise)
    rows = ladder.scaling_rows("t", tmp_path)
    fig = delta_figure(rows)
    line = [t for t in fig.data if t.name == "dual - swiglu"][0]
    assert list(line.y) == pytest.approx([0.1 + 0.01 / 3, -0.05 + 0.01 / 3])
    assert list(fig.data[0].y) == pytest.approx([r["variants"]["dual"]["ci_high"] for r in rows])
    assert rows[0]["lrs"] == {"swiglu": MICRO.lrs[0], "dual": MICRO.lrs[-1]}
    page = build_recipe_report(tmp_path, "t")
    assert "Trend with size" in page and "Table 1, rung d64" in page


def test_cli_recipe_report_and_errors(tmp_path, monkeypatch, capsys):
    _lr_recipe(tmp_path, monkeypatch)
    out = tmp_path / "r.html"
    assert main(["--recipe", "t", "--runs-dir", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["--recipe", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    assert main(["exp", "--recipe", "t"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not Run(tmp_path / "nope").exists()
