"""Plotly figures of the explorer: seed-band curves and per-token inspection views.

Pure functions from JSON-friendly data to figures (and to the coloured tokens Inspect shows); no
Gradio here, so they are unit-testable.
"""

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis.band_plot import band_traces, rgba, variant_color
from core.analysis.compare import log_x, sort_key
from core.analysis.stats import Band
from core.metrics import VAL_LOSS


def curves_figure(bands: dict[str, Band], metric: str, x: str = "step", spread: str = "std",
                  seeds: dict[str, list[tuple[list, list]]] | None = None, log_y: bool = False) -> go.Figure:
    """One colour per variant: mean over seeds with a std or min-max band, optional faint seeds."""
    fig = go.Figure()
    for i, (name, band) in enumerate(bands.items()):
        color = variant_color(i)
        for xs, ys in (seeds or {}).get(name, []):
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=rgba(color, 0.35), width=1),
                                     legendgroup=name, showlegend=False, hoverinfo="skip"))
        fig.add_traces(band_traces(name, band, color, spread))
    fig.update_layout(xaxis_title=x, yaxis_title=metric, template="plotly_white", height=420,
                      margin=dict(l=50, r=20, t=30, b=40),
                      legend=dict(orientation="h", y=1.0, x=1.0, xanchor="right", yanchor="bottom"),
                      uirevision=metric)  # keeps the user's zoom across live refreshes
    if log_y:
        fig.update_yaxes(type="log")
    if not bands:
        fig.add_annotation(text="no runs logged this metric yet", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    return fig



def band_from_json(data: dict) -> Band:
    """The Band of one variant in Explorer.curves' JSON (None, a gap, back to NaN)."""
    arr = {k: np.array([np.nan if v is None else v for v in data[k]], dtype=float)
           for k in ("x", "mean", "std", "min", "max", "n")}
    return Band(**arr)


def json_curves_figure(data: dict[str, dict], metric: str, x: str = "step", spread: str = "std",
                       seeds: bool = False, log_y: bool = False) -> go.Figure:
    """curves_figure of Explorer.curves' or Explorer.diagnostics' JSON, with each name's per-seed
    lines when `seeds`."""
    bands = {name: band_from_json(d) for name, d in data.items()}
    per_seed = {name: d["seeds"] for name, d in data.items()} if seeds else None
    return curves_figure(bands, metric, x, spread, per_seed, log_y)

def _rows_band(rows: list[dict]) -> Band:
    """The Band of one colour's rows of Explorer.compare (None back to NaN)."""
    return band_from_json({k: [r[k] for r in rows] for k in ("x", "mean", "std", "min", "max", "n")})


def _run_dots(name: str, rows: list[dict], color: str, numeric: bool) -> go.Scatter:
    """Each run's own value, faint, under its group's mean (hover: the run)."""
    xs = [r["x"] if numeric else str(r["x"]) for r in rows for _ in r["values"]]
    return go.Scatter(x=xs, y=[v for r in rows for v in r["values"]], mode="markers", legendgroup=name,
                      showlegend=False, marker=dict(color=rgba(color, 0.45), size=6),
                      text=[run for r in rows for run in r["runs"]],
                      hovertemplate="%{text}: %{y:.4f}<extra></extra>")


def compare_figure(rows: list[dict], x: str, colour: str, metric: str) -> go.Figure:
    """Explorer.compare's rows: the final `metric` against config key `x`, one colour per value of
    `colour`, mean over seeds with a ± std band (error bars where x is not a number or a colour has
    one point: a band there would have no width) and each run as a faint dot; log x for an lr or
    a size."""
    fig = go.Figure()
    numeric = all(sort_key(r["x"])[0] == 0 for r in rows)
    for i, shade in enumerate(dict.fromkeys(r["colour"] for r in rows)):
        mine, color = [r for r in rows if r["colour"] == shade], variant_color(i)
        fig.add_trace(_run_dots(shade, mine, color, numeric))
        if numeric and len(mine) > 1:
            fig.add_traces(band_traces(shade, _rows_band(mine), color))
        else:  # categories have no in-between, one point no width: bars, not a band
            xs = [r["x"] if numeric else str(r["x"]) for r in mine]
            fig.add_trace(go.Scatter(x=xs, y=[r["mean"] for r in mine], name=shade,
                                     mode="markers", marker=dict(color=color, size=10), legendgroup=shade,
                                     error_y=dict(array=[r["std"] for r in mine], color=color)))
    y_title = "final val loss" if metric == VAL_LOSS else f"last {metric}"
    fig.update_layout(xaxis_title=x, yaxis_title=f"{y_title} (mean ± std over seeds)",
                      legend_title_text=colour, template="plotly_white", height=420,
                      margin=dict(l=50, r=20, t=30, b=40))
    if log_x(x, [r["x"] for r in rows]):
        fig.update_xaxes(type="log")
    if not rows:
        fig.add_annotation(text="no finished run of these experiments has this key", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def token_loss_figure(series: dict[str, tuple[list[str], list[float | None]]]) -> go.Figure:
    """Per-token next-token loss of one or two runs on the same text."""
    fig = go.Figure()
    for i, (name, (tokens, losses)) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(range(len(losses))), y=losses, mode="lines+markers", name=name,
                                 text=tokens, line=dict(color=variant_color(i)),
                                 hovertemplate="%{x} %{text}: %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(xaxis_title="token position", yaxis_title="loss (nats)", template="plotly_white",
                      height=300, margin=dict(l=50, r=20, t=30, b=40))
    return fig


def layer_params_figure(per_layer: dict[str, list[float]]) -> go.Figure:
    """Per-layer learned scalars (theta, alphas) as grouped bars."""
    fig = go.Figure()
    for i, (name, values) in enumerate(per_layer.items()):
        fig.add_trace(go.Bar(x=[f"L{j}" for j in range(len(values))], y=values, name=name,
                             marker_color=variant_color(i)))
    fig.update_layout(barmode="group", template="plotly_white", height=280,
                      margin=dict(l=50, r=20, t=30, b=40))
    return fig


def stats_heatmaps(results: list[dict]) -> go.Figure | None:
    """Tokens (x) by layers (y): one heatmap per run and per-token statistic it reports, each on
    the range its variant declares; None when no run reports one."""
    panels = [(r, name) for r in results for name in r["token_stats"]]
    if not panels:
        return None
    titles = [f"{r['run']}: {name} ({r['stat_info'][name]['meaning']})" for r, name in panels]
    layers = max(len(r["token_stats"][n]) for r, n in panels)
    panel, gap = 40 + 22 * layers, 120  # pixels; the gap holds the rotated token labels and a title
    plot_height = len(panels) * panel + (len(panels) - 1) * gap
    spacing = gap / plot_height if len(panels) > 1 else 0.0
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=titles, vertical_spacing=spacing)
    for row, (result, name) in enumerate(panels, start=1):
        values, info = result["token_stats"][name], result["stat_info"][name]
        labels = [f"{i}:{t!r}"[:24] for i, t in enumerate(result["tokens"])]
        fig.add_trace(go.Heatmap(z=values, x=labels, y=[f"L{i}" for i in range(len(values))],
                                 zmin=info["low"], zmax=info["high"], colorscale="Viridis",
                                 showscale=False, hovertemplate="%{x}<br>%{y}: %{z:.3f}<extra></extra>"),
                      row=row, col=1)
        fig.update_xaxes(showticklabels=len(labels) <= 80, row=row, col=1)
    fig.update_layout(template="plotly_white", height=plot_height + 120, margin=dict(l=40, r=20, t=40, b=80))
    return fig


