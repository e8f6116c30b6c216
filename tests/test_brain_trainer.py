"""End-to-end runs of brain_trainer_story.py on the tiny miniature with tiny random models."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import brain_trainer_story as trainer
from conftest import FAMILIES, link_tree, torchrun_trainer
from run_utils import RUN_LOCK


def run(mini, model, out, *extra):
    argv = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", model,
            "--nc-dir", str(mini / "subject_NCs"), "--out-dir", str(out), "--batch-size", "16",
            "--num-epochs", "2", "--no-progress", "--seed", "3", *extra]
    return trainer.main(argv)


def run_files(out) -> dict:
    """The files at the top of a run folder and their bytes, but the claim file each run rewrites with its pid and
    start time (a refused run's folder is compared before and after)."""
    return {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file() and p.name != RUN_LOCK}


def metrics(out):
    with open(Path(out) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_and_lowers_validation_loss(mini, tiny_models, family, tmp_path, capsys):
    assert run(mini, tiny_models[family], tmp_path / "r", "--head-lr", "3e-3", "--whisper-mode", "truncate") == 0
    noted = "note: --whisper-mode truncate applies to Whisper models" in capsys.readouterr().err
    assert noted == (family != "whisper")  # the mode given for another family: said, as it changes nothing there
    m = metrics(tmp_path / "r")
    assert [r["epoch"] for r in m] == [0, 1, 2]
    assert min(r["val_loss"] for r in m[1:]) < m[0]["val_loss"]
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["best_beats_initial"] is True and cfg["initial_val_loss"] == pytest.approx(m[0]["val_loss"])
    nc = np.load(mini / "subject_NCs" / "UTS01.npy")
    assert cfg["args"]["resolved"]["n_targets"] == int((nc > 0.4).sum())
    assert cfg["versions"]["torch"] and cfg["args"]["stories"]["val"] == ["stagefright", "life"]
    assert set(cfg["versions"]["toolkit"]) == {"commit", "modified"}  # the code version beside the packages
    for name in ("metrics.csv", "loss_curve.png", "best/config.json", "best/voxel_head.safetensors",
                 "best/preprocessor_config.json", "last/optim.pt", "last/model.safetensors"):
        assert (tmp_path / "r" / name).is_file(), name
    tuned_with = json.loads((tmp_path / "r" / "best" / "brain_tuning.json").read_text()).get("whisper_mode")
    assert tuned_with == ("truncate" if family == "whisper" else None)  # what a reader of the model should use


def test_best_dir_reproduces_the_best_validation_loss(mini, tiny_models, tmp_path, capsys):
    from transformers import AutoFeatureExtractor, AutoModel

    import data_utils as du
    import models
    import training
    assert run(mini, tiny_models["hubert"], tmp_path / "r", "--lora-rank", "4", "--head-rank", "8") == 0
    out = tmp_path / "r"
    best = json.loads((out / "best" / "brain_tuning.json").read_text())
    backbone = AutoModel.from_pretrained(out / "best")
    enc = models.SpeechEncoder(backbone, AutoFeatureExtractor.from_pretrained(out / "best"), "hubert")
    model = models.BrainTuningModel(enc, models.load_head(out / "best"))
    data = du.Ds003020(mini / "ds003020")
    voxels = np.load(out / "target_voxels.npy")
    val = training.WindowDataset(training.load_story_data(data, ["UTS01"], ["stagefright", "life"], [voxels], quiet=True))
    res = training.evaluate(model, torch.utils.data.DataLoader(val, batch_size=16), "mse", torch.device("cpu"), "fp32", True)
    assert res["val_loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    # the stories it was tuned on are recorded: the evaluation refuses to score it on one of them as held out
    assert best["stories"] == {"train": ["alternateithicatom", "souls", "avatar"], "val": ["stagefright", "life"]}
    import brain_evaluate
    for story, which in (("souls", "training"), ("life", "validation")):
        assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                                    str(out / "best"), "--out", str(tmp_path / "e"), "--test-story", story]) == 2
        assert (f"{out / 'best'} was brain-tuned with '{story}' among its {which} stories, so its alignment on it "
                f"would not be held out") in capsys.readouterr().err
    # a record damaged later (a partial copy, an edit) cannot be checked: named, exit 3, nothing evaluated
    record = out / "best" / "brain_tuning.json"
    for damaged, says in (("{", "unreadable (Expecting property name"),
                          ('{"stories": {"train": "souls"}}', "expected the record brain_trainer_story.py writes"),
                          ('["souls"]', "expected the record brain_trainer_story.py writes")):
        record.write_text(damaged)
        assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                                    str(out / "best"), "--out", str(tmp_path / "e")]) == 3
        assert f"{record}: {says}" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_roi_hemisphere_losses_and_controls(mini, tiny_models, tmp_path, capsys):
    rois = json.loads((mini / "rois" / "UTS01.json").read_text())
    nc = np.load(mini / "subject_NCs" / "UTS01.npy")
    model = tiny_models["wav2vec2"]
    assert run(mini, model, tmp_path / "roi", "--roi-file", str(mini / "rois" / "UTS01.json"), "--roi", "auditory",
               "--hemisphere", "left", "--loss", "spatial_corr", "--num-epochs", "1") == 0
    expected = sorted(set(np.flatnonzero(nc > 0.4)) & set(rois["auditory"]) & set(rois["left_hemisphere"]))
    np.testing.assert_array_equal(np.load(tmp_path / "roi" / "target_voxels.npy"), expected)
    assert np.isfinite(metrics(tmp_path / "roi")[-1]["val_loss"])
    assert json.loads((tmp_path / "roi" / "config.json").read_text())["args"]["resolved"]["voxels"] == {
        "n_voxels_total": len(nc), "n_above_nc": int((nc > 0.4).sum()), "rois": ["auditory", "left_hemisphere"]}
    quiet = {"_subject": "UTS01", "quiet": np.flatnonzero(nc <= 0.4)[:5].tolist()}  # no voxel above the threshold
    (tmp_path / "quiet.json").write_text(json.dumps(quiet))
    assert run(mini, model, tmp_path / "none", "--roi-file", str(tmp_path / "quiet.json"), "--roi",
               "quiet") == trainer.EXIT_DATA
    assert "UTS01: no voxel is both above NC 0.4 and in ['quiet']" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    assert run(mini, model, tmp_path / "none", "--roi-file", str(tmp_path / "quiet.json"), "--roi",
               "Broca") == trainer.EXIT_DATA
    assert f"{tmp_path / 'quiet.json'}: no ROI 'Broca' (found ['quiet'])" in capsys.readouterr().err
    assert run(mini, model, tmp_path / "none", "--val-stories", "nostory") == trainer.EXIT_DATA  # e.g. a typo
    assert "--val-stories names ['nostory'], not stories of this dataset" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    assert run(mini, model, tmp_path / "plain", "--loss", "temporal_corr", "--num-epochs", "1") == 0
    for control in ("story-swap", "block-shuffle"):
        assert run(mini, model, tmp_path / control, "--target-control", control, "--loss", "temporal_corr",
                   "--num-epochs", "1") == 0
        cfg = json.loads((tmp_path / control / "config.json").read_text())
        assert cfg["args"]["target_control"] == control
        # a correlation loss: a random tiny model on control targets scores near 0, of either sign (an MSE on
        # z-scored targets would be about 1)
        assert abs(metrics(tmp_path / control)[-1]["val_loss"]) < 0.5
        # the validation targets are controlled too: the same initial head scores otherwise than on the real ones
        assert metrics(tmp_path / control)[0]["val_loss"] != pytest.approx(metrics(tmp_path / "plain")[0]["val_loss"],
                                                                           rel=1e-6)


