"""The app driven through gradio_client, as a real server process (slow: trains 4 micro runs)."""

import time

import pytest
from gradio_client import Client

from tests.app_server import running_app

FAST = ["eval_every=10", "checkpoint_every=10", "log_every=5"]


@pytest.mark.slow
def test_launch_poll_curves_inspect(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_app(runs) as url:
        client = Client(url, verbose=False)
        result = client.predict("client", "micro", ["swiglu", "dual"], [0, 1], 20, 0.0, "builtin", FAST,
                                api_name="/launch")
        assert sorted(result["queued"]) == ["dual-s0", "dual-s1", "swiglu-s0", "swiglu-s1"]
        deadline = time.time() + 400
        while time.time() < deadline:
            rows = client.predict("client", api_name="/status")
            if rows and all(r["state"] == "completed" for r in rows):
                break
            assert not [r for r in rows if r["state"].startswith("failed")], rows
            time.sleep(2)
        assert len(rows) == 4 and all(r["state"] == "completed" for r in rows), rows
        curves = client.predict("client", "val/loss", "step", 0.0, api_name="/curves")
        assert set(curves) == {"swiglu", "dual"}
        assert curves["dual"]["x"] == [10, 20] and curves["dual"]["n"] == [2, 2]
        table = client.predict("client", "swiglu", api_name="/results")
        assert [r["variant"] for r in table] == ["swiglu", "dual"] and table[1]["p_value"] is not None
        views = client.predict(["client/swiglu-s0", "client/dual-s0"], "The Union is strong.",
                               api_name="/inspect")
        assert views[0]["router_sparse"] is None and len(views[1]["router_sparse"]) == 2
        again = client.predict("client", "micro", ["swiglu", "dual"], [0, 1], 20, 0.0, "builtin", FAST,
                               api_name="/launch")
        assert again["queued"] == []  # completed runs are never launched twice
        with pytest.raises(Exception, match="at least one seed"):
            client.predict("client", "micro", ["swiglu"], [], 20, 0.0, "builtin", [], api_name="/launch")
