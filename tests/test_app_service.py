"""Unit tests of the app's callbacks (ui/service.py, ui/figures.py) on synthetic runs."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core import variants
from core.analysis.stats import Band
from core.config import apply_overrides, preset
from core.model import build_model, load_weights_state, weights_state
from core.runs import Run
from core.training.data import load_tokenizer
from core.training.trainer import run_record
from ui.figures import band_from_json, colourings, curves_figure, json_curves_figure, token_colours
from ui.service import (
    Explorer,
    Limits,
    failures,
    followed_runs,
    parse_overrides,
    parse_seeds,
    run_pair,
    variant_choice,
    variant_labels,
)

LOSSES = {  # variant -> per-seed val loss at steps 10, 20
    "swiglu": [[6.0, 5.0], [6.2, 5.4], [5.8, 5.3]],
    "dual": [[6.1, 5.1], [6.3, 5.2]],
}


@pytest.fixture
def explorer(tmp_path):
    for variant, seeds in LOSSES.items():
        for seed, values in enumerate(seeds):
            run = Run.at(tmp_path, "synth", f"{variant}-s{seed}")
            run.write_config({"variant": variant, "seed": seed, "train": {"steps": 20}})
            for step, loss in zip((10, 20), values):
                run.append_metrics({"step": step, "tokens": step * 100, "elapsed_s": step / 10 + seed,
                                    "val/loss": loss, "mem/peak_gb": 1.0 + seed, "throughput/tok_s": 1000.0})
            run.write_status("completed", step=20)
    ex = Explorer(tmp_path, start_jobs=False)
    yield ex
    ex.close()


def test_curves_band_maths_by_hand(explorer):
    data = explorer.curves("synth", "val/loss", "step")
    swiglu = data["swiglu"]
    assert swiglu["x"] == [10, 20]
    assert swiglu["mean"] == pytest.approx([6.0, (5.0 + 5.4 + 5.3) / 3])
    std_20 = math.sqrt(sum((v - 15.7 / 3) ** 2 for v in (5.0, 5.4, 5.3)) / 2)
    assert swiglu["std"][1] == pytest.approx(std_20)
    assert swiglu["min"] == [5.8, 5.0] and swiglu["max"] == [6.2, 5.4] and swiglu["n"] == [3, 3]
    assert data["dual"]["mean"] == pytest.approx([6.2, 5.15])
    assert len(swiglu["seeds"]) == 3
    by_time = explorer.curves("synth", "val/loss", "elapsed_s")
    assert by_time["swiglu"]["x"] == pytest.approx([2.0, 3.0])  # mean over seeds of elapsed_s


def test_curves_figure_has_filled_std_band(explorer):
    band = Band(x=np.array([1, 2]), mean=np.array([5.0, 4.0]), std=np.array([0.5, 0.25]),
                min=np.array([4.4, 3.7]), max=np.array([5.6, 4.3]), n=np.array([3, 3]))
    fig = curves_figure({"swiglu": band}, "val/loss")
    upper, lower, mean = fig.data
    assert list(upper.y) == [5.5, 4.25] and list(lower.y) == [4.5, 3.75] and lower.fill == "tonexty"
    assert list(mean.y) == [5.0, 4.0]
    minmax = curves_figure({"swiglu": band}, "val/loss", spread="minmax")
    assert list(minmax.data[0].y) == [5.6, 4.3] and list(minmax.data[1].y) == [4.4, 3.7]


def test_results_table_by_hand(explorer):
    rows = {r["variant"]: r for r in explorer.results("synth")}
    assert rows["swiglu"]["seeds"] == 3 and rows["dual"]["seeds"] == 2
    assert rows["swiglu"]["val_loss_mean"] == pytest.approx(15.7 / 3)
    assert rows["dual"]["delta_vs_baseline"] == pytest.approx(5.15 - 15.7 / 3)
    assert rows["swiglu"]["p_value"] is None and 0 < rows["dual"]["p_value"] < 1
    assert rows["swiglu"]["peak_mem_gb"] == pytest.approx(2.0)
    csv = explorer.results_csv("synth")
    assert "swiglu" in Path(csv).read_text() and not csv.startswith(str(explorer.root))  # nothing in runs/


def test_metric_keys_put_losses_first(explorer):
    keys = explorer.metric_keys("synth")
    assert keys[0] == "val/loss" and "step" not in keys and "throughput/tok_s" in keys


@pytest.mark.parametrize("seeds, message", [("", "at least one seed"), ("a", "not a non-negative"),
                                            ("-1", "not a non-negative"), ("0-40", "at most 16")])
def test_parse_seeds_errors(seeds, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(seeds)


def test_parse_helpers():
    assert parse_seeds("0 1, 2") == [0, 1, 2] and parse_seeds("0-2 2") == [0, 1, 2] and parse_seeds(3) == [3]
    assert parse_overrides("lr=0.1\n# note\n\n steps=3 ") == ["lr=0.1", "steps=3"]
    options = {"ffn_share": "none", "ffn_threshold": "cats"}
    assert variant_choice("dual", options) == "dual+ffn_share=none+ffn_threshold=cats"
    assert variant_choice("dual") == "dual"
    label = variant_choice("moe", {"moe_experts": 8.0}, 32, "active")
    assert label == "moe+ffn_hidden=32+ffn_match=active+moe_experts=8"
    with pytest.raises(ValueError, match="moe_top_k"):
        variant_choice("moe", {"moe_experts": 2, "moe_top_k": 3})
    with pytest.raises(ValueError, match="ffn_share"):
        variant_choice("dual", {"ffn_share": "most"})


def test_variant_labels_read_the_picked_forms_in_registry_order():
    forms = {name: [0, "width", *(o.default for o in variants.spec(name).options)]
             for name in variants.names()}
    dual = forms["dual"]
    dual[:2] = [32, "params"]
    dual[2 + [o.name for o in variants.spec("dual").options].index("ffn_share")] = "none"
    labels = variant_labels(["dual", "swiglu"], forms)
    assert labels == ["swiglu", variant_choice("dual", {"ffn_share": "none"}, 32, "params")]
    assert "ffn_share=none" in labels[1] and variant_labels(None, forms) == []


def test_a_failure_is_new_once_and_never_on_the_first_read():
    rows = [{"run": "a-s0", "state": "failed", "error": "boom"},
            {"run": "b-s0", "state": "running", "error": ""}]
    assert failures(rows, None) == ({}, ["a-s0"])  # failed before this session: not news
    assert failures(rows, []) == ({"a-s0": "boom"}, ["a-s0"])
    assert failures(rows, ["a-s0"]) == ({}, ["a-s0"])


def test_runs_to_compare_and_to_follow():
    ids = ["demo/dual-s0", "demo/dual-s1", "demo/swiglu-s0", "new/dual-s0", "new/swiglu-s0"]
    assert run_pair(ids) == ("demo/swiglu-s0", "demo/dual-s0")
    assert run_pair(["x/dual-s0", "x/dual-s1"]) == ("x/dual-s0", None) and run_pair([]) == (None, None)
    assert followed_runs(ids, "demo/swiglu-s0", None, "new") == ("new/swiglu-s0", "new/dual-s0")
    assert followed_runs(ids, "new/dual-s0", None, "new") == ("new/dual-s0", None)  # the user's choice
    assert followed_runs(ids, "demo/dual-s0", "b", "gone") == ("demo/dual-s0", "b")


def test_json_bands_and_token_colours():
    band = band_from_json({"x": [1, 2], "mean": [3.0, None], "std": [0, 0], "min": [3, 3], "max": [3, 3],
                           "n": [2, 1]})
    assert band.x.tolist() == [1, 2] and np.isnan(band.mean[1])
    data = {"dual": {"x": [1, 2], "mean": [3, 2], "std": [0, 0], "min": [3, 2], "max": [3, 2], "n": [2, 2],
                     "seeds": [([1, 2], [3, 2]), ([1, 2], [3, 2])]}}
    assert len(json_curves_figure(data, "val/loss", seeds=True).data) == 5  # two seeds, band edges, mean
    result = {"run": "e/dual-s0", "tokens": ["a", "b"], "token_loss": [None, 2.0],
              "token_stats": {"router_sparse": [[0.0, 1.0], [0.5, 0.25]]},
              "stat_info": {"router_sparse": {"low": 0.0, "high": 1.0, "meaning": "w"}}}
    assert colourings([result], None) == (["per-token loss", "router_sparse"], "router_sparse")
    assert colourings([{**result, "token_stats": {}}], "router_sparse")[1] == "per-token loss"
    assert token_colours(result, "router_sparse", 5) == [("a", 0.0), ("b", -0.5)]  # the last layer
    assert token_colours(result, "per-token loss", 0) == [("a", 0.0), ("b", 1.0)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(seeds=""), "at least one seed"),
    (dict(steps=-3), "steps must be at least 1"),
    (dict(overrides="bogus=1"), "unknown key"),
    (dict(overrides="lr"), "not key=value"),
    (dict(variants=[]), "at least one variant"),
    (dict(experiment="../x"), "invalid experiment name"),
    (dict(preset_name="huge"), "preset must be one of"),
])
def test_bad_launch_input_changes_nothing(explorer, kwargs, message):
    before = sorted(p.relative_to(explorer.root) for p in explorer.root.rglob("*"))
    args = dict(experiment="new", preset_name="micro", variants=["swiglu"], seeds="0", steps=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        explorer.launch(**args)
    assert sorted(p.relative_to(explorer.root) for p in explorer.root.rglob("*")) == before


def test_demo_limits_hold(tmp_path):
    ex = Explorer(tmp_path, limits=Limits(presets=("micro",), max_steps=50, max_seeds=2, max_queue=3),
                  start_jobs=False)
    try:
        with pytest.raises(ValueError, match="at most 50 steps"):
            ex.launch("e", "micro", ["swiglu"], "0", steps=51)
        with pytest.raises(ValueError, match="preset must be one of micro"):
            ex.launch("e", "tiny", ["swiglu"], "0", steps=5)
        with pytest.raises(ValueError, match="at most 2 seeds"):
            ex.launch("e", "micro", ["swiglu"], "0 1 2", steps=5)
        assert len(ex.launch("e", "micro", ["swiglu", "dual"], "0", steps=5)["queued"]) == 2
        with pytest.raises(ValueError, match="queue holds at most 3"):
            ex.launch("e", "micro", ["swiglu", "dual"], "1", steps=5)
    finally:
        ex.close()


@pytest.fixture
def inspectable(tmp_path):
    """A dual and a swiglu micro run with (untrained) weights and a tokenizer."""
    for ffn in ("swiglu", "dual"):
        config = apply_overrides(preset("micro"), [f"ffn={ffn}"])
        run = Run.at(tmp_path, "ins", f"{ffn}-s0")
        run.write_config(run_record(config, "cpu"))
        run.save_checkpoint(weights_state(build_model(config.model)), {"optimizer": {}}, step=1)
        _, tokenizer_path = load_tokenizer(config.data, config.model.vocab_size, progress=False)
        run.save_tokenizer(tokenizer_path)
    ex = Explorer(tmp_path, start_jobs=False)
    yield ex
    ex.close()


def test_inspect_two_runs_matches_direct_forward(inspectable):
    assert inspectable.run_ids() == ["ins/dual-s0", "ins/swiglu-s0"]
    layers = inspectable.num_layers("ins/dual-s0")
    assert inspectable.top_layer(["ins/dual-s0", None, "ins/none-s9"]) == layers - 1
    assert inspectable.top_layer([]) == 0
    swiglu, dual = inspectable.inspect(["ins/swiglu-s0", "ins/dual-s0"], "The Union is strong.")
    assert "router_sparse" in dual["token_stats"] and swiglu["token_stats"] == {}
    assert len(dual["token_stats"]["router_sparse"]) == 2
    assert len(dual["token_stats"]["router_sparse"][0]) == len(dual["ids"])
    model = build_model(apply_overrides(preset("micro"), ["ffn=dual"]).model)
    load_weights_state(model, Run.at(inspectable.root, "ins", "dual-s0").load_weights())
    out = model(torch.tensor([dual["ids"]]), return_stats=True)
    expected = out.stats["router_sparse"][1, 0].tolist()
    assert dual["token_stats"]["router_sparse"][1] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text, message", [("", "enter some text"), ("   ", "enter some text"),
                                           ("x" * 100_001, "longer than 100,000")])
def test_inspect_bad_text(inspectable, text, message):
    with pytest.raises(ValueError, match=message):
        inspectable.inspect(["ins/dual-s0"], text)


@pytest.mark.parametrize("runs, message", [([], "one or two runs"), (["a", "b", "c"], "one or two"),
                                           (["nope"], "experiment/run"), (["ins/../x"], "invalid run name"),
                                           (["ins/none-s9"], "no run")])
def test_inspect_bad_runs(inspectable, runs, message):
    with pytest.raises(ValueError, match=message):
        inspectable.inspect(runs, "hello")


@pytest.mark.parametrize("overrides, data, message", [
    ("hidden_size=4096", None, "model.hidden_size"),
    ("num_hidden_layers=48", None, "model.num_hidden_layers"),
    ("batch_size=4096", None, "train.batch_size"),
    ("ffn_hidden=100000", None, "ffn_hidden"),
    ("", "fineweb", "data.source"),
    ("", "/etc", "data.source"),
])
def test_locked_demo_refuses_costly_changes(tmp_path, overrides, data, message):
    ex = Explorer(tmp_path, limits=Limits(presets=("micro",), locked=True), start_jobs=False)
    try:
        with pytest.raises(ValueError, match=message):
            ex.plan("e", "micro", ["swiglu", "dual"], "0", 5, None, data, overrides)
        label = variant_choice("dual", {"ffn_share": "none", "ffn_threshold": "cats"})
        assert ex.plan("e", "micro", [label], "0", 5, 0.01, None,
                       "eval_every=5\nrouter_z_loss=0.01")  # FFN options and optimisation stay free
    finally:
        ex.close()
    assert not list(tmp_path.iterdir())


def test_diagnostics_bands_per_variant_and_layer(tmp_path):
    for variant in ("dual", "dual+ffn_share=none"):
        for seed, offset in ((0, 0.0), (1, 0.2)):
            run = Run.at(tmp_path, "diag", f"{variant}-s{seed}")
            run.write_config({"variant": variant, "seed": seed})
            for step in (10, 20):
                run.append_metrics({"step": step, "val/loss": 5.0, "routing/L0/mutual_info": 0.1 + offset,
                                    "routing/L1/mutual_info": 0.3 + offset, "threshold/L0/theta": 0.5})
    ex = Explorer(tmp_path, start_jobs=False)
    try:
        families = ex.diagnostic_families("diag")
        assert families["routing/mutual_info"] == {"L0": "routing/L0/mutual_info",
                                                   "L1": "routing/L1/mutual_info"}
        assert "threshold/theta" in families and "val/loss" not in str(families)
        bands = ex.diagnostics("diag", "routing/mutual_info")
        assert set(bands) == {"dual L0", "dual L1", "dual+ffn_share=none L0", "dual+ffn_share=none L1"}
        assert bands["dual L1"]["mean"] == pytest.approx([0.4, 0.4])
        assert bands["dual L1"]["std"] == pytest.approx([0.02 ** 0.5] * 2)  # sample sd of (0.3, 0.5)
        with pytest.raises(ValueError, match="no diagnostic"):
            ex.diagnostics("diag", "routing/nothing")
    finally:
        ex.close()


def test_estimate_of_a_grid_sums_its_runs_over_the_concurrent_slots(explorer, monkeypatch):
    import core.jobs.estimate as estimate

    monkeypatch.setattr(estimate, "measure", lambda config: estimate.StepTime(0.1, 1.0, 2.0, 16, "cpu"))
    explorer.step_times = estimate.StepTimes(explorer.root / ".step-times.json")
    grid = ("est", "micro", ["swiglu", "dual"], "0 1", 20)
    first = explorer.estimate(*grid)
    assert first["pending"] == 4 and first["seconds"] is None and first["runs"] == 4
    deadline = time.time() + 10
    while explorer.estimate(*grid)["seconds"] is None and time.time() < deadline:
        time.sleep(0.05)
    result = explorer.estimate(*grid)
    per_run = 2.0 + 20 * 0.1 + (1 + 3) * 1.0  # start-up, steps, one eval at step 20 plus knock-out
    assert result["seconds"] == pytest.approx(4 * per_run / explorer.jobs.max_concurrent)
    assert result["step_s"] == {"swiglu": 0.1, "dual": 0.1}
    with pytest.raises(ValueError, match="seed"):
        explorer.estimate("est", "micro", ["swiglu"], "", 20)


def test_locked_demo_refuses_tracker_mirrors(tmp_path):
    ex = Explorer(tmp_path, limits=Limits(presets=("micro",), locked=True), start_jobs=False)
    try:
        with pytest.raises(ValueError, match="mirroring metrics to trackers is off in this demo"):
            ex.launch("e", "micro", ["swiglu"], "0", 5, trackers=["wandb"])
    finally:
        ex.close()
    assert not list(tmp_path.iterdir())


def test_executor_settings_offer_slurm_where_sbatch_is_and_never_in_a_demo(monkeypatch):
    from ui import settings

    monkeypatch.setattr(settings, "slurm_available", lambda: False)
    assert (settings.app_settings({}).executors, settings.app_settings({}).executor) == (("local",), "local")
    chosen = settings.app_settings({"EXPLORER_EXECUTOR": "slurm"})
    assert (chosen.executors, chosen.executor) == (("local", "slurm"), "slurm")
    monkeypatch.setattr(settings, "slurm_available", lambda: True)
    assert settings.app_settings({}).executors == ("local", "slurm")
    assert settings.app_settings({}).executor == "local"  # offered, not chosen
    demo = settings.app_settings({"EXPLORER_DEMO": "1", "EXPLORER_EXECUTOR": "slurm"})
    assert (demo.executors, demo.executor) == (("local",), "local")
    with pytest.raises(SystemExit, match="EXPLORER_EXECUTOR must be one of local, slurm"):
        settings.app_settings({"EXPLORER_EXECUTOR": "ray"})


def test_cluster_resources_from_fields():
    from core.jobs.executors import Resources
    from ui.service import cluster_resources

    assert cluster_resources(None) == Resources()
    got = cluster_resources({"partition": " gpu ", "gpus_per_run": 4.0, "nodes_per_run": "2", "time": "",
                             "cpus_per_rank": None})
    assert got == Resources(partition="gpu", gpus_per_run=4, nodes_per_run=2)
    for fields, message in [({"gpus_per_run": 1.5}, "gpus per run must be a whole number"),
                            ({"nodes_per_run": "two"}, "nodes per run must be a whole number"),
                            ({"cpus_per_rank": True}, "cpus per rank must be a whole number"),
                            ({"memory": "8G"}, "unknown cluster resource 'memory'"),
                            ({"time": "1h"}, "not a SLURM time"),
                            ({"gpus_per_run": 3, "nodes_per_run": 2}, "spread evenly")]:
        with pytest.raises(ValueError, match=message):
            cluster_resources(fields)


def test_launch_refuses_an_executor_not_offered_and_writes_nothing(tmp_path):
    ex = Explorer(tmp_path, start_jobs=False)
    with pytest.raises(ValueError, match="executor 'slurm' is not offered here; choose local"):
        ex.launch("e", "micro", ["swiglu"], "0", executor="slurm")
    assert list(tmp_path.iterdir()) == []
    ex.close()


def test_atlas_of_the_shipped_demo_runs_side_by_side(tmp_path):
    """The Inspect tab's atlas: dual beside SwiGLU on the same validation tokens, the dual run's
    unit contexts (SwiGLU has no sparse units), each bad field one message."""
    import shutil

    from ui.figures import atlas_histograms
    from ui.tabs.inspect import _atlas_contexts, _atlas_notes, _atlas_tokens

    shipped = Path(__file__).resolve().parents[1] / "runs" / "demo"
    for name in ("dual-s0", "swiglu-s0"):  # copies: the atlas caches itself in the run folder
        shutil.copytree(shipped / name, tmp_path / "demo" / name)
    ex = Explorer(tmp_path, start_jobs=False)
    try:
        view = ex.atlas("demo/dual-s0", "demo/swiglu-s0", 1.0, 5, 2000)
        assert [run["variant"] for run in view["runs"]] == ["dual", "swiglu"]
        assert view["settings"]["tokens"] == 2000 and view["settings"]["layer"] == 1
        assert view["runs"][0]["unit"]["unit"] == 5 and view["runs"][1]["unit"] is None
        contexts = _atlas_contexts(view)
        assert set(contexts["run"]) == {"demo/dual-s0"} and len(contexts) == view["settings"]["top_k"]
        assert contexts["value"].is_monotonic_decreasing
        table = _atlas_tokens(view)
        assert len(table) == view["tokens"]["shown"] > 0 and "loss_mean_delta" in table.columns
        assert "demo/swiglu-s0" in _atlas_notes(view) and atlas_histograms(view) is not None
        assert ex.atlas("demo/dual-s0", None, 1, 5, 2000)["runs"][0]["cached"]  # the second look
        for bad, message in [(("", None, 0, 0, 100), "pick run A"),
                             (("demo/dual-s0", None, 0, 0, 0), "tokens"),
                             (("demo/dual-s0", None, 0, -1, 100), "whole numbers"),
                             (("demo/dual-s0", None, 9, 0, 100), "layer must be")]:
            with pytest.raises(ValueError, match=message):
                ex.atlas(*bad)
    finally:
        ex.close()
