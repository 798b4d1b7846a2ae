"""The Curves tab: any logged metric of an experiment, mean over seeds with a band, live."""

from dataclasses import dataclass

import gradio as gr

from core.metrics import LOSSES, VAL_LOSS
from ui.figures import json_curves_figure
from ui.service import Explorer
from ui.widgets import PRIVATE, OnLoad, axis_controls, experiment_picker, follow_on_select, friendly


@dataclass
class CurvesTab:
    """What the wiring needs from the Curves tab."""

    experiment: gr.Dropdown  # follows a launch (the wiring sets it)
    on_load: OnLoad  # draws the default experiment's curves


def curves_tab(explorer: Explorer, default_experiment: str | None, followed: gr.State) -> CurvesTab:
    """The Curves tab; it redraws every 2 s while "Live" is ticked."""
    with gr.Tab("Curves") as tab:
        with gr.Row():
            experiment = experiment_picker(explorer, default_experiment)
            metric = gr.Dropdown(list(LOSSES), value=VAL_LOSS, label="Metric", allow_custom_value=True)
            x_axis, spread = axis_controls()
        with gr.Row():
            smoothing = gr.Slider(0, 0.99, value=0, step=0.01, label="Smoothing (EMA)")
            show_seeds = gr.Checkbox(False, label="Per-seed lines")
            log_y = gr.Checkbox(False, label="Log y")
            live = gr.Checkbox(True, label="Live")
        plot = gr.Plot(label="Mean over seeds with band")

    calls = _Callbacks(explorer)
    inputs = [experiment, metric, x_axis, spread, smoothing, show_seeds, log_y]
    for component in inputs[1:]:
        component.change(friendly(calls.draw), inputs, plot, **PRIVATE)
    experiment.change(friendly(calls.choose_experiment), experiment, [metric, plot], **PRIVATE)
    gr.Timer(2.0).tick(calls.tick, [live, *inputs], plot, show_progress="hidden", **PRIVATE)
    follow_on_select(tab, experiment, explorer, followed)
    return CurvesTab(experiment, OnLoad(calls.draw, inputs, plot))


class _Callbacks:
    """The tab's callbacks over one explorer."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    def draw(self, experiment, metric, x, spread, smoothing, seeds, log_y):
        """The metric's seed bands (an empty plot with no experiment)."""
        if not experiment:
            return json_curves_figure({}, metric or VAL_LOSS, x)
        data = self.explorer.curves(experiment, metric, x, smoothing)
        return json_curves_figure(data, metric, x, spread, seeds, log_y)

    def choose_experiment(self, experiment):
        """The experiment's metrics to pick from, and its val loss drawn with the defaults."""
        keys = self.explorer.metric_keys(experiment) if experiment else []
        return gr.update(choices=keys or [VAL_LOSS]), self.draw(experiment, VAL_LOSS, "step", "std", 0,
                                                                 False, False)

    def tick(self, live: bool, *values):
        """A live refresh: redraw while "Live" is ticked, else leave the plot as it is."""
        return self.draw(*values) if live else gr.update()
