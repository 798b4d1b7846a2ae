"""FFN explorer: launch ablations, watch seed-band curves live, read Table 1, inspect tokens.

`python app.py` serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT / RUNS_DIR
honoured). Wiring only: each tab is built by its module in ui/tabs/, the API by ui/api.py; every
callback delegates to ui.service, which calls core.
"""

import os

import gradio as gr

from core import variants
from core.config import PRESETS
from core.sharing.hub import pull_at_start
from ui.api import register_api
from ui.service import Explorer, Limits
from ui.settings import app_settings
from ui.tabs.compare import compare_tab
from ui.tabs.curves import curves_tab
from ui.tabs.diagnostics import diagnostics_tab
from ui.tabs.inspect import inspect_tab
from ui.tabs.launch import launch_tab
from ui.tabs.overview import overview_tab
from ui.tabs.results import results_tab
from ui.tabs.studies import studies_tab
from ui.widgets import PRIVATE


def build_app(explorer: Explorer) -> gr.Blocks:
    """Every tab and the API in one Blocks: after a launch, Curves, Results and Diagnostics show the
    launched experiment; each tab's first view loads with the page."""
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
        studies = studies_tab(explorer)
        compare = compare_tab(explorer, default)
        register_api(explorer)
        pickers = [curves.experiment, results.experiment, diagnostics.experiment]

        def follow(experiment):
            choices = explorer.experiments()
            return (*[gr.update(choices=choices, value=experiment)] * len(pickers), experiment)

        launch.launched.success(follow, launch.experiment, [*pickers, followed], **PRIVATE)
        for tab in (overview, launch, curves, results, inspect, studies, compare):
            app.load(tab.on_load.fn, tab.on_load.inputs, tab.on_load.outputs, **PRIVATE)
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
    """Read the settings, load plugins and the Hub experiment, then serve until stopped."""
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
