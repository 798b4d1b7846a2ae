"""core.studies.compose and core.studies.progress.run_count: a form becomes a study file that the
CLI reads the same way; every bad input is one message and writes nothing."""

import dataclasses

import pytest

from core.studies.compose import Form, compose, from_text, save, study_text
from core.studies.plan import final_phases, first_phases, point_steps
from core.studies.progress import run_count
from core.studies.study import builtin_names, load_study

FORM = Form(name="mine", preset="micro", variants=["swiglu", "dual"], seeds=[0, 1], steps=20,
            lrs=[0.002, 0.004], select=True, axis_key="ffn_threshold", axis_values=["jumprelu", "cats"],
            description='a "quoted" note')


def test_the_saved_file_is_the_study_the_cli_reads(tmp_path):
    study = compose(FORM, tmp_path)
    assert not study.path.exists()  # composing writes nothing
    path = save(study)
    again = load_study(path)
    assert again == study and study.text == study_text(FORM)
    assert [p.name for p in again.points] == ["ffn_threshold=jumprelu", "ffn_threshold=cats"]
    assert again.description == 'a "quoted" note' and again.fraction == 1.0


def test_an_axis_over_a_dual_option_leaves_the_baseline_unchanged(tmp_path):
    study = compose(FORM, tmp_path)
    cats = study.points[1]
    cells = first_phases(study, cats, 20)[0].cells
    assert [c.label for c in cells] == ["swiglu", "dual+ffn_threshold=cats"]
    assert cells[0].config == first_phases(study, study.points[0], 20)[0].cells[0].config


@pytest.mark.parametrize("change, message", [
    ({"name": "a/b"}, "invalid study name"),
    ({"name": "x" * 300}, "invalid study name"),
    ({"name": "cpu-scaling"}, "built-in"),
    ({"axis_values": []}, "axis.values: expected a non-empty list"),
    ({"axis_values": ["cats", "cats"]}, "duplicate values"),
    ({"axis_key": "model.nope"}, "unknown key 'model.nope'"),
    ({"variants": ["nope"]}, "unknown ffn 'nope'"),
    ({"variants": []}, "variants: expected a non-empty list"),
    ({"seeds": list(range(2000))}, "up to 8,004 runs"),
    ({"lrs": []}, "needs an lr grid"),
    ({"lrs": [float("nan")]}, "finite"),
    ({"axis_values": ["bogus"]}, "must be one of jumprelu"),
])
def test_bad_forms_are_one_message_and_write_nothing(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        compose(dataclasses.replace(FORM, **change), tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_malformed_file_and_a_name_taken_by_another_study(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        from_text("mine", "preset = [", tmp_path)
    with pytest.raises(ValueError, match="preset: missing"):
        from_text("mine", "variants = ['swiglu']", tmp_path)
    from core.studies.manifest import record_study

    record_study(tmp_path, compose(FORM, tmp_path))
    assert compose(FORM, tmp_path).name == "mine"  # the same study again: fine
    with pytest.raises(ValueError, match="a different study named 'mine'"):
        compose(dataclasses.replace(FORM, seeds=[0]), tmp_path)


@pytest.mark.parametrize("name", builtin_names())
def test_run_count_is_what_the_phases_plan(name):
    """Fewest: every best lr the first of the grid; with a shared lr, most when the variants' best
    lrs all differ from it (an upper bound the planned phases never pass)."""
    study = load_study(name)
    fewest = most = 0
    for point in study.points:
        steps = point_steps(study, point)
        first = sum(len(p.cells) for p in first_phases(study, point, steps))
        others = [lr for lr in study.lrs if lr != study.shared_lr] or list(study.lrs)
        same = {label: others[0] for label in study.variants} if study.selects else {}
        spread = {label: others[i % len(others)] for i, label in enumerate(study.variants)}
        spread = spread if study.selects else {}
        fewest += first + sum(len(p.cells) for p in final_phases(study, point, steps, same))
        most += first + sum(len(p.cells) for p in final_phases(study, point, steps, spread))
    if study.shared_lr is None:
        assert run_count(study) == (fewest, fewest) == (most, most)
    else:
        assert run_count(study)[0] <= fewest <= most <= run_count(study)[1]
