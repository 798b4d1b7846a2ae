"""core.analysis.atlas: corpus statistics against a brute-force per-position loop, the unit hooks,
the cache, exports, the CLI's bad inputs and the app's view."""

import json
import math
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from core import variants
from core.analysis import atlas as atlas_mod
from core.analysis import inspection
from core.analysis.atlas import (
    CONTEXT,
    atlas_view,
    compute_atlas,
    export_atlases,
    read_table,
    run_atlases,
    token_table,
    unit_table,
)
from core.analysis.atlas import compute as atlas_compute
from core.analysis.atlas import export as atlas_export
from core.config import apply_overrides, preset
from core.model import build_model, weights_state
from core.runs import Run
from core.training.data import load_tokenizer
from core.training.trainer import run_record
from tests.conftest import REPO, run_cli, tiny_model_config

# (ffn, options) of every variant kind: a router + cut, experts, a plain sparse activation, dense
VARIANTS = [("dual", {}), ("dual", {"ffn_threshold": "cats", "ffn_share": "none"}), ("moe", {"moe_top_k": 2}),
            ("relu2", {}), ("swiglu", {})]
VARIANT_IDS = ["dual", "dual-cats-none", "moe-top2", "relu2", "swiglu"]
TOKENS = 600  # a few micro windows (seq 128): enough for every code path, fast on 2 cores


def _perturb(model) -> None:
    """A non-uniform router (a learned one starts at 1/2-1/2) and thresholds off their init."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "router" in name:
                param.normal_(0.0, 0.5)
            elif name.endswith("threshold"):
                param.uniform_(0.2, 1.0)


def _random_model(ffn: str, options: dict):
    model = build_model(tiny_model_config(ffn=ffn, **options))
    _perturb(model)
    return model.eval()


def _windows(n: int, seq_len: int) -> list[tuple[int, int]]:
    return [(start, min(start + seq_len, n)) for start in range(0, n, seq_len)]


def _brute_force(model, ids: np.ndarray, seq_len: int) -> dict:
    """Per-position values from one forward per window, pooled by plain Python loops."""
    n, layers = len(ids) - 1, model.config.num_hidden_layers
    captured: list = []
    hooks = [layer.mlp.register_forward_pre_hook(lambda m, args: captured.append(m.unit_activity(args[0])))
             for layer in model.model.layers]
    per_token = defaultdict(lambda: defaultdict(list))  # token -> (stat, layer) -> values
    losses, unit_values = defaultdict(list), [[] for _ in range(layers)]  # [L][position] -> [U]
    try:
        for start, end in _windows(n, seq_len):
            captured.clear()
            x, y = torch.tensor(ids[start:end])[None], torch.tensor(ids[start + 1:end + 1])
            with torch.no_grad():
                out = model(x, return_stats=True)
            log_probs = out.logits[0].double().log_softmax(-1)
            for t in range(end - start):
                token, target = int(x[0, t]), int(y[t])
                losses[target].append(-log_probs[t, target].item())
                for name, value in out.stats.items():
                    if value.dim() == 3:  # a per-token statistic [L, B, T]
                        for layer in range(layers):
                            per_token[token][(name, layer)].append(value[layer, 0, t].item())
                for layer, activity in enumerate(captured):
                    if activity is not None:
                        unit_values[layer].append(activity.values[0, t].double().numpy())
    finally:
        for hook in hooks:
            hook.remove()
    return {"per_token": per_token, "losses": losses, "units": unit_values}


@pytest.mark.parametrize("ffn,options", VARIANTS, ids=VARIANT_IDS)
def test_atlas_equals_brute_force(ffn, options):
    torch.manual_seed(1)
    model = _random_model(ffn, options)
    seq_len = model.config.max_position_embeddings  # 32: 8 full windows + a shorter last one
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 8 * seq_len + 21)
    atlas = compute_atlas(model, ids, top_k=4, seq_len=seq_len, per_batch=3)  # batches: 3, 3, 2, 1 windows
    brute = _brute_force(model, ids, seq_len)
    table = token_table(atlas).set_index("token_id")
    n = len(ids) - 1
    counts = np.bincount(ids[:-1], minlength=model.config.vocab_size)
    assert table["count"].sum() == n and (table["count"] == counts[table.index]).all()
    for token, row in table.iterrows():
        for (name, layer), values in brute["per_token"][token].items():
            assert row[f"{name}_mean_L{layer}"] == pytest.approx(np.mean(values), abs=1e-6)
            assert row[f"{name}_std_L{layer}"] == pytest.approx(np.std(values), abs=1e-6)
        if brute["losses"][token]:
            assert row["loss_count"] == len(brute["losses"][token])
            assert row["loss_mean"] == pytest.approx(np.mean(brute["losses"][token]), abs=1e-5)
    assert set(atlas.meta["stats"]) == {s.name for s in variants.spec(ffn).token_stats()}
    _check_units(atlas, brute["units"], ids)


def _check_units(atlas, unit_values: list, ids: np.ndarray) -> None:
    """Frequencies equal the brute-force counts; each unit's top contexts hold its true maximum."""
    if not unit_values[0]:
        assert unit_table(atlas) is None
        return
    n = len(ids) - 1
    units = unit_table(atlas, contexts=False)
    padded = np.concatenate([np.full(CONTEXT, -1), ids, np.full(CONTEXT, -1)])
    for layer, rows in enumerate(unit_values):
        values = np.stack(rows)  # [N, U]
        assert values.shape[0] == n
        frequency = units[units["layer"] == layer]["frequency"].to_numpy()
        np.testing.assert_allclose(frequency, (values > 0).mean(0), atol=1e-6)
        top_value = atlas.arrays["top_value"][layer]
        top_position = atlas.arrays["top_position"][layer]
        for unit in range(values.shape[1]):
            best = values[:, unit].max()
            if best <= 0:
                assert (top_position[:, unit] == -1).all()  # a dead unit has no contexts
                continue
            assert top_value[0, unit] == pytest.approx(best, abs=1e-6)
            position = int(np.argmax(values[:, unit]))
            assert position in top_position[:, unit]
            rank = list(top_position[:, unit]).index(position)
            window = atlas.arrays["top_context"][layer][rank, unit]
            assert (window == padded[position:position + 2 * CONTEXT + 1]).all()


