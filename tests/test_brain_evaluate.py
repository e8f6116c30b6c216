"""brain_evaluate.py end to end on the miniature: results, caches, resumption, --compare, refusals."""
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import alignment as al
import run_utils
from run_utils import array_digest
import brain_evaluate
from data_utils import ENCODING_TRAIN_STORIES, Ds003020


def _eval(mini, model, out, *extra):
    return brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name", model,
                                "--out", str(out), "--nc-dir", str(mini / "subject_NCs"), "--roi-file",
                                str(mini / "rois" / "UTS02.json"), "--stride", "0.5", "--context", "3",
                                "--no-progress", "--cache-dir", str(out.parent / "cache"), *extra])


def _group_as_two_subjects(tmp_path, folders: tuple[str, str]) -> dict:
    """--subject-results over the two UTS02 result folders and their copies relabelled UTS03: group.json."""
    for d in folders:
        shutil.copytree(tmp_path / d, tmp_path / "UTS03" / d)
        s = json.loads((tmp_path / "UTS03" / d / "summary.json").read_text())
        (tmp_path / "UTS03" / d / "summary.json").write_text(json.dumps({**s, "subject": "UTS03"}))
    assert brain_evaluate.main(["--subject-results", *[str(tmp_path / d) for d in folders], "--subject-results",
                                *[str(tmp_path / "UTS03" / d) for d in folders], "--out", str(tmp_path / "group")]) == 0
    return json.loads((tmp_path / "group" / "group.json").read_text())


