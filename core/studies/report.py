"""HTML reports of whole studies: ``python -m core.report --study NAME|PATH`` (``--recipe`` too).

A study without an axis (an lr recipe) gets the curve of final val loss against learning rate,
one seed band per variant, and the Table 1 at each variant's best lr. A study with an axis (a
ladder) gets the trend with size: each variant's val loss and its difference from the baseline
(with the 95% Welch interval) against non-embedding parameters, the diagnostics that might
explain it, and each point's Table 1.

This module's main() is the report CLI: experiments go on to core.analysis.report (which knows
nothing of studies, so the two never import each other in a circle).
"""

import html
import math
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core import variants
from core.analysis import report
from core.analysis.band_plot import band_traces, variant_color
from core.analysis.report import figure_html, html_table, page, table1_html
from core.analysis.stats import TABLE1_NOTE, Band, band_over_x
from core.runs import runs_root
from core.studies.plan import final_experiment
from core.studies.results import (
    TREND_DIAGNOSTICS,
    best_lrs,
    comparison_records,
    point_records,
    scaling_rows,
    study_records,
)
from core.studies.study import Point, Study, builtin_names, load_study

# ---------------------------------------------------------------------------- lr recipes


def lr_losses(study: Study, root: Path, point: Point | None = None) -> dict[str, dict[float, list[float]]]:
    """{variant: {lr: final val losses of its seeds}} over the study's lr grid at `point` (default:
    the first), baseline first."""
    out: dict[str, dict[float, list[float]]] = {variants.BASELINE: {}}
    point = point or study.points[0]
    for lr in study.lrs:  # the full-length runs (a short sweep's are not comparable with them)
        for record in study_records(study, point, root, final_experiment(study, point, lr)):
            loss = record["summary"].get("final_val_loss")
            if isinstance(loss, (int, float)):
                out.setdefault(str(record["variant"]), {}).setdefault(lr, []).append(float(loss))
    return {variant: by_lr for variant, by_lr in out.items() if by_lr}


def lr_figure(losses: dict[str, dict[float, list[float]]], best: dict[str, float] | None = None) -> go.Figure:
    """Final val loss against lr (log axis): mean ± std over the seeds at each lr; a star marks each
    variant's selected lr (`best`)."""
    fig = go.Figure()
    for i, (variant, by_lr) in enumerate(losses.items()):
        lrs = sorted(by_lr)
        fig.add_traces(band_traces(variant, band_over_x(lrs, [by_lr[lr] for lr in lrs]), variant_color(i)))
        chosen = (best or {}).get(variant)
        if chosen in by_lr:
            fig.add_trace(go.Scatter(x=[chosen], y=[float(np.mean(by_lr[chosen]))], mode="markers",
                                     marker=dict(symbol="star", size=14, color=variant_color(i)),
                                     name=f"{variant}: selected lr", legendgroup=variant, showlegend=False,
                                     hovertemplate=f"{variant} selected lr %{{x:g}}<extra></extra>"))
    fig.update_layout(xaxis_title="peak learning rate", yaxis_title="final val loss", xaxis_type="log",
                      template="plotly_white", height=420, margin=dict(l=60, r=20, t=20, b=40))
    return fig


def _lr_rows(losses: dict[str, dict[float, list[float]]], best: dict[str, float]) -> list[list[str]]:
    rows = []
    for variant, by_lr in losses.items():
        for lr in sorted(by_lr):
            values = by_lr[lr]
            spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
            mark = "best" if best.get(variant) == lr else ""
            rows.append([variant, f"{lr:g}", str(len(values)), f"{np.mean(values):.4f}{spread}", mark])
    return rows