def test_teacher_targets_from_file(mini, tiny_models, tmp_path, capsys):
    import data_utils as du
    data = du.Ds003020(mini / "ds003020")
    rng = np.random.default_rng(0)
    targets = {s: rng.normal(size=(data.respdict[s] - 20, 6)).astype(np.float32) for s in data.stories("UTS01")}
    np.savez(tmp_path / "teacher.npz", **targets)
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "t", "--targets-from", str(tmp_path / "teacher.npz"),
               "--num-epochs", "1") == 0
    assert json.loads((tmp_path / "t" / "config.json").read_text())["args"]["resolved"]["n_targets"] == 6
    # the targets file remade with other content: --resume refuses (the path alone is the same run's)
    teacher = tmp_path / "teacher.npz"
    original = teacher.read_bytes()
    np.savez(teacher, **{s: t + 1 for s, t in targets.items()})
    resume = ["--targets-from", str(teacher), "--num-epochs", "1", "--resume"]
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "t", *resume) == trainer.EXIT_DATA
    assert f"{teacher}: other content than the run was tuned on" in capsys.readouterr().err
    teacher.write_bytes(original)
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "t", *resume) == 0  # the same targets: resumable
    assert "--head-rank" not in capsys.readouterr().err
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "hr", "--targets-from", str(teacher), "--num-epochs", "1",
               "--head-rank", "6") == 0  # 6 targets: a rank-6 head is a full-rank map
    assert ("note: --head-rank 6 is not below min(hidden size 64, voxels 6): the readout is not low-rank, only "
            "factored in two") in capsys.readouterr().err
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "r", "--targets-from", str(tmp_path / "teacher.npz"),
               "--roi-file", str(mini / "rois" / "UTS01.json"), "--roi", "language") == trainer.EXIT_USAGE
    assert "--targets-from replaces the fMRI targets, so --roi/--hemisphere/--nc-file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "r", "--targets-from", str(tmp_path / "teacher.npz"),
               "--nc-file", str(mini / "subject_NCs" / "UTS01.npy")) == trainer.EXIT_USAGE
    assert "--targets-from replaces the fMRI targets, so --roi/--hemisphere/--nc-file" in capsys.readouterr().err
    for flags, message in ((["--head-rank", "4", "--init-head", "ridge"], "--init-head ridge needs a full-rank head"),
                           (["--lora-targets", "fc1"], "--lora-targets chooses the modules of --lora-rank adapters"),
                           (["--split", "all", "--train-stories", "souls"], "error: --split all chooses the "
                            "training stories and --train-stories names them: give one of the two\n"),
                           (["--lora-alpha", "8"], "error: --lora-alpha given without --lora-rank (settings of its "
                                                   "LoRA adapters); add --lora-rank\n"),
                           (["--lora-dropout", "0", "--lora-alpha", "1"], "error: --lora-alpha and --lora-dropout given "
                                                                          "without --lora-rank"),
                           (["--front-end-cache-dir", str(tmp_path / "fec")], "add --cache-front-end"),
                           (["--roi", "language"], "--roi/--hemisphere need --roi-file"),
                           (["--hemisphere", "left"], "--roi/--hemisphere need --roi-file"),
                           (["--nc-dir", str(mini / "subject_NCs" / "UTS01.npy")],
                            f"--nc-dir {mini / 'subject_NCs' / 'UTS01.npy'} is a file; it takes the folder that holds "
                            f"<SUBJ>.npy (here {mini / 'subject_NCs'}), or give the file as --nc-file")):
        assert run(mini, tiny_models["wav2vec2"], tmp_path / "h", *flags) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "h").exists()  # refused before any output
    bad = dict(targets, souls=targets["souls"][:-2])
    np.savez(tmp_path / "bad.npz", **bad)
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "b", "--targets-from", str(tmp_path / "bad.npz")) == trainer.EXIT_DATA
    rows = data.respdict["souls"] - 20
    assert (f"bad.npz: 'souls' expected ({rows}, F) rows aligned with the responses, found shape ({rows - 2}, 6)"
            in capsys.readouterr().err)
    holed = targets["souls"].copy()
    holed[[3, 7], 1] = np.nan  # a teacher with undefined values: the loss would be NaN from that batch on
    np.savez(tmp_path / "nan.npz", **dict(targets, souls=holed))
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "n", "--targets-from", str(tmp_path / "nan.npz")) == 3
    assert "nan.npz: 'souls' holds 2 NaN or inf values (rows [3, 7]...); expected finite" in capsys.readouterr().err
    np.savez(tmp_path / "narrow.npz", **dict(targets, souls=targets["souls"][:, :5]))  # one head for every story
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "w", "--targets-from", str(tmp_path / "narrow.npz")) == 3
    assert ("narrow.npz: every story needs the same number of target columns; most have 6, but {'souls': 5}"
            in capsys.readouterr().err and not (tmp_path / "w").exists())
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in targets.items() if k != "souls"})
    w2v = tiny_models["wav2vec2"]
    assert run(mini, w2v, tmp_path / "p", "--targets-from", str(tmp_path / "partial.npz")) == trainer.EXIT_DATA
    assert "partial.npz: no entry for story 'souls'" in capsys.readouterr().err
    np.savez(tmp_path / "pickled.npz", souls=np.array([object()], dtype=object))
    assert run(mini, w2v, tmp_path / "k", "--targets-from", str(tmp_path / "pickled.npz")) == trainer.EXIT_DATA
    assert ("pickled.npz: not a readable .npz of story -> (TRs, F) targets (it holds pickled (object) arrays, which "
            "are never loaded" in capsys.readouterr().err)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "partial.npz").read_bytes()[:300])  # a copy cut short
    assert run(mini, w2v, tmp_path / "c", "--targets-from", str(tmp_path / "cut.npz")) == trainer.EXIT_DATA
    assert "cut.npz: not a readable .npz of story -> (TRs, F) targets" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    np.save(tmp_path / "one.npy", targets["souls"])  # a .npy, whatever its name: np.load returns an array
    assert run(mini, w2v, tmp_path / "c", "--targets-from", str(tmp_path / "one.npy")) == trainer.EXIT_DATA
    assert (f"one.npy: not a readable .npz of story -> (TRs, F) targets (ValueError: a .npy (one array of shape "
            f"{targets['souls'].shape}), not an .npz of named arrays)") in capsys.readouterr().err


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(mini, tiny_models, tmp_path, capsys, monkeypatch):
    import run_utils
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    assert run(mini, tiny_models["hubert"], folder, "--overwrite") == trainer.EXIT_USAGE
    assert (folder / "thesis.tex").read_text() == "precious"
    assert "home: not a brain-tuning run" in capsys.readouterr().err
    model_dir = Path(tiny_models["hubert"])  # an HF model folder has a config.json too: not a run
    assert (model_dir / "config.json").is_file()
    for flags in (["--overwrite"], ["--resume"], []):  # named as a model folder (it was "a damaged run record")
        assert run(mini, tiny_models["wav2vec2"], model_dir, *flags) == trainer.EXIT_USAGE
        assert (f"error: {model_dir} is a model folder (its config.json is a hubert model's), not a brain-tuning "
                f"run: choose another --out-dir\n") == capsys.readouterr().err
    assert (model_dir / "config.json").is_file()
    evaluation = tmp_path / "ev"  # another script's result folder: named, not resumed as "a different run"
    evaluation.mkdir()
    (evaluation / "config.json").write_text(json.dumps({"args": {"model_name": "m"}, "finished": "now", "versions": {},
                                                        "command": "cd /x && python brain_evaluate.py --out ev"}))
    assert run(mini, tiny_models["wav2vec2"], evaluation, "--resume") == trainer.EXIT_USAGE
    assert "ev is another script's results (its config.json records a run of brain_evaluate.py), not a " \
           "brain-tuning run" in capsys.readouterr().err
    assert run(mini, tiny_models["hubert"], tmp_path / "r", "--num-epochs", "1") == 0
    (tmp_path / "r" / "stale.txt").write_text("from the earlier run")
    real_load, second = trainer.load_training_data, []

    def load_after_the_folder_is_emptied(*a, **k):  # a second job started now finds the folder still claimed
        with run_utils.output_claim(tmp_path / "r", "brain-tuning run") as busy:
            second.append(busy)
        return real_load(*a, **k)
    with monkeypatch.context() as m:
        m.setattr(trainer, "load_training_data", load_after_the_folder_is_emptied)
        assert run(mini, tiny_models["hubert"], tmp_path / "r", "--num-epochs", "1", "--overwrite") == 0  # replaced
    assert "another brain-tuning run is writing into it" in second[0]  # --overwrite emptied all but the claim
    assert not (tmp_path / "r" / "stale.txt").exists() and (tmp_path / "r" / "best" / "config.json").is_file()
    # a second run into a folder another run is writing into (a job resubmitted while the first still runs)
    files = lambda: {p.relative_to(tmp_path): p.stat().st_mtime_ns  # noqa: E731
                     for p in (tmp_path / "r").rglob("*") if p.name != run_utils.RUN_LOCK}
    before = files()
    with run_utils.output_claim(tmp_path / "r", "brain-tuning run"):
        for flag in ("--resume", "--overwrite"):
            assert run(mini, tiny_models["hubert"], tmp_path / "r", "--num-epochs", "1", flag) == trainer.EXIT_USAGE
            assert (f"{tmp_path / 'r'}: another brain-tuning run is writing into it (pid {os.getpid()} on "
                    in capsys.readouterr().err)
        assert run(mini, tiny_models["hubert"], tmp_path / "fresh", "--num-epochs", "1") == 0  # other folders: free
    assert files() == before
    # a run whose record is damaged (cut short, or "args" edited into a string): which run it is cannot be told,
    # so neither --resume nor --overwrite touches it
    record = tmp_path / "r" / "config.json"
    saved = json.loads(record.read_text())
    for damaged, message in ((record.read_text()[:200], "not valid JSON"),
                             (json.dumps({**saved, "args": "--num-epochs 1"}), "'args' should be an object")):
        record.write_text(damaged)
        before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "r").rglob("*"))
        assert run(mini, tiny_models["hubert"], tmp_path / "r", "--num-epochs", "1", "--resume") == trainer.EXIT_DATA
        err = capsys.readouterr().err
        assert f"{record}: {message}" in err and "no readable run record" in err, err
        assert run(mini, tiny_models["hubert"], tmp_path / "r", "--num-epochs", "1", "--overwrite") == trainer.EXIT_USAGE
        assert "not a brain-tuning run" in capsys.readouterr().err
        assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "r").rglob("*")) == before
        assert record.read_text() == damaged


