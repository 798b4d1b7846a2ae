"""The app driven through gradio_client, as a real server process (slow: trains 4 micro runs)."""

import time

import pytest
from gradio_client import Client

from tests.app_server import running_app

FAST = ["eval_every=10", "checkpoint_every=10", "log_every=5"]


def _wait_until_completed(client: Client, experiment: str, timeout_s: float) -> list[dict]:
    """Poll /status until every run of `experiment` completed (failing at once on a failed run) or
    the time is up; return the last rows."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = client.predict(experiment, api_name="/status")
        if rows and all(r["state"] == "completed" for r in rows):
            break
        assert not [r for r in rows if r["state"].startswith("failed")], rows
        time.sleep(2)
    return rows


@pytest.mark.slow
def test_launch_poll_curves_inspect(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_app(runs) as url:
        client = Client(url, verbose=False)
        result = client.predict("client", "micro", ["swiglu", "dual"], [0, 1], 20, 0.0, "builtin", FAST,
                                ["tensorboard"], api_name="/launch")
        assert sorted(result["queued"]) == ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
        rows = _wait_until_completed(client, "client", timeout_s=400)
        assert len(rows) == 4 and all(r["state"] == "completed" for r in rows), rows
        # the trackers chosen at launch reach each child run (the metrics mirrored to TensorBoard)
        assert all(list((runs / "client" / r["run"] / "tensorboard").glob("events.*")) for r in rows)
        curves = client.predict("client", "val/loss", "step", 0.0, api_name="/curves")
        assert set(curves) == {"swiglu", "dual"}
        assert curves["dual"]["x"] == [10, 20] and curves["dual"]["n"] == [2, 2]
        table = client.predict("client", "swiglu", api_name="/results")
        assert [r["variant"] for r in table] == ["swiglu", "dual"] and table[1]["p_value"] is not None
        views = client.predict(["client/swiglu-s0", "client/dual-s0"], "The Union is strong.",
                               api_name="/inspect")
        assert views[0]["token_stats"] == {} and len(views[1]["token_stats"]["router_sparse"]) == 2
        again = client.predict("client", "micro", ["swiglu", "dual"], [0, 1], 20, 0.0, "builtin", FAST,
                               api_name="/launch")
        assert again["queued"] == []  # completed runs are never launched twice
        with pytest.raises(Exception, match="at least one seed"):
            client.predict("client", "micro", ["swiglu"], [], 20, 0.0, "builtin", [], api_name="/launch")


TOY_FFN = '''
import torch
import torch.nn.functional as F

from core.ffns.base import FFN, linear
from core.variants import FFNSpec, Option, Stat, register_ffn


@register_ffn(FFNSpec(name="toyabs", summary="down(|up x| * scale)",
                      options=(Option("scale", 1.0, "output scale", minimum=0.0, exclusive=True),),
                      stats=(Stat("small_frac", "fraction of |up x| below 0.01"),)))
class ToyAbs(FFN):
    def __init__(self, config):
        super().__init__(config)
        self.up_proj = linear(config.hidden_size, self.hidden)
        self.down_proj = linear(self.hidden, config.hidden_size)
        self.scale = config.ffn_options["scale"]

    def forward(self, x, return_stats=False):
        h = self.up_proj(x).abs()
        stats = {"small_frac": (h < 0.01).float().mean(-1)} if return_stats else {}
        return self.down_proj(h * self.scale), x.new_zeros(()), stats
'''


@pytest.mark.slow
def test_a_plugin_ffn_from_one_file_goes_through_the_whole_app(tmp_path):
    plugin = tmp_path / "elsewhere" / "toy_ffn.py"  # outside the repo, imported by nothing else
    plugin.parent.mkdir()
    plugin.write_text(TOY_FFN)
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_app(runs, {"EXPLORER_FFN_MODULES": str(plugin)}) as url:
        client = Client(url, verbose=False)
        listed = {v["name"]: v for v in client.predict(api_name="/variants")}
        assert listed["toyabs"]["source"] == str(plugin.resolve())
        assert [o["name"] for o in listed["toyabs"]["options"]] == ["scale"]
        result = client.predict("plug", "micro", ["toyabs+scale=0.5"], [0, 1], 10, 0.0, "builtin", FAST,
                                api_name="/launch")
        assert sorted(result["queued"]) == ["toyabs+scale=0.5-s0", "toyabs+scale=0.5-s1"]
        rows = _wait_until_completed(client, "plug", timeout_s=300)
        assert len(rows) == 2 and all(r["state"] == "completed" for r in rows), rows
        curves = client.predict("plug", "val/loss", "step", 0.0, api_name="/curves")
        assert curves["toyabs+scale=0.5"]["n"] == [2]
        table = client.predict("plug", "", api_name="/results")
        assert [r["variant"] for r in table] == ["toyabs+scale=0.5"] and table[0]["seeds"] == 2
        views = client.predict(["plug/toyabs+scale=0.5-s0"], "The Union is strong.", api_name="/inspect")
        small = views[0]["token_stats"]["small_frac"]
        assert len(small) == 2 and len(small[0]) == len(views[0]["ids"])
        assert views[0]["stat_info"]["small_frac"]["meaning"].startswith("fraction")


def _rows(client: Client, experiment: str) -> dict[str, dict]:
    return {row["run"]: row for row in client.predict(experiment, api_name="/status")}


def _poll(client: Client, experiment: str, done, timeout_s: float, what: str,
          seen: dict[str, list[str]]) -> dict[str, dict]:
    """Poll /status until `done(rows)`, noting each run's successive states in `seen`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = _rows(client, experiment)
        for name, row in rows.items():
            state = row["state"].split(" (")[0]
            if seen.setdefault(name, [])[-1:] != [state]:
                seen[name].append(state)
        if done(rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {rows}")


@pytest.mark.slow
def test_slurm_launch_states_cancel_and_reattach(slurm_cluster, tmp_path):
    """One run at a time fits the cluster (2 CPUs per run): the others wait as pending; a running
    run is cancelled through scancel; an app restarted mid-grid follows the same jobs. Three runs:
    one cancelled, one completed before the restart, one still queued or training across it."""
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"EXPLORER_EXECUTOR": "slurm", **slurm_cluster.env}
    # evaluating every 50 steps, not 10: what this test watches is the scheduler, not the curves
    args = ("cl", "micro", ["swiglu", "dual", "relu2"], [0], 150, 0.0, "builtin",
            ["eval_every=50", "checkpoint_every=10", "log_every=5"], [])
    seen: dict[str, list[str]] = {}
    with running_app(runs, env) as url:
        client = Client(url, verbose=False)
        result = client.predict(*args, "slurm", {"cpus_per_rank": 2}, api_name="/launch")
        assert len(result["queued"]) == 3 and "on SLURM" in result["message"]
        rows = _poll(client, "cl", lambda r: any(x["state"].startswith("pending") for x in r.values()), 60,
                     "runs waiting for CPUs", seen)
        assert all(x["job"] and x["live"] for x in rows.values())
        rows = _poll(client, "cl", lambda r: any(x["state"] == "running" and x["step"] for x in r.values()),
                     120, "a run training", seen)
        first = next(name for name, x in rows.items() if x["state"] == "running" and x["step"])
        cancelled_at = time.time()
        assert client.predict("cl", first, api_name="/cancel") == "cancelled"
        _poll(client, "cl", lambda r: r[first]["state"] == "cancelled", 15, "the cancel", seen)
        assert time.time() - cancelled_at < 15
        _poll(client, "cl", lambda r: any(x["state"] == "completed" for x in r.values()), 300, "one run",
              seen)
    jobs = {name: x["job"] for name, x in rows.items()}
    with running_app(runs, env) as url:  # restarted mid-grid
        client = Client(url, verbose=False)
        rows = _poll(client, "cl", lambda r: all(not x["live"] for x in r.values()), 400, "the grid", seen)
        assert {name: x["job"] for name, x in rows.items()} == jobs  # the same jobs, none new
        assert [x["state"] for name, x in sorted(rows.items()) if name != first] == ["completed"] * 2
        again = client.predict(*args, "slurm", {"cpus_per_rank": 2}, api_name="/launch")
        assert again["queued"] == [first]  # only the cancelled run is submitted again
        rows = _poll(client, "cl", lambda r: r[first]["state"] == "completed", 300, "the resubmitted run",
                     seen)
        assert rows[first]["job"] != jobs[first]
    # the scheduler's states as the app showed them, in order: e.g. queued, pending, running, completed
    assert any(_in_order(states, ["pending", "running", "completed"]) for states in seen.values()), seen
    for name in jobs:
        log = (runs / "cl" / name / "train.log").read_text()
        launches = 2 if name == first else 1
        assert log.count("slurm job") == launches, name  # nothing launched twice


def _in_order(states: list[str], wanted: list[str]) -> bool:
    position = 0
    for state in states:
        if position < len(wanted) and state == wanted[position]:
            position += 1
    return position == len(wanted)
