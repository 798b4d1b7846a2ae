"""FFN explorer: launch ablations, watch seed-band curves live, read Table 1, inspect tokens.

`python app.py` serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT / RUNS_DIR
honoured). UI only: every callback delegates to ui.service, which calls core.
"""

import functools
import os

import gradio as gr
import numpy as np
import pandas as pd

from core import variants
from core.analysis.stats import TABLE1_NOTE, Band
from core.config import PRESETS, preset
from core.jobs.executors import Resources
from core.metrics import LOSSES, VAL_LOSS
from core.sharing.hub import pull_at_start
from core.trackers import BACKENDS
from ui.figures import curves_figure, layer_params_figure, stats_heatmaps, token_loss_figure
from ui.service import Explorer, Limits, variant_choice
from ui.settings import app_settings
from ui.tables import RUN_COLUMNS, estimate_text, results_table, runs_table

SAMPLE_TEXT = ("The state of the Union is strong. We will invest in our roads, our schools and our "
               "people, and we will keep the promise of a better future for every American family.")
OVERVIEW = ("The report's dual-path FFN (a learned router per token between a dense SwiGLU path "
            "and a sparse, learned-threshold path) beat SwiGLU in 400-step ablations of an 84M "
            "Qwen-style model (val loss 5.646 vs 5.660) but lost at full scale (4.949 ± 0.005 vs "
            "4.927 ± 0.003, 3 seeds).")


def friendly(fn):
    """Show ValueError (bad input) as a message in the UI, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


# Launch tab ----------------------------------------------------------------------------------------
def _option_field(option) -> gr.components.Component:
    """The form field of one declared variant option."""
    if isinstance(option.default, bool):
        return gr.Checkbox(option.default, label=option.name, info=option.help)
    if option.choices:
        return gr.Radio(list(option.choices), value=option.default, label=option.name, info=option.help)
    if isinstance(option.default, (int, float)):
        precision = 0 if isinstance(option.default, int) else None
        return gr.Number(option.default, label=option.name, info=option.help, precision=precision)
    return gr.Textbox(option.default, label=option.name, info=option.help)


def variant_forms() -> dict[str, list]:
    """An accordion per registered variant: width, matching and its own options (built from the
    registry). Returns {variant: [hidden, match, *option fields]}."""
    forms = {}
    for name in variants.names():
        spec = variants.spec(name)
        with gr.Accordion(f"{name} options: {spec.summary}", open=False), gr.Row():
            fields = [gr.Number(0, label="Hidden (0 = auto)", precision=0),
                      gr.Radio(list(variants.FFN_MATCHES), value="width", label="Match SwiGLU by")]
            fields += [_option_field(option) for option in spec.options]
        forms[name] = fields
    return forms


def build_variants(picked: list[str], forms: dict[str, list], values: list) -> list[str]:
    """Variant labels of the picked variants, from the flat list of every form's field values."""
    labels, start = [], 0
    for name, fields in forms.items():
        hidden, match, *options = values[start:start + len(fields)]
        start += len(fields)
        if name in (picked or []):
            names = [o.name for o in variants.spec(name).options]
            labels.append(variant_choice(name, dict(zip(names, options)), int(hidden or 0), match))
    return labels


def executor_fields(explorer: Explorer) -> list[gr.components.Component]:
    """Where a grid runs: this machine, or SLURM (offered where sbatch is on PATH) with the
    resources of each run. Returns [executor, partition, gpus, nodes, time, cpus]."""
    offered = len(explorer.executors) > 1
    executor = gr.Radio(list(explorer.executors), value=explorer.default_executor, label="Run on",
                        visible=offered, info="local: background processes here; slurm: one job array")
    opened = explorer.default_executor == "slurm"
    with gr.Accordion("Cluster resources (slurm)", open=opened, visible=offered), gr.Row():
        partition = gr.Textbox("", label="Partition (empty: the cluster's default)")
        gpus = gr.Number(Resources.gpus_per_run, label="GPUs per run", precision=0, minimum=0)
        nodes = gr.Number(Resources.nodes_per_run, label="Nodes per run", precision=0, minimum=1)
        time_limit = gr.Textbox(Resources.time, label="Time limit per job (HH:MM:SS)",
                                info="a longer run checkpoints and resumes in a requeued job")
        cpus = gr.Number(Resources.cpus_per_rank, label="CPUs per rank", precision=0, minimum=1)
    return [executor, partition, gpus, nodes, time_limit, cpus]


