"""core.analysis.health: each alarm fires on a model built with its fault, stays quiet on a healthy
one and on the shipped comparison runs, and its limits are options."""

import json
from pathlib import Path

import pytest
import torch

from core.health import Alarm, Limits, badge, check, run_alarms, variant_badge
from core.model import build_model
from core.training.diagnostics import routing_metrics
from tests.conftest import REPO, tiny_model_config


def _probe(model, step: int = 100) -> dict:
    """One evaluation line of `model` on fixed random tokens, as the trainer logs it."""
    torch.manual_seed(1)
    return {"step": step, **routing_metrics(model, torch.randint(0, 97, (4, 32)), "cpu")}


def _kinds(alarms: list[Alarm]) -> set[tuple[str, int | None]]:
    return {(a.kind, a.layer) for a in alarms}


def test_a_healthy_model_raises_nothing():
    assert check([_probe(build_model(tiny_model_config(ffn="dual")))]) == []
    assert check([_probe(build_model(tiny_model_config(ffn="moe", moe_experts=2)))]) == []


@pytest.mark.parametrize("bias, path", [((12.0, -12.0), "dense"), ((-12.0, 12.0), "sparse")])
def test_a_saturated_router_is_a_collapse(bias, path):
    model = build_model(tiny_model_config(ffn="dual"))
    with torch.no_grad():
        model.model.layers[1].mlp.router.proj.bias.copy_(torch.tensor(bias))
    alarms = check([_probe(model)])
    assert _kinds(alarms) == {("router_collapse", 1)}
    assert f"wholly to the {path} path" in alarms[0].detail and alarms[0].value == pytest.approx(1.0)


def test_an_expert_never_chosen_is_a_collapse():
    model = build_model(tiny_model_config(ffn="moe", moe_experts=4))
    with torch.no_grad():
        model.model.layers[0].mlp.router.proj.bias[2] = -100.0
    alarms = check([_probe(model)])
    assert _kinds(alarms) == {("router_collapse", 0)}
    assert alarms[0].value == 0.0 and "expert e2" in alarms[0].detail


def test_zeroed_units_are_dead():
    model = build_model(tiny_model_config(ffn="dual"))
    ffn = model.model.layers[0].mlp
    hidden = ffn.gate_proj.weight.shape[0]
    with torch.no_grad():  # a zero gate never passes a positive threshold
        ffn.gate_proj.weight[: int(hidden * 0.6)] = 0.0
    alarms = check([_probe(model)])
    assert _kinds(alarms) == {("dead_units", 0)}
    assert alarms[0].value >= int(hidden * 0.6) / hidden


def test_a_moved_theta_is_drift():
    model = build_model(tiny_model_config(ffn="dual"))
    first = _probe(model, step=80)
    with torch.no_grad():
        model.model.layers[1].mlp.threshold.mul_(1.5)
    records = [_probe(model, step=10), first, _probe(model, step=100)]
    alarms = check(records)
    assert _kinds(alarms) == {("threshold_drift", 1)}
    assert alarms[0].value == pytest.approx(0.5, rel=1e-6)
    # the same move before the last quarter of the steps is history, not drift
    assert check([_probe(build_model(tiny_model_config(ffn="dual")), step=10), records[2]]) == []


def test_aux_loss_blowup_by_share_and_by_growth():
    line = {"step": 10, "train/loss": 4.0}
    assert check([{**line, "train/aux_loss": 0.5}])[0].kind == "aux_blowup"  # 12.5% of the loss
    grown = [{**line, "train/aux_loss": 2e-4}, {**line, "step": 20, "train/aux_loss": 3e-3}]
    assert [a.kind for a in check(grown)] == ["aux_blowup"]
    assert check(grown[:1] + [{**line, "step": 20, "train/aux_loss": 9e-4}]) == []  # under the floor