def test_histograms_count_every_position_and_mark_theta():
    model = _random_model("dual", {})
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, 200)
    atlas = compute_atlas(model, ids)
    for layer in range(atlas.layers):
        hists = atlas_mod.histograms(atlas, layer)
        for name in ("router_sparse", "zero_frac"):
            h = hists[name]
            assert sum(h["counts"]) + h["below"] + h["above"] == 199 and h["below"] == h["above"] == 0
            assert len(h["edges"]) == len(h["counts"]) + 1
        score = hists["score"]
        units = atlas.meta["units"]
        assert sum(score["counts"]) + score["below"] + score["above"] == 199 * units
        assert score["cut"] == pytest.approx(model.model.layers[layer].mlp.threshold.item())
        routed = np.array(hists["router_sparse"]["counts"])
        assert (routed > 0).sum() > 3  # the perturbed router spreads tokens over the range


def test_histogram_edges():
    values = torch.tensor([[-0.1, 0.0, 0.5, 0.999, 1.0, 1.1, float("nan")]])
    counts = atlas_compute._histogram(values, 0.0, 1.0, 4)[0].tolist()
    assert counts == [1, 1, 0, 1, 2, 2]  # below; [0, .25) ... [.75, 1]; above (1.1 and NaN)


@pytest.mark.parametrize("ffn,options", VARIANTS[:4], ids=VARIANT_IDS[:4])
def test_unit_activity_matches_each_variants_forward(ffn, options):
    """> 0 exactly where the unit's output is non-zero: dual's sparse path, relu2's hidden
    units, the experts a token was sent to (with the weight its output got)."""
    model = _random_model(ffn, options)
    mlp, x = model.model.layers[0].mlp, torch.randn(2, 7, model.config.hidden_size)
    with torch.no_grad():
        activity, (_, _, stats) = mlp.unit_activity(x), mlp(x, return_stats=True)
    active = activity.values > 0
    assert (activity.values >= 0).all()
    if ffn == "moe":
        assert (active.sum(-1) == mlp.top_k).all()
        _, _, top_w, _ = mlp.route(x.reshape(-1, x.shape[-1]))
        torch.testing.assert_close(activity.values.sum(-1).reshape(-1), top_w.sum(-1))
        return
    # the exact zeros of the sparse activation are the inactive units
    torch.testing.assert_close(1 - active.float().mean(-1), stats["zero_frac"])
    if ffn == "dual":
        assert activity.cut == mlp.threshold.item()
        torch.testing.assert_close(active, activity.score > activity.cut)