def launch_tab(explorer: Explorer) -> dict:
    with gr.Tab("Launch"):
        where = " or as SLURM jobs (Run on: slurm)" if "slurm" in explorer.executors else ""
        gr.Markdown(f"Queue a grid of variants x seeds. Runs train as background processes{where}; "
                    "the table below follows them live.  \n"
                    f"*Limits here:* {explorer.limits.describe()}.")
        with gr.Row():
            experiment = gr.Textbox("my-ablation", label="Experiment")
            preset_name = gr.Dropdown(list(explorer.limits.presets), value=explorer.limits.presets[0],
                                      label="Preset")
            seeds = gr.Textbox("0 1 2", label="Seeds (e.g. 0 1 2 or 0-2)")
        picked = gr.CheckboxGroup(list(variants.names()), value=[variants.BASELINE, "dual"],
                                  label="FFN variants")
        with gr.Row():
            steps = gr.Number(preset(explorer.limits.presets[0]).train.steps, label="Steps", precision=0)
            lr = gr.Number(0, label="Peak lr (0 = preset's)")
            data = gr.Textbox("builtin", label="Data (builtin, fineweb, hf:owner/name, path)")
        forms = variant_forms()
        overrides = gr.Textbox("", lines=2, label="Overrides (key=value, one per line)")
        mirrors = gr.CheckboxGroup(list(BACKENDS), value=[], label="Mirror metrics to",
                                   info="TensorBoard and W&B (offline unless logged in) write inside each "
                                   "run folder; Trackio to its local store")
        cluster = executor_fields(explorer)
        grid_table = gr.Dataframe(label="Grid to queue", interactive=False)
        estimate = gr.Markdown()
        with gr.Row():
            launch_btn = gr.Button("Launch", variant="primary")
            message = gr.Markdown()
        runs = gr.Dataframe(label="Runs of this experiment", interactive=False, headers=RUN_COLUMNS)
        failures_seen = gr.State(None)  # runs already known as failed: each failure is toasted once
        with gr.Row():
            cancel_run = gr.Dropdown([], label="Run to cancel", allow_custom_value=True)
            cancel_btn = gr.Button("Cancel run", variant="stop")

    form_fields = [field for fields in forms.values() for field in fields]
    plan_inputs = [experiment, preset_name, picked, seeds, steps, lr, data, overrides, *form_fields]

    def unpack(exp, pre, chosen, sd, st, learning_rate, src, ov, *form_values):
        return exp, pre, build_variants(chosen, forms, list(form_values)), sd, st, learning_rate, src, ov

    def preview(*values):
        try:
            return pd.DataFrame(explorer.plan(*unpack(*values))), ""
        except ValueError as error:
            return pd.DataFrame(), f"**Cannot launch:** {error}"

    @friendly
    def do_launch(*values):
        *values, trackers, executor, partition, gpus, nodes, time_limit, cpus = values
        resources = {"partition": partition, "gpus_per_run": gpus, "nodes_per_run": nodes,
                     "time": time_limit, "cpus_per_rank": cpus}
        result = explorer.launch(*unpack(*values), trackers=trackers, executor=executor,
                                 resources=resources)
        return f"{result['message']}: {', '.join(result['queued']) or 'nothing new'}"

    def estimate_now(*values):
        try:
            return estimate_text(explorer.estimate(*unpack(*values)))
        except ValueError:
            return ""  # the grid preview already says why it cannot launch

    def refresh(exp, seen):
        try:
            rows = explorer.status(exp)
        except ValueError:
            return pd.DataFrame(columns=RUN_COLUMNS), gr.update(), seen
        failed = {r["run"]: r["error"] for r in rows if r["state"].startswith("failed")}
        for run, error in failed.items():
            if seen is not None and run not in seen:
                gr.Warning(f"{exp}/{run} failed: {error}")
        active = [r["run"] for r in rows if r["live"]]
        return runs_table(rows), gr.update(choices=active), sorted(failed)

    for component in plan_inputs:
        component.change(preview, plan_inputs, [grid_table, message], api_visibility="private",
                         show_progress="hidden")
    launched = launch_btn.click(do_launch, [*plan_inputs, mirrors, *cluster], message,
                                api_visibility="private")
    launched.then(refresh, [experiment, failures_seen], [runs, cancel_run, failures_seen],
                  api_visibility="private")
    experiment.change(lambda: None, None, failures_seen, api_visibility="private")
    cancel_btn.click(friendly(lambda exp, run: f"{run}: {explorer.cancel(exp, run)}"),
                     [experiment, cancel_run], message, api_visibility="private")
    preset_name.change(lambda p: preset(p).train.steps, preset_name, steps, api_visibility="private")
    gr.Timer(2.0).tick(refresh, [experiment, failures_seen], [runs, cancel_run, failures_seen],
                       api_visibility="private", show_progress="hidden")
    gr.Timer(2.0).tick(estimate_now, plan_inputs, estimate, api_visibility="private", show_progress="hidden")
    return {"preview": preview, "inputs": plan_inputs, "outputs": [grid_table, message],
            "experiment": experiment, "launched": launched}