def test_resume_after_a_kill_matches_an_uninterrupted_run(mini, tiny_models, tmp_path, capsys):
    model = tiny_models["wav2vec2"]
    args = ("--num-epochs", "3", "--micro-batch-size", "8", "--init-head", "ridge")
    # --resume with nothing to resume starts afresh and says so (a job script can always pass it)
    assert run(mini, model, tmp_path / "full", *args, "--resume") == 0
    assert f"note: nothing to resume in {tmp_path / 'full'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as killed:  # 60 windows, 4 steps per epoch: dies after 2 steps of epoch 2
        run(mini, model, tmp_path / "cut", *args, "--stop-after-steps", "6")
    assert killed.value.code == 75
    assert [r["epoch"] for r in metrics(tmp_path / "cut")] == [0, 1]
    first = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert run(mini, model, tmp_path / "cut", *args) == trainer.EXIT_USAGE  # refuses without --resume
    import shutil
    damaged = shutil.copytree(tmp_path / "cut", tmp_path / "damaged")  # e.g. a partial copy to another machine
    optim = damaged / "last" / "optim.pt"
    optim.write_bytes(optim.read_bytes()[:100])
    before = run_files(damaged)
    assert run(mini, model, damaged, *args, "--resume") == trainer.EXIT_DATA
    assert f"{optim}: checkpoint unreadable (RuntimeError: " in capsys.readouterr().err
    assert run_files(damaged) == before  # nothing rewritten
    record = damaged / "config.json"
    record.write_text(record.read_text()[:50])  # the run's record itself damaged: exit 3, the folder untouched
    before = run_files(damaged)
    for flags in (("--resume",), ()):
        assert run(mini, model, damaged, *args, *flags) == trainer.EXIT_DATA
        assert f"{record}: not valid JSON" in capsys.readouterr().err
    assert run_files(damaged) == before
    # other noise ceilings selecting as many voxels, but other ones: the head's columns would change voxels
    other = shutil.copytree(tmp_path / "cut", tmp_path / "other_nc")
    nc = np.load(mini / "subject_NCs" / "UTS01.npy")
    (tmp_path / "ncs").mkdir()
    np.save(tmp_path / "ncs" / "UTS01.npy", nc[::-1].copy())  # voxels above NC 0.4 move, their count stays
    assert (nc[::-1] > 0.4).sum() == (nc > 0.4).sum() and not np.array_equal(nc[::-1] > 0.4, nc > 0.4)
    before = run_files(other)
    assert run(mini, model, other, *args, "--nc-dir", str(tmp_path / "ncs"), "--resume") == trainer.EXIT_DATA
    err = capsys.readouterr().err
    assert f"{other / 'target_voxels.npy'}: the run was tuned on {(nc > 0.4).sum()} voxels" in err
    assert "(other ones)" in err
    assert run_files(other) == before
    assert run(mini, model, other, *args, "--loss", "spatial_corr", "--resume") == trainer.EXIT_USAGE  # another run
    assert "'loss': ('mse', 'spatial_corr')" in capsys.readouterr().err
    # more epochs: the schedule spans the saved --num-epochs, and the refusal says so and what to do instead
    assert run(mini, model, other, *args, "--num-epochs", "6", "--resume") == trainer.EXIT_USAGE
    err = capsys.readouterr().err
    assert ("'num_epochs': (3, 6)}; --resume continues a run with the settings it started with (its learning-rate "
            "warm-up and decay span the saved --num-epochs, so a run cannot be lengthened): for other settings "
            "choose another --out-dir, or --overwrite to replace it") in err
    # the dataset read from elsewhere (a job's node-local copy): resumed, said and recorded; one that lacks a
    # story of the split now is another dataset: exit 3, the run untouched
    lacking = link_tree(mini / "ds003020", tmp_path / "partial" / "ds003020",
                        without=("derivative/preprocessed_data/UTS01/souls.hf5",))
    before = run_files(other)
    assert run(mini, model, other, *args, "--data-dir", str(lacking), "--resume") == trainer.EXIT_DATA
    assert (f"--data-dir {lacking} (the run's record names {mini / 'ds003020'}): other story split than the run was "
            f"tuned on") in capsys.readouterr().err
    assert run_files(other) == before
    scratch = link_tree(mini / "ds003020", tmp_path / "scratch" / "ds003020")
    assert run(mini, model, tmp_path / "cut", *args, "--data-dir", str(scratch), "--resume") == 0
    assert f"note: resuming on the dataset at {scratch}, moved from {mini / 'ds003020'}" in capsys.readouterr().err
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["resumed"][-1]["data_dir"] == str(scratch)
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["epoch"] for r in cut] == [0, 1, 2, 3]
    # the record keeps the first start (and its ridge head) and adds the resumption
    cfg = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert cfg["started"] == first["started"] and cfg["head_init"] == first["head_init"]
    assert [r["after_epoch"] for r in cfg["resumed"]] == [1] and "finished" in cfg
    rows = (tmp_path / "cut" / "metrics.csv").read_text()
    assert run(mini, model, tmp_path / "cut", *args, "--resume") == 0  # resumed again when finished: nothing to run
    cfg = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert [r["after_epoch"] for r in cfg["resumed"]] == [1, 3] and cfg["started"] == first["started"]
    assert (tmp_path / "cut" / "metrics.csv").read_text() == rows
    for a, b in zip(full, cut):
        for key in ("train_loss", "val_loss", "val_corr", "lr"):
            if not np.isnan(a[key]):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["epoch"], key)
    assert run(mini, model, tmp_path / "cut", *args, "--lr", "1e-3", "--resume") == trainer.EXIT_USAGE  # another run