# Inspect's coloured tokens ---------------------------------------------------------------------
LOSS_COLOURING = "per-token loss"  # the colouring every run offers


def colourings(results: list[dict], stat: str | None) -> tuple[list[str], str]:
    """What tokens may be coloured by (the loss, then every statistic the runs report) and the one
    to show: `stat` when offered, else the first statistic (the loss when there is none)."""
    offered = [LOSS_COLOURING] + list(dict.fromkeys(n for r in results for n in r["token_stats"]))
    return offered, stat if stat in offered else offered[min(1, len(offered) - 1)]


def token_colours(result: dict, stat: str, layer: int) -> list[tuple[str, float]]:
    """(token, score in [-1, 1]): the statistic on its declared range at `layer` (low = -1,
    high = +1), or the loss scaled by its maximum (0..1) when the run lacks the statistic."""
    if stat in result["token_stats"]:
        rows = result["token_stats"][stat]
        row = rows[min(layer, len(rows) - 1)]
        info = result["stat_info"][stat]
        low = info["low"]
        high = info["high"] if info["high"] is not None else max(max(row), low + 1e-9)
        span = (high - low) or 1.0
        return [(t, round(2 * (v - low) / span - 1, 4)) for t, v in zip(result["tokens"], row)]
    losses = [v or 0.0 for v in result["token_loss"]]
    top = max(losses) or 1.0
    return [(t, round(v / top, 4)) for t, v in zip(result["tokens"], losses)]


def colour_label(result: dict, stat: str, layer: int) -> str:
    """The caption of a run's coloured tokens: what the colours mean, at which layer."""
    if stat not in result["token_stats"]:
        return f"{result['run']}: per-token loss (darker = higher)"
    shown = min(layer, len(result["token_stats"][stat]) - 1)
    meaning = result["stat_info"][stat]["meaning"]
    return f"{result['run']}, layer {shown}: {stat}, {meaning} (red = high, purple = low)"


def atlas_histograms(view: dict) -> go.Figure | None:
    """The atlas's histograms at its layer, one panel per statistic, one colour per run (the
    threshold's cut marked on the score); None when the runs have none (SwiGLU)."""
    names = sorted({name for run in view["runs"] for name in run["histograms"]})
    if not names:
        return None
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for i, run in enumerate(view["runs"]):
        for col, name in enumerate(names, start=1):
            hist = run["histograms"].get(name)
            if hist is None:
                continue
            edges = np.asarray(hist["edges"], dtype=float)
            colour = variant_color(i)
            fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=hist["counts"], name=run["run"], row=1, col=col,
                        marker_color=colour, opacity=0.6, showlegend=col == 1)
            if hist.get("cut") is not None:
                fig.add_vline(x=hist["cut"], line_dash="dash", line_color=colour, row=1, col=col)
    fig.update_layout(barmode="overlay", template="plotly_white", height=320,
                      margin=dict(l=40, r=20, t=40, b=30))
    return fig
