"""The Compare tab: runs of any experiments side by side (a study's runs, spread over experiments
named per size and lr, included): a final number against one config key, one colour per value of
another, seeds collapsed into mean ± std."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core.analysis.compare import VARIANT
from core.metrics import VAL_LOSS
from ui.figures import compare_figure
from ui.service import Explorer
from ui.tables import compare_table
from ui.widgets import PRIVATE, OnLoad, friendly

DEFAULT_X = "train.lr"


@dataclass
class CompareTab:
    """What the wiring needs from the Compare tab."""

    on_load: OnLoad  # the default experiment's final loss against lr, with no click


def compare_tab(explorer: Explorer, default_experiment: str | None) -> CompareTab:
    """The Compare tab: redrawn when a choice changes and on "Refresh"; opening the tab lists the
    experiments now on disk."""
    with gr.Tab("Compare") as tab:
        gr.Markdown("Choose runs from any experiments; x and colour are config keys (`train.lr`, "
                    "`model.hidden_size`, `model.ffn_options.ffn_threshold`, `params.non_embedding`, "
                    "...). Each point is the mean over the seeds of finished runs with a ± std band "
                    "(error bars when x is not a number); each run is a faint dot. lr and sizes are "
                    "drawn on a log axis.")
        experiments = gr.Dropdown(explorer.experiments(), value=[default_experiment] if default_experiment
                                  else [], multiselect=True, label="Experiments")
        with gr.Row():
            x_key = gr.Dropdown([DEFAULT_X], value=DEFAULT_X, label="x (config key)", allow_custom_value=True)
            colour = gr.Dropdown([VARIANT], value=VARIANT, label="Colour (config key)",
                                 allow_custom_value=True)
            metric = gr.Dropdown([VAL_LOSS], value=VAL_LOSS, label="Metric (final value)",
                                 allow_custom_value=True)
            refresh = gr.Button("Refresh")
        plot = gr.Plot(label="Final value against x")
        table = gr.Dataframe(interactive=False, label="The numbers (n = runs with a finite value)")
    calls = _Callbacks(explorer)
    inputs, keys, shown = [experiments, x_key, colour, metric], [x_key, colour, metric], [plot, table]
    # .input, not .change: choose() sets the key fields, which must not trigger a second draw
    experiments.input(friendly(calls.choose), inputs, [*keys, *shown], **PRIVATE)
    for trigger in (x_key.input, colour.input, metric.input, refresh.click):
        trigger(friendly(calls.draw), inputs, shown, **PRIVATE)
    tab.select(calls.listed, experiments, experiments, **PRIVATE)
    return CompareTab(OnLoad(calls.choose, inputs, [*keys, *shown]))


def _pick(value: str | None, offered: list[str], default: str) -> str:
    """`value` where the runs offer it, else `default` where they do, else the first offered."""
    for choice in (value, default):
        if choice in offered:
            return choice
    return offered[0] if offered else default


class _Callbacks:
    """The tab's callbacks. Their names become the events' (private) API names: none may be an
    endpoint's (ui/api.py's /compare)."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    def choose(self, experiments, x, colour, metric):
        """The keys and metrics the chosen experiments offer (the current choice kept where they
        offer it), and the comparison drawn with them."""
        if not experiments:
            return gr.update(), gr.update(), gr.update(), *self.draw(experiments, x, colour, metric)
        offered = self.explorer.compare_keys(experiments)
        keys, metrics = offered["keys"], [VAL_LOSS, *(m for m in offered["metrics"] if m != VAL_LOSS)]
        x, colour = _pick(x, keys, DEFAULT_X), _pick(colour, keys, VARIANT)
        metric = _pick(metric, metrics, VAL_LOSS)
        fields = (gr.update(choices=keys, value=x), gr.update(choices=keys, value=colour),
                  gr.update(choices=metrics, value=metric))
        return *fields, *self.draw(experiments, x, colour, metric)

    def draw(self, experiments, x, colour, metric):
        """The figure and the table of numbers (empty with no experiment chosen)."""
        if not experiments:
            return compare_figure([], x or DEFAULT_X, colour or VARIANT, metric or VAL_LOSS), pd.DataFrame()
        rows = self.explorer.compare(experiments, x, colour, metric)
        return compare_figure(rows, x, colour, metric), compare_table(rows, colour, x)

    def listed(self, experiments):
        """Every experiment now on disk to choose from, the choice kept."""
        return gr.update(choices=self.explorer.experiments(), value=experiments)
