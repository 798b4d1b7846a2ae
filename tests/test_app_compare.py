"""The Compare tab's layers on a tiny fake study: Explorer.compare, its figure and table, and
/compare through gradio_client on a real app process."""

import statistics

import pytest
from gradio_client import Client

from core.analysis.compare import NON_EMBEDDING
from tests.app_server import running_app
from tests.fake_study import experiment, write_fake_study
from ui.figures import compare_figure
from ui.service import Explorer
from ui.tables import compare_table
from ui.tabs.compare import _Callbacks


@pytest.fixture
def study(tmp_path):
    names = write_fake_study(tmp_path)
    ex = Explorer(tmp_path, start_jobs=False)
    yield ex, names
    ex.close()


def _files(root):
    return sorted(str(p) for p in root.rglob("*"))


def test_compare_across_experiments_by_hand(study):
    explorer, names = study
    rows = {(r["colour"], r["x"]): r for r in explorer.compare(names, "model.hidden_size")}
    assert rows[("swiglu", 16)]["mean"] == pytest.approx(statistics.mean([4.5, 4.1, 4.4, 4.0]))
    assert rows[("swiglu", 16)]["std"] == pytest.approx(statistics.stdev([4.5, 4.1, 4.4, 4.0]))
    assert rows[("swiglu", 16)]["n"] == 4 and sorted(rows[("swiglu", 16)]["seeds"]) == [0, 0, 1, 1]
    offered = explorer.compare_keys(names[:1])
    assert offered["keys"][:3] == ["variant", "experiment", NON_EMBEDDING] and "train.lr" in offered["keys"]
    assert offered["metrics"] == ["val/loss", "train/loss"]


@pytest.mark.parametrize("experiments, x, message", [
    ([], "train.lr", "choose at least one experiment to compare"),
    (["nope"], "train.lr", "no experiment 'nope' under the runs folder"),
    (["../up"], "train.lr", "invalid experiment name '../up'"),
    ("fake-d8-lr0.001", "train.rate", "x: unknown key 'train.rate'; the runs chosen have variant, "),
])
def test_bad_compare_input_is_one_message_and_writes_nothing(study, experiments, x, message):
    explorer, _ = study
    before = _files(explorer.root)
    with pytest.raises(ValueError) as error:
        explorer.compare(experiments, x)
    assert str(error.value).startswith(message)
    assert _files(explorer.root) == before


def test_compare_figure_bands_on_log_lr_and_error_bars_for_categories(study):
    explorer, names = study
    rows = explorer.compare(names, "train.lr")
    fig = compare_figure(rows, "train.lr", "variant", "val/loss")
    assert fig.layout.xaxis.type == "log" and fig.layout.legend.title.text == "variant"
    means = [t for t in fig.data if t.name in ("dual", "swiglu")]
    assert [list(t.y) for t in means] == [[r["mean"] for r in rows if r["colour"] == name]
                                          for name in ("dual", "swiglu")]
    assert sum(len(t.y) for t in fig.data if t.mode == "markers") == 16  # every finished run, a dot
    threshold = explorer.compare(names, "model.ffn_options.ffn_threshold")
    bars = compare_figure(threshold, "model.ffn_options.ffn_threshold", "variant", "val/loss")
    assert bars.layout.xaxis.type is None and list(bars.data[-1].error_y.array) == [threshold[0]["std"]]
    one_lr = explorer.compare(names[:1], "train.lr")  # one point per colour: a band would have no width
    bars = compare_figure(one_lr, "train.lr", "variant", "val/loss")
    assert [list(t.error_y.array) for t in bars.data if t.name] == [[r["std"]] for r in one_lr]
    empty = compare_figure([], "train.lr", "variant", "val/loss")
    assert "no finished run" in empty.layout.annotations[0].text


def test_compare_table_names_its_columns_after_the_keys(study):
    explorer, names = study
    table = compare_table(explorer.compare(names, "train.lr", "model.hidden_size"), "model.hidden_size",
                          "train.lr")
    assert list(table.columns)[:4] == ["model.hidden_size", "train.lr", "n", "mean"]
    first = table.iloc[0]
    assert (first["model.hidden_size"], first["train.lr"], first["n"]) == ("8", "0.001", 4)
    assert first["mean"] == round(statistics.mean([5.0, 5.2, 4.9, 5.3]), 4)
    assert first["seeds"] == "0, 1, 0, 1"  # dual-s0, dual-s1, swiglu-s0, swiglu-s1


def test_the_tabs_first_draw_keeps_a_choice_the_runs_offer_and_replaces_one_they_lack(study):
    explorer, names = study
    calls = _Callbacks(explorer)
    x, colour, metric, fig, table = calls.choose(names, "model.hidden_size", "no.such.key", "train/loss")
    assert (x["value"], colour["value"], metric["value"]) == ("model.hidden_size", "variant", "train/loss")
    assert metric["choices"] == ["val/loss", "train/loss"] and len(table) == 4
    assert fig.layout.xaxis.type == "log"
    _, _, _, empty, nothing = calls.choose([], "train.lr", "variant", "val/loss")
    assert nothing.empty and "no finished run" in empty.layout.annotations[0].text


def test_compare_endpoint_through_gradio_client(tmp_path):
    names = write_fake_study(tmp_path)
    with running_app(tmp_path) as url:
        client = Client(url, verbose=False)
        rows = client.predict(names, "train.lr", "variant", "val/loss", api_name="/compare")
        dual = {r["x"]: r for r in rows if r["colour"] == "dual"}[0.002]
        assert dual["mean"] == pytest.approx(statistics.mean([4.7, 4.4, 3.9, 3.9]))
        assert dual["n"] == 4 and f"{experiment(16, 0.002)}/dual-s1" in dual["runs"]
        with pytest.raises(Exception, match="unknown key 'model.depth'"):
            client.predict(names, "model.depth", api_name="/compare")