def test_brain_evaluate_end_to_end_cache_and_compare(mini, tiny_models, tmp_path, capsys, monkeypatch):
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "a", "--low-level") == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["layers"] == [1, 2] and set(summary["upper_middle_mean"]) >= {"all", "auditory", "language"}
    # the encoding model's training stories, for --compare's check: every non-test story the subject has
    assert summary["train_stories"] == json.loads((tmp_path / "a" / "config.json").read_text())["resolved"]["train_stories"]
    assert "wheretheressmoke" not in summary["train_stories"] and len(summary["train_stories"]) >= 2
    assert "low_level_impact" in summary["per_layer"]["2"]
    z = np.load(tmp_path / "a" / "layer_2.npz")
    v = Ds003020(mini / "ds003020").n_voxels("UTS02")
    assert z["r"].shape == z["cc_norm"].shape == (v,)
    assert np.all(np.isnan(z["cc_norm"][z["cc_max"] <= 0.1])) and not np.isinf(z["cc_norm"]).any()
    # the ceiling it was normalised by, for --compare's check: the noise-ceiling file's values
    nc = np.load(mini / "subject_NCs" / "UTS02.npy").astype(np.float64)
    assert summary["noise_ceiling_digest"] == array_digest(nc)
    # and its feature sampling, for the same check: the flags given, the TR the grids were simulated with
    assert (summary["stride"], summary["context"], summary["tr_grids"]) == (0.5, 3.0, "simulated, TR 2.0045 s")
    assert (summary["pooling"], summary["whisper_mode"]) == ("last", None)  # --pooling auto, not a Whisper model
    rois = json.loads((mini / "rois" / "UTS02.json").read_text())
    assert set(summary["roi_digests"]) == {"all", *(r for r in rois if not r.startswith("_"))}
    assert summary["roi_digests"]["language"] == array_digest(np.asarray(rois["language"], np.int64))
    resolved = json.loads((tmp_path / "a" / "config.json").read_text())["resolved"]
    assert resolved["feature_cache_hits"] == 0
    assert resolved["batch_size"] == 1 and resolved["device"] == "cpu"  # one window at a time on a CPU
    with np.load(tmp_path / "a" / "layer_1.npz") as z1:  # below the upper-middle layer: no ROI predictions kept
        assert "test_predictions_roi" not in z1.files and "cc_norm" in z1.files
    assert resolved["ridge"]["alphas"] == "logspace(1, 4, 15)"  # the encoding models' grid, the residual model's:
    assert resolved["residual_ridge"] == {"score": "r2", "alphas": "logspace(-3, 4, 29)"}
    for f in ("table.md", "alignment_by_layer.png"):
        assert (tmp_path / "a" / f).is_file()
    assert summary["low_level_groups"] == ["mel", "articulatory", "diphones", "triphones"]
    # a subset of the low-level groups: recorded, labelled, and never tabled beside impacts of other groups
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "m", "--low-level", "--low-level-groups", "articulatory",
                 "mel", "mel") == 0  # recorded in column order, once each
    sub = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert sub["low_level_groups"] == ["mel", "articulatory"]
    with np.load(tmp_path / "m" / "layer_2.npz") as zm:  # kept in the upper-middle layer for the intervals
        assert zm["test_predictions_roi_residual"].shape == zm["test_predictions_roi"].shape
    # fewer groups regressed out leave other residual features (the random model's impacts are undefined: below zero)
    residual_cc = [s["per_layer"]["2"]["rois_residual"]["all"]["cc_norm"] for s in (sub, summary)]
    assert np.isfinite(residual_cc).all() and residual_cc[0] != residual_cc[1]
    assert "| low-level impact % (mel, articulatory) |" in (tmp_path / "m" / "table.md").read_text()
    capsys.readouterr()
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "m"), "--out",
                                str(tmp_path / "mixed")]) == 2
    err = capsys.readouterr().err
    assert "different --low-level-groups" in err and "m: mel, articulatory" in err and not (tmp_path / "mixed").exists()
    # nor beside impacts whose residual model chose its alphas otherwise (a result written before 0ae366b)
    assert summary["low_level_residual_model"] == "r2 over logspace(-3, 4, 29)"
    shutil.copytree(tmp_path / "a", tmp_path / "old")
    old = json.loads((tmp_path / "old" / "summary.json").read_text())
    del old["low_level_residual_model"]
    (tmp_path / "old" / "summary.json").write_text(json.dumps(old))
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "old"), "--out",
                                str(tmp_path / "mixed")]) == 2
    err = capsys.readouterr().err
    assert "residual models that chose their alphas differently" in err and "old: corr over logspace(1, 4, 15)" in err
    assert not (tmp_path / "mixed").exists()
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "n", "--low-level-groups", "mel") == 2
    assert "add --low-level" in capsys.readouterr().err
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "b") == 0  # same model: every story from the cache
    assert json.loads((tmp_path / "b" / "config.json").read_text())["resolved"]["feature_cache_hits"] == 6
    np.testing.assert_allclose(np.load(tmp_path / "b" / "layer_2.npz")["r"], z["r"], atol=1e-6)
    # a re-run over a finished result (other settings) that dies in an encoding model leaves no summary.json
    shutil.copytree(tmp_path / "b", tmp_path / "killed")
    fit, calls = al.fit_and_score, []

    def dies_in_the_second_layer(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(*a, **k)
    monkeypatch.setattr(al, "fit_and_score", dies_in_the_second_layer)
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "killed", "--nc-floor", "0.2") == 130  # Ctrl-C: a line, 130
    monkeypatch.undo()
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "killed"), "--out",
                                str(tmp_path / "bad")]) == 2
    capsys.readouterr()
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), "--out", str(tmp_path / "bad")]) == 2  # one folder
    assert (f"error: --compare sets result folders against the first: give at least 2, found 1 ({tmp_path / 'a'})\n"
            == capsys.readouterr().err and not (tmp_path / "bad").exists())
    # the same low-level result twice; the random tiny model's language alignment is below zero (its impact was
    # read as a signed percentage before): undefined, in the summary and in the resamples that keep it below zero
    assert summary["upper_middle_mean"]["language"] < 0 and np.isnan(summary["upper_middle_low_level_impact"]["language"])
    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "a2"), "--out", str(tmp_path / "c2")]) == 0
    boot2 = json.loads((tmp_path / "c2" / "comparison.json").read_text())["bootstrap"]
    undefined = boot2["low_level_impact_undefined_samples"]["a2 - a"]["language"]
    assert 0 < undefined <= 1000 and np.isnan(boot2["low_level_impact_difference_ci95"]["a2 - a"]["language"]).all()
    assert np.isnan(boot2["low_level_impact_share_of_samples_above"]["a2 - a"]["language"])
    assert (f"undefined in {undefined} of 1000 samples (full alignment not positive)"
            in (tmp_path / "c2" / "comparison.md").read_text())
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert table["change_vs_first_pct"]["b"]["all"] == pytest.approx(0.0, abs=1e-6)
    boot = table["bootstrap"]  # the same model twice: every bootstrap sample agrees
    assert set(boot["rois"]) >= {"auditory", "language"} and boot["n_boot"] == 1000
    lo, hi = boot["difference_ci95"]["b - a"]["language"]
    assert abs(lo) < 1e-5 and abs(hi) < 1e-5
    (tmp_path / "b" / "test_responses_roi.npz").unlink()  # e.g. a result from before the intervals existed
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp2")]) == 0
    assert "No bootstrap intervals: a folder has no test_responses_roi.npz" in (tmp_path / "cmp2" / "comparison.md").read_text()
    assert z["test_predictions_roi"].shape == (len(np.load(tmp_path / "a" / "test_responses_roi.npz")["responses"]),
                                               len(z["roi_voxels"]))
    assert (tmp_path / "cmp" / "alignment_by_layer.png").is_file()
    # across subjects, on real result folders: the same pair relabelled as a second subject changes nothing
    group = _group_as_two_subjects(tmp_path, ("a", "b"))
    assert group["subjects"] == ["UTS02", "UTS03"] and set(group["rois"]) >= {"auditory", "language"}
    assert group["upper_middle_cc_norm"]["a"]["language"]["mean"] == pytest.approx(summary["upper_middle_mean"]["language"])
    assert group["change_vs_first_pct"]["b"]["language"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert "low_level_impact_pct" not in group  # b was evaluated without --low-level
    # a result folder whose layer file is damaged or missing: exit 2 naming it, nothing written
    shutil.copytree(tmp_path / "a", tmp_path / "cut")
    layer = tmp_path / "cut" / "layer_2.npz"
    layer.write_bytes(layer.read_bytes()[:200])
    capsys.readouterr()
    for says in ("damaged result arrays", "missing from its result folder"):
        assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "cut"), "--out",
                                    str(tmp_path / "bad")]) == 2
        assert f"{layer}: {says}" in capsys.readouterr().err and not (tmp_path / "bad").exists()
        layer.unlink(missing_ok=True)
    assert brain_evaluate.read_layer_entry(tmp_path / "a" / "layer_2.npz", "another fit") is None
    (tmp_path / "cut" / "layer_1.npz").write_bytes(b"PK\x03\x04 cut short")  # a re-run fits that layer again
    assert brain_evaluate.read_layer_entry(tmp_path / "cut" / "layer_1.npz", "any key") is None
    # a folder that is not a result: exit 2 naming the missing file, nothing written
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path), "--out", str(tmp_path / "bad")]) == 2
    assert f"{tmp_path / 'summary.json'}: not a brain_evaluate.py result folder" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text('{"per_layer": {}}')
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "broken"), "--out",
                                str(tmp_path / "bad")]) == 2
    assert "missing ['upper_middle_mean']" in capsys.readouterr().err
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "bad"),
                                "--model-name", "some/model", "--subject", "UTS02"]) == 2
    assert "--compare only reads earlier result folders; --subject, --model-name would be ignored" in capsys.readouterr().err
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "bad"),
                                "--revision", "v1"]) == 2
    assert "--compare only reads earlier result folders; --revision would be ignored" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # bf16 features are a different cache entry (never served for fp32), and close to the fp32 ones
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "bf16", "--precision", "bf16") == 0
    resolved = json.loads((tmp_path / "bf16" / "config.json").read_text())["resolved"]
    assert resolved["precision"] == "bf16" and resolved["feature_cache_hits"] == 0
    r_bf16 = np.load(tmp_path / "bf16" / "layer_2.npz")["r"]
    assert not np.array_equal(r_bf16, z["r"]) and np.corrcoef(r_bf16, z["r"])[0, 1] > 0.9


def test_running_out_of_device_memory_names_the_batch_to_lower(mini, tiny_models, tmp_path, monkeypatch, capsys):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
    monkeypatch.setattr(brain_evaluate, "extract_story_features_together", out_of_memory)
    assert _eval(mini, tiny_models["hubert"], tmp_path / "e", "--batch-size", "4") == 2
    assert ("error: the device ran out of memory (CUDA out of memory. Tried to allocate 1.50 GiB): lower --batch-size "
            "(windows per forward pass, now 4): the same features up to float rounding") in capsys.readouterr().err