def test_a_hub_id_records_its_commit_and_a_resumed_run_keeps_the_first_starts(mini, tiny_models, tmp_path,
                                                                              monkeypatch):
    from conftest import hub_snapshot, point_hub_cache
    hub, repo = tmp_path / "hub", "toolkit-test/tiny-wav2vec2"
    point_hub_cache(monkeypatch, hub)
    hub_snapshot(hub, repo, tiny_models["wav2vec2"], "a" * 40)
    with pytest.raises(SystemExit):  # 4 steps per epoch: killed in epoch 2, after epoch 1's best/ was saved
        run(mini, repo, tmp_path / "run", "--stop-after-steps", "6")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["args"]["resolved"]["model_revision"] == "a" * 40
    assert json.loads((tmp_path / "run" / "best" / "brain_tuning.json").read_text())["base_model_revision"] == "a" * 40
    hub_snapshot(hub, repo, tiny_models["wav2vec2"], "b" * 40)  # the hub's main moves on before the resumption
    assert run(mini, repo, tmp_path / "run", "--resume") == 0
    # the weights came from last/, started from commit a: the record says so, not what main names now
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["args"]["resolved"]["model_revision"] == "a" * 40 and len(cfg["resumed"]) == 1
    assert json.loads((tmp_path / "run" / "best" / "brain_tuning.json").read_text())["base_model_revision"] == "a" * 40
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "local", "--num-epochs", "1") == 0
    assert json.loads((tmp_path / "local" / "config.json").read_text())["args"]["resolved"]["model_revision"] is None


