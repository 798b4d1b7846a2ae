"""The Inspect tab: one or two runs side by side on a text, tokens coloured by a statistic of
their FFN at a layer, with per-token and per-layer plots."""

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from ui.figures import (
    LOSS_COLOURING,
    atlas_histograms,
    colour_label,
    colourings,
    layer_params_figure,
    stats_heatmaps,
    token_colours,
    token_loss_figure,
)
from ui.service import ATLAS_TOKENS, Explorer, followed_runs, run_pair
from ui.widgets import PRIVATE, OnLoad

SAMPLE_TEXT = ("The state of the Union is strong. We will invest in our roads, our schools and our "
               "people, and we will keep the promise of a better future for every American family.")


@dataclass
class InspectTab:
    """What the wiring needs from the Inspect tab."""

    on_load: OnLoad  # inspects the default runs on the sample text


def inspect_tab(explorer: Explorer, followed: gr.State) -> InspectTab:
    """The Inspect tab; opening it follows the experiment launched last and inspects at once."""
    with gr.Tab("Inspect") as tab:
        run_a, run_b, colour_by, layer = _pickers(explorer)
        text = gr.Textbox(SAMPLE_TEXT, lines=3, label="Text", max_length=explorer.limits.max_text_chars)
        inspect_btn = gr.Button("Inspect", variant="primary")
        info, tokens_a, tokens_b, *plots = _views()
        atlas_inputs, atlas_button, atlas_outputs = _atlas_views()

    calls = _Callbacks(explorer)
    atlas_button.click(calls.run_atlas, [run_a, run_b, layer, *atlas_inputs], atlas_outputs, **PRIVATE)
    inputs = [run_a, run_b, text, colour_by, layer]
    outputs = [info, tokens_a, tokens_b, colour_by, *plots]
    inspect_btn.click(calls.run_inspect, inputs, outputs, **PRIVATE)
    for control in (colour_by, layer):
        control.input(calls.run_inspect, inputs, outputs, **PRIVATE)
    for picker in (run_a, run_b):
        picker.change(calls.layer_range, [run_a, run_b, layer], layer, **PRIVATE)
    tab.select(calls.follow, [run_a, run_b, followed], [run_a, run_b], **PRIVATE).then(
        calls.run_inspect, inputs, outputs, **PRIVATE)
    return InspectTab(OnLoad(calls.run_inspect, inputs, outputs))


def _pickers(explorer: Explorer) -> tuple[gr.Dropdown, gr.Dropdown, gr.Dropdown, gr.Slider]:
    """Runs A and B (a baseline run and another variant's by default), the colouring and layer."""
    run_ids = explorer.run_ids()
    first, second = run_pair(run_ids)
    top = explorer.top_layer([first, second])
    with gr.Row():
        run_a = gr.Dropdown(run_ids, value=first, label="Run A")
        run_b = gr.Dropdown(run_ids, value=second, label="Run B (optional)")
        # empty until the first inspection offers the runs' statistics (the first one is shown)
        colour_by = gr.Dropdown([LOSS_COLOURING], value=None, label="Colour tokens by",
                                allow_custom_value=True)
        layer = gr.Slider(0, max(top, 1), value=0, step=1, label="Layer for token colours")
    return run_a, run_b, colour_by, layer


def _views() -> list:
    """The notes, both runs' coloured tokens and the three plots, in _Callbacks.run_inspect's order
    (less the colouring picker)."""
    info = gr.Markdown()
    with gr.Row():
        tokens_a = gr.HighlightedText(label="Run A", combine_adjacent=False, show_legend=False)
        tokens_b = gr.HighlightedText(label="Run B", combine_adjacent=False, show_legend=False)
    stats_plot = gr.Plot(label="Per-token statistics of each run's FFN, tokens x layers")
    loss_plot = gr.Plot(label="Per-token loss")
    params_plot = gr.Plot(label="Per-layer statistics (e.g. the dual path's theta and alphas)")
    return [info, tokens_a, tokens_b, stats_plot, loss_plot, params_plot]


def _atlas_views() -> tuple[list, gr.Button, list]:
    """The atlas section: its inputs (tokens, unit), its button and its outputs, in
    _Callbacks.run_atlas's order. It reads runs A and B and the layer picked above."""
    with gr.Accordion("Atlas: both runs over their validation tokens (per token, unit and layer)",
                      open=False, elem_id="atlas"):
        with gr.Row():
            tokens = gr.Number(ATLAS_TOKENS, precision=0, label="Validation tokens")
            unit = gr.Number(0, precision=0, label="Unit (its top activating contexts)")
            button = gr.Button("Compute atlas")
        info = gr.Markdown()
        table = gr.Dataframe(label="Per vocabulary token, at the layer picked above", interactive=False,
                             max_height=360)
        contexts = gr.Dataframe(label="Top activating contexts of the unit", interactive=False)
        plot = gr.Plot(label="Histograms at the layer (the threshold's cut dashed)")
    return [tokens, unit], button, [info, table, contexts, plot]


