import re

import pytest
from plotly.offline import get_plotlyjs

from core.analysis.report import build_report, diagnostic_keys, main
from core.config import preset
from core.runs import Run
from core.studies.report import build_study_report
from core.studies.study import builtin_names, load_study
from tests.conftest import REPO, run_cli


def _make_run(root, experiment: str, variant: str, seed: int, metrics: list[dict], summary: dict) -> None:
    run = Run.at(root, experiment, f"{variant}-s{seed}")
    config = preset("micro").to_dict()
    config["model"]["ffn"] = variant
    run.write_config({**config, "variant": variant, "seed": seed, "device": "cpu"})
    for line in metrics:
        run.append_metrics(line)
    run.write_summary(summary)
    run.write_status("completed", step=metrics[-1]["step"])


def _dual_lines(seed: int) -> list[dict]:
    lines = []
    for step in (10, 20):
        line = {"step": step, "tokens": step * 2048, "train/loss": 7.0 - step / 100 + seed / 50,
                "val/loss": 7.1 - step / 100 + seed / 50, "threshold/L0": 0.5}
        for layer in (0, 1):
            line.update({f"routing/L{layer}/sparse_weight": 0.5 + step / 100,
                         f"routing/L{layer}/mutual_info": 0.01 * step,
                         f"threshold/L{layer}/theta": 0.5, f"sparsity/L{layer}/dead_frac": 0.1,
                         f"interference/L{layer}/neg_frac": 0.2, f"alpha/L{layer}/dense": 1.0})
        lines.append(line)
    return lines


@pytest.fixture
def synthetic(tmp_path):
    """swiglu and dual x 2 seeds, the dual runs with diagnostics and knock-out losses."""
    for seed in (0, 1):
        swiglu = [{"step": s, "tokens": s * 2048, "train/loss": 7.0, "val/loss": 7.05 + seed / 100}
                  for s in (10, 20)]
        _make_run(tmp_path, "syn", "swiglu", seed, swiglu, {"final_val_loss": 7.05 + seed / 100,
                                                            "tokens": 40960})
        knockout = {"mix": 6.0 + seed * 0.2, "dense_only": 6.5, "sparse_only": 7.25}
        _make_run(tmp_path, "syn", "dual", seed, _dual_lines(seed),
                  {"final_val_loss": 6.9 + seed / 50, "knockout": knockout, "tokens": 40960})
    return tmp_path


@pytest.mark.slow
def test_report_of_the_micro_experiment(micro_experiment, tmp_path):
    root, experiment, _ = micro_experiment
    page = build_report(root, experiment)
    assert page.count(get_plotlyjs()) == 1  # self-contained, plotly.js inlined exactly once
    assert len(page) < len(get_plotlyjs()) + 2_000_000
    for text in ("Table 1", "<table", "val/loss", "swiglu", "dual", "plotly-graph-div", "Setup",
                 "micro", "builtin", "routing/", "sparsity/", "Definitions"):
        assert text in page, text
    table = page[page.index("Table 1"):page.index("Figure 1")]
    assert re.search(r"<td>swiglu</td><td class=num>2</td><td>\d\.\d{3} ± \d\.\d{3}</td>", table)
    assert re.search(r"<td>dual</td><td class=num>2</td>", table)
    out = tmp_path / "sub" / "report.html"
    result = run_cli("core.report", experiment, "--runs-dir", str(root), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("<!DOCTYPE html>") and str(out) in result.stdout


def test_report_shows_setup_knockout_and_diagnostics(synthetic):
    page = build_report(synthetic, "syn")
    setup = page[page.index("<h2>Setup"):page.index("Table 1")]
    assert "<td>0, 1</td><td>completed</td><td>micro</td>" in setup
    assert "40,960" in setup and "16 x 128" in setup and "builtin (tokenizer bpe" in setup
    knockout = page[page.index("Knock-out"):page.index("<h2>Diagnostics")]
    assert "<td>dual</td><td class=num>2</td><td class=num>6.1000 ± 0.1414</td>" in knockout
    assert "6.5000 ± 0.0000" in knockout and "7.2500 ± 0.0000" in knockout
    assert "swiglu" not in knockout  # no knock-out for a model without a router
    for group in ("routing/", "threshold/", "sparsity/", "interference/", "alpha/"):
        assert f"{group}… (mean ± std" in page
    for name in ("sparse_weight", "mutual_info", "dead_frac", "neg_frac"):
        assert f'"text":"{name}"' in page  # subplot titles
    assert "dual L1" in page


def test_report_without_diagnostics_or_knockout(tmp_path):
    for seed in (0, 1):
        _make_run(tmp_path, "plain", "swiglu", seed,
                  [{"step": 10, "tokens": 20480, "val/loss": 7.0 + seed / 10}], {"final_val_loss": 7.0})
    page = build_report(tmp_path, "plain")
    assert "No run logged diagnostic metrics" in page and "Knock-out" not in page
    assert "val/loss" in page


def test_diagnostic_keys_group_by_metric_and_layer():
    groups = {"dual": [_dual_lines(0)], "swiglu": [[{"step": 1, "val/loss": 1.0, "mem/peak_gb": 1}]]}
    keys = diagnostic_keys(groups)
    assert set(keys) == {"routing", "threshold", "sparsity", "interference", "alpha"}
    assert keys["routing"]["mutual_info"] == {"L0": "routing/L0/mutual_info", "L1": "routing/L1/mutual_info"}
    # evaluate()'s bare threshold/L0 is theta; the explicit key wins where both exist
    assert keys["threshold"] == {"theta": {"L0": "threshold/L0/theta", "L1": "threshold/L1/theta"}}
    assert diagnostic_keys({"old": [[{"step": 1, "threshold/L3": 0.4}]]}) == {
        "threshold": {"theta": {"L3": "threshold/L3"}}}


def test_missing_experiment_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="no runs"):
        build_report(tmp_path, "nothing")
    assert main(["nothing", "--runs-dir", str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err
    assert main(["../evil", "--runs-dir", str(tmp_path)]) == 2


STAMP = re.compile(r"report generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.")


@pytest.mark.parametrize("shipped", sorted((REPO / "docs" / "reports").glob("*.html")), ids=lambda p: p.stem)
def test_shipped_reports_regenerate_byte_identical(shipped):
    """`python -m core.report` on a shipped experiment or study gives the shipped page, but for the
    time (the studies' runs were made by the old recipes and ladders, without a manifest)."""
    if shipped.stem in builtin_names():
        fresh = build_study_report(REPO / "runs", load_study(shipped.stem))
    else:
        fresh = build_report(REPO / "runs", shipped.stem)
    old = shipped.read_text(encoding="utf-8")
    assert len(STAMP.findall(old)) == 1
    assert STAMP.sub("", fresh) == STAMP.sub("", old), (
        f"{shipped} is stale: regenerate it with python -m core.report")
