"""Self-contained HTML report of an experiment: setup, Table 1, Figure 1, knock-out, diagnostics.

``python -m core.report EXPERIMENT [--runs-dir D] [--out FILE]``. The page embeds plotly.js once
(no network needed to view it) and one interactive figure per section; bands are mean ± std over
seeds (core.analysis.stats.seed_band). Reads runs only through core.runs.experiment_records.
"""

import argparse
import html
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from core import health, variants
from core.analysis.band_plot import band_traces, variant_color
from core.analysis.stats import TABLE1_CELLS, TABLE1_NOTE, seed_band, table1, table1_cells
from core.config import RunConfig
from core.metrics import LOSSES, parse_key
from core.runs import experiment_records, runs_root, validate_name

DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
# Groups drawn first, in this order; any other group with per-layer keys (group/L{i}/name) follows.
DIAGNOSTIC_GROUPS = ("routing", "threshold", "sparsity", "interference", "alpha")
# Subplot order within each group; names not listed follow alphabetically.
METRIC_ORDER = ["sparse_weight", "mostly_sparse", "entropy", "entropy_of_mean", "mutual_info",
                "logit_rms", "collapsed", "theta", "theta_raw", "grad", "window_frac", "zero_frac",
                "dead_frac", "always_on_frac", "cosine", "neg_frac", "norm_ratio", "cosine_gate",
                "cosine_up", "cosine_down", "dense", "sparse"]
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.85em}"""


# ---------------------------------------------------------------------------- small formatting


def _num(value, fmt: str) -> str:
    """Format a number, '-' when missing or not finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "-"
    return format(value, fmt) if math.isfinite(value) else "-"


def html_table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table of already formatted cells; columns in `numeric` are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if j in numeric else ''}>{html.escape(str(c))}</td>"
                         for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(title: str, fig: go.Figure) -> str:
    """A heading and the figure as a div; plotly.js itself is loaded once in the page head.

    The title is HTML, not plotly's: the figure JSON escapes "/" and so hides metric names.
    """
    # a div id from the title, not plotly's random one: the same runs give the same page
    div_id = "figure-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    div = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False},
                      div_id=div_id)
    return f"<h3>{html.escape(title)}</h3>\n{div}"


# ---------------------------------------------------------------------------- setup and tables


def _values(records: list[dict], get: Callable[[dict], object]) -> str:
    """The distinct values of one setting over runs, in order ("a, b" when they differ)."""
    seen = []
    for record in records:
        try:
            value = get(record)
        except (KeyError, TypeError, ValueError):
            value = "?"
        if value not in seen:
            seen.append(value)
    return ", ".join(str(v) for v in seen)


def _tokens(record: dict) -> str:
    tokens = record["summary"].get("tokens")
    if tokens is None:
        train = record["config"]["train"]
        tokens = train["steps"] * train["batch_size"] * train["seq_len"]
    return f"{int(tokens):,}"


def _model_shape(record: dict) -> str:
    model = record["config"]["model"]
    try:
        hidden = variants.hidden_size(RunConfig.from_dict(record["config"]).model)
    except ValueError:  # a plugin variant whose file is not loaded here
        hidden = model.get("ffn_hidden") or model["intermediate_size"]
    return f"d={model['hidden_size']}, {model['num_hidden_layers']} layers, FFN h={hidden}"


def _data(record: dict) -> str:
    data = record["config"]["data"]
    cut = f", first {data['max_bytes']:,} bytes" if data.get("max_bytes") else ""
    return f"{data['source']} (tokenizer {data['tokenizer']}{cut})"


SETUP_COLUMNS: list[tuple[str, Callable[[dict], object]]] = [
    ("preset", lambda r: r["config"]["preset"]),
    ("steps", lambda r: r["config"]["train"]["steps"]),
    ("tokens / run", _tokens),
    ("batch x seq", lambda r: f"{r['config']['train']['batch_size']} x {r['config']['train']['seq_len']}"),
    ("peak lr", lambda r: r["config"]["train"]["lr"]),
    ("model", _model_shape),
    ("data", _data),
    ("device", lambda r: r["config"]["device"]),
]


def by_variant(records: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by variant label, in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(str(record["variant"]), []).append(record)
    return groups


def setup_html(records: list[dict]) -> str:
    """One row per variant: seeds, run states and the settings that define the runs."""
    rows = []
    for variant, runs in by_variant(records).items():
        seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: str(r["seed"])))
        states = _values(runs, lambda r: r["status"])
        rows.append([variant, seeds, states] + [_values(runs, get) for _, get in SETUP_COLUMNS])
    return html_table(["variant", "seeds", "status"] + [name for name, _ in SETUP_COLUMNS], rows)


def table1_html(records: list[dict], baseline: str | None = None) -> str:
    """The Table 1 analogue (core.analysis.stats.table1) as HTML, cells as every Table 1 writes them."""
    cells = table1_cells(table1(records, baseline))
    headers = list(TABLE1_CELLS)
    numeric = {i for i, h in enumerate(headers) if h not in ("variant", "val loss", "health")}
    return html_table(headers, [list(row.values()) for row in cells], numeric=numeric)


