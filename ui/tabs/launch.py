"""The Launch tab: plan a grid of variants x seeds, see it and its estimated wall time, queue it
(here or on SLURM), then follow its runs live and cancel them."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core import variants
from core.config import preset
from core.jobs.executors import Resources
from core.trackers import BACKENDS
from ui.service import Explorer, failures, variant_labels
from ui.tables import RUN_COLUMNS, estimate_text, runs_table
from ui.widgets import PRIVATE, OnLoad, friendly


@dataclass
class LaunchTab:
    """What the wiring needs from the Launch tab."""

    experiment: gr.Textbox  # the experiment the other tabs follow after a launch
    launched: gr.events.Dependency  # the Launch click: the wiring chains `.success` on it
    on_load: OnLoad  # the preview of the default grid


@dataclass
class _Plan:
    """The fields a grid is planned from."""

    experiment: gr.Textbox
    preset: gr.Dropdown
    picked: gr.CheckboxGroup
    seeds: gr.Textbox
    steps: gr.Number
    lr: gr.Number
    data: gr.Textbox
    overrides: gr.Textbox
    forms: dict[str, list]  # variant -> its form's fields: hidden, match, *options

    @property
    def inputs(self) -> list:
        """Every field, in the order _Callbacks reads their values."""
        fields = [field for form in self.forms.values() for field in form]
        return [self.experiment, self.preset, self.picked, self.seeds, self.steps, self.lr, self.data,
                self.overrides, *fields]


@dataclass
class _Views:
    """What the tab shows and the buttons under the form."""

    grid: gr.Dataframe
    shown: gr.State  # the key of the grid listed (Explorer.planned): the estimate line's own grid
    estimate: gr.Markdown
    launch: gr.Button
    message: gr.Markdown
    runs: gr.Dataframe
    seen: gr.State  # runs already known as failed: each failure is toasted once
    cancel_run: gr.Dropdown
    cancel: gr.Button


def launch_tab(explorer: Explorer) -> LaunchTab:
    """The Launch tab; its live table and estimate refresh every 2 s."""
    with gr.Tab("Launch"):
        where = " or as SLURM jobs (Run on: slurm)" if "slurm" in explorer.executors else ""
        gr.Markdown(f"Queue a grid of variants x seeds. Runs train as background processes{where}; "
                    "the table below follows them live.  \n"
                    f"*Limits here:* {explorer.limits.describe()}.")
        plan = _plan_fields(explorer)
        mirrors = gr.CheckboxGroup(list(BACKENDS), value=[], label="Mirror metrics to",
                                   info="TensorBoard and W&B (offline unless logged in) write inside each "
                                   "run folder; Trackio to its local store")
        cluster = executor_fields(explorer)
        views = _views()
    return _wire(explorer, plan, [mirrors, *cluster], views)


def _plan_fields(explorer: Explorer) -> _Plan:
    """The grid's fields: experiment, preset, seeds, variants, steps, lr, data, each variant's
    options and free overrides."""
    presets = explorer.limits.presets
    with gr.Row():
        experiment = gr.Textbox("my-ablation", label="Experiment")
        preset_name = gr.Dropdown(list(presets), value=presets[0], label="Preset")
        seeds = gr.Textbox("0 1 2", label="Seeds (e.g. 0 1 2 or 0-2)")
    picked = gr.CheckboxGroup(list(variants.names()), value=[variants.BASELINE, "dual"],
                              label="FFN variants")
    with gr.Row():
        steps = gr.Number(preset(presets[0]).train.steps, label="Steps", precision=0)
        lr = gr.Number(0, label="Peak lr (0 = preset's)")
        data = gr.Textbox("builtin", label="Data (builtin, fineweb, hf:owner/name, path)")
    forms = variant_forms()
    overrides = gr.Textbox("", lines=2, label="Overrides (key=value, one per line)")
    return _Plan(experiment, preset_name, picked, seeds, steps, lr, data, overrides, forms)


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


def _views() -> _Views:
    """The grid to queue, its estimate, the Launch button, the live runs and cancel."""
    grid = gr.Dataframe(label="Grid to queue", interactive=False)
    shown = gr.State(None)
    estimate = gr.Markdown()
    with gr.Row():
        launch = gr.Button("Launch", variant="primary")
        message = gr.Markdown()
    runs = gr.Dataframe(label="Runs of this experiment", interactive=False, headers=RUN_COLUMNS)
    seen = gr.State(None)
    with gr.Row():
        cancel_run = gr.Dropdown([], label="Run to cancel", allow_custom_value=True)
        cancel = gr.Button("Cancel run", variant="stop")
    return _Views(grid, shown, estimate, launch, message, runs, seen, cancel_run, cancel)


def _wire(explorer: Explorer, plan: _Plan, where: list, views: _Views) -> LaunchTab:
    """The tab's events; `where` is [mirrors, executor, *cluster resources]."""
    calls = _Callbacks(explorer, {name: len(fields) for name, fields in plan.forms.items()})
    inputs, previewed = plan.inputs, [views.grid, views.message, views.shown, views.estimate]
    watched = [views.runs, views.cancel_run, views.seen]
    # The grid and its estimate line are written together by preview() on every change; the timer
    # only fills in an estimate still being measured. One queue for both, in order, so a tick sent
    # before a change can never land after it.
    in_order = {"concurrency_id": "launch-plan", "concurrency_limit": 1}
    for component in inputs:
        component.change(calls.preview, inputs, previewed, show_progress="hidden", **in_order, **PRIVATE)
    launched = views.launch.click(friendly(calls.queue_grid), [*inputs, *where], views.message, **PRIVATE)
    launched.then(calls.refresh, [plan.experiment, views.seen], watched, **PRIVATE)
    plan.experiment.change(lambda: None, None, views.seen, **PRIVATE)  # a new experiment: no failure seen
    views.cancel.click(friendly(calls.cancel_run), [plan.experiment, views.cancel_run], views.message,
                       **PRIVATE)
    plan.preset.change(lambda name: preset(name).train.steps, plan.preset, plan.steps, **PRIVATE)
    gr.Timer(2.0).tick(calls.refresh, [plan.experiment, views.seen], watched, show_progress="hidden",
                       **PRIVATE)
    gr.Timer(2.0).tick(calls.estimate_line, [views.shown, *inputs], views.estimate, show_progress="hidden",
                       **in_order, **PRIVATE)
    return LaunchTab(plan.experiment, launched, OnLoad(calls.preview, inputs, previewed))