def test_revision_pins_the_base_commit_and_a_resumption_must_name_the_same(mini, tiny_models, tmp_path, monkeypatch,
                                                                         capsys):
    from conftest import hub_snapshot, point_hub_cache
    from model_zoo import build_random_model
    hub, repo = tmp_path / "hub", "toolkit-test/tiny-wav2vec2"
    point_hub_cache(monkeypatch, hub)
    hub_snapshot(hub, repo, tiny_models["wav2vec2"], "a" * 40, refs=("main", "v1"))
    hub_snapshot(hub, repo, build_random_model("wav2vec2", tmp_path / "retrained", seed=1), "b" * 40)
    assert run(mini, repo, tmp_path / "pinned", "--num-epochs", "1", "--revision", "v1") == 0
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "local", "--num-epochs", "1") == 0
    cfg = json.loads((tmp_path / "pinned" / "config.json").read_text())["args"]
    assert cfg["revision"] == "v1" and cfg["resolved"]["model_revision"] == "a" * 40
    assert json.loads((tmp_path / "pinned" / "best" / "brain_tuning.json").read_text())["base_model_revision"] == "a" * 40
    # tuned from v1's weights (the local copy of commit a), not from main's: the same losses, epoch by epoch
    losses = [[(row["train_loss"], row["val_loss"]) for row in metrics(tmp_path / d)] for d in ("pinned", "local")]
    np.testing.assert_array_equal(*losses)  # epoch 0's train loss is NaN in both (no training yet)
    before = run_files(tmp_path / "pinned")
    assert run(mini, repo, tmp_path / "pinned", "--num-epochs", "1", "--resume") == trainer.EXIT_USAGE
    assert "'revision': ('v1', 'main')" in capsys.readouterr().err and run_files(tmp_path / "pinned") == before
    # a run recorded before --revision existed loaded main: it resumes without the flag
    old = json.loads((tmp_path / "local" / "config.json").read_text())
    del old["args"]["revision"]
    (tmp_path / "local" / "config.json").write_text(json.dumps(old))
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "local", "--num-epochs", "1", "--resume") == 0


