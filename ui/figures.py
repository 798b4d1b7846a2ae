"""Plotly figures of the explorer: seed-band curves and per-token inspection views.

Pure functions from JSON-friendly data to figures; no Gradio here, so they are unit-testable.
"""

import plotly.graph_objects as go

from core.stats import Band

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


FEW_POINTS = 12


def _band_traces(name: str, band: Band, color: str, spread: str) -> list[go.Scatter]:
    """Upper edge, lower edge filled to it (`tonexty`), then the mean line on top."""
    if spread == "minmax":
        upper, lower = band.max, band.min
    else:
        upper, lower = band.mean + band.std, band.mean - band.std
    edge = dict(mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name)
    return [
        go.Scatter(x=band.x, y=upper, **edge),
        go.Scatter(x=band.x, y=lower, fill="tonexty", fillcolor=_rgba(color, 0.2), **edge),
        # markers while a curve has few points: a short run's one or two evaluations stay visible
        go.Scatter(x=band.x, y=band.mean, mode="lines+markers" if len(band.x) <= FEW_POINTS else "lines",
                   name=name, legendgroup=name,
                   line=dict(color=color, width=2), customdata=band.n,
                   hovertemplate=f"{name}<br>%{{x}}: %{{y:.4f}} (n=%{{customdata}})<extra></extra>"),
    ]


def curves_figure(bands: dict[str, Band], metric: str, x: str = "step", spread: str = "std",
                  seeds: dict[str, list[tuple[list, list]]] | None = None, log_y: bool = False) -> go.Figure:
    """One colour per variant: mean over seeds with a std or min-max band, optional faint seeds."""
    fig = go.Figure()
    for i, (name, band) in enumerate(bands.items()):
        color = PALETTE[i % len(PALETTE)]
        for xs, ys in (seeds or {}).get(name, []):
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=_rgba(color, 0.35), width=1),
                                     legendgroup=name, showlegend=False, hoverinfo="skip"))
        for trace in _band_traces(name, band, color, spread):
            fig.add_trace(trace)
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


def layer_heatmap(tokens: list[str], values: list[list[float]], title: str, zmax: float = 1.0,
                  colorscale: str = "RdBu_r") -> go.Figure:
    """Tokens (x) by layers (y) heatmap of a per-token, per-layer statistic."""
    labels = [f"{i}:{t!r}"[:24] for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=[f"L{i}" for i in range(len(values))],
                               zmin=0.0, zmax=zmax, colorscale=colorscale,
                               hovertemplate="%{x}<br>%{y}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, template="plotly_white", height=140 + 26 * len(values),
                      margin=dict(l=40, r=20, t=40, b=40), xaxis=dict(showticklabels=len(tokens) <= 80))
    return fig


def token_loss_figure(series: dict[str, tuple[list[str], list[float | None]]]) -> go.Figure:
    """Per-token next-token loss of one or two runs on the same text."""
    fig = go.Figure()
    for i, (name, (tokens, losses)) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(range(len(losses))), y=losses, mode="lines+markers", name=name,
                                 text=tokens, line=dict(color=PALETTE[i % len(PALETTE)]),
                                 hovertemplate="%{x} %{text}: %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(xaxis_title="token position", yaxis_title="loss (nats)", template="plotly_white",
                      height=300, margin=dict(l=50, r=20, t=30, b=40))
    return fig


def layer_params_figure(per_layer: dict[str, list[float]]) -> go.Figure:
    """Per-layer learned scalars (theta, alphas) as grouped bars."""
    fig = go.Figure()
    for i, (name, values) in enumerate(per_layer.items()):
        fig.add_trace(go.Bar(x=[f"L{j}" for j in range(len(values))], y=values, name=name,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group", template="plotly_white", height=280,
                      margin=dict(l=50, r=20, t=30, b=40))
    return fig