# Overview tab --------------------------------------------------------------------------------------
def overview_tab(explorer: Explorer, experiment: str | None) -> dict:
    """The first page: the shipped experiment's seed-band curves and Table 1, no click needed."""
    with gr.Tab("Overview"):
        gr.Markdown(OVERVIEW + " " + _overview_line(explorer, experiment))
        plot = gr.Plot(label="Val loss: mean over seeds with a std band")
        table = gr.Dataframe(interactive=False, label="Table 1")

    def show():
        if not experiment:
            return curves_figure({}, VAL_LOSS, "step"), pd.DataFrame()
        bands = {v: _band(d) for v, d in explorer.curves(experiment, VAL_LOSS, "step").items()}
        return curves_figure(bands, VAL_LOSS, "step"), results_table(explorer.results(experiment))

    return {"load": show, "outputs": [plot, table]}


def _overview_line(explorer: Explorer, experiment: str | None) -> str:
    if not experiment:
        return "No experiment is here yet: launch one in the Launch tab."
    rows = explorer.results(experiment)
    variants = ", ".join(f"{r['variant']} ({r['seeds']} seeds)" for r in rows)
    return (f"Below, the `{experiment}` experiment shipped with the explorer: {variants}. Launch your "
            "own grid in the Launch tab; Curves, Results, Diagnostics and Inspect then follow it.")


# Curves tab ----------------------------------------------------------------------------------------
def follow_on_select(tab: gr.Tab, picker: gr.Dropdown, explorer: Explorer, followed: gr.State):
    """When `tab` is selected, `picker` lists every experiment now on disk and, once after each
    launch, shows the launched one (then the user's choice stands). Returns the select event."""
    applied = gr.State(None)  # the launch this picker has already followed

    def update(value, launched, done):
        if launched and launched != done:
            value = launched
        return gr.update(choices=explorer.experiments(), value=value), launched

    return tab.select(update, [picker, followed, applied], [picker, applied], api_visibility="private")


