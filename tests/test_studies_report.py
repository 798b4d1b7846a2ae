"""core.studies.report: the lr curve of a recipe-like study and the size trend of a ladder, from
fake runs; the report CLI's --study and its --recipe alias."""

import numpy as np
import pytest

from core.report import main
from core.runs import Run
from core.studies.plan import final_experiment, sweep_experiment
from core.studies.report import build_study_report, delta_figure, lr_figure, lr_losses
from core.studies.results import scaling_rows
from tests.test_studies_results import LADDER, RECIPE, fake, study_file


def _lr_study(root):
    study = study_file(root, RECIPE)
    losses = {1e-3: {"swiglu": [5.4], "dual": [5.5]},
              2e-3: {"swiglu": [5.0, 5.2, 5.3], "dual": [5.1, 5.0, 4.9]},
              4e-3: {"swiglu": [5.6], "dual": [5.3]}}
    for lr, by_variant in losses.items():
        for variant, values in by_variant.items():
            for seed, loss in enumerate(values):
                fake(root, final_experiment(study, study.points[0], lr), variant, seed, loss)
    return study


def test_lr_curve_has_mean_and_spread_per_lr(tmp_path):
    study = _lr_study(tmp_path)
    losses = lr_losses(study, tmp_path)
    assert list(losses) == ["swiglu", "dual"]  # the baseline first
    fig = lr_figure(losses)
    means = [t for t in fig.data if t.name == "dual"][0]
    assert list(means.x) == [1e-3, 2e-3, 4e-3]
    assert list(means.y) == pytest.approx([5.5, 5.0, 5.3])
    upper = fig.data[3]  # dual's band: upper edge first
    assert upper.y[1] == pytest.approx(5.0 + np.std([5.1, 5.0, 4.9], ddof=1))
    page = build_study_report(tmp_path, study)
    assert "Interior (worse on both sides) for dual, swiglu; at the edge of the grid for none." in page
    assert "Table 1 at each variant's best lr" in page


def test_ladder_report_draws_delta_with_its_interval(tmp_path):
    study = study_file(tmp_path, LADDER)
    lrs = study.lrs
    for rung, shift in zip(study.points, (0.1, -0.05)):
        for lr in lrs:
            fake(tmp_path, sweep_experiment(study, rung, lr), "swiglu", 0, 5.0 + lr)
            fake(tmp_path, sweep_experiment(study, rung, lr), "dual", 0, 5.0 - lr)
        for seed, noise in enumerate((0.0, 0.02, -0.01)):
            fake(tmp_path, final_experiment(study, rung, lrs[0]), "swiglu", seed, 5.0 + noise)
            fake(tmp_path, final_experiment(study, rung, lrs[-1]), "dual", seed, 5.0 + shift + 2 * noise)
    rows = scaling_rows(study, tmp_path)
    fig = delta_figure(rows)
    line = [t for t in fig.data if t.name == "dual - swiglu"][0]
    assert list(line.y) == pytest.approx([0.1 + 0.01 / 3, -0.05 + 0.01 / 3])
    assert list(fig.data[0].y) == pytest.approx([r["variants"]["dual"]["ci_high"] for r in rows])
    assert rows[0]["lrs"] == {"swiglu": lrs[0], "dual": lrs[-1]}
    page = build_study_report(tmp_path, study)
    assert "Trend with size" in page and "Table 1, rung d64" in page
    assert "2 training tokens per non-embedding parameter" in page


@pytest.mark.parametrize("flag", ["--study", "--recipe"])
def test_cli_study_report_by_path_and_errors(flag, tmp_path, capsys):
    _lr_study(tmp_path)
    out = tmp_path / "r.html"
    assert main([flag, str(tmp_path / "t.toml"), "--runs-dir", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and "Recipe t" in out.read_text()
    assert main([flag, "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    assert main(["exp", flag, "t"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not Run(tmp_path / "nope").exists()
