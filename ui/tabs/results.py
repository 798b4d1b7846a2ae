"""The Results tab: the report's Table 1 of an experiment against a chosen baseline, as CSV too."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core import variants
from core.analysis.stats import TABLE1_NOTE
from ui.service import Explorer
from ui.tables import health_note, results_table
from ui.widgets import PRIVATE, OnLoad, experiment_picker, follow_on_select, friendly


@dataclass
class ResultsTab:
    """What the wiring needs from the Results tab."""

    experiment: gr.Dropdown  # follows a launch (the wiring sets it)
    on_load: OnLoad  # the default experiment's table


def results_tab(explorer: Explorer, default_experiment: str | None, followed: gr.State) -> ResultsTab:
    """The Results tab: Table 1, refreshed on any change, on "Refresh" and when the tab opens."""
    with gr.Tab("Results") as tab:
        gr.Markdown("Final val loss per variant (mean ± sample std over seeds) against the "
                    "baseline, peak memory, throughput and parameters: the report's Table 1. "
                    + TABLE1_NOTE)
        with gr.Row():
            experiment = experiment_picker(explorer, default_experiment)
            baseline = gr.Dropdown([variants.BASELINE], value=variants.BASELINE, label="Baseline",
                                   allow_custom_value=True)
            refresh = gr.Button("Refresh")
        table = gr.Dataframe(interactive=False)
        alarms = gr.Markdown()
        download = gr.DownloadButton("Download CSV")

    @friendly
    def show(exp, base):
        if not exp:
            return pd.DataFrame(), "", gr.update(), None
        rows = explorer.results(exp, None)
        names = [r["variant"] for r in rows]
        base = base if base in names else (names[0] if names else None)  # a baseline this experiment has
        rows = explorer.results(exp, base) if base else rows
        csv = explorer.results_csv(exp, base)
        return results_table(rows), health_note(rows), gr.update(choices=names, value=base), csv

    inputs, outputs = [experiment, baseline], [table, alarms, baseline, download]
    for trigger in (experiment.change, baseline.change, refresh.click):
        trigger(show, inputs, outputs, **PRIVATE)
    follow_on_select(tab, experiment, explorer, followed).then(show, inputs, outputs, **PRIVATE)
    return ResultsTab(experiment, OnLoad(show, inputs, outputs))