def test_a_killed_evaluation_resumes_from_its_finished_layers(mini, tiny_models, tmp_path, monkeypatch, capsys):
    # at 95k voxels a layer's ridge takes ~17 min on a CPU: a rerun after a kill refits only what did not finish,
    # and reads back a layer only when its features, responses, settings and code are the same
    model = tiny_models["wav2vec2"]
    assert _eval(mini, model, tmp_path / "whole", "--low-level") == 0
    fit, calls = al.fit_and_score, []

    def counted(*a, **k):
        calls.append(1)
        if dies and len(calls) == 3:  # --low-level: two fits per layer, so the third is layer 2's
            raise KeyboardInterrupt
        return fit(*a, **k)
    monkeypatch.setattr(al, "fit_and_score", counted)
    dies = True
    assert _eval(mini, model, tmp_path / "k", "--low-level") == run_utils.EXIT_INTERRUPTED
    assert (tmp_path / "k" / "layer_1.npz").is_file() and not (tmp_path / "k" / "layer_2.npz").exists()
    dies, calls[:] = False, []
    assert _eval(mini, model, tmp_path / "k", "--low-level") == 0
    assert len(calls) == 2  # layer 2 only
    assert "layer(s) [1] read back from an earlier run with the same inputs" in capsys.readouterr().err
    resolved = json.loads((tmp_path / "k" / "config.json").read_text())["resolved"]
    assert resolved["layers_reused"] == [1]
    whole, resumed = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("whole", "k"))
    assert resumed["per_layer"] == whole["per_layer"] and resumed["upper_middle_mean"] == whole["upper_middle_mean"]
    for layer in (1, 2):
        with np.load(tmp_path / "whole" / f"layer_{layer}.npz") as a, np.load(tmp_path / "k" / f"layer_{layer}.npz") as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    # anything the fit reads changed: fitted again
    calls[:] = []
    assert _eval(mini, model, tmp_path / "k", "--low-level", "--nc-floor", "0.2") == 0  # a setting
    assert len(calls) == 4 and json.loads((tmp_path / "k" / "config.json").read_text())["resolved"]["layers_reused"] == []
    calls[:] = []
    assert _eval(mini, model, tmp_path / "k", "--low-level", "--nc-floor", "0.2", "--context", "2") == 0  # features
    assert len(calls) == 4
    calls[:] = []
    assert _eval(mini, model, tmp_path / "k", "--low-level", "--nc-floor", "0.2", "--context", "2",
                 "--low-level-groups", "mel") == 0  # the low-level features
    assert len(calls) == 4
    calls[:] = []
    assert _eval(mini, model, tmp_path / "k", "--low-level", "--nc-floor", "0.2", "--context", "2",
                 "--low-level-groups", "mel", "--train-stories", *ENCODING_TRAIN_STORIES[:3]) == 0  # the responses
    assert len(calls) == 4
    calls[:] = []
    monkeypatch.setattr(brain_evaluate, "FIT_CODE", brain_evaluate.FIT_CODE + ("features.py",))  # the code
    assert _eval(mini, model, tmp_path / "k", "--low-level", "--nc-floor", "0.2", "--context", "2",
                 "--low-level-groups", "mel", "--train-stories", *ENCODING_TRAIN_STORIES[:3]) == 0
    assert len(calls) == 4
    calls[:] = []
    nc_dir = tmp_path / "nc"
    shutil.copytree(mini / "subject_NCs", nc_dir)
    np.save(nc_dir / "UTS02.npy", np.load(nc_dir / "UTS02.npy") * 0.9)  # the noise ceiling cc_norm divides by
    assert _eval(mini, model, tmp_path / "k", "--low-level", "--nc-floor", "0.2", "--context", "2",
                 "--low-level-groups", "mel", "--train-stories", *ENCODING_TRAIN_STORIES[:3], "--nc-dir", str(nc_dir)) == 0
    assert len(calls) == 4


def test_the_test_story_leaves_the_default_training_stories_and_upper_middle_layers_are_averaged(
        mini, tiny_models, tmp_path, monkeypatch, capsys):
    # a default training list holding the test story: the encoding model never trains on it. Two upper-middle
    # layers (as a 12-layer model's 7, 8 and 10): their summary is the mean of both
    monkeypatch.setattr(brain_evaluate.du, "ENCODING_TRAIN_STORIES", [*ENCODING_TRAIN_STORIES, "wheretheressmoke"])
    monkeypatch.setattr(al, "upper_middle_layers", lambda layers, n_layers: list(layers))
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "a") == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    have = Ds003020(mini / "ds003020").stories("UTS02")
    assert summary["train_stories"] == [s for s in ENCODING_TRAIN_STORIES if s in have]
    # the default stories the subject lacks are skipped, and said (as the trainer says it); they were skipped silently
    lacking = [s for s in ENCODING_TRAIN_STORIES if s not in have]
    assert (f"note: UTS02 has no responses for {len(lacking)} of the default training stories ({', '.join(lacking[:3])}"
            f" ...); the encoding models are fitted on the other {len(summary['train_stories'])}") in capsys.readouterr().err
    assert summary["upper_middle_layers"] == [1, 2]
    for roi, mean in summary["upper_middle_mean"].items():
        per_layer = [summary["per_layer"][l]["rois"][roi]["cc_norm"] for l in ("1", "2")]
        assert per_layer[0] != per_layer[1] and mean == pytest.approx(np.mean(per_layer))