def curves_tab(explorer: Explorer, default_experiment: str | None, followed: gr.State) -> dict:
    with gr.Tab("Curves") as tab:
        with gr.Row():
            experiment = gr.Dropdown(explorer.experiments(), value=default_experiment, label="Experiment")
            metric = gr.Dropdown(list(LOSSES), value=VAL_LOSS, label="Metric",
                                 allow_custom_value=True)
            x_axis = gr.Radio(["step", "tokens", "elapsed_s"], value="step", label="x")
            spread = gr.Radio(["std", "minmax"], value="std", label="Band")
        with gr.Row():
            smoothing = gr.Slider(0, 0.99, value=0, step=0.01, label="Smoothing (EMA)")
            show_seeds = gr.Checkbox(False, label="Per-seed lines")
            log_y = gr.Checkbox(False, label="Log y")
            live = gr.Checkbox(True, label="Live")
        plot = gr.Plot(label="Mean over seeds with band")

    inputs = [experiment, metric, x_axis, spread, smoothing, show_seeds, log_y]

    def draw(exp, key, x, band, smooth, seeds, log):
        if not exp:
            return curves_figure({}, key or VAL_LOSS, x)
        data = explorer.curves(exp, key, x, smooth)
        bands = {v: _band(d) for v, d in data.items()}
        per_seed = {v: d["seeds"] for v, d in data.items()} if seeds else None
        return curves_figure(bands, key, x, band, per_seed, log)

    def choose_experiment(exp):
        keys = explorer.metric_keys(exp) if exp else []
        return gr.update(choices=keys or [VAL_LOSS]), draw(exp, VAL_LOSS, "step", "std", 0, False, False)

    for component in inputs[1:]:
        component.change(friendly(draw), inputs, plot, api_visibility="private")
    experiment.change(friendly(choose_experiment), experiment, [metric, plot], api_visibility="private")
    gr.Timer(2.0).tick(lambda on, *v: draw(*v) if on else gr.update(), [live, *inputs], plot,
                       api_visibility="private", show_progress="hidden")
    follow_on_select(tab, experiment, explorer, followed)
    return {"experiment": experiment, "plot": plot, "draw": draw, "inputs": inputs}


def _band(data: dict) -> Band:
    arr = {k: np.array([np.nan if v is None else v for v in data[k]], dtype=float)
           for k in ("x", "mean", "std", "min", "max", "n")}
    return Band(**arr)


# Diagnostics tab -----------------------------------------------------------------------------------
def diagnostics_tab(explorer: Explorer, default_experiment: str | None, followed: gr.State) -> dict:
    with gr.Tab("Diagnostics") as tab:
        gr.Markdown("Per-layer routing, threshold, sparsity and pathway-interference metrics over "
                    "training: one line per variant and layer, mean over seeds with a band.")
        with gr.Row():
            experiment = gr.Dropdown(explorer.experiments(), value=default_experiment, label="Experiment")
            family = gr.Dropdown([], label="Diagnostic", allow_custom_value=True)
            x_axis = gr.Radio(["step", "tokens", "elapsed_s"], value="step", label="x")
            spread = gr.Radio(["std", "minmax"], value="std", label="Band")
        plot = gr.Plot(label="Per layer, mean over seeds with band")

    def families(exp):
        names = sorted(explorer.diagnostic_families(exp)) if exp else []
        first = next((n for n in names if n.endswith("sparse_weight")), names[0] if names else None)
        return gr.update(choices=names, value=first)

    def draw(exp, fam, x, band):
        if not exp or not fam:
            return curves_figure({}, fam or "diagnostic", x)
        data = explorer.diagnostics(exp, fam, x)
        return curves_figure({name: _band(d) for name, d in data.items()}, fam, x, band)

    experiment.change(friendly(families), experiment, family, api_visibility="private")
    follow_on_select(tab, experiment, explorer, followed).then(
        friendly(families), experiment, family, api_visibility="private")
    for component in (family, x_axis, spread):
        component.change(friendly(draw), [experiment, family, x_axis, spread], plot, api_visibility="private")
    return {"experiment": experiment}