def test_limits_are_options():
    model = build_model(tiny_model_config(ffn="dual"))
    ffn = model.model.layers[0].mlp
    with torch.no_grad():
        ffn.gate_proj.weight[: ffn.gate_proj.weight.shape[0] // 4] = 0.0  # 25% dead
    record = _probe(model)
    assert check([record]) == []
    assert _kinds(check([record], Limits.from_dict({"dead_share": 0.2}))) == {("dead_units", 0)}
    for bad, message in [({"dead_shares": 0.2}, "unknown health limit"), ({"dead_share": -1}, "positive")]:
        with pytest.raises(ValueError, match=message):
            Limits.from_dict(bad)


def test_badge_and_dict_form():
    alarms = [Alarm("dead_units", 0, 0.7, "x"), Alarm("dead_units", 2, 0.6, "y"),
              Alarm("aux_blowup", None, 1, "z")]
    assert badge(alarms) == "dead_units L0,L2; aux_blowup"
    assert badge([a.to_dict() for a in alarms]) == badge(alarms) and badge([]) == ""
    assert alarms[0].to_dict()["explanation"].startswith("most sparse units")


def test_variant_badge_counts_the_runs_that_raised_each_kind():
    dead0, dead2 = Alarm("dead_units", 0, 0.7, "x").to_dict(), Alarm("dead_units", 2, 0.6, "y").to_dict()
    aux = Alarm("aux_blowup", None, 1, "z").to_dict()
    assert variant_badge([[dead0, dead2], [dead2, aux], []]) == "dead_units L0,L2 (2/3); aux_blowup (1/3)"
    assert variant_badge([[], []]) == "ok" and variant_badge([]) == ""


def test_run_alarms_reads_the_stored_list_else_checks_the_metric_lines():
    stored = [Alarm("aux_blowup", None, 1, "z").to_dict()]
    assert run_alarms({"health": stored}, [{"step": 1, "sparsity/L0/dead_frac": 0.9}]) == stored
    assert run_alarms({"health": []}, [{"step": 1, "sparsity/L0/dead_frac": 0.9}]) == []
    checked = run_alarms({}, [{"step": 1, "sparsity/L0/dead_frac": 0.9}])
    assert [(a["kind"], a["layer"]) for a in checked] == [("dead_units", 0)]


def test_table1_and_the_report_show_a_shipped_sweeps_dead_units():
    """Table 1 (every copy of it) and the report's alarm list read the runs made before the
    trainer stored alarms, from their metric lines."""
    from core.analysis.report import health_html
    from core.analysis.stats import table1
    from core.runs import experiment_records

    records = experiment_records(REPO / "runs", "cpu-scaling-d96-L3-sweep-lr0.004")
    table = table1(records).set_index("variant")
    assert table.loc["swiglu", "health"] == "ok"
    dual = table.loc["dual", "health"]
    assert dual.startswith("dead_units L") and dual.endswith("(1/1)")
    page = health_html(records)
    assert "dual-s0" in page and "swiglu-s0" not in page and "capacity is lost" in page
    assert "No run raised" in health_html([r for r in records if r["variant"] == "swiglu"])


def _shipped(sweeps: bool) -> list[Path]:
    files = sorted((REPO / "runs").glob("*/*/metrics.jsonl"))
    return [f for f in files if ("-sweep-" in f.parent.parent.name) == sweeps]


def test_no_alarm_on_the_shipped_comparison_runs():
    runs = _shipped(sweeps=False)
    assert len(runs) >= 60
    for path in runs:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert check(records) == [], path


def test_the_shipped_short_sweeps_that_lose_their_units():
    """A finding, pinned: in the scale ladder's quarter-length lr sweeps, 9 dual runs end with more
    than half of a layer's sparse units dead (52-85%); their full-length runs do not."""
    flagged = set()
    for path in _shipped(sweeps=True):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        alarms = check(records)
        assert {a.kind for a in alarms} <= {"dead_units"}, path
        if alarms:
            flagged.add(f"{path.parent.parent.name}/{path.parent.name}")
    assert len(flagged) == 9 and all(name.endswith("/dual-s0") for name in flagged)


def test_a_run_records_its_alarms_at_each_evaluation_and_the_table_shows_them(tmp_path):
    """A micro run whose theta starts so near 0 that its first moves are a large relative drift:
    the trainer stores the alarms in status.json and summary.json, the runs table shows a badge."""
    from core.config import apply_overrides, preset
    from core.jobs.rows import Cursor, row
    from core.runs import Run
    from core.training.trainer import train
    from ui.tables import runs_table

    config = apply_overrides(preset("micro"), ["model.ffn=dual", "model.threshold_init=0.001",
                                               "train.steps=8", "train.eval_every=2", "train.log_every=2",
                                               "train.checkpoint_every=8"])
    run = Run(tmp_path / "r")
    summary = train(config, run, progress=False)
    status = run.read_status()
    expected = [a.to_dict() for a in check(run.read_metrics(0)[0])]
    assert "threshold_drift" in {alarm["kind"] for alarm in expected}
    assert status["health"] == expected and summary["health"] == expected == run.read_summary()["health"]
    shown = runs_table([row(run, status, "completed", Cursor(None), False)])
    assert shown["health"].tolist() == [badge(expected)]