def test_data_efficiency_curves_and_stories_to_match(mini, tiny_models, tmp_path, capsys):
    # encoding models refitted on n drawn training stories; the full count is the main fit itself, and --compare
    # says how many stories each model needs for the first model's full-data alignment
    n_train = len([s for s in ENCODING_TRAIN_STORIES if s in Ds003020(mini / "ds003020").stories("UTS02")])
    flags = ("--data-efficiency", "1", "2", str(n_train), "--layers", "1", "2")
    for model, out, repeats in ((tiny_models["wav2vec2"], "w", ()), (tiny_models["hubert"], "h", ("3",))):
        # the default draws (3 per N) for one model, the same number given for the other
        assert _eval(mini, model, tmp_path / out, *flags, *(("--data-efficiency-repeats", *repeats) if repeats
                                                            else ())) == 0
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    eff = summary["data_efficiency"]
    assert eff["counts"] == [1, 2, n_train] and eff["n_train_stories"] == n_train and eff["layers"] == [2]
    assert eff["repeats"] == 3  # the default
    assert [d["n"] for d in eff["draws"]] == [1, 1, 1, 2, 2, 2, n_train]
    full = eff["draws"][-1]["rois"]
    for roi, value in summary["upper_middle_mean"].items():  # all the stories: the main fit's value
        assert full[roi] == pytest.approx(value, abs=1e-9)
        one = [d["rois"][roi] for d in eff["draws"] if d["n"] == 1]
        assert eff["mean"][roi][0] == pytest.approx(np.mean(one)) and eff["sd"][roi][0] == pytest.approx(np.std(one))
        assert np.mean(one) != pytest.approx(np.median(one))  # three draws: a mean, not a median
    assert "data efficiency: upper-middle mean cc_norm" in (tmp_path / "w" / "table.md").read_text()
    assert (tmp_path / "w" / "data_efficiency.png").is_file()
    hubert = json.loads((tmp_path / "h" / "summary.json").read_text())["data_efficiency"]
    assert [d["stories"] for d in hubert["draws"]] == [d["stories"] for d in eff["draws"]]  # the same draws
    capsys.readouterr()
    assert brain_evaluate.main(["--compare", str(tmp_path / "w"), str(tmp_path / "h"), "--out", str(tmp_path / "c")]) == 0
    cmp = json.loads((tmp_path / "c" / "comparison.json").read_text())["data_efficiency"]
    assert cmp["counts"] == [1, 2, n_train] and cmp["reference"] == "w"
    for roi in summary["upper_middle_mean"]:
        curve = cmp["curves"]["h"][roi]
        assert cmp["stories_to_match"]["h"][roi] == pytest.approx(al.stories_to_match(
            [1, 2, n_train], curve, summary["upper_middle_mean"][roi]), nan_ok=True)
        own = cmp["stories_to_match"]["w"][roi]  # the reference reaches its own full-data value by n_train at the latest
        assert np.isnan(summary["upper_middle_mean"][roi]) or 1 <= own <= n_train
    assert "Training stories each model needs for the alignment w reaches" in (tmp_path / "c" / "comparison.md").read_text()
    assert (tmp_path / "c" / "data_efficiency.png").is_file()
    # across subjects: the same pair relabelled as a second subject gives the same stories, SEM 0
    group = _group_as_two_subjects(tmp_path, ("w", "h"))["stories_to_match"]
    for roi, own in cmp["stories_to_match"]["h"].items():
        e = group["h"][roi]
        assert list(e["per_subject"]) == ["UTS02", "UTS03"]
        if np.isfinite(own):
            assert e["mean"] == pytest.approx(own) and e["sem"] == pytest.approx(0.0)
        else:
            assert np.isnan(e["mean"])
    assert "Training stories each model needs for w's full-data alignment" in (tmp_path / "group" / "group.md").read_text()
    # other draws, or a folder without a curve: said, not compared
    assert _eval(mini, tiny_models["hubert"], tmp_path / "h2", *flags, "--seed", "1") == 0
    assert brain_evaluate.main(["--compare", str(tmp_path / "w"), str(tmp_path / "h2"), "--out", str(tmp_path / "c2")]) == 0
    assert "the folders drew different training stories" in (tmp_path / "c2" / "comparison.md").read_text()
    assert _eval(mini, tiny_models["hubert"], tmp_path / "h3", "--layers", "1", "2") == 0
    assert brain_evaluate.main(["--compare", str(tmp_path / "w"), str(tmp_path / "h3"), "--out", str(tmp_path / "c3")]) == 0
    assert "not every folder was evaluated with --data-efficiency" in (tmp_path / "c3" / "comparison.md").read_text()
    capsys.readouterr()
    assert _eval(mini, tiny_models["hubert"], tmp_path / "h4", "--layers", "1") == 0
    assert (f"note: --layers [1] holds none of {tiny_models['hubert']}'s upper-middle layers ([2] of 2); its "
            f"upper-middle summary reads layer 1 instead") in capsys.readouterr().err
    assert json.loads((tmp_path / "h4" / "summary.json").read_text())["upper_middle_layers"] == [1]
    # counts the training set cannot give: a usage error before any extraction
    assert _eval(mini, tiny_models["hubert"], tmp_path / "bad", "--data-efficiency", str(n_train + 1)) == 2
    assert "error: --data-efficiency" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as stopped:
        _eval(mini, tiny_models["hubert"], tmp_path / "bad", "--data-efficiency", "2", "--data-efficiency-repeats", "0")
    assert stopped.value.code == 2 and not (tmp_path / "bad").exists()
    assert "argument --data-efficiency-repeats: expected an integer > 0, found 0" in capsys.readouterr().err
    assert _eval(mini, tiny_models["hubert"], tmp_path / "bad", "--data-efficiency-repeats", "5") == 2  # draws of nothing
    assert ("error: --data-efficiency-repeats sets the draws of --data-efficiency; add --data-efficiency"
            in capsys.readouterr().err and not (tmp_path / "bad").exists())


def test_default_layers_are_the_papers_or_all_and_requested_ones_sorted_once():
    assert brain_evaluate.resolve_layers(None, 12) == [2, 5, 7, 8, 10, 11, 12]
    # deeper models (wav2vec2-large, Whisper medium): the paper's layers at the same relative depth, l·n/12 rounded
    assert brain_evaluate.resolve_layers(None, 24) == [4, 10, 14, 16, 20, 22, 24]
    assert brain_evaluate.resolve_layers(None, 32) == [5, 13, 19, 21, 27, 29, 32]  # 2·32/12 = 5.33, 7·32/12 = 18.67
    assert brain_evaluate.resolve_layers(None, 18) == [3, 8, 11, 12, 15, 17, 18]  # 7.5 rounds up, never to even
    for n in (13, 16, 24, 32):  # each still has layers in its upper middle, as the 12-layer default has 7, 8, 10
        assert al.upper_middle_note(brain_evaluate.resolve_layers(None, n), n, "m") is None
    assert al.upper_middle_note([2, 5, 7, 8, 10, 11, 12], 24, "m") is not None  # the old default
    assert brain_evaluate.resolve_layers(None, 4) == [1, 2, 3, 4]  # fewer than 12 layers: every transformer layer
    assert brain_evaluate.resolve_layers([5, 0, 5, 2], 12) == [0, 2, 5]
    with pytest.raises(brain_evaluate.models.ModelError, match=r"--layers \[13, -1\] out of range: the model has "
                                                               r"hidden states 0..12"):
        brain_evaluate.resolve_layers([13, 2, -1], 12)


def test_tuned_subjects_of_a_one_and_a_several_subject_record():
    assert brain_evaluate.tuned_subjects({"subject": "UTS01"}) == ["UTS01"]  # not ['U', 'T', 'S', '0', '1']
    assert brain_evaluate.tuned_subjects({"subject": ["UTS01", "UTS04"]}) == ["UTS01", "UTS04"]
    assert brain_evaluate.tuned_subjects({"subject": None}) == []


