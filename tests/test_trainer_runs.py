"""The trainer's run folder (trainer_runs.py): which folders are runs, and what a --resume must agree on.

End to end (a killed run resumed, settings changed, data moved) in test_brain_trainer.py; here the checks on records.
"""
import json
from argparse import Namespace

import numpy as np
import pytest

import trainer_runs as tr
from run_utils import EXIT_DATA, EXIT_USAGE, Stop


def write_record(folder, **record):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(record))
    return folder


def run_record(**args):
    return {"args": args, "command": "python brain_trainer_story.py ...", "started": "then", "versions": {}}


def test_a_run_record_is_told_from_a_model_folder_and_other_scripts_results(tmp_path):
    run = write_record(tmp_path / "run", **run_record(subject="UTS01"))
    assert tr.is_trainer_run(run) and tr.foreign_record_problem(run) is None
    model = write_record(tmp_path / "model", model_type="wav2vec2", hidden_size=8)
    assert not tr.is_trainer_run(model)
    assert tr.foreign_record_problem(model) == (f"{model} is a model folder (its config.json is a wav2vec2 model's), "
                                                f"not a brain-tuning run: choose another --out-dir")
    evaluation = write_record(tmp_path / "ev", command="python brain_evaluate.py --subject UTS01", layers=[3])
    assert "records a run of brain_evaluate.py), not a brain-tuning run" in tr.foreign_record_problem(evaluation)
    # the trainer's own record, damaged (no 'versions'), is not "another script's": read_result_json names it
    damaged = write_record(tmp_path / "damaged", args={}, command="python brain_trainer_story.py --subject UTS01")
    assert not tr.is_trainer_run(damaged) and tr.foreign_record_problem(damaged) is None
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "config.json").write_text("{not json")
    assert tr.foreign_record_problem(tmp_path / "notjson") is None and tr.foreign_record_problem(tmp_path) is None


def test_moved_compares_folders_not_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    assert not tr.moved(str(tmp_path / "ds"), "ds") and not tr.moved("ds/", "./ds")
    assert tr.moved(str(tmp_path / "ds"), "scratch/ds") and tr.moved(None, "ds")  # a record without data_dir: moved


def test_resumed_data_problem_names_what_differs_and_where(tmp_path):
    old = {"args": {"data_dir": "/a/ds", "stories": {"train": ["s1", "s2"]},
                    "resolved": {"train_windows": 10, "val_windows": 4, "timing": {"tr": 2.0}}}}
    now = {"data_dir": "/scratch/ds", "stories": {"train": ["s1", "s2"]},
           "resolved": {"train_windows": 10, "val_windows": 4, "timing": {"tr": 2.0}}}
    assert tr.resumed_data_problem(old, now) is None  # moved, the same data: fine
    fewer = {**now, "resolved": {**now["resolved"], "val_windows": 3}}
    assert tr.resumed_data_problem(old, fewer) == (
        "--data-dir /scratch/ds (the run's record names /a/ds): other validation windows than the run was tuned on "
        "(4 then, 3 now): resume on the dataset it started with, or start again with --overwrite")
    lacking = {**now, "data_dir": "/a/ds", "stories": {"train": ["s1"]}}
    assert tr.resumed_data_problem(old, lacking).startswith("--data-dir /a/ds: other story split than")
    # a record written before window counts and TR grids were kept: only what it records is checked
    older = {"args": {"data_dir": "/a/ds", "stories": {"train": ["s1", "s2"]}, "resolved": {}}}
    assert tr.resumed_data_problem(older, fewer) is None


def test_resumed_targets_problem_checks_the_saved_voxels_and_the_targets_file(tmp_path):
    np.save(tmp_path / "target_voxels.npy", np.array([1, 5, 9]))
    assert tr.resumed_targets_problem(tmp_path, {}, ["UTS01"], [np.array([1, 5, 9])], {}) is None
    other = tr.resumed_targets_problem(tmp_path, {}, ["UTS01"], [np.array([1, 5, 8])], {})
    assert "tuned on 3 voxels, the noise-ceiling and ROI files now select 3 (other ones)" in other
    (tmp_path / "target_voxels.npy").write_bytes(b"not an npy")
    assert "unreadable" in tr.resumed_targets_problem(tmp_path, {}, ["UTS01"], [np.array([1])], {})
    saved = {"args": {"resolved": {"voxels": {"targets_sha256": "a" * 64}}}}
    same = {"targets_sha256": "a" * 64, "targets_from": "t.npz"}
    assert tr.resumed_targets_problem(tmp_path, saved, ["UTS01"], None, same) is None
    assert tr.resumed_targets_problem(tmp_path, saved, ["UTS01"], None, {**same, "targets_sha256": "b" * 64}) == (
        "t.npz: other content than the run was tuned on (sha256 aaaaaaaaaaaa... in its config.json); resume with the "
        "same targets, or start again with --overwrite")


def test_resume_record_keeps_the_first_start_and_appends_each_resumption():
    old_run = {**run_record(), "started": "first", "head_init": {"kind": "ridge"},
               "resumed": [{"after_epoch": 1}], "args": {"resolved": {"model_revision": "a" * 40}}}
    config = {"data_dir": "/scratch/ds", "resolved": {"model_revision": "b" * 40}}
    run_config = {"command": "python brain_trainer_story.py --resume", "started": "now", "versions": {"torch": "x"}}
    tr.resume_record(run_config, config, old_run, {"epoch": 2})
    assert config["resolved"]["model_revision"] == "a" * 40  # the weights come from last/: the first start's model
    assert run_config["started"] == "first" and run_config["head_init"] == {"kind": "ridge"}
    assert run_config["command"] == old_run["command"]
    assert [r["after_epoch"] for r in run_config["resumed"]] == [1, 2]
    assert run_config["resumed"][-1]["data_dir"] == "/scratch/ds"
    assert run_config["resumed"][-1]["command"] == "python brain_trainer_story.py --resume"


def test_prepare_out_dir_refuses_other_runs_and_replaces_only_runs(tmp_path):
    args = Namespace(resume=False, overwrite=False)
    config = {"subject": "UTS01", "lr": 1e-4, "revision": "main"}
    run = write_record(tmp_path / "run", **run_record(**config))
    (run / "metrics.csv").write_text("epoch\n")
    with pytest.raises(Stop) as stop:
        tr.prepare_out_dir(args, config, run, 1, True)
    assert stop.value.code == EXIT_USAGE and "already holds a run; pass --resume" in str(stop.value)
    assert tr.prepare_out_dir(Namespace(resume=True, overwrite=False), config, run, 1, True)["args"] == config
    with pytest.raises(Stop) as stop:
        tr.prepare_out_dir(Namespace(resume=True, overwrite=False), {**config, "lr": 1e-3}, run, 1, True)
    assert "'lr': (0.0001, 0.001)" in str(stop.value)
    assert tr.prepare_out_dir(Namespace(resume=False, overwrite=True), config, run, 1, True) == {}
    assert list(run.iterdir()) == []  # --overwrite emptied the run folder
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "draft.tex").write_text("keep me")
    with pytest.raises(Stop):
        tr.prepare_out_dir(Namespace(resume=False, overwrite=True), config, tmp_path / "papers", 1, True)
    assert (tmp_path / "papers" / "draft.tex").read_text() == "keep me"
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text("{")
    with pytest.raises(Stop) as stop:
        tr.prepare_out_dir(Namespace(resume=True, overwrite=False), config, damaged, 1, True)
    assert stop.value.code == EXIT_DATA and (damaged / "config.json").read_text() == "{"
