"""The Studies tab: a study's answer as it forms (the trend along its axis, or loss against lr,
with seed bands and intervals), its Table 1 at a chosen point, its progress, and a form to compose
and launch a study (saved as a study file that ``python -m core.sweep --study FILE`` runs too)."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core import variants
from core.config import PRESETS
from core.studies.compose import Form
from ui.service import Explorer, parse_seeds
from ui.study_service import DEFAULT_STUDY
from ui.tables import progress_text, results_table, study_estimate_text
from ui.widgets import PRIVATE, OnLoad, friendly


@dataclass
class StudiesTab:
    """What the wiring needs from the Studies tab."""

    on_load: OnLoad  # the default study, drawn with the page


def studies_tab(explorer: Explorer) -> StudiesTab:
    """The Studies tab; a study's progress and figures refresh every 5 s while "Live" is ticked."""
    names = [s["name"] for s in explorer.studies.names()]
    with gr.Tab("Studies"):
        gr.Markdown("A study is variants x seeds at each variant's best lr, along an axis (model size, "
                    "or any config key): the report's ablations and its trend with scale. Pick one, or "
                    "compose and launch your own below.")
        with gr.Row():
            study = gr.Dropdown(names, value=DEFAULT_STUDY if DEFAULT_STUDY in names else None,
                                label="Study", allow_custom_value=True)
            point = gr.Dropdown([], label="Table 1 at point")
            live = gr.Checkbox(True, label="Live")
            refresh = gr.Button("Refresh")
        summary = gr.Markdown()
        trend = gr.Plot(label="Trend")
        with gr.Row():
            loss = gr.Plot(label="Final val loss")
            diagnostics = gr.Plot(label="Diagnostics at the last evaluation")
        table = gr.Dataframe(interactive=False, label="Table 1")
        form = _compose_form()
    calls = _Callbacks(explorer)
    views = [summary, trend, loss, diagnostics, point, table]
    study.change(friendly(calls.show), [study, point], views, **PRIVATE)
    refresh.click(friendly(calls.show), [study, point], views, **PRIVATE)
    point.change(friendly(calls.table), [study, point], table, **PRIVATE)
    gr.Timer(5.0).tick(calls.tick, [live, study, point], views, show_progress="hidden", **PRIVATE)
    form.preview.click(friendly(calls.preview), form.fields, [form.estimate, form.text], **PRIVATE)
    form.launch.click(friendly(calls.launch_form), form.fields, [form.message, study], **PRIVATE)
    form.launch_chosen.click(friendly(calls.launch_chosen), study, form.message, **PRIVATE)
    return StudiesTab(OnLoad(calls.show, [study, point], views))


@dataclass
class _Form:
    fields: list
    preview: gr.Button
    launch: gr.Button
    launch_chosen: gr.Button
    estimate: gr.Markdown
    text: gr.Code
    message: gr.Markdown


def _compose_form() -> _Form:
    """Name, preset, variants (labels with options), seeds, steps, lr grid, best-lr selection and an
    axis over any config key; the study file it makes is shown before launching."""
    with gr.Accordion("Compose and launch a study", open=False):
        with gr.Row():
            name = gr.Textbox(label="Study name", placeholder="my-study")
            preset = gr.Dropdown(list(PRESETS), value="micro", label="Preset")
            steps = gr.Number(100, label="Steps per run", precision=0)
            seeds = gr.Textbox("0 1", label="Seeds")
        with gr.Row():
            labels = gr.Dropdown(list(variants.names()), value=["swiglu", "dual"], multiselect=True,
                                 allow_custom_value=True, label="Variants (labels, e.g. dual+ffn_share=none)")
            lrs = gr.Textbox("0.002 0.004", label="lr grid")
            select = gr.Checkbox(True, label="Each variant at its own best lr")
            fraction = gr.Number(1.0, label="Best-lr sweep: share of the steps")
        with gr.Row():
            axis_key = gr.Textbox(label="Axis: a config key (optional)", placeholder="ffn_threshold")
            axis_values = gr.Textbox(label="Axis values", placeholder="jumprelu shifted_relu cats")
            description = gr.Textbox(label="Description")
        with gr.Row():
            preview = gr.Button("Preview")
            launch = gr.Button("Launch this study", variant="primary")
            launch_chosen = gr.Button("Launch the study picked above")
        estimate = gr.Markdown()
        text = gr.Code(language=None, label="Study file", interactive=False)
        message = gr.Markdown()
    fields = [name, preset, labels, seeds, steps, lrs, select, fraction, axis_key, axis_values, description]
    return _Form(fields, preview, launch, launch_chosen, estimate, text, message)


def form_of(name, preset, labels, seeds, steps, lrs, select, fraction, axis_key, axis_values,
            description) -> Form:
    """The study form's values as a core.studies.compose.Form (ValueError on a bad number)."""
    return Form(name=str(name or "").strip(), preset=preset, variants=list(labels or []),
                seeds=parse_seeds(seeds, 10_000), steps=int(steps) if steps else None,
                lrs=_numbers(lrs, "lr grid"), select=bool(select), fraction=float(fraction or 1.0),
                axis_key=str(axis_key or "").strip(), axis_values=str(axis_values or "").split(),
                description=str(description or ""))


def _numbers(text: str, what: str) -> list[float]:
    values = []
    for item in str(text or "").replace(",", " ").split():
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"{what}: {item[:40]!r} is not a number") from None
    return values


class _Callbacks:
    def __init__(self, explorer: Explorer):
        self.studies = explorer.studies

    def show(self, name, point):
        """Summary, figures, the points and Table 1 of study `name`."""
        if not name:
            return "", None, None, None, gr.update(choices=[], value=None), pd.DataFrame()
        view = self.studies.view(name)
        figures = self.studies.figures(name)
        point = point if point in view["points"] else view["points"][0]
        text = f"{view['description']}\n\n{progress_text(view['progress'])}"
        return (text, figures["trend"], figures["loss"], figures["diagnostics"],
                gr.update(choices=view["points"], value=point), self.table(name, point))

    def table(self, name, point):
        return results_table(self.studies.table(name, point)) if name else pd.DataFrame()

    def tick(self, live, name, point):
        if not live or not name:
            return (gr.update(),) * 6
        try:
            return self.show(name, point)
        except ValueError:  # a half-typed custom name: keep what is shown
            return (gr.update(),) * 6

    def preview(self, *fields):
        """The composed study's run count, estimated wall time and file, nothing written."""
        study = self.studies.compose(form_of(*fields))
        return study_estimate_text(self.studies.estimate(study)), study.text

    def launch_form(self, *fields):
        study = self.studies.compose(form_of(*fields))
        return self._launched(study), gr.update(choices=[s["name"] for s in self.studies.names()],
                                                value=study.name)

    def launch_chosen(self, name):
        return self._launched(self.studies.load(name))

    def _launched(self, study) -> str:
        progress = self.studies.launch(study)
        return f"Study **{study.name}** launched: {progress_text(progress)}"
