"""The Overview tab: the first page, the shipped experiment's seed-band curves and Table 1."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core.metrics import VAL_LOSS
from ui.figures import json_curves_figure
from ui.service import Explorer
from ui.tables import results_table
from ui.widgets import OnLoad

FINDING = ("The report's dual-path FFN (a learned router per token between a dense SwiGLU path "
           "and a sparse, learned-threshold path) beat SwiGLU in 400-step ablations of an 84M "
           "Qwen-style model (val loss 5.646 vs 5.660) but lost at full scale (4.949 ± 0.005 vs "
           "4.927 ± 0.003, 3 seeds).")


@dataclass
class OverviewTab:
    """What the wiring needs from the Overview tab."""

    on_load: OnLoad  # draws the curves and the table with no click


def overview_tab(explorer: Explorer, experiment: str | None) -> OverviewTab:
    """The first page: the shipped experiment's seed-band curves and Table 1, no click needed."""
    with gr.Tab("Overview"):
        gr.Markdown(FINDING + " " + _experiment_line(explorer, experiment))
        plot = gr.Plot(label="Val loss: mean over seeds with a std band")
        table = gr.Dataframe(interactive=False, label="Table 1")

    def show():
        if not experiment:
            return json_curves_figure({}, VAL_LOSS), pd.DataFrame()
        curves = explorer.curves(experiment, VAL_LOSS, "step")
        return json_curves_figure(curves, VAL_LOSS), results_table(explorer.results(experiment))

    return OverviewTab(OnLoad(show, None, [plot, table]))


def _experiment_line(explorer: Explorer, experiment: str | None) -> str:
    """What the page shows, or where to start when there is nothing yet."""
    if not experiment:
        return "No experiment is here yet: launch one in the Launch tab."
    rows = explorer.results(experiment)
    variants = ", ".join(f"{r['variant']} ({r['seeds']} seeds)" for r in rows)
    return (f"Below, the `{experiment}` experiment shipped with the explorer: {variants}. Launch your "
            "own grid in the Launch tab; Curves, Results, Diagnostics and Inspect then follow it.")