class _Callbacks:
    """The tab's callbacks. `values` are the plan fields' values in _Plan.inputs' order. Their names
    become the events' (private) API names: none may be an endpoint's (ui/api.py)."""

    def __init__(self, explorer: Explorer, form_sizes: dict[str, int]):
        self.explorer = explorer
        self.form_sizes = form_sizes  # variant -> how many fields its form has

    def _plan(self, values) -> tuple:
        """Explorer.plan's arguments from the fields' values (the forms read into variant labels)."""
        experiment, preset_name, picked, seeds, steps, lr, data, overrides, *form_values = values
        forms, start = {}, 0
        for name, size in self.form_sizes.items():
            forms[name], start = form_values[start:start + size], start + size
        labels = variant_labels(picked, forms)
        return experiment, preset_name, labels, seeds, steps, lr, data, overrides

    def preview(self, *values):
        """The grid the fields describe with its key and estimate line (computed from the same
        values, so the line always describes the runs listed), or why it cannot launch."""
        try:
            planned = self.explorer.planned(*self._plan(values))
        except ValueError as error:
            return pd.DataFrame(), f"**Cannot launch:** {error}", None, ""
        line = self.estimate_line(planned["plan"], *values)
        return pd.DataFrame(planned["runs"]), "", planned["plan"], line

    def queue_grid(self, *values) -> str:
        """Queue the grid; `values` end with the mirrors, the executor and its resources."""
        *values, trackers, executor, partition, gpus, nodes, time_limit, cpus = values
        resources = {"partition": partition, "gpus_per_run": gpus, "nodes_per_run": nodes,
                     "time": time_limit, "cpus_per_rank": cpus}
        result = self.explorer.launch(*self._plan(values), trackers=trackers, executor=executor,
                                      resources=resources)
        return f"{result['message']}: {', '.join(result['queued']) or 'nothing new'}"

    def estimate_line(self, shown: str | None, *values) -> str:
        """The estimated wall time here of the grid the fields describe, shown only when that grid
        is the one listed (key `shown`); else the line says it is being recomputed."""
        try:
            return estimate_text(self.explorer.estimate(*self._plan(values)), shown)
        except ValueError:
            return ""  # the grid preview already says why it cannot launch

    def refresh(self, experiment: str, seen: list[str] | None):
        """The live runs table, the runs one may cancel, and a toast per run newly failed."""
        try:
            rows = self.explorer.status(experiment)
        except ValueError:
            return pd.DataFrame(columns=RUN_COLUMNS), gr.update(), seen
        new, failed = failures(rows, seen)
        for run, error in new.items():
            gr.Warning(f"{experiment}/{run} failed: {error}")
        active = [r["run"] for r in rows if r["live"]]
        return runs_table(rows), gr.update(choices=active), failed

    def cancel_run(self, experiment: str, run: str) -> str:
        """Cancel one run of the experiment."""
        return f"{run}: {self.explorer.cancel(experiment, run)}"
