"""The seed-band traces the app and the HTML report share."""

import numpy as np

from core.analysis.band_plot import FEW_POINTS, band_traces, rgba, variant_color
from core.analysis.report import band_figure
from core.analysis.stats import Band, seed_band
from ui.figures import curves_figure


def _band(points: int) -> Band:
    x = np.arange(points, dtype=float)
    return Band(x=x, mean=x + 1, std=np.full(points, 0.5), min=x, max=x + 3, n=np.full(points, 3))


def test_edges_follow_the_spread_and_fill_to_the_upper_edge():
    upper, lower, mean = band_traces("dual", _band(4), "#1f77b4")
    assert list(upper.y) == [1.5, 2.5, 3.5, 4.5] and list(lower.y) == [0.5, 1.5, 2.5, 3.5]
    assert lower.fill == "tonexty" and lower.fillcolor == "rgba(31,119,180,0.2)"
    upper, lower, _ = band_traces("dual", _band(4), "#1f77b4", spread="minmax")
    assert list(upper.y) == [3, 4, 5, 6] and list(lower.y) == [0, 1, 2, 3]
    assert mean.mode == "lines+markers"  # few points: each stays visible
    assert band_traces("dual", _band(FEW_POINTS + 1), "#1f77b4")[2].mode == "lines"


def test_colours():
    assert rgba("#d62728", 0.5) == "rgba(214,39,40,0.5)"
    assert rgba("rgb(1, 2, 3)", 0.2) == "rgba(1, 2, 3, 0.2)"
    assert variant_color(0) == variant_color(8) != variant_color(1)


def test_the_app_and_the_report_draw_the_same_band():
    metrics = [[{"step": s, "val/loss": 5.0 - s / 10 + seed / 100} for s in (10, 20, 30)]
               for seed in range(3)]
    report = band_figure({"dual": metrics}, "val/loss")
    app = curves_figure({"dual": seed_band(metrics, "val/loss")}, "val/loss")
    for drawn_by_report, drawn_by_app in zip(report.data, app.data):
        assert drawn_by_report.fillcolor == drawn_by_app.fillcolor
        assert list(drawn_by_report.y) == list(drawn_by_app.y)