class _Callbacks:
    """The tab's callbacks over one explorer (`run_inspect`, not `inspect`: the API's /inspect)."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    def run_inspect(self, a, b, text, stat, layer):
        """Inspect runs A and B (B optional) on `text`; on bad input keep the views and say why."""
        try:
            results = self.explorer.inspect([r for r in (a, b) if r], text)
        except (ValueError, FileNotFoundError) as error:
            return (f"**Cannot inspect:** {error}", *[gr.update()] * 6)
        offered, stat = colourings(results, stat)
        at = int(layer)
        colours = [gr.update(value=token_colours(r, stat, at), label=colour_label(r, stat, at))
                   for r in results] + [gr.update(value=None, label="Run B")]  # no run B: cleared
        return (_notes(results), colours[0], colours[1], gr.update(choices=offered, value=stat),
                *_figures(results))

    def run_atlas(self, a, b, layer, tokens, unit):
        """Runs A and B over their validation tokens at `layer`; on bad input say why."""
        try:
            view = self.explorer.atlas(a, b, layer, unit, tokens)
        except (ValueError, FileNotFoundError) as error:
            return f"**Cannot compute the atlas:** {error}", None, None, None
        return _atlas_notes(view), _atlas_tokens(view), _atlas_contexts(view), atlas_histograms(view)

    def layer_range(self, a, b, layer):
        """The layer slider's range over the chosen runs' layers."""
        deepest = self.explorer.top_layer([a, b])
        # a slider needs a non-empty range: one layer shows as 0..1, clamped to 0 when shown
        return gr.update(maximum=max(deepest, 1), value=min(int(layer or 0), deepest))

    def follow(self, a, b, experiment):
        """The runs of the experiment launched last, once they have weights; else as chosen."""
        ids = self.explorer.run_ids()
        a, b = followed_runs(ids, a, b, experiment)
        return gr.update(choices=ids, value=a), gr.update(choices=ids, value=b)


def _notes(results: list[dict]) -> str:
    """One line per run: its variant, tokens and mean loss."""
    cut = " (text cut to the model's context)"
    return "  \n".join(f"**{r['run']}** ({r['variant']}): {len(r['ids'])} tokens, mean loss "
                       f"{r['mean_loss']:.3f}" + (cut if r["truncated"] else "") for r in results)


def _figures(results: list[dict]) -> tuple:
    """The tokens x layers heatmaps, the per-token loss and the per-layer statistics (None
    when no run reports one)."""
    per_layer = {f"{r['run'].split('/')[-1]} {name}": values
                 for r in results for name, values in r["layer_stats"].items()}
    return (stats_heatmaps(results),
            token_loss_figure({r["run"]: (r["tokens"], r["token_loss"]) for r in results}),
            layer_params_figure(per_layer) if per_layer else None)


def _atlas_notes(view: dict) -> str:
    """One line per run: tokens, layer, loss, routing means and dead units; how it was computed."""
    layer = view["settings"]["layer"]
    lines = []
    for run in view["runs"]:
        summary = ", ".join(f"{name} {value:.3g}" for name, value in run["summary"].items()
                            if name != "layer" and isinstance(value, (int, float)))
        how = "from the cache" if run["cached"] else f"computed in {run['seconds']:.1f} s"
        summary = f"; {summary}" if summary else ""
        lines.append(f"**{run['run']}** ({run['variant']}), layer {layer}: mean loss {run['loss_mean']:.3f}"
                     f"{summary} ({view['settings']['tokens']:,} tokens, {how})")
    return "  \n".join(lines)


def _atlas_tokens(view: dict) -> pd.DataFrame:
    """The shown rows of the per-token table, numbers rounded for reading."""
    frame = pd.DataFrame(view["tokens"]["rows"], columns=view["tokens"]["columns"])
    return frame.round(4)


def _atlas_contexts(view: dict) -> pd.DataFrame | None:
    """Each run's top contexts of the chosen unit (runs without sparse units have none)."""
    rows = [{"run": run["run"], "rank": c["rank"], "value": round(c["value"], 4), "left": c["left"],
             "token": c["token"], "right": c["right"]}
            for run in view["runs"] if run["unit"] for c in run["unit"]["contexts"]]
    return pd.DataFrame(rows) if rows else None
