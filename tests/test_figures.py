import pytest

from ui.figures import stats_heatmaps


def _result(run: str, stats: dict[str, list[list[float]]], high: float | None = 1.0) -> dict:
    return {"run": run, "tokens": ["a", "b", "c"], "token_stats": stats,
            "stat_info": {name: {"meaning": f"{name} meaning", "low": 0.0, "high": high} for name in stats}}


def test_no_per_token_statistic_gives_no_figure():
    assert stats_heatmaps([_result("e/swiglu-s0", {})]) is None


@pytest.mark.parametrize("panels", [1, 2, 5])
def test_one_heatmap_per_run_and_statistic_on_its_declared_range(panels):
    rows = [[0.1, 0.5, 0.9], [0.2, 0.4, 0.6]]
    results = [_result(f"e/r{i}", {"s": rows}) for i in range(panels)]
    fig = stats_heatmaps(results)
    assert len(fig.data) == panels
    assert [a.text for a in fig.layout.annotations] == [f"e/r{i}: s (s meaning)" for i in range(panels)]
    heat = fig.data[0]
    assert [list(row) for row in heat.z] == rows and (heat.zmin, heat.zmax) == (0.0, 1.0)
    assert list(heat.y) == ["L0", "L1"] and heat.x[1] == "1:'b'"


def test_an_undeclared_upper_bound_follows_the_data():
    dual = {"router_sparse": [[0.1, 0.2, 0.3]], "zero_frac": [[0, 0, 1]]}
    moe = _result("e/moe-s0", {"top_expert": [[0, 3, 1]]}, high=None)
    fig = stats_heatmaps([moe, _result("e/dual-s0", dual)])
    assert [d.zmax for d in fig.data] == [None, 1.0, 1.0]
