"""A study of one's own, end to end: ``python -m core.sweep --study PATH`` on micro (3 runs of 4
steps), its manifest, its report, and the ``--recipe`` alias finding everything done."""

import json

import pytest

from core.report import main as report_main
from core.runs import Run, list_experiments
from core.studies.manifest import manifest_path, read_manifest, study_experiments
from core.studies.study import load_study
from core.sweep import main as sweep_main

MINE = """
# one variant, two lrs for seed 0, then seed 1 at the better one
preset = "micro"
variants = ["swiglu"]
seeds = [0, 1]
steps = 4
lrs = [1e-3, 3e-3]
overrides = ["eval_every=2", "checkpoint_every=4", "log_every=2"]
[select]
fraction = 1.0
"""


@pytest.mark.slow
def test_a_users_study_runs_end_to_end(tmp_path, capsys):
    path, runs = tmp_path / "mine.toml", tmp_path / "runs"
    path.write_text(MINE)
    assert sweep_main(["--study", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0
    assert "each at its best lr (swiglu " in capsys.readouterr().out
    assert list_experiments(runs) == ["mine-lr0.001", "mine-lr0.003"]
    manifest = read_manifest(runs, "mine")
    phases = [(p["kind"], p["experiment"], p["runs"]) for p in manifest["phases"]]
    best = next(p["experiment"] for p in manifest["phases"] if p["kind"] == "final")
    assert phases == [("sweep", "mine-lr0.001", ["swiglu-s0"]), ("sweep", "mine-lr0.003", ["swiglu-s0"]),
                      ("final", best, ["swiglu-s1"])]
    assert manifest["text"] == MINE and len(manifest["sha256"]) == 64
    assert json.loads(manifest_path(runs, "mine").read_text()) == manifest
    assert Run.at(runs, best, "swiglu-s1").read_status()["state"] == "completed"
    assert study_experiments(runs, load_study(path)) == ["mine-lr0.001", "mine-lr0.003"]
    # the old flag: the same study, every run already completed, so nothing trains again
    assert sweep_main(["--recipe", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0
    out = tmp_path / "mine.html"
    assert report_main(["--recipe", str(path), "--runs-dir", str(runs), "--out", str(out)]) == 0
    assert "Recipe mine" in out.read_text()