def lr_sections(study: Study, root: Path) -> list[str]:
    """The lr curve, its table and the Table 1 at each variant's best lr."""
    losses, best = lr_losses(study, root), best_lrs(study, study.points[0], root)
    interior = [v for v, lr in best.items() if min(losses[v]) < lr < max(losses[v])]
    edge = sorted(set(best) - set(interior))
    verdict = ("Best lr = lowest seed-0 loss, as the recipe picks it. Interior (worse on both sides) "
               f"for {', '.join(interior) or 'no variant'}; at the edge of the grid for "
               f"{', '.join(edge) or 'none'}.")
    return ["<h2>Learning rate</h2>", figure_html("final val loss against lr (mean ± std over seeds)",
                                                   lr_figure(losses, best)),
            f"<p class=note>Seed 0 at every lr of the grid, every seed at the shared and the best lr. "
            f"{html.escape(verdict)}</p>",
            html_table(["variant", "lr", "seeds", "final val loss", ""], _lr_rows(losses, best), {1, 2, 3}),
            "<h2>Table 1 at each variant's best lr</h2>",
            table1_html(comparison_records(study, root)["best_lr"]),
            f"<p class=note>{html.escape(TABLE1_NOTE)}</p>"]


# ---------------------------------------------------------------------------- ladders


def _size_axes(fig: go.Figure, rows: list[dict], y: str, height: int = 400) -> go.Figure:
    """The axis of the study's points: sizes on a log axis, a config key's values as categories."""
    sizes = all(isinstance(row["x"], int) for row in rows)
    title = rows[0]["x_title"] if rows else "non-embedding parameters"
    fig.update_layout(xaxis_title=title, yaxis_title=y, xaxis_type="log" if sizes else "category",
                      template="plotly_white", height=height, margin=dict(l=60, r=20, t=30, b=40))
    return fig


def _variants(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(v for row in rows for v in row["variants"]))


def _points(rows: list[dict], variant: str) -> list[tuple[int, dict]]:
    """(place on the axis, the variant's numbers) of each point where it has results."""
    return [(row["x"], row["variants"][variant]) for row in rows if variant in row["variants"]]


def delta_figure(rows: list[dict]) -> go.Figure:
    """Each variant's mean val loss minus the baseline's against size, with the 95% Welch interval."""
    fig = go.Figure()
    others = [v for v in _variants(rows) if v != variants.BASELINE]
    for i, variant in enumerate(others, start=1):
        points = _points(rows, variant)
        column = {key: np.array([v[key] for _, v in points], dtype=float)
                  for key in ("delta", "ci_low", "ci_high", "seeds")}
        band = Band(np.array([p for p, _ in points], dtype=object), column["delta"], np.zeros(len(points)),
                    column["ci_low"], column["ci_high"], column["seeds"].astype(int))
        label = f"{variant} - {variants.BASELINE}"
        fig.add_traces(band_traces(label, band, variant_color(i), spread="minmax"))
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    return _size_axes(fig, rows, f"val loss difference from {variants.BASELINE}")


def loss_figure(rows: list[dict]) -> go.Figure:
    """Each variant's final val loss (mean over seeds) against size."""
    fig = go.Figure()
    for i, variant in enumerate(_variants(rows)):
        points = _points(rows, variant)
        fig.add_trace(go.Scatter(x=[p for p, _ in points], y=[v["val_loss"] for _, v in points],
                                 mode="lines+markers",
                                 name=variant, line=dict(color=variant_color(i), width=2)))
    return _size_axes(fig, rows, "final val loss (mean over seeds)")


def diagnostics_figure(rows: list[dict]) -> go.Figure:
    """The trend diagnostics (core.studies.results.TREND_DIAGNOSTICS) against size, one panel each."""
    keys = [f"{group}/{name}" for group, name in TREND_DIAGNOSTICS]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=keys)
    for col, key in enumerate(keys, start=1):
        for i, variant in enumerate(_variants(rows)):
            points = [(size, v[key]) for size, v in _points(rows, variant) if math.isfinite(v[key])]
            if points:
                fig.add_trace(go.Scatter(x=[p for p, _ in points], y=[v for _, v in points], name=variant,
                                         mode="lines+markers", line=dict(color=variant_color(i)),
                                         showlegend=col == 1, legendgroup=variant), row=1, col=col)
    _size_axes(fig, rows, "", height=360)
    fig.update_xaxes(type=fig.layout.xaxis.type)  # every panel like the first
    return fig