# Results tab ---------------------------------------------------------------------------------------
def results_tab(explorer: Explorer, default_experiment: str | None, followed: gr.State) -> dict:
    with gr.Tab("Results") as tab:
        gr.Markdown("Final val loss per variant (mean ± sample std over seeds) against the "
                    "baseline, peak memory, throughput and parameters: the report's Table 1. "
                    + TABLE1_NOTE)
        with gr.Row():
            experiment = gr.Dropdown(explorer.experiments(), value=default_experiment, label="Experiment")
            baseline = gr.Dropdown([variants.BASELINE], value=variants.BASELINE, label="Baseline",
                                   allow_custom_value=True)
            refresh_btn = gr.Button("Refresh")
        table = gr.Dataframe(interactive=False)
        download = gr.DownloadButton("Download CSV")

    @friendly
    def show(exp, base):
        if not exp:
            return pd.DataFrame(), gr.update(), None
        rows = explorer.results(exp, None)
        variants = [r["variant"] for r in rows]
        base = base if base in variants else (variants[0] if variants else None)
        rows = explorer.results(exp, base) if base else rows
        csv = explorer.results_csv(exp, base)
        return results_table(rows), gr.update(choices=variants, value=base), csv

    for trigger in (experiment.change, baseline.change, refresh_btn.click):
        trigger(show, [experiment, baseline], [table, baseline, download], api_visibility="private")
    follow_on_select(tab, experiment, explorer, followed).then(
        show, [experiment, baseline], [table, baseline, download], api_visibility="private")
    return {"experiment": experiment, "table": table, "show": show, "inputs": [experiment, baseline],
            "outputs": [table, baseline, download]}


# Inspect tab ---------------------------------------------------------------------------------------
LOSS = "per-token loss"  # the colouring every run offers


def _run_pair(run_ids: list[str]) -> tuple[str | None, str | None]:
    """Default runs to compare: the first baseline run and the first run of another variant."""
    first = next((r for r in run_ids if f"/{variants.BASELINE}" in r), run_ids[0] if run_ids else None)
    other = (first or "").split("/")[-1].rsplit("-s", 1)[0]
    second = next((r for r in run_ids if r != first and r.split("/")[-1].rsplit("-s", 1)[0] != other), None)
    return first, second


def _top_layer(explorer: Explorer, runs: list[str | None]) -> int:
    """Index of the deepest layer among `runs` (0 when none can be read)."""
    depths = [1]
    for run in (r for r in runs if r):
        try:
            depths.append(explorer.num_layers(run))
        except ValueError:
            continue
    return max(depths) - 1