# ---------------------------------------------------------------- runs on disk


def make_run(path, overrides: list[str], seed: int = 0) -> Run:
    """A micro run on disk (config, weights, tokenizer), untrained, its router perturbed."""
    config = apply_overrides(preset("micro"), overrides)
    torch.manual_seed(seed)
    model = build_model(config.model)
    _perturb(model)
    run = Run(path)
    run.write_config(run_record(config, "cpu"))
    run.save_checkpoint(weights_state(model), {"optimizer": {}}, step=1)
    _, tokenizer_path = load_tokenizer(config.data, config.model.vocab_size, progress=False)
    run.save_tokenizer(tokenizer_path)
    return run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas-runs")
    make_run(root / "exp" / "dual-s0", ["model.ffn=dual"])
    make_run(root / "exp" / "frozen-s0", ["model.ffn=dual", "model.ffn_router=frozen_random"], seed=1)
    make_run(root / "exp" / "swiglu-s0", ["model.ffn=swiglu"])
    return root


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    inspection.clear_model_cache()
    yield
    inspection.clear_model_cache()


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cache_hit_then_invalidated_by_new_weights(runs_root):
    run = Run(runs_root / "exp" / "dual-s0")
    for old in run.path.glob("atlas-*.npz"):
        old.unlink()
    before = dict(atlas_mod.CACHE_STATS)
    (first,), _ = run_atlases(run, TOKENS)
    (second,), _ = run_atlases(run, TOKENS)
    assert atlas_mod.CACHE_STATS["computed"] == before["computed"] + 1
    assert atlas_mod.CACHE_STATS["hits"] == before["hits"] + 1
    assert not first.meta["cached"] and second.meta["cached"]
    assert first.meta["tokens"] == TOKENS and first.meta["seq_len"] == 128
    for name, array in first.arrays.items():
        np.testing.assert_array_equal(array, second.arrays[name], err_msg=name)
    assert len(list(run.path.glob("atlas-*.npz"))) == 1
    # new weights (what a resumed training publishes): a new key, the stale file removed
    config = apply_overrides(preset("micro"), ["model.ffn=dual"])
    torch.manual_seed(5)  # other weights than make_run's
    model = build_model(config.model)
    _perturb(model)
    run.save_checkpoint(weights_state(model), {"optimizer": {}}, step=2)
    (third,), _ = run_atlases(run, TOKENS)
    assert not third.meta["cached"] and atlas_mod.CACHE_STATS["computed"] == before["computed"] + 2
    assert not np.allclose(third.arrays["sum__router_sparse"], first.arrays["sum__router_sparse"])
    assert len(list(run.path.glob("atlas-*.npz"))) == 1