def test_a_diverging_run_stops_with_its_checkpoints_finite(mini, tiny_models, tmp_path, capsys, monkeypatch):
    import training
    loss_of = training.brain_loss
    calls = []

    def nan_from_the_11th_micro_batch(pred, target, kind="mse"):  # in training, as an overflow in bf16 would
        calls.extend([1] if pred.requires_grad else [])
        loss = loss_of(pred, target, kind)
        return loss * float("nan") if len(calls) >= 11 else loss
    monkeypatch.setattr(training, "brain_loss", nan_from_the_11th_micro_batch)
    out = tmp_path / "r"  # 60 windows, 8 micro-batches of 8, 4 steps per epoch: micro-batch 11 is in step 6
    assert run(mini, tiny_models["wav2vec2"], out, "--micro-batch-size", "8", "--num-epochs", "3") == 5  # EXIT_DIVERGED
    err = capsys.readouterr().err
    assert (f"error: {out}: epoch 2: the gradient of optimizer step 6 is not finite (its micro-batches' losses nan, "
            f"nan). Nothing of epoch 2 was saved; best/ and last/ hold epochs 1 and 1.") in err
    assert [r["epoch"] for r in metrics(out)] == [0, 1]
    config = json.loads((out / "config.json").read_text())
    assert config["diverged"].startswith("epoch 2: the gradient of optimizer step 6") and "finished" not in config
    from safetensors.torch import load_file
    for weights in (out / "best" / "model.safetensors", out / "best" / "voxel_head.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(weights).values())


def test_a_full_disk_stops_the_run_with_exit_6_and_resume_continues_from_the_last_saved_epoch(
        mini, tiny_models, tmp_path, capsys, monkeypatch):
    import training
    torch_save, saves = torch.save, []

    def full_at_the_second_epoch(obj, path):  # optim.pt of last/; torch's zip writer names no file on a full disk
        saves.append(path)
        if len(saves) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        torch_save(obj, path)
    monkeypatch.setattr(training.torch, "save", full_at_the_second_epoch)
    out = tmp_path / "r"
    args = ("--micro-batch-size", "8", "--num-epochs", "2")
    assert run(mini, tiny_models["wav2vec2"], out, *args) == 6
    err = capsys.readouterr().err
    assert f"error: {out / 'last.tmp'}: could not be written (RuntimeError: [enforce fail" in err
    assert "run the same command again (brain_trainer_story.py: with --resume" in err
    assert [r["epoch"] for r in metrics(out)] == [0, 1]  # epoch 1 saved whole, no partial checkpoint beside it
    assert json.loads((out / "last" / "state.json").read_text())["epoch"] == 1 and not (out / "last.tmp").exists()
    monkeypatch.undo()
    assert run(mini, tiny_models["wav2vec2"], out, *args, "--resume") == 0
    assert [r["epoch"] for r in metrics(out)] == [0, 1, 2]


def test_running_out_of_device_memory_names_the_micro_batch_to_lower(mini, tiny_models, tmp_path, capsys,
                                                                      monkeypatch):
    import training

    def out_of_memory(pred, target, kind="mse"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(training, "brain_loss", out_of_memory)
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "r", "--micro-batch-size", "8") == trainer.EXIT_USAGE
    assert ("error: the device ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB): lower "
            "--micro-batch-size (now 8): each optimizer step still averages --batch-size 16 windows") in \
        capsys.readouterr().err


def test_clear_errors(mini, tiny_models, tmp_path, capsys):
    model = tiny_models["wav2vec2"]
    assert run(mini, model, tmp_path / "a", "--nc-threshold", "0.999") == trainer.EXIT_DATA
    assert "no voxel has a noise ceiling above 0.999" in capsys.readouterr().err
    np.save(tmp_path / "nc.npy", np.ones(7) * 0.5)
    assert run(mini, model, tmp_path / "b", "--nc-file", str(tmp_path / "nc.npy")) == trainer.EXIT_DATA
    assert "nc.npy: noise ceiling has 7 values but subject UTS01 has 120 voxels" in capsys.readouterr().err
    assert run(mini, model, tmp_path / "c", "--train-stories", "legacy", "naked") == trainer.EXIT_DATA
    assert "--train-stories names ['legacy', 'naked'], not stories of this dataset" in capsys.readouterr().err
    assert run(mini, model, tmp_path / "c", "--subject", "UTS04", "--train-stories", "life", "--val-stories",
               "stagefright") == trainer.EXIT_DATA  # a story of the dataset that UTS04 lacks
    assert "none of the requested training stories has responses" in capsys.readouterr().err
    assert run(mini, model, tmp_path / "c", "--subject", "UTS04", "--val-stories", "life") == trainer.EXIT_DATA
    assert "UTS04 has none of the validation stories ['life']" in capsys.readouterr().err
    assert run(mini, str(tmp_path / "nomodel"), tmp_path / "d") == trainer.EXIT_USAGE
    assert "cannot load a model config" in capsys.readouterr().err
    from conftest import link_tree
    cut = link_tree(mini, tmp_path / "cut", without=("ds003020/stimuli/life.wav",))
    sf.write(cut / "ds003020" / "stimuli" / "life.wav", np.zeros(16000 * 5, np.float32), 16000)
    assert run(cut, model, tmp_path / "e") == trainer.EXIT_DATA  # not trained on 5 s of audio and silence
    assert "stimuli/life.wav: audio lasts 5.00 s" in capsys.readouterr().err and not (tmp_path / "e").exists()
    # story-swap pairs stories within a split: one validation story has no partner (was a traceback, exit 1)
    assert run(mini, model, tmp_path / "f", "--target-control", "story-swap", "--val-stories", "life") == 3
    assert "but the validation split has 1: ['life']" in capsys.readouterr().err and not (tmp_path / "f").exists()


def test_ddp_two_cpu_processes(mini, tiny_models, tmp_path):
    out = tmp_path / "ddp"
    res = torchrun_trainer(mini, tiny_models["wav2vec2"], out, tmp_path, "--micro-batch-size", "2", "--num-epochs", "1",
                           "--init-head", "ridge")
    # the trainer checks after each epoch that both processes hold identical parameters (exit 1 otherwise)
    assert res.returncode == 0, res.stderr[-3000:]
    resolved = json.loads((out / "config.json").read_text())["args"]["resolved"]
    assert resolved["world_size"] == 2 and resolved["micro_batch_size"] == 2 and resolved["grad_accum_steps"] == 4
    assert resolved["layerdrop"] > 0  # the tiny wav2vec2 skips blocks at random, as the real base models do
    per_process = -(-resolved["train_windows"] // 2)
    micro_batches = -(-per_process // 2)
    assert micro_batches % 4  # the epoch ends on a partial accumulation step
    assert (out / "best" / "model.safetensors").is_file()
    assert res.stdout.count("epoch 1:") == 1  # only rank 0 reports and writes


def test_ddp_processes_stop_together_when_the_gradient_diverges(mini, tiny_models, tmp_path):
    # a learning rate of 1e30 overflows the weights at the first step: the all-reduced gradient of the second is NaN
    # on both processes, so both stop there (neither waits at a collective for the other)
    out = tmp_path / "ddp"
    res = torchrun_trainer(mini, tiny_models["wav2vec2"], out, tmp_path, "--micro-batch-size", "2", "--num-epochs", "2",
                           "--lr", "1e30", "--head-lr", "1e30")
    assert res.returncode != 0 and "exitcode  : 5" in res.stderr, res.stderr[-3000:]  # torchrun reports rank 0's 5
    assert res.stderr.count("the gradient of optimizer step 2 is not finite") == 1  # rank 0 alone reports
    assert "diverged" in json.loads((out / "config.json").read_text()) and not (out / "best").exists()


def test_ridge_head_init_starts_below_the_random_head(mini, tiny_models, tmp_path, capsys):
    assert run(mini, tiny_models["hubert"], tmp_path / "rand", "--num-epochs", "1") == 0
    assert run(mini, tiny_models["hubert"], tmp_path / "ridge", "--num-epochs", "1", "--init-head", "ridge",
               "--freeze-layers", "1") == 0
    assert "freezes every transformer layer" not in capsys.readouterr().err  # one of two blocks: no note
    assert metrics(tmp_path / "ridge")[0]["val_loss"] < metrics(tmp_path / "rand")[0]["val_loss"]
    cfg = json.loads((tmp_path / "ridge" / "config.json").read_text())
    assert cfg["args"]["freeze_layers"] == 1
    # only the top block (and the head) were trained
    assert cfg["args"]["resolved"]["trainable_backbone_params"] < json.loads(
        (tmp_path / "rand" / "config.json").read_text())["args"]["resolved"]["trainable_backbone_params"]
    assert run(mini, tiny_models["hubert"], tmp_path / "lr", "--init-head", "ridge", "--head-rank", "8") == 2
    # every block frozen: a head-only run, allowed and said; nothing of the backbone trains
    assert run(mini, tiny_models["hubert"], tmp_path / "head", "--num-epochs", "1", "--freeze-layers", "2") == 0
    assert ("note: --freeze-layers 2 freezes every transformer layer: only the voxel head is tuned\n"
            in capsys.readouterr().err)
    assert json.loads((tmp_path / "head" / "config.json").read_text())["args"]["resolved"][
        "trainable_backbone_params"] == 0


def test_a_best_epoch_no_better_than_the_start_is_flagged(mini, tiny_models, tmp_path, capsys):
    # rates 0: epoch 1 is the untouched start, so its validation loss equals epoch 0's; best/ still holds it
    assert run(mini, tiny_models["hubert"], tmp_path / "r", "--num-epochs", "1", "--lr", "0", "--head-lr", "0") == 0
    m = metrics(tmp_path / "r")
    assert m[1]["val_loss"] == pytest.approx(m[0]["val_loss"], rel=1e-6)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["best_epoch"] == 1 and cfg["best_beats_initial"] is False
    assert (f"warning: no tuned epoch has a lower validation loss than epoch 0, the random initial head "
            f"({m[0]['val_loss']:.4f}): best/ holds epoch 1") in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "best" / "brain_tuning.json").read_text())["epoch"] == 1
    # a decoupled-target control is not expected to improve: the warning says so
    assert run(mini, tiny_models["hubert"], tmp_path / "c", "--num-epochs", "1", "--lr", "0", "--head-lr", "0",
               "--target-control", "block-shuffle") == 0
    err = capsys.readouterr().err
    assert "warning: no tuned epoch" in err and "expected of a --target-control run" in err


def test_bf16_on_cpu_is_really_bf16(mini, tiny_models, tmp_path):
    # --precision bf16 must not silently run fp32 on a CPU (it autocasts; fast where the CPU has native bf16)
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "fp32", "--num-epochs", "1", "--precision", "fp32") == 0
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "bf16", "--num-epochs", "1", "--precision", "bf16") == 0
    fp32, bf16 = metrics(tmp_path / "fp32"), metrics(tmp_path / "bf16")
    assert bf16[-1]["val_loss"] != fp32[-1]["val_loss"]
    assert bf16[-1]["val_loss"] == pytest.approx(fp32[-1]["val_loss"], rel=5e-2)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["args"]["resolved"]["precision"] == "bf16"