def inspect_tab(explorer: Explorer, followed: gr.State) -> dict:
    run_ids = explorer.run_ids()
    first, second = _run_pair(run_ids)
    top = _top_layer(explorer, [first, second])
    with gr.Tab("Inspect") as tab:
        with gr.Row():
            run_a = gr.Dropdown(run_ids, value=first, label="Run A")
            run_b = gr.Dropdown(run_ids, value=second, label="Run B (optional)")
            # empty until the first inspection offers the runs' statistics (the first one is shown)
            colour_by = gr.Dropdown([LOSS], value=None, label="Colour tokens by", allow_custom_value=True)
            layer = gr.Slider(0, max(top, 1), value=0, step=1, label="Layer for token colours")
        text = gr.Textbox(SAMPLE_TEXT, lines=3, label="Text", max_length=explorer.limits.max_text_chars)
        inspect_btn = gr.Button("Inspect", variant="primary")
        info = gr.Markdown()
        with gr.Row():
            tokens_a = gr.HighlightedText(label="Run A", combine_adjacent=False, show_legend=False)
            tokens_b = gr.HighlightedText(label="Run B", combine_adjacent=False, show_legend=False)
        stats_plot = gr.Plot(label="Per-token statistics of each run's FFN, tokens x layers")
        loss_plot = gr.Plot(label="Per-token loss")
        params_plot = gr.Plot(label="Per-layer statistics (e.g. the dual path's theta and alphas)")

    def run_inspect(a, b, txt, stat, at_layer):
        try:
            results = explorer.inspect([r for r in (a, b) if r], txt)
        except (ValueError, FileNotFoundError) as error:  # keep the previous views, say why
            return (f"**Cannot inspect:** {error}", *[gr.update()] * 6)
        offered = [LOSS] + list(dict.fromkeys(n for r in results for n in r["token_stats"]))
        stat = stat if stat in offered else offered[min(1, len(offered) - 1)]
        at = int(at_layer)
        colours = [gr.update(value=_token_colours(r, stat, at), label=_colour_label(r, stat, at))
                   for r in results] + [gr.update(value=None, label="Run B")]
        notes = [f"**{r['run']}** ({r['variant']}): {len(r['ids'])} tokens, mean loss "
                 f"{r['mean_loss']:.3f}" + (" (text cut to the model's context)" if r["truncated"] else "")
                 for r in results]
        per_layer = {f"{r['run'].split('/')[-1]} {name}": values
                     for r in results for name, values in r["layer_stats"].items()}
        return ("  \n".join(notes), colours[0], colours[1], gr.update(choices=offered, value=stat),
                stats_heatmaps(results),
                token_loss_figure({r["run"]: (r["tokens"], r["token_loss"]) for r in results}),
                layer_params_figure(per_layer) if per_layer else None)

    inputs = [run_a, run_b, text, colour_by, layer]
    outputs = [info, tokens_a, tokens_b, colour_by, stats_plot, loss_plot, params_plot]
    inspect_btn.click(run_inspect, inputs, outputs, api_visibility="private")
    for control in (colour_by, layer):
        control.input(run_inspect, inputs, outputs, api_visibility="private")

    def layer_range(a, b, at):
        deepest = _top_layer(explorer, [a, b])
        # a slider needs a non-empty range: one layer shows as 0..1, clamped to 0 when shown
        return gr.update(maximum=max(deepest, 1), value=min(int(at or 0), deepest))

    def follow(a, b, experiment):
        """The runs of the experiment launched last, once they have weights; else as chosen."""
        ids = explorer.run_ids()
        mine = [r for r in ids if experiment and r.startswith(f"{experiment}/")]
        if mine and not str(a or "").startswith(f"{experiment}/"):
            a, b = _run_pair(mine)
        return gr.update(choices=ids, value=a), gr.update(choices=ids, value=b)

    for picker in (run_a, run_b):
        picker.change(layer_range, [run_a, run_b, layer], layer, api_visibility="private")
    tab.select(follow, [run_a, run_b, followed], [run_a, run_b], api_visibility="private").then(
        run_inspect, inputs, outputs, api_visibility="private")
    return {"load": run_inspect, "inputs": inputs, "outputs": outputs}


def _token_colours(result: dict, stat: str, layer: int) -> list[tuple[str, float]]:
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


def _colour_label(result: dict, stat: str, layer: int) -> str:
    if stat not in result["token_stats"]:
        return f"{result['run']}: per-token loss (darker = higher)"
    shown = min(layer, len(result["token_stats"][stat]) - 1)
    meaning = result["stat_info"][stat]["meaning"]
    return f"{result['run']}, layer {shown}: {stat}, {meaning} (red = high, purple = low)"


