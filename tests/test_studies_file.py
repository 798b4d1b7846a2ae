"""core.studies.study: a study is a TOML file; every bad field is one ValueError naming file and field."""

import pytest

from core.studies.study import STUDIES_DIR, builtin_names, load_study, study_path
from core.sweep import main as sweep_main

GOOD = """
preset = "micro"
variants = ["swiglu", "dual+ffn_share=none"]
seeds = [0, 1]
steps = 5
lrs = [1e-3, 3e-3]
shared_lr = 3e-3
overrides = ["eval_every=5"]

[select]
fraction = 1.0
"""


def write(tmp_path, text: str, name: str = "mine") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def test_builtins_load_by_name_and_a_user_study_by_path(tmp_path):
    assert builtin_names() == ["cpu-ablation", "cpu-controls", "cpu-scaling", "cpu-variants", "gpu-scaling",
                              "paper-ablation"]
    assert study_path("cpu-ablation") == STUDIES_DIR / "cpu-ablation.toml"
    scaling = load_study("cpu-scaling")
    assert scaling.axis == "rungs" and scaling.points[2].name == "d128-L4" and scaling.fraction == 0.25
    study = load_study(write(tmp_path, GOOD))
    assert (study.name, study.variants, study.seeds, study.lrs, study.shared_lr, study.steps) == (
        "mine", ("swiglu", "dual+ffn_share=none"), (0, 1), (1e-3, 3e-3), 3e-3, 5)
    assert study.selects and study.points[0].name == "" and study.text.startswith("\npreset")


def test_a_config_key_axis_names_its_points(tmp_path):
    text = 'preset = "micro"\n[axis]\nkey = "model.ffn_hidden"\nvalues = [128, 256]\n'
    study = load_study(write(tmp_path, text))
    assert [(p.name, p.overrides) for p in study.points] == [
        ("ffn_hidden=128", ("model.ffn_hidden=128",)), ("ffn_hidden=256", ("model.ffn_hidden=256",))]


BAD = {  # what the file says -> the field and the problem the one message names
    "unknown key": (GOOD + "\nlearning_rate = 1\n", "select.learning_rate: unknown key"),
    "unknown top key": ("colour = 1\n" + GOOD, "colour: unknown key"),
    "unknown variant": (GOOD.replace('"swiglu", ', '"swiglu", "nonsense", '), "variants: 'nonsense'"),
    "bad variant option": (GOOD.replace("ffn_share=none", "ffn_share=sideways"), "variants: 'dual+ffn_share"),
    "empty lrs": (GOOD.replace("lrs = [1e-3, 3e-3]", "lrs = []"), "lrs: expected a non-empty list"),
    "duplicate lrs": (GOOD.replace("lrs = [1e-3, 3e-3]", "lrs = [1e-3, 3e-3, 1e-3]"),
                      "lrs: duplicate values"),
    "duplicate seeds": (GOOD.replace("seeds = [0, 1]", "seeds = [0, 0]"), "seeds: duplicate values"),
    "shared lr off the grid": (GOOD.replace("shared_lr = 3e-3", "shared_lr = 2e-3"),
                               "shared_lr: 0.002 is not"),
    "negative lr": (GOOD.replace("lrs = [1e-3, 3e-3]", "lrs = [-1e-3, 3e-3]"), "lrs: expected a positive"),
    "steps and tokens": ("tokens_per_param = 2\n" + GOOD, "steps: give steps or tokens_per_param"),
    "boolean steps": (GOOD.replace("steps = 5", "steps = true"), "steps: expected an integer"),
    "unknown preset": (GOOD.replace('"micro"', '"huge"'), "preset: unknown preset 'huge'"),
    "bad override": (GOOD.replace("eval_every=5", "nonsense_key=5"), "overrides:"),
    "fraction above 1": (GOOD.replace("fraction = 1.0", "fraction = 2"),
                         "select.fraction: expected a fraction"),
    "empty axis values": ('preset = "micro"\n[axis]\nkey = "model.ffn_hidden"\nvalues = []\n',
                          "axis.values: expected a non-empty list"),
    "duplicate axis values": ('preset = "micro"\n[axis]\nkey = "model.ffn_hidden"\nvalues = [128, 128]\n',
                              "axis.values: duplicate values 128"),
    "axis on an unknown key": ('preset = "micro"\n[axis]\nkey = "model.nope"\nvalues = [1]\n',
                               "axis.values: "),
    "axis value with a path": ('preset = "micro"\n[axis]\nkey = "data.source"\nvalues = ["a/b"]\n',
                               "axis.values: invalid axis point name 'source=a/b'"),
    "axis on the lr": ('preset = "micro"\n[axis]\nkey = "train.lr"\nvalues = [1e-3]\n', "axis.key: train.lr"),
    "rung setting not a string": ('preset = "micro"\n[axis]\nrungs = [{name = "a", set = [1]}]\n',
                                  "axis.rungs[0].set: expected a list of a string"),
    "rung with a bad setting": ('preset = "micro"\n[axis]\nrungs = [{name = "a", set = ["model.nope=1"]}]\n',
                                "axis.rungs[0].set: "),
    "rung name with a path": ('preset = "micro"\n[axis]\nrungs = [{name = "../b"}]\n',
                              "axis.rungs[0].name: invalid rung name"),
    "duplicate rungs": ('preset = "micro"\n[axis]\nrungs = [{name = "a", set = ["model.hidden_size=32"]}, '
                        '{name = "a", set = ["model.hidden_size=64"]}]\n', "axis.rungs: duplicate"),
    "both axes": ('preset = "micro"\n[axis]\nkey = "model.ffn_hidden"\nvalues = [1]\nrungs = []\n',
                  "axis: give either rungs or key"),
    "malformed": ("preset = \n", "not a valid TOML file"),
    "select without lrs": ('preset = "micro"\n[select]\nfraction = 0.5\n', "select: selecting each variant"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_is_one_clear_error_and_writes_nothing(case, tmp_path, capsys):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as error:
        load_study(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    runs = tmp_path / "runs"
    assert sweep_main(["--study", path, "--runs-dir", str(runs), "--no-progress"]) == 2
    assert expected in capsys.readouterr().err
    assert not runs.exists()  # nothing written: no experiment, no manifest


def test_study_names_are_single_components(tmp_path):
    with pytest.raises(ValueError, match="unknown study 'nope'"):
        load_study("nope")
    with pytest.raises(ValueError, match="invalid study name"):
        load_study(".hidden")
    with pytest.raises(ValueError, match=r"name: invalid study name"):
        load_study(write(tmp_path, GOOD, name=".dot"))
    with pytest.raises(ValueError, match="cannot read the study file"):
        load_study(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("flags, named", [
    (["--experiment", "x"], "--experiment"), (["--set", "dtype=bf16"], "--set"),
    (["--preset", "tiny", "--steps", "5"], "--preset, --steps"), (["--seeds", "0", "1"], "--seeds"),
])
def test_sweep_takes_a_study_or_grid_flags_not_both(tmp_path, capsys, flags, named):
    """A grid flag beside --study would be ignored (the study file sets it): refused, naming it."""
    runs = tmp_path / "runs"
    assert sweep_main(["--study", "cpu-ablation", *flags, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"{named} describe a grid" in err and "not both" in err
    assert not runs.exists()