def test_bad_inputs(mini, tiny_models, tmp_path, capsys):
    assert _eval(mini, tiny_models["hubert"], tmp_path / "x", "--layers", "9") == brain_evaluate.EXIT_USAGE
    assert "--layers [9] out of range" in capsys.readouterr().err
    assert _eval(mini, tiny_models["hubert"], tmp_path / "x", "--stride", "13") == brain_evaluate.EXIT_USAGE
    assert "--stride 13 s leaves TRs with no feature window" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert _eval(mini, tiny_models["hubert"], tmp_path / "y", "--train-stories", "souls", "naked") == brain_evaluate.EXIT_DATA
    assert "respdict.json: --train-stories names ['naked'], not stories of this dataset" in capsys.readouterr().err
    assert _eval(mini, tiny_models["hubert"], tmp_path / "y", "--test-story", "wheretheresmoke") == brain_evaluate.EXIT_DATA
    assert "'wheretheresmoke': did you mean 'wheretheressmoke'?" in capsys.readouterr().err
    assert _eval(mini, tiny_models["hubert"], tmp_path / "y", "--subject", "UTS04", "--roi-file",
                 str(mini / "rois" / "UTS04.json"), "--train-stories", "souls", "life") == brain_evaluate.EXIT_DATA
    assert "preprocessed_data/UTS04: UTS04 has no responses for ['life']" in capsys.readouterr().err  # a story it lacks
    np.save(tmp_path / "UTS02.npy", np.zeros(3))
    assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name",
                                tiny_models["hubert"], "--out", str(tmp_path / "z"), "--nc-dir", str(tmp_path)]) == \
        brain_evaluate.EXIT_DATA
    assert "noise ceiling has 3 values" in capsys.readouterr().err
    # story lists that would count TRs twice or train on the test story; another subject's ROI file
    for flags, message in ((["--train-stories", "souls", "avatar", "souls"],
                            "stories listed more than once in the train split: ['souls']"),
                           (["--train-stories", "souls", "wheretheressmoke"],
                            "stories in more than one split: ['wheretheressmoke']"),
                           (["--roi-file", str(mini / "rois" / "UTS01.json")],
                            "UTS01.json: ROIs of subject 'UTS01', expected 'UTS02'")):
        assert _eval(mini, tiny_models["hubert"], tmp_path / "w", *flags) == brain_evaluate.EXIT_DATA
        assert message in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_subject_data_computes_the_noise_ceiling_from_repeats_when_no_file_exists(mini, tmp_path, monkeypatch):
    common = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS04", "--model-name", "unused", "--out", "o"]
    load = brain_evaluate.load_subject_data
    from_file = load(brain_evaluate.parse_args(common + ["--nc-dir", str(mini / "subject_NCs")]))
    computed = load(brain_evaluate.parse_args(common + ["--nc-dir", str(tmp_path)]))
    assert from_file["nc_source"].endswith("UTS04.npy") and computed["nc_source"] == "computed from repeats"
    np.testing.assert_allclose(computed["cc_max"], from_file["cc_max"], atol=1e-6)
    # another held-out story, heard once: no repeats, so without a ceiling file it says where the ceiling comes from
    args = brain_evaluate.parse_args(common + ["--nc-dir", str(tmp_path), "--test-story", "souls", "--train-stories",
                                               "avatar"])
    with pytest.raises(brain_evaluate.du.DataError, match=rf"souls.hf5: expected key 'individual_repeats'.*: "
                       rf"--test-story souls has no repeats to compute cc_max from, and there is no "
                       rf"{tmp_path / 'UTS04.npy'}; give --nc-dir a folder holding UTS04.npy"):
        load(args)
    args = brain_evaluate.parse_args(common + ["--test-story", "life"])  # UTS04 has no 'life'
    with pytest.raises(brain_evaluate.du.DataError, match="UTS04/life.hf5: test story has no responses"):
        brain_evaluate.load_subject_data(args)
    monkeypatch.setattr(brain_evaluate.du, "ENCODING_TRAIN_STORIES", ["life", "nosuchstory"])  # none UTS04 has
    with pytest.raises(brain_evaluate.du.DataError, match=r"UTS04: none of the training stories has responses"):
        load(brain_evaluate.parse_args(common + ["--nc-dir", str(mini / "subject_NCs")]))


def test_a_test_story_needs_two_rows_after_data_40(mini, tiny_models, tmp_path, monkeypatch, capsys):
    common = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name", "unused", "--out", "o",
              "--nc-dir", str(mini / "subject_NCs")]
    read = brain_evaluate.du.Ds003020.load_responses

    def held_out_cut_to(rows):  # the held-out story's file cut as if the scan had stopped early
        monkeypatch.setattr(brain_evaluate.du.Ds003020, "load_responses",
                            lambda self, subject, story, *a, **k: read(self, subject, story, *a, **k)[:rows]
                            if story == "wheretheressmoke" else read(self, subject, story, *a, **k))
    held_out_cut_to(41)
    with pytest.raises(brain_evaluate.du.DataError, match="wheretheressmoke.hf5: 41 rows, .* expected at least 42"):
        brain_evaluate.load_subject_data(brain_evaluate.parse_args(common))
    held_out_cut_to(42)
    assert brain_evaluate.load_subject_data(brain_evaluate.parse_args(common))["y_test"].shape[0] == 2
    monkeypatch.undo()
    # from the command line: exit 3 naming the file and its rows, nothing written (the tiny miniature's other
    # stories have 20 rows)
    story = ENCODING_TRAIN_STORIES[0]
    assert _eval(mini, tiny_models["wav2vec2"], tmp_path / "b", "--test-story", story) == brain_evaluate.EXIT_DATA
    assert (f"UTS02/{story}.hf5: 20 rows, but the held-out story is scored from row 40 on (data[40:]): expected at "
            f"least 42 rows; choose a longer --test-story") in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_missing_stimuli_are_named_before_any_extraction(mini, tmp_path):
    from conftest import link_tree
    root = link_tree(mini / "ds003020", tmp_path / "ds003020",
                     without=("stimuli/avatar.wav", "derivative/TextGrids/life.TextGrid"))
    common = ["--data-dir", str(root), "--subject", "UTS01", "--model-name", "unused", "--out", "o",
              "--nc-dir", str(mini / "subject_NCs")]
    with pytest.raises(brain_evaluate.du.DataError, match=r"stimuli missing \(1\): .*stimuli/avatar.wav$"):
        brain_evaluate.load_subject_data(brain_evaluate.parse_args(common))
    with pytest.raises(brain_evaluate.du.DataError, match=r"stimuli missing \(2\): .*avatar.wav, .*life.TextGrid$"):
        brain_evaluate.load_subject_data(brain_evaluate.parse_args(common + ["--low-level"]))  # phones needed too
    (root / "stimuli" / "avatar.wav").symlink_to(tmp_path / ".git" / "annex" / "objects" / "missing")  # DataLad
    with pytest.raises(brain_evaluate.du.DataError, match=r"stimuli missing \(1\): .*avatar.wav \(a DataLad/git-annex"):
        brain_evaluate.load_subject_data(brain_evaluate.parse_args(common))


