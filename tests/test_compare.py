"""core.analysis.compare on a tiny fake study: numbers checked by hand, bad keys refused."""

import math
import statistics

import pytest

from core.analysis.compare import NON_EMBEDDING, compare_rows, config_keys, log_x, metric_keys
from core.runs import experiment_records
from tests.fake_study import LOSSES, experiment, write_fake_study


@pytest.fixture
def records(tmp_path):
    return {name: experiment_records(tmp_path, name) for name in write_fake_study(tmp_path)}


def _by(rows):
    return {(r["colour"], r["x"]): r for r in rows}


def test_final_loss_against_lr_per_variant_by_hand(records):
    rows = compare_rows(records, "train.lr")
    assert [(r["colour"], r["x"]) for r in rows] == [("dual", 0.001), ("dual", 0.002), ("swiglu", 0.001),
                                                     ("swiglu", 0.002)]
    dual = _by(rows)[("dual", 0.001)]
    values = [4.9, 5.3, 4.2, 4.0]  # both sizes at lr 0.001; the run still training is left out
    assert dual["n"] == 4 and sorted(dual["seeds"]) == [0, 0, 1, 1]
    assert dual["mean"] == pytest.approx(statistics.mean(values))
    assert dual["std"] == pytest.approx(statistics.stdev(values))
    assert (dual["min"], dual["max"]) == (4.0, 5.3)
    assert f"{experiment(8, 0.001)}/dual-s2" not in dual["runs"]


def test_colour_by_size_and_x_by_non_embedding_params(records):
    rows = _by(compare_rows(records, NON_EMBEDDING, "model.hidden_size"))
    assert set(rows) == {("8", 1000), ("16", 3000)}
    small = [loss for (hidden, _), by in LOSSES.items() if hidden == 8 for v in by.values() for loss in v]
    assert rows[("8", 1000)]["n"] == 8
    assert rows[("8", 1000)]["mean"] == pytest.approx(statistics.mean(small))
    by_lr = _by(compare_rows(records, "train.lr", "model.hidden_size"))
    assert by_lr[("16", 0.002)]["mean"] == pytest.approx(statistics.mean([4.4, 4.0, 3.9, 3.9]))


def test_any_logged_metric_and_a_key_only_some_runs_have(records):
    rows = _by(compare_rows(records, "model.hidden_size", "variant", "train/loss"))
    assert rows[("swiglu", 8)]["mean"] == pytest.approx(statistics.mean([5.0, 5.2, 4.8, 4.6]) + 0.1)
    # only dual runs have a threshold: the others have no x and are left out
    threshold = compare_rows(records, "model.ffn_options.ffn_threshold", "experiment")
    assert {r["x"] for r in threshold} == {"jumprelu"} and sum(r["n"] for r in threshold) == 8
    one_seed = _by(compare_rows(records, "train.lr", "experiment"))[(experiment(8, 0.002), 0.002)]
    assert one_seed["n"] == 4 and math.isfinite(one_seed["std"])


@pytest.mark.parametrize("x, colour, metric, message", [
    ("train.lrr", "variant", "val/loss", "x: unknown key 'train.lrr'; the runs chosen have variant, "),
    ("train.lr", "model.depth", "val/loss", "colour: unknown key 'model.depth'"),
    ("seed", "variant", "val/loss", "x: unknown key 'seed'"),
    ("train.lr", "variant", "val/los", "metric 'val/los' was not logged by the runs chosen; they log "
                                       "val/loss, train/loss"),
])
def test_bad_keys_are_refused_with_one_message(records, x, colour, metric, message):
    with pytest.raises(ValueError) as error:
        compare_rows(records, x, colour, metric)
    assert str(error.value).startswith(message)
    if "unknown key" in message:
        assert "train.lr" in str(error.value) and "model.ffn_options.ffn_threshold" in str(error.value)


def test_keys_metrics_and_log_axes(records):
    keys = config_keys(records)
    assert keys[:3] == ["variant", "experiment", NON_EMBEDDING] and "train.seed" not in keys
    assert metric_keys(records) == ["val/loss", "train/loss"]
    assert log_x("train.lr", [0.001, 0.002]) and log_x(NON_EMBEDDING, [1000, 3000])
    assert log_x("model.hidden_size", [8, 16]) and not log_x("train.steps", [10, 20])
    assert not log_x("train.lr", [0.0, 0.001]) and not log_x("model.ffn_hidden", ["auto"])