def health_html(records: list[dict]) -> str:
    """Every alarm of every run (core.health), with what it means; a line saying so when none."""
    rows = []
    for record in records:
        for alarm in health.run_alarms(record["summary"], record["metrics"]):
            layer = "" if alarm.get("layer") is None else str(alarm["layer"])
            rows.append([record["name"], alarm["kind"], layer, alarm["detail"],
                         health.EXPLANATIONS.get(alarm["kind"], "")])
    if not rows:
        return f"<p>No run raised an alarm ({', '.join(health.KINDS)}).</p>"
    return html_table(["run", "alarm", "layer", "measured", "what it means"], rows, numeric={2})


def _mean_std(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return f"{mean:.4f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    return f"{mean:.4f} ± {std:.4f}"


def knockout_html(records: list[dict]) -> str | None:
    """Val loss of the full model ("mix") and under each knock-out its variant offers (the dual
    path: dense_only, sparse_only), per variant; None if no run's summary holds "knockout"."""
    found, names = {}, {}
    for variant, runs in by_variant(records).items():
        knockouts = [r["summary"]["knockout"] for r in runs if isinstance(r["summary"].get("knockout"), dict)]
        if knockouts:
            found[variant] = knockouts
            names.update(dict.fromkeys(name for k in knockouts for name in k))
    if not found:
        return None
    names = sorted(names, key=lambda name: name != "mix")  # the full model first
    rows = []
    for variant, knockouts in found.items():
        cells = [_mean_std([_float(k.get(name)) for k in knockouts]) for name in names]
        rows.append([variant, str(len(knockouts)), *cells])
    header = ["variant", "runs"] + [name.replace("_", " ") for name in names]
    return html_table(header, rows, numeric=set(range(1, len(header))))


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------- figures


def band_figure(groups: dict[str, list[list[dict]]], key: str) -> go.Figure:
    """Metric `key` over steps, one colour per variant: mean over seeds with a ±std band."""
    fig = go.Figure()
    for i, (variant, runs) in enumerate(groups.items()):
        band = seed_band(runs, key)
        if len(band.x):
            fig.add_traces(band_traces(variant, band, variant_color(i)))
    fig.update_layout(xaxis_title="step", yaxis_title=key, template="plotly_white", height=400,
                      margin=dict(l=60, r=20, t=20, b=40), legend=dict(orientation="h", y=-0.15))
    return fig


def diagnostic_keys(groups: dict[str, list[list[dict]]]) -> dict[str, dict[str, dict[str, str]]]:
    """{group: {metric name: {layer label: key}}} of every diagnostic key any run logged (old bare
    per-layer keys included, see core.metrics; an explicit name wins over a bare one)."""
    keys = sorted({k for runs in groups.values() for m in runs for line in m for k in line},
                  key=lambda k: (k.count("/"), k), reverse=True)  # explicit names before bare ones
    out: dict[str, dict[str, dict[str, str]]] = {}
    for key in keys:
        parsed = parse_key(key)
        if parsed is None or (parsed.layer is None and parsed.group not in DIAGNOSTIC_GROUPS):
            continue
        layer = f"L{parsed.layer}" if parsed.layer is not None else "all"
        out.setdefault(parsed.group, {}).setdefault(parsed.name, {}).setdefault(layer, key)
    return out


def _group_order(group: str) -> tuple[int, str]:
    return (DIAGNOSTIC_GROUPS.index(group) if group in DIAGNOSTIC_GROUPS else len(DIAGNOSTIC_GROUPS), group)


def _metric_sort(name: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name)


def _layer_sort(label: str) -> int:
    return int(label[1:]) if label[1:].isdigit() else -1


def diagnostics_figure(metrics: dict[str, dict[str, str]],
                       groups: dict[str, list[list[dict]]]) -> go.Figure:
    """One subplot per metric of a group; a band per (variant, layer): colour = layer, dash = variant."""
    names = sorted(metrics, key=_metric_sort)
    layers = sorted({label for by_layer in metrics.values() for label in by_layer}, key=_layer_sort)
    colors = sample_colorscale("Viridis", [i / max(1, len(layers) - 1) * 0.9 for i in range(len(layers))])
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, vertical_spacing=0.3 / rows)
    legend_done: set[str] = set()
    for n, name in enumerate(names):
        for layer, key in sorted(metrics[name].items(), key=lambda kv: _layer_sort(kv[0])):
            for v, (variant, runs) in enumerate(groups.items()):
                band = seed_band(runs, key)
                if not len(band.x) or not (band.n > 0).any():
                    continue
                label, color = f"{variant} {layer}", colors[layers.index(layer)]
                traces = band_traces(label, band, color, showlegend=label not in legend_done,
                                     dash=DASHES[v % len(DASHES)])
                legend_done.add(label)
                fig.add_traces(traces, rows=n // cols + 1, cols=n % cols + 1)
    fig.update_layout(template="plotly_white", height=max(300, 250 * rows),
                      margin=dict(l=60, r=20, t=40, b=40))
    return fig


# ---------------------------------------------------------------------------- the page


def _glossary(records: list[dict]) -> str:
    """The metric definitions: each variant's module docstring (one source for code and report),
    then the generic ones of core.diagnostics."""
    docs = []
    for name in dict.fromkeys(r["config"]["model"].get("ffn", "") for r in records):
        try:
            module = sys.modules[variants.module_class(name).__module__]
        except ValueError:  # a plugin variant whose file is not loaded here
            continue
        docs.append(f"{name}: {(module.__doc__ or '').strip()}")
    from core.training import diagnostics  # its docstring; torch only when a page is built

    generic = diagnostics.__doc__ or ""
    docs.append(generic[generic.find("interference ("):].strip())
    return "\n\n".join(docs)


def _sections(records: list[dict], baseline: str | None) -> list[str]:
    groups = {variant: [r["metrics"] for r in runs] for variant, runs in by_variant(records).items()}
    parts = ["<h2>Setup</h2>", setup_html(records),
             "<h2>Table 1: final validation loss</h2>", table1_html(records, baseline),
             f"<p class=note>Mean ± sample std over seeds of each run's last val loss, against the "
             f"baseline (first row). {html.escape(TABLE1_NOTE)} Runs not completed are left out.</p>",
             "<h2>Health alarms</h2>", health_html(records),
             "<p class=note>Checked at each evaluation by the trainer (stored in summary.json), or "
             "from the metric lines of runs made before it stored them; limits in core/health.py.</p>",
             "<h2>Figure 1: validation loss</h2>",
             *(figure_html(f"{key} (mean ± std over seeds)", band_figure(groups, key)) for key in LOSSES)]
    knockout = knockout_html(records)
    if knockout:
        parts += ["<h2>Knock-out: val loss of reduced models</h2>", knockout,
                  "<p class=note>At the end of training, e.g. the dual path's router forced to (1, 0) "
                  "or (0, 1); mean ± std over runs.</p>"]
    parts.append("<h2>Diagnostics</h2>")
    diagnostics = diagnostic_keys(groups)
    if not diagnostics:
        parts.append("<p class=note>No run logged diagnostic metrics (routing/, threshold/, "
                     "sparsity/, interference/, alpha/).</p>")
    for group in sorted(diagnostics, key=_group_order):
        title = f"{group}/… (mean ± std over seeds; colour = layer, dash = variant)"
        parts.append(figure_html(title, diagnostics_figure(diagnostics[group], groups)))
    parts += ["<h3>Definitions</h3>", f"<pre>{html.escape(_glossary(records))}</pre>"]
    return parts


def build_report(root: str | Path | None, experiment: str, baseline: str | None = None) -> str:
    """The report of `experiment` under the runs root as one HTML string (plotly.js inline).

    ValueError when the experiment has no runs or `baseline` is not one of its variants.
    """
    validate_name(experiment, "experiment name")
    records = experiment_records(root, experiment)
    if not records:
        raise ValueError(f"experiment {experiment!r} has no runs under {runs_root(root)}")
    return page(f"Experiment {experiment}", f"{len(records)} runs", _sections(records, baseline))


def page(title: str, note: str, sections: list[str]) -> str:
    """A self-contained HTML page (plotly.js inline): the title, `note` with the generation time,
    then `sections` (HTML)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    head = (f"<head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>")
    body = "\n".join([f"<h1>{html.escape(title)}</h1>",
                      f"<p class=note>{html.escape(note)}; report generated {stamp}.</p>", *sections])
    return f"<!DOCTYPE html>\n<html>{head}<body>\n{body}\n</body></html>\n"


def write_report(root: str | Path | None, experiment: str, out: str | Path | None = None,
                 baseline: str | None = None) -> Path:
    """Write the report to `out` (default ``report-<experiment>.html`` here); returns the path."""
    path = Path(out or f"report-{experiment}.html")
    text = build_report(root, experiment, baseline)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``python -m core.report`` for an experiment (core.studies.report adds --study)."""
    parser = argparse.ArgumentParser(prog="python -m core.report",
                                     description="Write a self-contained HTML report of an experiment.")
    parser.add_argument("experiment", nargs="?", help="the experiment (or give --study)")
    parser.add_argument("--runs-dir", default=None, help="runs root (default $RUNS_DIR or ./runs)")
    parser.add_argument("--out", default=None, help="output file (default report-<name>.html)")
    parser.add_argument("--baseline", default=None, help="baseline variant of Table 1 (default swiglu)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the report `args` ask for; print its path (0) or the error (2)."""
    try:
        if args.experiment is None:
            raise ValueError("give an experiment (or --study NAME)")
        path = write_report(args.runs_dir, args.experiment, args.out, args.baseline)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """An experiment's report (``python -m core.report`` also takes --study: core.studies.report)."""
    return run(build_parser().parse_args(argv))
