"""core.stats against values worked out by hand and against independent references."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from core.analysis.stats import (
    TABLE1_COLUMNS,
    Band,
    ema,
    final_value,
    format_table,
    metric_series,
    seed_band,
    table1,
    variant_bands,
)

NAN = float("nan")


def _line(step, seed_offset=0, **metrics):
    """One metrics.jsonl line; tokens/elapsed depend on the seed so x alignment is visible."""
    x = {"step": step, "tokens": step * 100 + seed_offset, "elapsed_s": step * 0.5 + seed_offset}
    return {**x, **metrics}


def _three_seeds():
    a = [_line(0, 0, **{"train/loss": 4.0}), _line(10, 0, **{"train/loss": 3.0}),
         _line(20, 0, **{"train/loss": 2.0}), _line(30, 0, **{"train/loss": 1.5})]
    b = [_line(0, 0, **{"train/loss": 5.0}), _line(10, 0, **{"train/loss": 3.5}),
         _line(20, 0, **{"train/loss": 2.5})]
    # seed c: its step-20 line lost the key (torn write / other metrics only); lines out of order
    c = [_line(10, 30, **{"train/loss": 4.0}), _line(0, 30, **{"train/loss": 6.0}), _line(20, 30, lr=1e-3)]
    return [a, b, c]


# ---------------------------------------------------------------------------- series and ema


def test_metric_series_sorts_and_skips_lines_without_key():
    metrics = [_line(20, **{"val/loss": 2.0}), _line(0, **{"train/loss": 9.0}),
               _line(10, **{"val/loss": 3.0})]
    xs, ys = metric_series(metrics, "val/loss")
    assert xs.tolist() == [10, 20] and ys.tolist() == [3.0, 2.0]
    xs, _ = metric_series(metrics, "val/loss", x="tokens")
    assert xs.tolist() == [1000, 2000]
    xs, ys = metric_series(metrics, "missing")
    assert len(xs) == len(ys) == 0
    with pytest.raises(ValueError, match="x must be one of"):
        metric_series(metrics, "val/loss", x="wallclock")


def test_metric_series_keeps_non_finite_values():
    metrics = [_line(i, **{"l": v}) for i, v in enumerate([1.0, NAN, None, "inf"])]
    _, ys = metric_series(metrics, "l")
    assert ys[0] == 1.0 and math.isnan(ys[1]) and math.isnan(ys[2]) and ys[3] == math.inf


def test_ema_by_hand():
    # alpha 0.5: running 0.5, 1.25, 2.125; debias by 1 - 0.5**k = 0.5, 0.75, 0.875
    np.testing.assert_allclose(ema(np.array([1.0, 2.0, 3.0]), 0.5), [1.0, 5 / 3, 17 / 7])
    np.testing.assert_array_equal(ema(np.array([1.0, 2.0, 3.0]), 0.0), [1.0, 2.0, 3.0])
    # alpha 0.9 on a constant stays constant thanks to the debiasing
    np.testing.assert_allclose(ema(np.full(5, 4.2), 0.9), np.full(5, 4.2))


def test_ema_passes_nan_through_without_poisoning():
    out = ema(np.array([1.0, NAN, 3.0, math.inf]), 0.5)
    # after the NaN: running 0.25 + 1.5 = 1.75 over 1 - 0.25 = 0.75
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == pytest.approx(7 / 3) and out[3] == math.inf


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5])
def test_ema_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        ema(np.array([1.0]), alpha)


# ---------------------------------------------------------------------------- bands


def test_seed_band_by_hand():
    band = seed_band(_three_seeds(), "train/loss")
    assert band.x.tolist() == [0, 10, 20, 30]
    assert band.n.tolist() == [3, 3, 2, 1]
    # step 0: 4, 5, 6; step 10: 3, 3.5, 4; step 20: 2, 2.5 (seed c lacks the key); step 30: 1.5
    np.testing.assert_allclose(band.mean, [5.0, 3.5, 2.25, 1.5])
    np.testing.assert_allclose(band.std, [1.0, 0.5, math.sqrt(0.125), 0.0])
    np.testing.assert_allclose(band.min, [4.0, 3.0, 2.0, 1.5])
    np.testing.assert_allclose(band.max, [6.0, 4.0, 2.5, 1.5])


def test_seed_band_x_tokens_and_elapsed_are_means_over_seeds():
    band = seed_band(_three_seeds(), "train/loss", x="tokens")
    # seed c's tokens are offset by 30; at step 20 only seeds a and b carry the key
    np.testing.assert_allclose(band.x, [10.0, 1010.0, 2000.0, 3000.0])
    np.testing.assert_allclose(band.mean, [5.0, 3.5, 2.25, 1.5])
    band = seed_band(_three_seeds(), "train/loss", x="elapsed_s")
    np.testing.assert_allclose(band.x, [10.0, 15.0, 10.0, 15.0])


def test_seed_band_smoothing_is_per_seed():
    runs = [[_line(0, **{"l": 1.0}), _line(1, **{"l": 2.0}), _line(2, **{"l": 3.0})],
            [_line(0, **{"l": 3.0}), _line(1, **{"l": 3.0}), _line(2, **{"l": 3.0})]]
    band = seed_band(runs, "l", smoothing=0.5)
    # seed 0 smooths to 1, 5/3, 17/7; seed 1 is constant 3
    np.testing.assert_allclose(band.mean, [2.0, (5 / 3 + 3) / 2, (17 / 7 + 3) / 2])
    np.testing.assert_allclose(band.min, [1.0, 5 / 3, 17 / 7])


def test_seed_band_ignores_non_finite_values():
    runs = [[_line(0, **{"l": 1.0}), _line(1, **{"l": NAN}), _line(2, **{"l": NAN})],
            [_line(0, **{"l": 3.0}), _line(1, **{"l": 2.0}), _line(2, **{"l": math.inf})],
            [_line(0, **{"l": None}), _line(1, **{"l": 4.0}), _line(2, **{"l": "oops"})]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy "mean of empty slice" or invalid-value warnings
        band = seed_band(runs, "l", smoothing=0.3)
        plain = seed_band(runs, "l")
    assert plain.n.tolist() == [2, 2, 0]
    np.testing.assert_allclose(plain.mean[:2], [2.0, 3.0])
    np.testing.assert_allclose(plain.std[:2], [math.sqrt(2.0), math.sqrt(2.0)])
    assert all(math.isnan(getattr(plain, f)[2]) for f in ("mean", "std", "min", "max"))
    assert band.n.tolist() == [2, 2, 0]
    payload = json.dumps(plain.to_dict(), allow_nan=False)  # strict JSON: NaN became null
    assert json.loads(payload)["mean"][2] is None


def test_band_to_dict_and_empty_inputs():
    band = seed_band(_three_seeds(), "train/loss")
    d = band.to_dict()
    assert set(d) == {"x", "mean", "std", "min", "max", "n"}
    assert d["x"] == [0, 10, 20, 30] and d["n"] == [3, 3, 2, 1] and isinstance(d["n"][0], int)
    assert d["mean"] == pytest.approx([5.0, 3.5, 2.25, 1.5])
    for empty in (seed_band([], "train/loss"), seed_band(_three_seeds(), "nope", x="tokens")):
        assert isinstance(empty, Band) and len(empty.x) == len(empty.mean) == len(empty.n) == 0
        assert empty.to_dict()["x"] == []


def test_variant_bands_groups_by_variant():
    runs = _three_seeds()
    bands = variant_bands({"swiglu": runs[:2], "dual": runs[2:]}, "train/loss")
    assert list(bands) == ["swiglu", "dual"]
    np.testing.assert_allclose(bands["swiglu"].mean, [4.5, 3.25, 2.25, 1.5])
    assert bands["dual"].x.tolist() == [0, 10] and bands["dual"].std.tolist() == [0.0, 0.0]


def test_final_value():
    metrics = [_line(20, **{"val/loss": 2.0}), _line(30, **{"train/loss": 1.0}),
               _line(10, **{"val/loss": 3.0})]
    assert final_value(metrics) == 2.0
    assert final_value(metrics, "train/loss") == 1.0
    assert final_value(metrics, "missing") is None
    assert math.isnan(final_value(metrics + [_line(40, **{"val/loss": NAN})]))


# ---------------------------------------------------------------------------- Table 1


def _run(variant, seed, val_losses=(), summary=None, status=None, mem=(), tok_s=()):
    """A run whose metrics log val/loss on steps 100, 200, ...; mem/throughput on step 0, 1, ..."""
    metrics = [_line(100 * (i + 1), **{"val/loss": v}) for i, v in enumerate(val_losses)]
    metrics += [_line(i, **{"mem/peak_gb": m}) for i, m in enumerate(mem)]
    metrics += [_line(i, **{"throughput/tok_s": s}) for i, s in enumerate(tok_s)]
    run = {"variant": variant, "seed": seed, "metrics": metrics, "summary": summary or {}}
    if status is not None:
        run["status"] = status
    return run


def _table_runs():
    return [
        # dual listed first: the swiglu baseline must still come first
        _run("dual", 0, [6.0, 5.641], mem=[1.0, 3.0, 2.0], tok_s=[100.0, 300.0]),
        _run("dual", 1, summary={"final_val_loss": 5.646, "peak_mem_gb": 4.0, "tok_s": 400.0,
                                 "params_total": 1234567}),
        _run("dual", 2, [5.651], status="completed", summary={"peak_mem_gb": 5.0, "tok_s": 500.0}),
        _run("dual", 3, [4.0], status="running"),  # unfinished: its last val loss is not final
        _run("swiglu", 0, [5.660], summary={"params_total": 1000000, "peak_mem_gb": 2.0, "tok_s": 1000.0}),
        _run("swiglu", 1, [5.655], summary={"peak_mem_gb": 2.0, "tok_s": 1200.0}),
        _run("swiglu", 2, [5.665], summary={"peak_mem_gb": 2.0}, tok_s=[1100.0, 1300.0]),
        _run("swiglu", 3, [], summary={"peak_mem_gb": 2.0}, status="failed"),
        _run("dual+ffn_share=none", 0, [5.700], summary={"params_total": 999}),
        _run("dual+ffn_share=none", 1, [], tok_s=[50.0]),  # no val loss at all
    ]


def test_table1_by_hand():
    df = table1(_table_runs())
    assert list(df.columns) == TABLE1_COLUMNS
    assert df["variant"].tolist() == ["swiglu", "dual", "dual+ffn_share=none"]
    base, dual, none = (df.iloc[i] for i in range(3))
    assert [base.seeds, dual.seeds, none.seeds] == [3, 3, 1]
    assert base.val_loss_mean == pytest.approx(5.660) and dual.val_loss_mean == pytest.approx(5.646)
    assert base.val_loss_std == pytest.approx(0.005) and dual.val_loss_std == pytest.approx(0.005)
    assert math.isnan(none.val_loss_std)
    assert (base.val_loss, dual.val_loss, none.val_loss) == ("5.660 ± 0.005", "5.646 ± 0.005", "5.700")
    assert base.delta_vs_baseline == 0.0
    assert dual.delta_vs_baseline == pytest.approx(-0.014) and none.delta_vs_baseline == pytest.approx(0.040)
    # equal variances and sizes: t = -0.014 / sqrt(2 * 0.005**2 / 3), df = 4 (closed-form t_4 cdf)
    t = 0.014 / math.sqrt(2 * 0.005**2 / 3)
    cdf4 = 0.5 + 0.375 * t / math.sqrt(1 + t * t / 4) * (1 - t * t / (12 * (1 + t * t / 4)))
    assert dual.p_value == pytest.approx(2 * (1 - cdf4), rel=1e-6)
    assert math.isnan(base.p_value) and math.isnan(none.p_value)  # one seed: no test
    # memory: max over metrics (3), then summaries 4 and 5; swiglu's failed run is left out
    assert dual.peak_mem_gb == pytest.approx(4.0) and base.peak_mem_gb == pytest.approx(2.0)
    # throughput: mean of metrics (200) then summaries; swiglu seed 2 falls back to metrics (1200)
    assert dual.tok_s == pytest.approx(1100 / 3) and base.tok_s == pytest.approx(3400 / 3)
    assert none.tok_s == pytest.approx(50.0) and math.isnan(none.peak_mem_gb)
    assert df["params"].tolist() == [1000000, 1234567, 999]


def test_table1_baseline_choice():
    runs = _table_runs()
    df = table1(runs, baseline="dual")
    assert df["variant"].tolist() == ["dual", "swiglu", "dual+ffn_share=none"]
    assert df.iloc[1].delta_vs_baseline == pytest.approx(0.014) and math.isnan(df.iloc[0].p_value)
    no_swiglu = [r for r in runs if r["variant"] != "swiglu"]
    assert table1(no_swiglu)["variant"].tolist() == ["dual", "dual+ffn_share=none"]
    with pytest.raises(ValueError, match="baseline 'nope'"):
        table1(runs, baseline="nope")


def test_table1_handles_nan_losses_and_empty_input():
    runs = [_run("swiglu", 0, [5.0]), _run("swiglu", 1, [5.2]), _run("dual", 0, [5.1, NAN]),
            _run("dual", 1, summary={"final_val_loss": None})]
    df = table1(runs)
    assert df["seeds"].tolist() == [2, 0]
    assert df.iloc[1].val_loss == "-" and math.isnan(df.iloc[1].val_loss_mean)
    assert df.iloc[1].params is None
    empty = table1([])
    assert list(empty.columns) == TABLE1_COLUMNS and len(empty) == 0
    assert format_table(empty).splitlines()[0].startswith("variant")


def test_format_table_is_fixed_width():
    text = format_table(table1(_table_runs()))
    lines = text.splitlines()
    assert len(lines) == 5 and set(lines[1]) == {"-", " "}
    assert lines[0].startswith("variant") and "p (Welch)" in lines[0]
    assert "5.646 ± 0.005" in lines[3] and "1,234,567" in lines[3] and "-0.0140" in lines[3]
    # every column starts where the header's does: check the val-loss column
    col = lines[0].index("val loss")
    assert lines[2][col:col + 13] == "5.660 ± 0.005" and lines[4][col:col + 5] == "5.700"
    assert all(len(line) <= len(lines[1]) for line in lines)


def test_table1_returns_plain_dataframe_types():
    df = table1(_table_runs())
    assert isinstance(df, pd.DataFrame)
    assert all(isinstance(v, int) for v in df["params"])
    assert df["seeds"].dtype.kind == "i"
