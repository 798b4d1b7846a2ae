"""Seed bands as plotly traces: the one drawing the app's curves and the HTML report share.

A band is the upper edge, the lower edge filled up to it (``tonexty``) and the mean line on top.
"""

import plotly.graph_objects as go

from core.analysis.stats import Band

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
BAND_ALPHA = 0.2  # fill opacity of a band
FEW_POINTS = 12  # markers on the mean line up to this many points: a short run's evaluations stay visible


def rgba(color: str, alpha: float) -> str:
    """'#rrggbb' or plotly's 'rgb(r, g, b)' with an opacity."""
    if color.startswith("rgb("):  # plotly's sampled colorscales
        return color.replace("rgb(", "rgba(").replace(")", f", {alpha})")
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def variant_color(index: int) -> str:
    """The colour of the index-th variant, in every figure."""
    return PALETTE[index % len(PALETTE)]


def band_traces(name: str, band: Band, color: str, spread: str = "std", group: str | None = None,
                showlegend: bool = True, dash: str | None = None) -> list[go.Scatter]:
    """Edges (mean ± std, or min and max with ``spread="minmax"``) and the mean line of `band`."""
    if spread == "minmax":
        upper, lower = band.max, band.min
    else:
        upper, lower = band.mean + band.std, band.mean - band.std
    group = group or name
    edge = dict(mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=group)
    mode = "lines+markers" if len(band.x) <= FEW_POINTS else "lines"
    return [
        go.Scatter(x=band.x, y=upper, **edge),
        go.Scatter(x=band.x, y=lower, fill="tonexty", fillcolor=rgba(color, BAND_ALPHA), **edge),
        go.Scatter(x=band.x, y=band.mean, mode=mode, name=name, legendgroup=group, showlegend=showlegend,
                   line=dict(color=color, width=2, dash=dash), customdata=band.n,
                   hovertemplate=f"{name}<br>%{{x}}: %{{y:.4f}} (n=%{{customdata}})<extra></extra>"),
    ]


__all__ = ["PALETTE", "rgba", "variant_color", "band_traces"]