def test_settings_change_the_key_not_the_weights(runs_root):
    run = Run(runs_root / "exp" / "swiglu-s0")
    (a,), _ = run_atlases(run, 300)
    (b,), _ = run_atlases(run, 300, top_k=3)
    assert not b.meta["cached"] and a.meta["tokens"] == 300
    assert len(list(run.path.glob("atlas-*.npz"))) == 2  # same weights: both kept
    assert unit_table(a) is None and list(token_table(a).columns) == [
        "token_id", "token", "count", "loss_count", "loss_mean", "loss_std"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trips(runs_root, tmp_path, suffix):
    if suffix == ".parquet" and not atlas_export._has_pyarrow():
        pytest.skip("pyarrow not installed")
    atlases, tokenizer = run_atlases("exp/dual-s0", TOKENS, runs_dir=runs_root)
    written = export_atlases(atlases, tokenizer, tmp_path / f"atlas{suffix}")
    assert [p.name for p in written] == [f"atlas{suffix}", f"atlas.units{suffix}"]
    tokens, units = token_table(atlases[0], tokenizer), unit_table(atlases[0], tokenizer)
    pd.testing.assert_frame_equal(read_table(written[0]), tokens)
    pd.testing.assert_frame_equal(read_table(written[1]), units)
    assert tokens["token"].str.len().min() > 0  # every id decodes to text (specials included)
    assert "[[" in units["top1_context"].iloc[0]


def test_compare_aligns_two_runs_on_the_same_tokens(runs_root, tmp_path):
    atlases, tokenizer = run_atlases("exp/dual-s0", TOKENS, compare="exp/frozen-s0", runs_dir=runs_root)
    a, b = atlases
    assert a.meta["run"] == "exp/dual-s0" and b.meta["run"] == "exp/frozen-s0"
    np.testing.assert_array_equal(a.arrays["count"], b.arrays["count"])
    np.testing.assert_array_equal(a.arrays["loss_count"], b.arrays["loss_count"])
    written = export_atlases(atlases, tokenizer, tmp_path / "pair.csv")
    joined, units = read_table(written[0]), read_table(written[1])
    columns = {f"router_sparse_mean_L0_{end}" for end in ("a", "b", "delta")}
    assert columns <= set(joined)
    np.testing.assert_allclose(joined["router_sparse_mean_L1_delta"],
                               joined["router_sparse_mean_L1_b"] - joined["router_sparse_mean_L1_a"])
    assert set(units["run"]) == {"exp/dual-s0", "exp/frozen-s0"}
    summary = atlas_mod.compare_summary(a, b)
    assert [(r["layer"], r["stat"]) for r in summary] == [(0, "router_sparse"), (0, "zero_frac"),
                                                          (1, "router_sparse"), (1, "zero_frac")]
    with_itself = atlas_mod.compare_summary(a, a)
    assert all(r["token_correlation"] == pytest.approx(1.0) for r in with_itself)
    table = token_table(a)  # the correlation is the count-weighted one of the per-token means
    x, y, w = (token_table(t)[c].to_numpy() for t, c in ((a, "router_sparse_mean_L1"),
                                                          (b, "router_sparse_mean_L1"), (a, "count")))
    assert list(token_table(b)["token_id"]) == list(table["token_id"])
    expected = np.cov(x, y, aweights=w)[0, 1] / np.sqrt(np.cov(x, aweights=w) * np.cov(y, aweights=w))
    assert summary[2]["token_correlation"] == pytest.approx(expected, abs=1e-9)


def test_compare_refuses_runs_with_other_tokenizers(runs_root, tmp_path):
    other = make_run(tmp_path / "x" / "vocab-s0", ["model.ffn=dual", "model.vocab_size=512",
                                                   "data.max_bytes=200000"])
    with pytest.raises(ValueError, match="different tokenizers"):
        run_atlases("exp/dual-s0", TOKENS, compare=other.path, runs_dir=runs_root)


def test_text_file_data(runs_root, tmp_path):
    text = tmp_path / "speech.txt"
    text.write_text("The budget of the nation must be balanced, and the army paid. " * 200)
    (atlas,), tokenizer = run_atlases("exp/dual-s0", 400, data=str(text), runs_dir=runs_root)
    ids = tokenizer.encode(text.read_text()).ids
    assert atlas.meta["tokens"] == 400 and atlas.meta["data"] == f"file:{text}"
    np.testing.assert_array_equal(atlas.arrays["count"], np.bincount(ids[:400], minlength=4096))
    short = tmp_path / "short.txt"
    short.write_text("Hello there")
    (small,), _ = run_atlases("exp/dual-s0", 1000, data=str(short), runs_dir=runs_root)
    assert small.meta["tokens"] == len(tokenizer.encode("Hello there").ids) - 1  # all it holds


def test_view_is_json_and_has_the_app_shape(runs_root):
    view = atlas_view("exp/dual-s0", layer=1, unit=5, tokens=TOKENS, rows=20, runs_dir=runs_root,
                      sort="router_sparse_mean", min_count=3)
    json.dumps(view, allow_nan=False)
    assert set(view) == {"settings", "runs", "tokens", "compare"} and view["settings"]["layer"] == 1
    assert view["compare"] is None  # one run
    (block,) = view["runs"]
    assert block["unit_kind"] == "unit" and block["units"]["columns"][:3] == ["unit", "active", "frequency"]
    assert len(block["units"]["rows"]) == 256  # micro's FFN width
    assert {"router_sparse", "zero_frac", "score"} <= set(block["histograms"])
    assert block["histograms"]["score"]["cut"] == pytest.approx(block["layer_stats"]["theta"][1])
    unit = block["unit"]
    assert unit["unit"] == 5 and unit["contexts"] and unit["contexts"][0]["rank"] == 1
    assert all(c["text"] == c["left"] + c["token"] + c["right"] for c in unit["contexts"])
    rows = view["tokens"]["rows"]
    column = view["tokens"]["columns"].index("router_sparse_mean")
    assert len(rows) == 20 and rows[0][column] >= rows[-1][column]
    # numbers as a UI sends them
    again = atlas_view("exp/dual-s0", layer=1.0, unit=np.int64(5), tokens=TOKENS, runs_dir=runs_root)
    assert again["runs"][0]["unit"] == unit and again["settings"]["layer"] == 1
    for bad in ({"layer": 2}, {"layer": 0.5}, {"unit": 256}, {"sort": "nope"}, {"rows": -1}):
        with pytest.raises(ValueError):
            atlas_view("exp/dual-s0", **{"layer": 1, **bad}, tokens=TOKENS, runs_dir=runs_root)
    for outside in (str(runs_root / "exp" / "dual-s0"), "../exp", "exp/../../etc", "exp"):
        with pytest.raises(ValueError):  # the app's names never leave the runs root
            atlas_view(outside, tokens=TOKENS, runs_dir=runs_root)


def test_view_of_two_runs(runs_root):
    view = atlas_view("exp/dual-s0", compare="exp/frozen-s0", tokens=TOKENS, runs_dir=runs_root, rows=5)
    json.dumps(view, allow_nan=False)
    assert [b["run"] for b in view["runs"]] == ["exp/dual-s0", "exp/frozen-s0"]
    assert "router_sparse_mean_delta" in view["tokens"]["columns"]
    assert [r["stat"] for r in view["compare"]] == ["router_sparse", "zero_frac"]


# ---------------------------------------------------------------- CLI


@pytest.fixture
def no_weights_run(runs_root):
    source, run = Run(runs_root / "exp" / "dual-s0"), Run(runs_root / "exp" / "queued-s0")
    run.write_config(source.read_config())
    run.save_tokenizer(source.file("tokenizer.json"))
    return run


BAD = {
    "unknown run": (["exp/nope"], "no run 'exp/nope'"),
    "zero tokens": (["exp/dual-s0", "--tokens", "0"], "tokens must be a positive integer"),
    "negative tokens": (["exp/dual-s0", "--tokens", "-5"], "tokens must be a positive integer"),
    "missing data file": (["exp/dual-s0", "--data", "/no/such/file.txt"], "no such file"),
    "no weights": (["exp/queued-s0"], "no weights yet"),
    "bad out suffix": (["exp/dual-s0", "--out", "OUT/atlas.json"], ".csv or .parquet"),
    "bad device": (["exp/dual-s0", "--device", "tpu"], "device must be cpu, cuda[:N] or auto"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_inputs_one_message_nothing_written(case, runs_root, no_weights_run, tmp_path, capsys):
    args, message = BAD[case]
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    run_dirs = [p for p in (runs_root / "exp").iterdir()]
    before = {p: _listing(p) for p in run_dirs}
    out = [] if "--out" in args else ["--out", str(tmp_path / "a.csv")]
    code = atlas_mod.main([*args, *out, "--runs-dir", str(runs_root)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert {p: _listing(p) for p in run_dirs} == before
    assert _listing(tmp_path) == []


def test_cli_parquet_without_pyarrow(runs_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(atlas_export, "_has_pyarrow", lambda: False)
    code = atlas_mod.main(["exp/dual-s0", "--runs-dir", str(runs_root), "--out", str(tmp_path / "a.parquet")])
    assert code == 2 and "needs pyarrow" in capsys.readouterr().err and _listing(tmp_path) == []


def test_cli_end_to_end(runs_root, tmp_path):
    out = tmp_path / "atlas.csv"
    result = run_cli("core.atlas", "exp/dual-s0", "--runs-dir", str(runs_root), "--tokens", str(TOKENS),
                     "--compare", "exp/frozen-s0", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "exp/dual-s0 (dual): 600 tokens" in result.stdout and "router_sparse" in result.stdout
    assert out.exists() and (tmp_path / "atlas.units.csv").exists()
    missing = run_cli("core.atlas", "exp/nope", "--runs-dir", str(runs_root), timeout=300)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no run")


def test_mean_loss_is_the_val_loss_of_the_same_windows(runs_root):
    """The atlas's mean loss equals a plain evaluation over the same windows."""
    (atlas,), _ = run_atlases("exp/swiglu-s0", 256, runs_dir=runs_root)  # two full windows
    run = Run(runs_root / "exp" / "swiglu-s0")
    model, tokenizer = inspection.load_run_model(run)
    ids, _ = atlas_mod.token_stream(run, tokenizer, "val", 256)
    x, y = torch.tensor(ids[:-1]).view(2, 128), torch.tensor(ids[1:]).view(2, 128)
    with torch.no_grad():
        loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item()
    assert atlas_mod.mean_loss(atlas) == pytest.approx(loss, abs=1e-5)
    assert math.isfinite(loss)


def test_csv_keeps_awkward_token_texts(tmp_path):
    frame = pd.DataFrame({"token_id": [1, 2, 3, 4, 5, 6],
                          "token": ["nan", "NULL", "\n\n", ' "q",', "  ", "NA"],
                          "loss_mean": [1.5, float("nan"), 0.1 + 0.2, 1e-300, -0.0, 2.0],
                          "top1_context": ["a[[b]]c", "", "x\r\ny", "null", "N/A", "#"]})
    atlas_mod.write_table(frame, tmp_path / "t.csv")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv"), frame)


def test_progress_counts_positions_over_both_runs(runs_root):
    calls = []
    run_atlases("exp/dual-s0", 300, compare="exp/frozen-s0", runs_dir=runs_root, refresh=True,
                progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (600, 600) and calls == sorted(calls)
    assert (300, 600) in calls  # the first run's end


def test_atlas_never_imports_gradio():
    code = "import sys, core.atlas, core.analysis.atlas; assert 'gradio' not in sys.modules"
    checked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             cwd=REPO)
    assert checked.returncode == 0, checked.stderr