def test_cached_features_of_other_audio_under_the_same_story_name_are_not_read(mini, tiny_models, tmp_path, capsys):
    from conftest import link_tree
    model, n_stories = tiny_models["wav2vec2"], len(Ds003020(mini / "ds003020").stories("UTS02"))
    assert _eval(mini, model, tmp_path / "first") == 0
    # another dataset with the same story names: here the same files but souls's audio (a different recording
    # of the same length, its samples reversed)
    other = link_tree(mini, tmp_path / "other", without=("ds003020/stimuli/souls.wav",))
    wav, rate = sf.read(str(mini / "ds003020" / "stimuli" / "souls.wav"), dtype="int16")
    sf.write(str(other / "ds003020" / "stimuli" / "souls.wav"), wav[::-1], rate)
    assert _eval(other, model, tmp_path / "second") == 0  # the cache of the first run (tmp_path / "cache")
    hits = json.loads((tmp_path / "second" / "config.json").read_text())["resolved"]["feature_cache_hits"]
    assert hits == n_stories - 1  # every story read back but souls, extracted from its own audio
    alone = tmp_path / "alone"
    assert _eval(other, model, alone / "eval") == 0  # its own cache
    for layer in (1, 2):
        with np.load(tmp_path / "second" / f"layer_{layer}.npz") as a, np.load(alone / "eval" / f"layer_{layer}.npz") as b:
            np.testing.assert_array_equal(a["r"], b["r"])
    with np.load(tmp_path / "first" / "layer_2.npz") as a, np.load(alone / "eval" / "layer_2.npz") as b:
        assert not np.array_equal(a["r"], b["r"])  # souls's audio matters: reading its old features would show


def test_a_hub_id_is_read_from_the_hub_cache_and_its_features_are_cached_per_commit(mini, tiny_models, tmp_path,
                                                                                    monkeypatch):
    from conftest import hub_snapshot, point_hub_cache
    from model_zoo import build_random_model
    hub, repo = tmp_path / "hub", "toolkit-test/tiny-wav2vec2"
    point_hub_cache(monkeypatch, hub)
    hub_snapshot(hub, repo, tiny_models["wav2vec2"], "a" * 40)
    assert _eval(mini, repo, tmp_path / "first") == 0
    first = json.loads((tmp_path / "first" / "config.json").read_text())["resolved"]
    assert first["model_revision"] == "a" * 40 and first["feature_cache_hits"] == 0
    assert _eval(mini, repo, tmp_path / "again") == 0  # the same commit: every story from the cache
    assert json.loads((tmp_path / "again" / "config.json").read_text())["resolved"]["feature_cache_hits"] > 0
    # the hub's main moves on to new weights: a model of its own, never the old commit's cached features
    hub_snapshot(hub, repo, build_random_model("wav2vec2", tmp_path / "retrained", seed=1), "b" * 40)
    assert _eval(mini, repo, tmp_path / "moved") == 0
    moved = json.loads((tmp_path / "moved" / "config.json").read_text())["resolved"]
    assert moved["model_revision"] == "b" * 40 and moved["feature_cache_hits"] == 0
    assert _eval(mini, str(tmp_path / "retrained"), tmp_path / "local") == 0  # the same weights from a folder
    with np.load(tmp_path / "moved" / "layer_2.npz") as a, np.load(tmp_path / "local" / "layer_2.npz") as b:
        np.testing.assert_array_equal(a["r"], b["r"])
    assert json.loads((tmp_path / "local" / "config.json").read_text())["resolved"]["model_revision"] is None
    # --revision pins the first commit although main has moved on: its weights, its cached features, its results
    assert _eval(mini, repo, tmp_path / "pinned", "--revision", "a" * 40) == 0
    pinned = json.loads((tmp_path / "pinned" / "config.json").read_text())
    assert pinned["resolved"]["model_revision"] == "a" * 40 and pinned["args"]["revision"] == "a" * 40
    assert pinned["resolved"]["feature_cache_hits"] > 0
    with np.load(tmp_path / "first" / "layer_2.npz") as a, np.load(tmp_path / "pinned" / "layer_2.npz") as b:
        np.testing.assert_array_equal(a["r"], b["r"])


def test_audio_with_nan_samples_stops_the_evaluation_with_exit_3_naming_it(mini, tiny_models, tmp_path, capsys):
    from conftest import link_tree
    other = link_tree(mini, tmp_path / "other", without=("ds003020/stimuli/souls.wav",))
    wav, rate = sf.read(str(mini / "ds003020" / "stimuli" / "souls.wav"), dtype="float32")
    wav[rate // 2] = np.nan  # the samples are read when the story's features are extracted
    sf.write(str(other / "ds003020" / "stimuli" / "souls.wav"), wav, rate, subtype="FLOAT")
    assert _eval(other, tiny_models["wav2vec2"], tmp_path / "o") == brain_evaluate.EXIT_DATA
    assert ("souls.wav: 1 audio sample(s) are NaN or inf, the first at 0.500 s" in capsys.readouterr().err
            and not (tmp_path / "o").exists())


def test_truncated_audio_is_named_before_any_extraction(mini, tmp_path):
    from conftest import link_tree
    root = link_tree(mini / "ds003020", tmp_path / "ds003020", without=("stimuli/avatar.wav",))
    sf.write(root / "stimuli" / "avatar.wav", np.zeros(16000 * 5, np.float32), 16000)
    args = brain_evaluate.parse_args(["--data-dir", str(root), "--subject", "UTS01", "--model-name", "unused",
                                      "--out", "o", "--nc-dir", str(mini / "subject_NCs")])
    with pytest.raises(ValueError, match=r"stimuli/avatar.wav: audio lasts 5.00 s .*truncated"):
        brain_evaluate.load_subject_data(args)


def test_out_holding_another_programs_files_is_refused_untouched(mini, tiny_models, tmp_path, capsys):
    model = shutil.copytree(tiny_models["wav2vec2"], tmp_path / "model")  # e.g. --out mistyped as the model
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    assert _eval(mini, str(model), model) == 2
    assert f"{model}: not a brain_evaluate.py result" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # its config.json kept
    killed = tmp_path / "killed"  # a run killed after its first layer: its folder holds layer files only
    killed.mkdir()
    (killed / "layer_1.npz").write_bytes(b"cut short")
    assert _eval(mini, str(model), killed) == 0 and (killed / "summary.json").is_file()
    assert brain_evaluate.main(["--compare", str(killed), str(killed), "--out", str(killed)]) == 2
    assert f"--out {killed} is one of the compared result folders" in capsys.readouterr().err
    # an evaluation still writing into --out (a job resubmitted while the first runs): refused, its folder untouched
    with run_utils.output_claim(killed, "brain_evaluate.py run"):
        before = {p.name: p.read_bytes() for p in killed.iterdir()}
        assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name",
                                    str(model), str(model), "--out", str(tmp_path / "new"), str(killed),
                                    "--nc-dir", str(mini / "subject_NCs"), "--no-progress"]) == 2
        assert f"{killed}: another brain_evaluate.py run is writing into it (pid " in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in killed.iterdir()} == before and not (tmp_path / "new").exists()