# API -----------------------------------------------------------------------------------------------
def register_api(explorer: Explorer) -> None:
    """Stable JSON endpoints for gradio_client: /launch /estimate /status /cancel /curves /results
    /inspect /variants (numbers at full precision)."""

    def launch(experiment: str, preset: str, variants: list[str], seeds: list[int], steps: int = 0,
               lr: float = 0.0, data: str = "builtin", overrides: list[str] | None = None,
               trackers: list[str] | None = None, executor: str = "local",
               resources: dict | None = None) -> dict:
        return explorer.launch(experiment, preset, variants, seeds, steps or None, lr or None, data,
                               overrides or [], trackers or [], executor, resources)

    def estimate(experiment: str, preset: str, variants: list[str], seeds: list[int], steps: int = 0,
                 lr: float = 0.0, data: str = "builtin", overrides: list[str] | None = None) -> dict:
        return explorer.estimate(experiment, preset, variants, seeds, steps or None, lr or None, data,
                                 overrides or [])

    def status(experiment: str = "") -> list[dict]:
        return explorer.status(experiment or None)

    def cancel(experiment: str, run: str) -> str:
        return explorer.cancel(experiment, run)

    def curves(experiment: str, metric: str = VAL_LOSS, x: str = "step", smoothing: float = 0.0) -> dict:
        return explorer.curves(experiment, metric, x, smoothing)

    def results(experiment: str, baseline: str = "") -> list[dict]:
        return explorer.results(experiment, baseline or None)

    def inspect(runs: list[str], text: str) -> list[dict]:
        return explorer.inspect(runs, text)

    def ffn_variants() -> list[dict]:
        return explorer.variants()

    for fn in (launch, estimate, status, cancel, curves, results, inspect):
        gr.api(friendly(fn), api_name=fn.__name__)
    gr.api(ffn_variants, api_name="variants")


def build_app(explorer: Explorer) -> gr.Blocks:
    experiments = explorer.experiments()
    default = "demo" if "demo" in experiments else (experiments[0] if experiments else None)
    with gr.Blocks(title="FFN explorer") as app:
        gr.Markdown("# FFN explorer: SwiGLU, the dual-path sparse/dense FFN and any FFN you register")
        followed = gr.State(None)  # the experiment launched last in this browser session
        overview = overview_tab(explorer, default)
        launch = launch_tab(explorer)
        curves = curves_tab(explorer, default, followed)
        results = results_tab(explorer, default, followed)
        diagnostics = diagnostics_tab(explorer, default, followed)
        inspect = inspect_tab(explorer, followed)
        register_api(explorer)
        pickers = [curves["experiment"], results["experiment"], diagnostics["experiment"]]

        def follow(experiment):
            choices = explorer.experiments()
            return (*[gr.update(choices=choices, value=experiment)] * len(pickers), experiment)

        launch["launched"].success(follow, launch["experiment"], [*pickers, followed],
                                   api_visibility="private")
        app.load(overview["load"], None, overview["outputs"], api_visibility="private")
        app.load(launch["preview"], launch["inputs"], launch["outputs"], api_visibility="private")
        app.load(curves["draw"], curves["inputs"], curves["plot"], api_visibility="private")
        app.load(results["show"], results["inputs"], results["outputs"], api_visibility="private")
        app.load(inspect["load"], inspect["inputs"], inspect["outputs"], api_visibility="private")
    return app


def load_ffn_plugins(demo: bool) -> None:
    """Register $EXPLORER_FFN_MODULES' variants; never in demo mode (plugins run code)."""
    if demo:
        if os.environ.pop(variants.PLUGIN_ENV, None):
            print(f"warning: {variants.PLUGIN_ENV} is ignored in demo mode", flush=True)
        return
    try:
        variants.load_plugins_from_env()
    except ValueError as error:
        raise SystemExit(f"{variants.PLUGIN_ENV}: {error}") from None


def main() -> None:
    settings = app_settings()
    load_ffn_plugins(settings.demo)
    # Space start-up: pull $EXPLORER_HUB_EXPERIMENT (owner/name) if set; a failure only logs a warning.
    pull_at_start(settings.runs_dir)
    explorer = Explorer(settings.runs_dir, settings.limits, settings.max_concurrent,
                        executors=settings.executors, default_executor=settings.executor)
    app = build_app(explorer)
    app.queue(default_concurrency_limit=8).launch(
        server_name=settings.host, server_port=settings.port, auth=settings.auth, show_error=True)


__all__ = ["build_app", "main", "Limits", "PRESETS"]

if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
