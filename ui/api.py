"""The app's stable JSON endpoints for gradio_client: /launch /estimate /status /cancel /curves
/results /inspect /compare /variants /studies /study /study_launch, numbers at full precision
(the tabs round for reading)."""

import gradio as gr

from core.metrics import VAL_LOSS
from ui.service import Explorer, clean
from ui.widgets import friendly


def register_api(explorer: Explorer) -> None:
    """Register every endpoint in the current Blocks; each is named after its function."""
    endpoints = (*_job_endpoints(explorer), *_view_endpoints(explorer), _compare_endpoint(explorer),
                 *_study_endpoints(explorer))
    for fn in endpoints:
        _endpoint(friendly(fn), fn.__name__)

    def ffn_variants() -> list[dict]:
        return explorer.variants()

    _endpoint(ffn_variants, "variants")


def _endpoint(fn, name: str) -> None:
    """One endpoint at /name. Gradio names every event after its function and suffixes a name
    already taken, so a UI callback registered earlier under the same name (a tab's `launch`)
    would silently move the endpoint to /name_1: refuse to start instead."""
    dependency = gr.api(fn, api_name=name)
    if dependency["api_name"] != name:
        raise RuntimeError(f"API endpoint /{name} is taken by a UI event named {name!r}: rename that "
                           "callback")


# The endpoints' names, parameters and defaults are the API: clients call them positionally.
def _job_endpoints(explorer: Explorer) -> tuple:
    """launch, estimate, status and cancel: grids and their runs."""

    def launch(experiment: str, preset: str, variants: list[str], seeds: list[int], steps: int = 0,
               lr: float = 0.0, data: str = "builtin", overrides: list[str] | None = None,
               trackers: list[str] | None = None, executor: str = "local",
               resources: dict | None = None) -> dict:
        return explorer.launch(experiment, preset, variants, seeds, steps or None, lr or None, data,
                               overrides or [], trackers or [], executor, resources)

    def estimate(experiment: str, preset: str, variants: list[str], seeds: list[int], steps: int = 0,
                 lr: float = 0.0, data: str = "builtin", overrides: list[str] | None = None) -> dict:
        return explorer.estimate(experiment, preset, variants, seeds, steps or None, lr or None, data,
                                 overrides or [])

    def status(experiment: str = "") -> list[dict]:
        return explorer.status(experiment or None)

    def cancel(experiment: str, run: str) -> str:
        return explorer.cancel(experiment, run)

    return launch, estimate, status, cancel


def _view_endpoints(explorer: Explorer) -> tuple:
    """curves, results and inspect: what the runs logged and what a model does on a text."""

    def curves(experiment: str, metric: str = VAL_LOSS, x: str = "step", smoothing: float = 0.0) -> dict:
        return explorer.curves(experiment, metric, x, smoothing)

    def results(experiment: str, baseline: str = "") -> list[dict]:
        return explorer.results(experiment, baseline or None)

    def inspect(runs: list[str], text: str) -> list[dict]:
        return explorer.inspect(runs, text)

    return curves, results, inspect


def _study_endpoints(explorer: Explorer) -> tuple:
    """studies, study and study_launch: studies listed, read and launched."""

    def studies() -> list[dict]:
        return clean(explorer.studies.names())

    def study(name: str) -> dict:
        return clean(explorer.studies.view(name))

    def study_launch(name: str, text: str = "") -> dict:
        """A built-in study (or one that ran here) by name; with a study file's text, that study
        saved under `name`. Returns the study's progress once its first runs are queued."""
        chosen = explorer.studies.from_text(name, text) if text.strip() else explorer.studies.load(name)
        return clean({"study": chosen.name, **explorer.studies.launch(chosen)})

    return studies, study, study_launch


def _compare_endpoint(explorer: Explorer):
    """compare: the finished runs of several experiments, a final metric against one config key
    per value of another, seeds collapsed (rows of colour, x, n, mean, std, min, max, seeds, runs,
    values)."""

    def compare(experiments: list[str], x: str, colour: str = "variant",
                metric: str = VAL_LOSS) -> list[dict]:
        return explorer.compare(experiments, x, colour, metric)

    return compare