def test_several_subjects_tune_one_backbone_with_each_subjects_voxels_in_its_own_columns(mini, tiny_models, tmp_path):
    import models
    # learning rates 0: the saved head is the ridge start, which is fitted per target on the same pooled features,
    # so each subject's block must equal that subject's own run's head
    flags = ["--init-head", "ridge", "--lr", "0", "--head-lr", "0", "--num-epochs", "1"]
    model = tiny_models["wav2vec2"]
    heads = {}
    for name, subjects in (("both", ["UTS01", "UTS02"]), ("UTS01", ["UTS01"]), ("UTS02", ["UTS02"])):
        argv = ["--data-dir", str(mini / "ds003020"), "--subject", *subjects, "--model-name", model,
                "--nc-dir", str(mini / "subject_NCs"), "--out-dir", str(tmp_path / name), "--batch-size", "16",
                "--no-progress", *flags]
        assert trainer.main(argv) == 0
        heads[name] = models.load_head(tmp_path / name / "best").net
    cfg = json.loads((tmp_path / "both" / "config.json").read_text())
    per_subject = cfg["args"]["resolved"]["voxels"]["subjects"]
    start = 0
    for s in ("UTS01", "UTS02"):
        expected = np.flatnonzero(np.load(mini / "subject_NCs" / f"{s}.npy") > 0.4)
        np.testing.assert_array_equal(np.load(tmp_path / "both" / f"target_voxels_{s}.npy"), expected)
        assert per_subject[s]["columns"] == [start, start + len(expected)]
        cols = slice(start, start + len(expected))
        np.testing.assert_allclose(heads["both"].weight[cols].detach(), heads[s].weight.detach(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(heads["both"].bias[cols].detach(), heads[s].bias.detach(), rtol=0, atol=1e-6)
        start += len(expected)
    assert cfg["args"]["resolved"]["n_targets"] == start == heads["both"].out_features
    assert cfg["args"]["subject"] == ["UTS01", "UTS02"]
    assert json.loads((tmp_path / "both" / "best" / "brain_tuning.json").read_text())["subject"] == ["UTS01", "UTS02"]
    assert json.loads((tmp_path / "UTS01" / "config.json").read_text())["args"]["subject"] == "UTS01"
    assert not (tmp_path / "both" / "target_voxels.npy").exists()


def test_several_subjects_use_the_stories_all_have_and_per_subject_roi_files(mini, tiny_models, tmp_path, capsys):
    model = tiny_models["wav2vec2"]
    rois = [str(mini / "rois" / f"{s}.json") for s in ("UTS01", "UTS04")]

    def run_subjects(out, *extra):
        return trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "4", "--model-name", model,
                             "--nc-dir", str(mini / "subject_NCs"), "--out-dir", str(tmp_path / out),
                             "--batch-size", "16", "--num-epochs", "1", "--no-progress", *extra])
    assert run_subjects("r", "--roi-file", *rois, "--roi", "auditory") == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["args"]["stories"]["val"] == ["stagefright"]  # UTS04 has no "life"
    assert cfg["args"]["stories"]["lacking_subjects"] == {"life": ["UTS04"]}
    err = capsys.readouterr().err
    assert "not every one of UTS01+UTS04 has responses for requested stories" in err
    assert "(only some lack them: life: UTS04)" in err
    for s, roi_file in zip(("UTS01", "UTS04"), rois):
        nc = np.load(mini / "subject_NCs" / f"{s}.npy")
        expected = sorted(set(np.flatnonzero(nc > 0.4)) & set(json.loads(Path(roi_file).read_text())["auditory"]))
        np.testing.assert_array_equal(np.load(tmp_path / "r" / f"target_voxels_{s}.npy"), expected)
    assert run_subjects("r", "--roi-file", *rois, "--roi", "auditory", "--resume") == 0  # the same run: resumable
    assert trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS04", "UTS01", "--model-name", model,
                         "--nc-dir", str(mini / "subject_NCs"), "--out-dir", str(tmp_path / "r"), "--batch-size", "16",
                         "--num-epochs", "1", "--no-progress", "--roi-file", *rois[::-1], "--roi", "auditory",
                         "--resume"]) == trainer.EXIT_USAGE  # the other column order is another run
    assert "describes a different run (setting: (saved, now)): {'subject': (['UTS01', 'UTS04'], ['UTS04', 'UTS01'])}" \
        in capsys.readouterr().err
    # a story no subject has is a typo, an error before any output; one some subject lacks was skipped above
    assert run_subjects("bad", "--train-stories", "souls", "avtar", "--val-stories", "stagefright") == trainer.EXIT_DATA
    assert "--train-stories names ['avtar'], not stories of this dataset" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    for extra, message in (
            (["--roi-file", rois[0], "--roi", "auditory"], "--roi-file: one file per --subject, in its order: "
                                                           "2 subjects, 1 files"),
            (["--nc-file", str(mini / "subject_NCs" / "UTS01.npy")], "--nc-file: one file per --subject"),
            (["--targets-from", str(tmp_path / "t.npz")], "--targets-from replaces the fMRI targets: give one --subject")):
        assert run_subjects("bad", *extra) == trainer.EXIT_USAGE
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()  # refused before any output
    assert trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "1", "--model-name", model,
                         "--out-dir", str(tmp_path / "bad")]) == trainer.EXIT_USAGE
    assert "--subject names a subject twice: ['UTS01', 'UTS01']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "S2", "--model-name", model,
                      "--out-dir", str(tmp_path / "bad")])
    assert stopped.value.code == trainer.EXIT_USAGE
    assert "--subject: subject must look like 'UTS03' or '3', found 'S2'" in capsys.readouterr().err