def test_an_roi_without_voxels_above_the_floor_is_named_and_summarised_as_nan_without_warnings(
        mini, tiny_models, tmp_path, capsys):
    import warnings
    nc = np.load(mini / "subject_NCs" / "UTS02.npy")
    rois = {"_subject": "UTS02", "quiet": np.flatnonzero(nc <= 0.1)[:4].tolist(), "empty": [],
            "loud": np.flatnonzero(nc > 0.1)[:4].tolist()}
    (tmp_path / "rois.json").write_text(json.dumps(rois))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's empty-mean and all-NaN warnings among them
        for out in ("a", "b"):
            assert _eval(mini, tiny_models["hubert"], tmp_path / out, "--roi-file", str(tmp_path / "rois.json")) == 0
        err = capsys.readouterr().err
        assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "x", "y",
                                    "--out", str(tmp_path / "c")]) == 0
        group = _group_as_two_subjects(tmp_path, ("a", "b"))  # mean ± SEM and the test over NaN in every subject
    assert np.isnan(group["upper_middle_cc_norm"]["a"]["quiet"]["mean"])
    for table in (tmp_path / "c" / "comparison.md", tmp_path / "group" / "group.md"):
        assert "nan" in table.read_text() and "+nan" not in table.read_text()  # undefined, not a signed number
    assert "note: ROI 'quiet': none of its 4 voxels has a noise ceiling above --nc-floor 0.1" in err
    assert "note: ROI 'empty' holds no voxel: its summaries are NaN" in err and "ROI 'loud'" not in err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert np.isnan(summary["upper_middle_mean"]["quiet"]) and np.isnan(summary["upper_middle_mean"]["empty"])
    assert np.isfinite(summary["upper_middle_mean"]["loud"])


def test_a_noise_ceiling_computed_from_the_repeats_is_said(mini, tiny_models, tmp_path, capsys):
    assert _eval(mini, tiny_models["hubert"], tmp_path / "a", "--layers", "1") == 0  # its UTS02.npy is there
    assert "cc_max computed from the repeats" not in capsys.readouterr().err
    assert _eval(mini, tiny_models["hubert"], tmp_path / "b", "--layers", "1", "--nc-dir", str(tmp_path / "empty")) == 0
    assert (f"note: no {tmp_path / 'empty' / 'UTS02.npy'}: cc_max computed from the repeats of 'wheretheressmoke' "
            f"(every row, as compute_noise_ceiling.py does by default)") in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "config.json").read_text())["resolved"]["noise_ceiling"] == "computed from repeats"
    nc_file = mini / "subject_NCs" / "UTS02.npy"  # the subject's file given for its folder: refused, not recomputed
    assert _eval(mini, tiny_models["hubert"], tmp_path / "c", "--layers", "1", "--nc-dir", str(nc_file)) == 2
    assert (f"error: --nc-dir {nc_file} is a file; it takes the folder that holds <SUBJ>.npy (here {nc_file.parent})\n"
            == capsys.readouterr().err and not (tmp_path / "c").exists())


def test_a_rerun_into_the_same_folder_leaves_only_its_own_files(mini, tiny_models, tmp_path):
    out = tmp_path / "r"
    assert _eval(mini, tiny_models["hubert"], out, "--data-efficiency", "1", "2") == 0
    assert {"layer_1.npz", "layer_2.npz", "test_responses_roi.npz", "data_efficiency.png"} <= set(os.listdir(out))
    assert _eval(mini, tiny_models["hubert"], out, "--layers", "1", "--roi-file", str(tmp_path / "none.json")) == 3
    (tmp_path / "none.json").write_text(json.dumps({"_subject": "UTS02"}))  # no named ROI: no test predictions kept
    assert _eval(mini, tiny_models["hubert"], out, "--layers", "1", "--roi-file", str(tmp_path / "none.json")) == 0
    assert sorted(set(os.listdir(out)) - {".run.lock"}) == ["alignment_by_layer.png", "config.json", "layer_1.npz",
                                                           "summary.json", "table.md"]  # the rest was stale
    assert json.loads((out / "summary.json").read_text())["layers"] == [1]


def test_an_roi_named_all_would_hide_the_every_voxel_summary_and_is_refused(mini, tmp_path):
    rois = json.loads((mini / "rois" / "UTS01.json").read_text())
    (tmp_path / "rois.json").write_text(json.dumps({**rois, "all": [0, 1, 2]}))
    args = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", "unused", "--out", "o",
            "--nc-dir", str(mini / "subject_NCs")]
    assert set(brain_evaluate.load_subject_data(brain_evaluate.parse_args(
        args + ["--roi-file", str(mini / "rois" / "UTS01.json")]))["rois"]) >= {"all", "language", "auditory"}
    with pytest.raises(brain_evaluate.du.DataError, match=r"rois.json: the ROI name 'all' is reserved for every voxel"):
        brain_evaluate.load_subject_data(brain_evaluate.parse_args(args + ["--roi-file", str(tmp_path / "rois.json")]))


