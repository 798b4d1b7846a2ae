"""Gradio pieces more than one tab uses: error display, the experiment picker and how it follows
a launch, the x-axis and band controls, and the on-load event a tab hands to the wiring."""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui.service import Explorer

PRIVATE = {"api_visibility": "private"}  # the UI's own events, kept out of the API (ui/api.py's)
X_AXES = ["step", "tokens", "elapsed_s"]
SPREADS = ["std", "minmax"]


@dataclass
class OnLoad:
    """A callback the wiring runs on each page load (`app.load(fn, inputs, outputs)`): what a tab
    shows before any click."""

    fn: Callable
    inputs: list | None
    outputs: list


def friendly(fn):
    """Show ValueError (bad input) as a message in the UI, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


def experiment_picker(explorer: Explorer, value: str | None) -> gr.Dropdown:
    """The "Experiment" dropdown of the tabs that read one experiment (every one on disk now)."""
    return gr.Dropdown(explorer.experiments(), value=value, label="Experiment")


def axis_controls() -> tuple[gr.Radio, gr.Radio]:
    """The x axis (step, tokens, wall time) and band (std or min-max) of a seed-band plot."""
    x_axis = gr.Radio(X_AXES, value="step", label="x")
    spread = gr.Radio(SPREADS, value="std", label="Band")
    return x_axis, spread


def follow_on_select(tab: gr.Tab, picker: gr.Dropdown, explorer: Explorer, followed: gr.State):
    """When `tab` is selected, `picker` lists every experiment now on disk and, once after each
    launch, shows the launched one (then the user's choice stands). Returns the select event."""
    applied = gr.State(None)  # the launch this picker has already followed

    def update(value, launched, done):
        if launched and launched != done:
            value = launched
        return gr.update(choices=explorer.experiments(), value=value), launched

    return tab.select(update, [picker, followed, applied], [picker, applied], **PRIVATE)
