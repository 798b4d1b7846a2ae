"""The Launch tab's estimate line describes the grid listed above it (issue #25): Explorer keys
each plan and each estimate, and the tab's callbacks show an estimate only under its own grid."""

import pytest

from core import variants
from core.jobs.estimate import StepTime
from ui.service import Explorer
from ui.tables import RECOMPUTING
from ui.tabs.launch import _Callbacks


class _Timed:
    """Step times already measured for every shape (no calibration subprocess)."""

    def get(self, config, measure_now=True):
        return StepTime(0.1, 1.0, 2.0, 16, "cpu")

    def error(self, config):
        return None


@pytest.fixture
def explorer(tmp_path):
    ex = Explorer(tmp_path, max_concurrent=1, start_jobs=False)
    ex.step_times = _Timed()
    yield ex
    ex.close()


def _form(seeds: str, overrides: str = "") -> list:
    """The Launch form's values: swiglu and dual at 20 steps, every variant's form at its defaults."""
    forms = [value for name in variants.names()
             for value in (0, "width", *(o.default for o in variants.spec(name).options))]
    return ["est", "micro", ["swiglu", "dual"], seeds, 20, 0, "builtin", overrides, *forms]


def _callbacks(explorer):
    sizes = {name: 2 + len(variants.spec(name).options) for name in variants.names()}
    return _Callbacks(explorer, sizes)


def test_a_plan_and_its_estimate_share_one_key(explorer):
    two = explorer.planned("est", "micro", ["swiglu", "dual"], "0", 20)
    six = explorer.planned("est", "micro", ["swiglu", "dual"], "0 1 2", 20)
    assert len(two["runs"]) == 2 and len(six["runs"]) == 6 and two["plan"] != six["plan"]
    assert explorer.estimate("est", "micro", ["swiglu", "dual"], "0", 20)["plan"] == two["plan"]
    # the same run names at another model size cost more: another plan
    wider = explorer.planned("est", "micro", ["swiglu", "dual"], "0", 20, overrides=["model.hidden_size=96"])
    assert [r["run"] for r in wider["runs"]] == [r["run"] for r in two["runs"]]
    assert wider["plan"] != two["plan"]
    assert explorer.plan("est", "micro", ["swiglu", "dual"], "0", 20) == two["runs"]


def test_the_line_shows_the_runs_listed_and_never_an_earlier_forms_estimate(explorer):
    calls = _callbacks(explorer)
    grid, message, six_key, line = calls.preview(*_form("0 1 2"))
    assert len(grid) == 6 and message == "" and "for 6 run(s)" in line
    grid, _, two_key, line = calls.preview(*_form("0"))  # the form changed: grid and line together
    assert len(grid) == 2 and "for 2 run(s)" in line and two_key != six_key
    # a timer tick that still carries the 6-run grid's key while the form is already the 2-run one
    assert calls.estimate_line(six_key, *_form("0")) == RECOMPUTING
    assert "for 2 run(s)" in calls.estimate_line(two_key, *_form("0"))
    grid, message, key, line = calls.preview(*_form(""))  # cannot launch: no grid, no line
    assert grid.empty and "at least one seed" in message and key is None and line == ""
    assert calls.estimate_line(key, *_form("")) == ""