def test_a_textgrid_that_does_not_parse_is_named_before_any_extraction_with_low_level(mini, tmp_path, capsys):
    from conftest import link_tree
    grid = "derivative/TextGrids/souls.TextGrid"
    root = link_tree(mini / "ds003020", tmp_path / "ds003020", without=(grid,))
    (root / grid).write_text((mini / "ds003020" / grid).read_text()[:1500])  # a download cut short
    common = ["--data-dir", str(root), "--subject", "UTS01", "--model-name", "unused", "--out", str(tmp_path / "o"),
              "--nc-dir", str(mini / "subject_NCs")]
    brain_evaluate.load_subject_data(brain_evaluate.parse_args(common))  # without --low-level no phones are read
    assert brain_evaluate.main(common + ["--low-level"]) == brain_evaluate.EXIT_DATA  # before the model is loaded
    assert f"{root / grid}: cannot parse TextGrid" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_brain_evaluate_several_models_together_equal_each_alone(mini, tiny_models, tmp_path, capsys):
    import models
    enc_model, extractor, _ = models.load_backbone(tiny_models["whisper"])
    with torch.no_grad():  # a "brain-tuned" copy: top block changed, bottom block and front end as pretrained
        for p in enc_model.get_encoder().layers[1].parameters():
            p.add_(0.05)
    tuned = tmp_path / "tuned_model"
    enc_model.save_pretrained(tuned)
    extractor.save_pretrained(tuned)
    record = {"epoch": 3, "val_loss": 0.9, "val_corr": 0.1, "subject": ["UTS01", "UTS04"], "base_model": "b",
              "base_model_revision": "c" * 40, "whisper_mode": "pad30"}
    (tuned / "brain_tuning.json").write_text(json.dumps(record))  # as the trainer writes it in best/
    base = tiny_models["whisper"]
    assert _eval(mini, base, tmp_path / "alone" / "pre", "--whisper-mode", "truncate") == 0
    assert _eval(mini, str(tuned), tmp_path / "alone" / "tuned", "--whisper-mode", "truncate") == 0
    capsys.readouterr()
    outs = [str(tmp_path / "together" / m) for m in ("pre", "tuned")]
    assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name", base,
                                str(tuned), "--out", *outs, "--nc-dir", str(mini / "subject_NCs"), "--roi-file",
                                str(mini / "rois" / "UTS02.json"), "--stride", "0.5", "--context", "3",
                                "--no-progress", "--cache-dir", str(tmp_path / "cache2"), "--whisper-mode",
                                "truncate"]) == 0
    err = capsys.readouterr().err
    assert f"note: {tuned} was brain-tuned on ['UTS01', 'UTS04'], evaluated on UTS02 (cross-subject transfer)" in err
    assert (f"note: {tuned} was brain-tuned with --whisper-mode pad30 and is read here with --whisper-mode truncate"
            in err and err.count("--whisper-mode pad30") == 2)  # the tuned model only, not its base
    for m in ("pre", "tuned"):
        for layer in (1, 2):
            a = np.load(tmp_path / "alone" / m / f"layer_{layer}.npz")
            b = np.load(tmp_path / "together" / m / f"layer_{layer}.npz")
            np.testing.assert_array_equal(a["r"], b["r"])
    differs = np.load(tmp_path / "together" / "pre" / "layer_2.npz")["r"] != np.load(
        tmp_path / "together" / "tuned" / "layer_2.npz")["r"]
    assert differs.any()
    resolved = json.loads((tmp_path / "together" / "tuned" / "config.json").read_text())["resolved"]
    assert resolved["shared_bottom"] == {"with": base, "blocks": 1} and resolved["evaluated_with"] == [base]
    assert resolved["brain_tuning"] == {"subject": ["UTS01", "UTS04"], "base_model": "b", "base_model_revision": "c" * 40,
                                        "epoch": 3, "val_loss": 0.9, "whisper_mode": "pad30"}
    pre = json.loads((tmp_path / "together" / "pre" / "config.json").read_text())["resolved"]
    assert pre["shared_bottom"] is None and pre["brain_tuning"] is None
    # summary.json says whom each model was tuned on, for --subject-results to tell a transfer from a subject's own
    assert [json.loads((tmp_path / "together" / m / "summary.json").read_text())["tuned_subjects"]
            for m in ("pre", "tuned")] == [None, ["UTS01", "UTS04"]]
    assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name", base,
                                str(tuned), "--out", outs[0]]) == brain_evaluate.EXIT_USAGE
    assert "expected one --out folder per --model-name (2), found 1" in capsys.readouterr().err


def test_a_model_with_non_finite_hidden_states_is_refused_before_its_features_are_cached(mini, nan_model, tmp_path,
                                                                                          capsys):
    assert _eval(mini, nan_model, tmp_path / "e") == brain_evaluate.EXIT_USAGE  # it scored r = 0 at layer 2
    assert (f"error: {nan_model}: the hidden states of layer(s) [2] hold NaN or inf on story 'alternateithicatom': "
            f"its weights are damaged or diverged") in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("*.npz")) and not (tmp_path / "e" / "summary.json").exists()


def test_ridge_runs_on_the_evaluation_gpu_by_default():
    cpu, gpu = torch.device("cpu"), torch.device("cuda:1")
    assert brain_evaluate.ridge_backend("auto", cpu) == {"backend": "numpy", "device": None}
    assert brain_evaluate.ridge_backend("auto", gpu) == {"backend": "torch", "device": "cuda:1"}  # its own GPU
    assert brain_evaluate.ridge_backend("numpy", gpu) == {"backend": "numpy", "device": None}
    assert brain_evaluate.ridge_backend("torch", cpu) == {"backend": "torch", "device": "cpu"}


def test_tr_grids_label_names_the_tr_or_the_trfiles_content(mini, tmp_path):
    # --compare's check of the TR grids: simulated grids by their TR, Box grids by the pickle's content, not its path
    assert brain_evaluate.tr_grids_label(Ds003020(mini / "ds003020").timing_record()) == "simulated, TR 2.0045 s"
    assert brain_evaluate.tr_grids_label(Ds003020(mini / "ds003020", tr=2.0).timing_record()) == "simulated, TR 2.0 s"
    labels = []
    for copy in ("a", "b"):
        (tmp_path / copy).mkdir()
        shutil.copy(mini / "box" / "trfiles_huge.jbl", tmp_path / copy / "trfiles_huge.jbl")
        data = Ds003020(mini / "ds003020")
        data.use_box_trfiles(tmp_path / copy / "trfiles_huge.jbl")
        labels.append(brain_evaluate.tr_grids_label(data.timing_record()))
    assert labels[0] == labels[1] and labels[0].startswith("trfiles sha256 ")
    assert len(labels[0]) == len("trfiles sha256 ") + 16