def _rung_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for row in rows:
        for variant, v in row["variants"].items():
            interval = f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]" if math.isfinite(v["ci_low"]) else "-"
            out.append([row["rung"], f"{row['non_embedding']:,}", str(row["steps"]), variant,
                        f"{row['lrs'].get(variant, math.nan):g}", str(v["seeds"]), f"{v['val_loss']:.4f}",
                        f"{v['delta']:+.4f}", interval])
    return out


def ladder_sections(study: Study, root: Path) -> list[str]:
    """The trend figures, the per-point numbers and each point's Table 1."""
    rows = scaling_rows(study, root)
    parts = ["<h2>Trend with size</h2>",
             figure_html(f"val loss difference from {variants.BASELINE} (95% Welch interval)",
                         delta_figure(rows)),
             figure_html("final val loss", loss_figure(rows)),
             figure_html("diagnostics at the last evaluation (mean over seeds and layers)",
                         diagnostics_figure(rows)),
             f"<p class=note>{html.escape(_ladder_note(study))}</p>",
             html_table(["rung", "non-emb params", "steps", "variant", "lr", "seeds", "val loss", "delta",
                         "95% CI (Welch)"], _rung_rows(rows), {1, 2, 4, 5, 6, 7})]
    for point in study.points:
        records = point_records(study, point, root)
        if records:
            parts += [f"<h3>Table 1, rung {html.escape(point.name)}</h3>", table1_html(records)]
    return parts


def _ladder_note(study: Study) -> str:
    """How the points were trained: size, tokens per parameter and how each lr was chosen."""
    steps = f"{study.steps} steps" if study.steps else "the preset's steps"
    budget = (f"{study.tokens_per_param:g} training tokens per non-embedding parameter"
              if study.tokens_per_param is not None else steps)
    lrs = ", ".join(f"{lr:g}" for lr in study.lrs)
    chosen = (f"each variant at its best lr from a short sweep ({lrs}; {study.fraction:g} of the steps, "
              f"seed {study.seeds[0]})" if study.selects else f"lr grid {lrs or 'of the preset'}")
    return (f"{len(study.points)} rungs on the {study.preset} preset, {budget}; {chosen}. "
            "Rungs without results are left out.")


def build_study_report(root: Path, study: Study) -> str:
    """The report of `study` under the runs root, as one HTML string."""
    if study.axis:
        kind = "Scaling ladder" if study.axis == "rungs" else f"Study along {study.axis}:"
        points = "rungs" if study.axis == "rungs" else f"values of {study.axis}"
        return page(f"{kind} {study.name}", f"{len(study.points)} {points}", ladder_sections(study, root))
    grid = f"lr grid {', '.join(f'{lr:g}' for lr in study.lrs)}" if study.lrs else "the preset's lr"
    return page(f"Recipe {study.name}", grid, lr_sections(study, root))


def write_study_report(root: str | Path | None, study: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of study `study` (a built-in name or a file) to `out` (default
    ``report-<name>.html``); returns the path. ValueError on a bad study, before anything is written."""
    loaded = load_study(study)
    path = Path(out or f"report-{loaded.name}.html")
    text = build_study_report(runs_root(root), loaded)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m core.report``: an experiment's report, or with --study (--recipe) a study's."""
    parser = report.build_parser()
    names = ", ".join(builtin_names())
    parser.add_argument("--study", "--recipe", dest="study", default=None, metavar="NAME|PATH",
                        help=f"report a whole study instead: a built-in by name ({names}: studies/*.toml) "
                        "or a study file")
    args = parser.parse_args(argv)
    if args.study is None:
        return report.run(args)
    try:
        if args.experiment is not None:
            raise ValueError("give an experiment or --study NAME, not both")
        path = write_study_report(args.runs_dir, args.study, args.out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