def test_batch_layout_splits_the_batch_over_processes_and_micro_batches():
    from argparse import Namespace
    assert trainer.batch_layout(Namespace(batch_size=16, micro_batch_size=None), 1) == (16, 1)
    assert trainer.batch_layout(Namespace(batch_size=16, micro_batch_size=2), 2) == (2, 4)
    with pytest.raises(trainer.Stop, match="--batch-size 6 is not divisible by 4 processes") as stop:
        trainer.batch_layout(Namespace(batch_size=6, micro_batch_size=None), 4)
    assert stop.value.code == trainer.EXIT_USAGE
    with pytest.raises(trainer.Stop, match="per-process batch 8 is not a multiple of --micro-batch-size 3"):
        trainer.batch_layout(Namespace(batch_size=16, micro_batch_size=3), 2)


def test_early_stopping_patience_and_a_non_finite_validation_loss_never_best(mini, tiny_models, tmp_path, monkeypatch):
    import training
    real_evaluate, real_epoch, seeds = training.evaluate, training.train_one_epoch, []
    scripted = iter([1.0, float("nan"), 0.9, 0.95, 0.97, 0.5, 0.4])  # epoch 0, 1, 2, ...

    def scripted_evaluate(*a, **k):
        return {**real_evaluate(*a, **k), "val_loss": next(scripted)}

    def seeded_epoch(*a, **k):
        seeds.append(torch.initial_seed())
        return real_epoch(*a, **k)
    monkeypatch.setattr(training, "evaluate", scripted_evaluate)
    monkeypatch.setattr(training, "train_one_epoch", seeded_epoch)
    assert run(mini, tiny_models["wav2vec2"], tmp_path / "r", "--num-epochs", "6", "--patience", "2") == 0
    # epoch 1 (NaN) is no improvement, epoch 2 the best, epochs 3 and 4 the two without improvement: stop
    assert [m["epoch"] for m in metrics(tmp_path / "r")] == [0, 1, 2, 3, 4]
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["best_epoch"], cfg["best_val_loss"], cfg["stopped_early"]) == (2, 0.9, True)
    assert json.loads((tmp_path / "r" / "best" / "brain_tuning.json").read_text())["epoch"] == 2
    assert len(set(seeds)) == 4  # dropout and masks seeded per epoch, not the same draws every epoch
    resolved = cfg["args"]["resolved"]
    assert resolved["train_windows"] % 16, "a window count divisible by the batch cannot tell floor from ceil"
    assert resolved["steps_per_epoch"] == -(-resolved["train_windows"] // 16)  # the last, partial batch is a step
