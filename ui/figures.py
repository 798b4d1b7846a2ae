"""Plotly figures of the explorer: seed-band curves and per-token inspection views.

Pure functions from JSON-friendly data to figures; no Gradio here, so they are unit-testable.
"""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis.band_plot import band_traces, rgba, variant_color
from core.analysis.stats import Band


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
