"""The Diagnostics tab: per-layer routing, threshold, sparsity and interference metrics over
training, one line per variant and layer."""

from dataclasses import dataclass

import gradio as gr

from ui.figures import json_curves_figure
from ui.service import Explorer
from ui.widgets import PRIVATE, axis_controls, experiment_picker, follow_on_select, friendly


@dataclass
class DiagnosticsTab:
    """What the wiring needs from the Diagnostics tab."""

    experiment: gr.Dropdown  # follows a launch (the wiring sets it)


def diagnostics_tab(explorer: Explorer, default_experiment: str | None,
                    followed: gr.State) -> DiagnosticsTab:
    """The Diagnostics tab; its diagnostics are listed when an experiment is chosen or followed."""
    with gr.Tab("Diagnostics") as tab:
        gr.Markdown("Per-layer routing, threshold, sparsity and pathway-interference metrics over "
                    "training: one line per variant and layer, mean over seeds with a band.")
        with gr.Row():
            experiment = experiment_picker(explorer, default_experiment)
            family = gr.Dropdown([], label="Diagnostic", allow_custom_value=True)
            x_axis, spread = axis_controls()
        plot = gr.Plot(label="Per layer, mean over seeds with band")

    def families(exp):
        names = sorted(explorer.diagnostic_families(exp)) if exp else []
        # the sparse path's weight first: the dual FFN's headline diagnostic
        first = next((n for n in names if n.endswith("sparse_weight")), names[0] if names else None)
        return gr.update(choices=names, value=first)

    def draw(exp, fam, x, band):
        if not exp or not fam:
            return json_curves_figure({}, fam or "diagnostic", x)
        return json_curves_figure(explorer.diagnostics(exp, fam, x), fam, x, band)

    experiment.change(friendly(families), experiment, family, **PRIVATE)
    follow_on_select(tab, experiment, explorer, followed).then(friendly(families), experiment, family,
                                                               **PRIVATE)
    for component in (family, x_axis, spread):
        component.change(friendly(draw), [experiment, family, x_axis, spread], plot, **PRIVATE)
    return DiagnosticsTab(experiment)
