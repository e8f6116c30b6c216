"""Comparisons of alignment results across subjects (`brain_evaluate.py --subject-results`): hand-computed cases."""
import json

import pytest

import brain_evaluate


def _result(folder, subject, language, auditory=0.3, model_type="whisper", impact=None, tuned_subjects=None):
    """A finished brain_evaluate.py result folder holding only what the comparison reads."""
    folder.mkdir(parents=True)
    summary = {"subject": subject, "model_type": model_type, "tuned_subjects": tuned_subjects,
               "upper_middle_mean": {"all": 0.1, "language": language, "auditory": auditory}}
    if impact is not None:
        summary["upper_middle_low_level_impact"] = {"all": 0.0, "language": impact, "auditory": 40.0}
    (folder / "summary.json").write_text(json.dumps(summary))
    return str(folder)


def _groups(tmp_path, pre, tuned, impacts=None):
    args = []
    for i, (a, b) in enumerate(zip(pre, tuned)):
        subj = f"UTS0{i + 1}"
        imp = impacts[i] if impacts else (None, None)
        args += ["--subject-results", _result(tmp_path / subj / "pretrained", subj, a, impact=imp[0]),
                 _result(tmp_path / subj / "tuned", subj, b, impact=imp[1])]
    return args


def test_mean_sem_change_and_signed_rank_by_hand(tmp_path, capsys):
    args = _groups(tmp_path, [0.1, 0.2, 0.4], [0.12, 0.22, 0.44], impacts=[(30, 20), (25, 24), (40, 30)])
    assert brain_evaluate.main(args + ["--out", str(tmp_path / "group")]) == 0
    g = json.loads((tmp_path / "group" / "group.json").read_text())
    assert g["subjects"] == ["UTS01", "UTS02", "UTS03"] and g["models"] == ["pretrained", "tuned"]
    pre = g["upper_middle_cc_norm"]["pretrained"]["language"]
    assert pre["mean"] == pytest.approx(0.7 / 3) and pre["per_subject"]["UTS02"] == 0.2
    # deviations from 0.2333: -0.1333, -0.0333, +0.1667; squares sum to 0.046667; var (ddof 1) 0.023333; /3, sqrt
    assert pre["sem"] == pytest.approx(0.08819, rel=1e-3)
    change = g["change_vs_first_pct"]["tuned"]["language"]  # +20, +10, +10 %
    assert change["mean"] == pytest.approx(40 / 3) and change["sem"] == pytest.approx(10 / 3)
    w = g["wilcoxon_vs_first"]["tuned"]["language"]
    # 3 positive differences: the exact two-sided p is its minimum, 2/2^3
    assert w["n"] == 3 and w["p_value"] == pytest.approx(0.25) and w["min_p_value"] == pytest.approx(0.25)
    assert g["wilcoxon_vs_first"]["tuned"]["auditory"] == {"n": 3, "min_p_value": 0.25}  # no change: no test
    low = g["low_level_impact_pct"]
    assert low["pretrained"]["language"]["mean"] == pytest.approx(95 / 3)
    assert low["tuned"]["language"]["mean"] == pytest.approx(74 / 3)
    assert low["tuned"]["language"]["wilcoxon_vs_first"]["p_value"] == pytest.approx(0.25)
    md = (tmp_path / "group" / "group.md").read_text()
    assert "+13.3 ± 3.3 | 0.25 (n=3)" in md and "cannot go below p = 0.25" in md
    assert (tmp_path / "group" / "group_by_roi.png").stat().st_size > 0
    assert "3 subjects (UTS01, UTS02, UTS03)" in capsys.readouterr().out


def test_group_low_level_impact_undefined_in_a_subject_is_counted_not_hidden(tmp_path):
    # UTS02's pretrained language alignment is not positive: its impact is NaN (alignment.low_level_impact)
    args = _groups(tmp_path, [0.1, -0.05, 0.4], [0.12, 0.02, 0.44],
                   impacts=[(30, 20), (float("nan"), 24), (40, 30)])
    assert brain_evaluate.main(args + ["--out", str(tmp_path / "group")]) == 0
    low = json.loads((tmp_path / "group" / "group.json").read_text())["low_level_impact_pct"]
    pre, tuned = low["pretrained"]["language"], low["tuned"]["language"]
    assert pre["mean"] == pytest.approx(35.0) and pre["n_defined"] == 2
    assert tuned["mean"] == pytest.approx(74 / 3) and tuned["n_defined"] == 3
    # the paired test drops UTS02: two pairs (-10, -10)
    assert low["tuned"]["language"]["wilcoxon_vs_first"]["n"] == 2
    low_table = (tmp_path / "group" / "group.md").read_text().split("Low-level impact %")[1].split("\n\n")[1]
    assert "| pretrained | 0.0 ± 0.0 | 35.0 ± 5.0 (2/3) | 40.0 ± 0.0 |" in low_table
    assert "| tuned | 0.0 ± 0.0 | 24.7 ± 2.9 (p 0.5) |" in low_table  # defined in all three: no count


def test_signed_rank_p_for_six_subjects(tmp_path):
    pre = [0.1] * 6
    # differences +1 +2 -3 +4 +5 +6 (x0.01): ranks 1..6, W- = 3; subsets of {1..6} summing to <= 3: 5 -> p = 2*5/64
    tuned = [0.11, 0.12, 0.07, 0.14, 0.15, 0.16]
    assert brain_evaluate.main(_groups(tmp_path, pre, tuned) + ["--out", str(tmp_path / "g"),
                                                                 "--labels", "pre", "brain-tuned"]) == 0
    g = json.loads((tmp_path / "g" / "group.json").read_text())
    w = g["wilcoxon_vs_first"]["brain-tuned"]["language"]
    assert w["statistic"] == 3 and w["p_value"] == pytest.approx(10 / 64) and w["n"] == 6
    assert "low_level_impact_pct" not in g  # the folders were evaluated without --low-level
    assert "cannot go below" not in (tmp_path / "g" / "group.md").read_text()


def test_a_subject_evaluated_with_another_subjects_tuned_model_is_noted(tmp_path):
    argv = []
    for subj in ("UTS01", "UTS02", "UTS03"):  # UTS01's tuned model passed for every subject (a copy-paste slip?)
        argv += ["--subject-results", _result(tmp_path / subj / "pre", subj, 0.1),
                 _result(tmp_path / subj / "tuned", subj, 0.2, tuned_subjects=["UTS01"])]
    assert brain_evaluate.main(argv + ["--out", str(tmp_path / "g")]) == 0
    g = json.loads((tmp_path / "g" / "group.json").read_text())
    assert g["cross_subject"] == {"tuned": {"UTS02": ["UTS01"], "UTS03": ["UTS01"]}}
    assert ("Note: tuned is not each subject's own brain-tuned model: UTS02 with a model tuned on UTS01; UTS03 with a "
            "model tuned on UTS01 (cross-subject transfer).") in (tmp_path / "g" / "group.md").read_text()
    own = _groups(tmp_path / "own", [0.1, 0.2], [0.2, 0.3])  # each subject's own (or untuned, older) results: none
    assert brain_evaluate.main(own + ["--out", str(tmp_path / "g2")]) == 0
    assert json.loads((tmp_path / "g2" / "group.json").read_text())["cross_subject"] == {}
    assert "cross-subject" not in (tmp_path / "g2" / "group.md").read_text()


@pytest.mark.parametrize("case, message", [
    ("one subject", "needs at least 2 subjects; found 1"),
    ("lengths differ", "the same number (>= 2) of result folders"),
    ("mixed subjects", "s2b: subject UTS01, expected UTS02 like"),
    ("subject twice", "subject UTS01 given twice"),
    ("family differs", "a wav2vec2 model at position 2, expected whisper"),
    ("not a result", "not a brain_evaluate.py result folder (summary.json missing)"),
    ("labels", "2 distinct model names needed"),
])
def test_bad_groups_name_the_folder_and_write_nothing(tmp_path, capsys, case, message):
    r = lambda name, subj, **kw: _result(tmp_path / name, subj, 0.2, **kw)  # noqa: E731
    a, b = r("s1a", "UTS01"), r("s1b", "UTS01")
    groups = {
        "one subject": lambda: [[a, b]],
        "lengths differ": lambda: [[a, b], [r("s2a", "UTS02")]],
        "mixed subjects": lambda: [[a, b], [r("s2a", "UTS02"), r("s2b", "UTS01")]],
        "subject twice": lambda: [[a, b], [r("s2a", "UTS01"), r("s2b", "UTS01")]],
        "family differs": lambda: [[a, b], [r("s2a", "UTS02"), r("s2b", "UTS02", model_type="wav2vec2")]],
        "not a result": lambda: [[a, b], [r("s2a", "UTS02"), str(tmp_path)]],
        "labels": lambda: [[a, b], [r("s2a", "UTS02"), r("s2b", "UTS02")]],
    }[case]()
    argv = [x for g in groups for x in ["--subject-results", *g]] + ["--out", str(tmp_path / "out")]
    if case == "labels":
        argv += ["--labels", "same", "same"]
    assert brain_evaluate.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flag_combinations(tmp_path, capsys):
    assert brain_evaluate.main(["--compare", "x", "--subject-results", "y", "--out", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert brain_evaluate.main(["--subject-results", "x", "y", "--out", "a", "b"]) == 2
    assert "--subject-results writes one folder" in capsys.readouterr().err
    assert brain_evaluate.main(["--out", str(tmp_path / "o"), "--labels", "p", "t"]) == 2
    assert "--labels names the models of --compare or --subject-results" in capsys.readouterr().err


@pytest.mark.parametrize("key, value, message", [
    ("subject", "UTS02", "b: subject 'UTS02', expected 'UTS01' like"),
    ("test_story", "souls", "b: test story 'souls', expected 'wheretheressmoke' like"),
    ("nc_floor", 0.2, "b: --nc-floor 0.2, expected 0.1 like"),
    ("noise_ceiling_digest", "e5f6", "b: noise ceiling (cc_max digest) 'e5f6', expected 'a1b2' like"),
    ("ridge_score", "signed_sqrt_r2", "b: --ridge-score 'signed_sqrt_r2', expected 'r2' like"),
    # features sampled otherwise (README: --stride 2 --context 6 on a CPU) change alignment without the model changing
    ("stride", 2.0, "b: --stride 2.0, expected 1.0 like"),
    ("context", 6.0, "b: --context 6.0, expected 8.0 like"),
    ("tr_grids", "simulated, TR 2.0 s", "b: TR grids (--tr, --trfiles) 'simulated, TR 2.0 s', expected "
                                        "'simulated, TR 2.0045 s' like"),
])
def test_compare_refuses_folders_of_another_subject_test_story_floor_ceiling_or_criterion(tmp_path, capsys, key, value,
                                                                                           message):
    base = {"subject": "UTS01", "test_story": "wheretheressmoke", "nc_floor": 0.1, "model_type": "whisper",
            "noise_ceiling_digest": "a1b2", "ridge_score": "r2", "stride": 1.0, "context": 8.0,
            "tr_grids": "simulated, TR 2.0045 s", "per_layer": {}, "upper_middle_layers": [],
            "upper_middle_mean": {"all": 0.1, "language": 0.2}}
    for name, summary in (("a", base), ("b", {**base, key: value})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert message in err and "one subject's test story" in err and not (tmp_path / "c").exists()
    if key != "subject":  # the models of one subject in a group comparison: the same check
        for name, summary in (("a2", {**base, "subject": "UTS02"}), ("b2", {**base, "subject": "UTS02", key: value})):
            (tmp_path / name).mkdir()
            (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        assert brain_evaluate.main(["--subject-results", str(tmp_path / "a2"), str(tmp_path / "b2"),
                                    "--subject-results", str(tmp_path / "a"), str(tmp_path / "b"),
                                    "--out", str(tmp_path / "g")]) == 2
        assert f"b2: {message[3:]}" in capsys.readouterr().err and not (tmp_path / "g").exists()
    if key not in ("subject", "noise_ceiling_digest"):  # a setting no subject has its own: the subjects alike too
        for name, summary in (("a_again", base), ("a3", {**base, "subject": "UTS02", key: value}),
                              ("b3", {**base, "subject": "UTS02", key: value})):
            (tmp_path / name).mkdir()
            (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        assert brain_evaluate.main(["--subject-results", str(tmp_path / "a"), str(tmp_path / "a_again"),
                                    "--subject-results", str(tmp_path / "a3"), str(tmp_path / "b3"),
                                    "--out", str(tmp_path / "g")]) == 2
        err = capsys.readouterr().err
        assert f"a3: {message[3:]} {tmp_path / 'a'}: every subject's results must be evaluated alike" in err
        assert not (tmp_path / "g").exists()


def test_compare_refuses_an_roi_of_one_name_on_other_voxels_and_leaves_out_an_roi_one_lacks(tmp_path, capsys):
    digests = {"all": "a0", "language": "l0", "auditory": "u0"}
    base = {"subject": "UTS01", "test_story": "wheretheressmoke", "model_type": "whisper", "roi_digests": digests,
            "per_layer": {}, "upper_middle_layers": [],
            "upper_middle_mean": {"all": 0.1, "language": 0.2, "auditory": 0.4}}
    folders = {"a": base, "edited": {**base, "roi_digests": {**digests, "language": "l1"}},
               "no_roi_file": {**base, "roi_digests": {"all": "a0"}, "upper_middle_mean": {"all": 0.12}}}
    for name, summary in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "edited"),
                                "--out", str(tmp_path / "c")]) == 2
    assert (f"{tmp_path / 'edited'}: ROI language holds other voxels than in {tmp_path / 'a'}"
            in capsys.readouterr().err) and not (tmp_path / "c").exists()
    # evaluated without the ROI file: the every-voxel summary is compared, the named ROIs left out
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "no_roi_file"),
                                "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "comparison.json").read_text())["rois"] == ["all"]


def test_compare_refuses_models_of_one_family_read_out_otherwise_but_not_of_two(tmp_path, capsys):
    base = {"subject": "UTS01", "test_story": "wheretheressmoke", "model_type": "whisper", "pooling": "last_tr",
            "whisper_mode": "pad30", "per_layer": {}, "upper_middle_layers": [],
            "upper_middle_mean": {"all": 0.1, "language": 0.2}}
    folders = {"pad30": base, "truncate": {**base, "whisper_mode": "truncate"}, "mean": {**base, "pooling": "mean"},
               "wav2vec2": {**base, "model_type": "wav2vec2", "pooling": "last", "whisper_mode": None}}
    for name, summary in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    for other, message in (("truncate", "--whisper-mode 'truncate', expected 'pad30'"),
                           ("mean", "--pooling 'mean', expected 'last_tr'")):
        assert brain_evaluate.main(["--compare", str(tmp_path / "pad30"), str(tmp_path / other),
                                    "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / other}: {message} like {tmp_path / 'pad30'}" in err and "one family (whisper)" in err
        assert not (tmp_path / "c").exists()
    # another family reads its hidden states out its own way: a comparison across families is what it is for
    assert brain_evaluate.main(["--compare", str(tmp_path / "pad30"), str(tmp_path / "wav2vec2"),
                                "--out", str(tmp_path / "c")]) == 0


@pytest.mark.parametrize("damage, message", [
    ({"upper_middle_mean": {"all": 0.1, "language": None}}, "'upper_middle_mean' should map names to numbers"),
    ({"upper_middle_mean": [0.1, 0.2]}, "'upper_middle_mean' should be an object, as brain_evaluate.py writes it"),
    ({"upper_middle_low_level_impact": {"language": "12%"}}, "'upper_middle_low_level_impact' should map names to"),
])
def test_a_hand_edited_summary_is_named_by_both_comparisons(tmp_path, capsys, damage, message):
    # a null (a JSON tool's NaN) or a list where the evaluation writes numbers was a traceback in the table
    base = {"subject": "UTS01", "test_story": "wheretheressmoke", "nc_floor": 0.1, "model_type": "whisper",
            "per_layer": {}, "upper_middle_layers": [], "upper_middle_mean": {"all": 0.1, "language": 0.2}}
    for name, summary in (("a", base), ("b", {**base, **damage}), ("a2", {**base, "subject": "UTS02"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    bad = tmp_path / "b" / "summary.json"
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(bad.parent), "--out", str(tmp_path / "c")]) == 2
    assert f"{bad}: {message}" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert brain_evaluate.main(["--subject-results", str(tmp_path / "a2"), str(tmp_path / "a2"),
                                "--subject-results", str(tmp_path / "a"), str(bad.parent),
                                "--out", str(tmp_path / "g")]) == 2
    assert f"{bad}: {message}" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_a_comparison_into_a_folder_another_run_is_writing_is_refused_untouched(tmp_path, capsys):
    import run_utils
    argv = _groups(tmp_path, [0.2, 0.3], [0.25, 0.33]) + ["--out", str(tmp_path / "group")]
    with run_utils.output_claim(tmp_path / "group", "brain_evaluate.py run"):
        for flags in (argv, ["--compare", str(tmp_path / "UTS01" / "pretrained"), str(tmp_path / "UTS01" / "tuned"),
                             "--out", str(tmp_path / "group")]):
            assert brain_evaluate.main(flags) == 2
            assert f"{tmp_path / 'group'}: another brain_evaluate.py run is writing into it (pid" in \
                capsys.readouterr().err
            assert [p.name for p in (tmp_path / "group").iterdir()] == [run_utils.RUN_LOCK]
    assert brain_evaluate.main(argv) == 0 and (tmp_path / "group" / "group.json").is_file()  # once it has ended


def _voxel_result(folder, cc_by_layer, roi_voxels, rois, responses, predictions):
    """A --compare-able result of 6 voxels: per-voxel cc_norm per upper-middle layer, and the ROI test data."""
    import numpy as np
    folder.mkdir(parents=True)
    summary = {"subject": "UTS01", "test_story": "wheretheressmoke", "nc_floor": 0.1, "model_type": "whisper",
               "per_layer": {}, "upper_middle_layers": sorted(cc_by_layer),
               "upper_middle_mean": {"all": 0.2, "language": 0.2, "auditory": 0.3}}
    (folder / "summary.json").write_text(json.dumps(summary))
    for layer, cc in cc_by_layer.items():
        np.savez(folder / f"layer_{layer}.npz", cc_norm=np.array(cc, float), test_predictions_roi=predictions)
    np.savez(folder / "test_responses_roi.npz", roi_voxels=roi_voxels, cc_max=np.full(len(roi_voxels), 0.5),
             responses=responses, **{f"roi/{r}": np.searchsorted(roi_voxels, v) for r, v in rois.items()})
    return str(folder)


def test_voxelwise_comparison_by_hand(tmp_path, capsys):
    import numpy as np
    nan = float("nan")
    rois = {"language": np.array([1, 3, 5]), "auditory": np.array([0, 2])}
    roi_voxels = np.arange(6)
    rng = np.random.default_rng(0)
    responses, predictions = rng.standard_normal((30, 6)), rng.standard_normal((30, 6))
    # upper-middle means: pretrained [0.2, 0.2, nan, 0.4, 0.3, nan], tuned [0.3, 0.1, 0.5, 0.5, 0.4, nan]
    pre = _voxel_result(tmp_path / "pre", {3: [0.1, 0.2, nan, 0.4, 0.5, nan], 4: [0.3, 0.2, nan, nan, 0.1, nan]},
                        roi_voxels, rois, responses, predictions)
    tuned = _voxel_result(tmp_path / "tuned", {3: [0.3, 0.1, 0.5, 0.4, 0.5, nan], 4: [0.3, 0.1, 0.5, 0.6, 0.3, nan]},
                          roi_voxels, rois, responses, predictions)
    assert brain_evaluate.main(["--compare", pre, tuned, "--out", str(tmp_path / "c")]) == 0
    with np.load(tmp_path / "c" / "voxel_cc_norm.npz") as z:
        assert list(z["models"]) == ["pre", "tuned"]
        np.testing.assert_allclose(z["cc_norm"], [[0.2, 0.2, nan, 0.4, 0.3, nan], [0.3, 0.1, 0.5, 0.5, 0.4, nan]],
                                   rtol=1e-6)
    above = json.loads((tmp_path / "c" / "comparison.json").read_text())["voxels_above_first_pct"]["tuned"]
    # voxels with both values: 0, 1, 3, 4; tuned above at 0, 3, 4. Language (1, 3, 5): 1 and 3; auditory (0, 2): 0
    assert above == {"all": {"pct": 75.0, "n_voxels": 4}, "language": {"pct": 50.0, "n_voxels": 2},
                     "auditory": {"pct": 100.0, "n_voxels": 1}}
    assert "| tuned | 75 (4) | 50 (2) | 100 (1) |" in (tmp_path / "c" / "comparison.md").read_text()
    assert (tmp_path / "c" / "voxel_scatter.png").stat().st_size > 0
    # another voxel count in a layer file (another subject's or a damaged copy): named, nothing written
    np.savez(tmp_path / "tuned" / "layer_4.npz", cc_norm=np.zeros(7), test_predictions_roi=predictions)
    capsys.readouterr()
    assert brain_evaluate.main(["--compare", pre, tuned, "--out", str(tmp_path / "d")]) == 2
    assert f"{tmp_path / 'tuned' / 'layer_4.npz'}: 7 voxels, expected 6 like {tmp_path / 'pre' / 'layer_3.npz'}" in \
        capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    np.savez(tmp_path / "pre" / "layer_4.npz", cc_norm=np.zeros(7), test_predictions_roi=predictions)  # within one
    assert brain_evaluate.main(["--compare", pre, tuned, "--out", str(tmp_path / "d")]) == 2
    assert f"{tmp_path / 'pre' / 'layer_4.npz'}: 7 voxels, expected 6 like {tmp_path / 'pre' / 'layer_3.npz'}" in \
        capsys.readouterr().err


def test_compared_folders_of_one_name_need_labels(tmp_path, capsys):
    # two seeds' tuned models: each folder is named "tuned", and their rows, keys and curves overwrote each other
    import numpy as np
    rng = np.random.default_rng(0)
    responses, predictions = rng.standard_normal((30, 6)), rng.standard_normal((30, 6))
    rois = {"language": np.array([1, 3, 5])}
    seeds = [_voxel_result(tmp_path / f"seed{k}" / "tuned", {3: list(rng.random(6))}, np.arange(6), rois,
                           responses, predictions) for k in (0, 1)]
    assert brain_evaluate.main(["--compare", *seeds, "--out", str(tmp_path / "c")]) == 2
    assert f"{seeds[0]} and {seeds[1]} are both named 'tuned'" in capsys.readouterr().err
    assert brain_evaluate.main(["--compare", *seeds, "--labels", "seed 0", "--out", str(tmp_path / "c")]) == 2
    assert "--labels: 2 model names needed, one per result folder; found 1: ['seed 0']" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert brain_evaluate.main(["--compare", *seeds, "--labels", "seed 0", "seed 1", "--out", str(tmp_path / "c")]) == 0
    table = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert table["models"] == ["seed 0", "seed 1"] and set(table["upper_middle_cc_norm"]) == {"seed 0", "seed 1"}
    assert list(table["bootstrap"]["difference_ci95"]) == ["seed 1 - seed 0"]
    with np.load(tmp_path / "c" / "voxel_cc_norm.npz") as z:
        assert list(z["models"]) == ["seed 0", "seed 1"]
    # across subjects: the first subject's folder names, the same rule
    group = ["--subject-results", *seeds, "--subject-results", _result(tmp_path / "s2" / "a", "UTS02", 0.2),
             _result(tmp_path / "s2" / "b", "UTS02", 0.3)]
    assert brain_evaluate.main(group + ["--out", str(tmp_path / "g")]) == 2
    assert "are both named 'tuned'" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_models_averaging_different_upper_middle_layers_are_noted_and_plotted_on_every_layer(tmp_path, monkeypatch):
    # a tuned model evaluated at --layers 4 only, beside a pretrained one evaluated at 3 and 4
    import numpy as np
    import plotting
    drawn = []
    monkeypatch.setattr(plotting, "plot_layer_curves", lambda curves, layers, *a, **k: drawn.append((curves, layers)))
    rng = np.random.default_rng(0)
    responses, predictions = rng.standard_normal((30, 6)), rng.standard_normal((30, 6))
    rois = {"language": np.array([1, 3, 5])}
    pre = _voxel_result(tmp_path / "pre", {3: list(rng.random(6)), 4: list(rng.random(6))}, np.arange(6), rois,
                        responses, predictions)
    tuned = _voxel_result(tmp_path / "tuned", {4: list(rng.random(6))}, np.arange(6), rois, responses, predictions)
    for folder, per_layer in ((pre, {"3": 0.1, "4": 0.2}), (tuned, {"4": 0.3, "5": 0.4})):
        s = json.loads((tmp_path / folder / "summary.json").read_text())
        s["per_layer"] = {l: {"rois": {"language": {"cc_norm": v}}} for l, v in per_layer.items()}
        if folder == pre:  # evaluated with --low-level, the tuned model without: said, not tabled half empty
            s["upper_middle_low_level_impact"] = {"all": 10.0, "language": 20.0, "auditory": 30.0}
        (tmp_path / folder / "summary.json").write_text(json.dumps(s))
    assert brain_evaluate.main(["--compare", pre, tuned, "--out", str(tmp_path / "c")]) == 0
    table = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert table["upper_middle_layers"] == {"pre": [3, 4], "tuned": [4]}
    # the intervals average each model's own layers (a traceback before): every layer here predicts the same
    assert table["bootstrap"]["difference_ci95"]["tuned - pre"]["language"] == pytest.approx([0.0, 0.0], abs=1e-12)
    md = (tmp_path / "c" / "comparison.md").read_text()
    assert "Note: these upper-middle means average different layers (pre [3, 4]; tuned [4])" in md
    assert "No low-level impact table: evaluated with --low-level pre; without it tuned." in md
    assert "low_level_impact_pct" not in table
    curves, layers = drawn[0]  # every layer any model has, a gap where one lacks it
    assert layers == [3, 4, 5]
    np.testing.assert_array_equal(curves["language"]["pre"], [0.1, 0.2, np.nan])
    np.testing.assert_array_equal(curves["language"]["tuned"], [np.nan, 0.3, 0.4])
    assert brain_evaluate.main(["--compare", pre, pre, "--labels", "a", "b",
                                "--out", str(tmp_path / "same")]) == 0  # the same layers: no note
    assert "Note: these upper-middle" not in (tmp_path / "same" / "comparison.md").read_text()


def test_compare_refuses_results_fitted_on_other_training_stories(tmp_path, capsys):
    # 8 stories' encoding models against 14 stories' (--train-stories): alignment rises with them, not a model effect
    base = {"subject": "UTS01", "test_story": "wheretheressmoke", "nc_floor": 0.1, "model_type": "whisper",
            "per_layer": {}, "upper_middle_layers": [], "upper_middle_mean": {"all": 0.1, "language": 0.2},
            "train_stories": ["souls", "avatar", "legacy"]}
    for name, stories in (("a", None), ("b", ["legacy", "souls", "naked"]), ("c", ["legacy", "avatar", "souls"]),
                          ("old", "absent")):
        (tmp_path / name).mkdir()
        summary = dict(base) if stories is None else {**base, "train_stories": stories}
        if stories == "absent":  # a result written before summaries named their stories: not checked
            del summary["train_stories"]
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "x")]) == 2
    assert (f"{tmp_path / 'b'}: encoding models fitted on 3 training stories, 3 for {tmp_path / 'a'} (lacking ['avatar'], "
            f"adding ['naked']): the models compared") in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "summary.json").write_text(json.dumps({**base, "subject": "UTS02"}))
    assert brain_evaluate.main(["--subject-results", str(tmp_path / "s2"), str(tmp_path / "s2"), "--labels", "p", "t",
                                "--subject-results", str(tmp_path / "a"), str(tmp_path / "b"),
                                "--out", str(tmp_path / "g")]) == 2  # within a subject, the same rule
    assert "(lacking ['avatar'], adding ['naked'])" in capsys.readouterr().err and not (tmp_path / "g").exists()
    for other in ("c", "old"):  # the same stories in another order, or a result that does not say: compared
        assert brain_evaluate.main(["--compare", str(tmp_path / "a"), str(tmp_path / other),
                                    "--out", str(tmp_path / f"ok_{other}")]) == 0


def test_bootstrap_intervals_of_a_clearly_better_model(tmp_path):
    import numpy as np
    rng = np.random.default_rng(1)
    responses = rng.standard_normal((200, 6))

    def predictions(r):  # correlation about r with the responses in every voxel
        return r * responses + np.sqrt(1 - r * r) * rng.standard_normal(responses.shape)

    rois = {"language": np.arange(6)}
    pre, tuned = (_voxel_result(tmp_path / name, {3: [r / 0.5] * 6}, np.arange(6), rois, responses, predictions(r))
                  for name, r in (("pre", 0.2), ("tuned", 0.8)))
    for folder, residual in ((pre, "pre"), (tuned, "weak")):  # low-level residuals: pre loses nothing, tuned 3/4
        with np.load(f"{folder}/layer_3.npz") as z:
            kept = dict(z)
        kept["test_predictions_roi_residual"] = kept["test_predictions_roi"] if residual == "pre" else predictions(0.2)
        np.savez(f"{folder}/layer_3.npz", **kept)
    assert brain_evaluate.main(["--compare", pre, tuned, "--out", str(tmp_path / "c")]) == 0
    boot = json.loads((tmp_path / "c" / "comparison.json").read_text())["bootstrap"]
    low, high = boot["change_vs_first_pct_ci95"]["tuned"]["language"]
    assert 150 < low < 300 < high < 600  # (0.8 - 0.2) / 0.2 = +300%, relative to the first model
    assert boot["share_of_samples_above"]["tuned - pre"]["language"] == 1.0
    low, high = boot["low_level_impact_difference_ci95"]["tuned - pre"]["language"]
    assert 50 < low < 75 < high < 100  # tuned's impact ~75 points above pre's 0
    assert boot["low_level_impact_share_of_samples_above"]["tuned - pre"]["language"] == 1.0


def test_voxels_above_first_counts_only_strictly_higher_voxels_with_both_values():
    import numpy as np

    from compare_results import voxels_above_first
    nan = float("nan")
    cc = np.array([[0.2, 0.3, 0.4, nan, 0.1], [0.2, 0.5, 0.1, 0.9, 0.3]])  # voxel 0 tied, voxel 3 lacks the first
    above = voxels_above_first(cc, {"all": np.arange(5), "tied": np.array([0])})
    assert above == {1: {"all": {"pct": 50.0, "n_voxels": 4}, "tied": {"pct": 0.0, "n_voxels": 1}}}


def test_interval_is_the_central_95_percent_and_the_efficiency_curve_ends_at_the_full_data():
    import numpy as np

    from compare_results import _interval, efficiency_curve
    assert _interval(np.arange(1001.0)) == [25.0, 975.0]
    assert _interval(np.array([np.nan, 1.0, 1.0])) == [1.0, 1.0]
    eff = {"counts": [1, 2, 4], "mean": {"language": [0.1, 0.2, 0.3]}, "n_train_stories": 8}
    assert efficiency_curve(eff, {"language": 0.5}) == ([1, 2, 4, 8], {"language": [0.1, 0.2, 0.3, 0.5]})
    whole = {**eff, "counts": [2, 4, 8]}  # the draws include every story already: no point added
    assert efficiency_curve(whole, {"language": 0.5}) == ([2, 4, 8], {"language": [0.1, 0.2, 0.3]})


def _bootstrap_folder(folder, layers, responses, cc_max, rois, residual_layers=()):
    """A result folder as brain_evaluate.py leaves it for the bootstrap: ROI test data and, per upper-middle layer,
    its test predictions (and those from the low-level residuals for the layers in `residual_layers`)."""
    import numpy as np
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"upper_middle_layers": sorted(layers), "nc_floor": 0.1}))
    for l, p in layers.items():
        extra = {"test_predictions_roi_residual": 0.5 * p} if l in residual_layers else {}
        np.savez(folder / f"layer_{l}.npz", test_predictions_roi=p, **extra)
    np.savez(folder / "test_responses_roi.npz", roi_voxels=np.arange(responses.shape[1]), cc_max=cc_max,
             responses=responses, **{f"roi/{r}": v for r, v in rois.items()})
    return folder


def test_bootstrap_changes_against_resampled_rows_by_hand(tmp_path):
    import numpy as np

    from alignment import block_bootstrap_weights
    from compare_results import _named_roi_voxels, bootstrap_changes
    rng = np.random.default_rng(5)
    t, rois = 40, {"language": np.array([1, 2, 3]), "auditory": np.array([0])}
    responses = rng.standard_normal((t, 4))
    cc_max = np.array([0.5, 0.6, 0.05, 0.8])  # voxel 2 under the floor (0.1): left out of the language mean

    def noisy(r):
        return r * responses + rng.standard_normal(responses.shape)
    # pre: anti-correlated (a negative baseline, so the change divides by its magnitude), its two layers apart
    models = {"pre": {3: noisy(-0.6), 4: noisy(-0.2)}, "tuned": {3: noisy(0.5), 4: noisy(0.9)}}
    models["same"] = models["pre"]  # the first model again: every paired difference exactly 0
    dirs = [_bootstrap_folder(tmp_path / m, layers, responses, cc_max, rois) for m, layers in models.items()]
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    boot = bootstrap_changes(dirs, list(models), summaries, ["language", "auditory", "absent"], block_trs=5,
                             n_boot=200, seed=3)
    weights = block_bootstrap_weights(t, 5, 200, 3)
    rows = [np.repeat(np.arange(t), w.astype(int)) for w in weights]  # each sample's TRs, written out

    def samples(layers, voxels):  # mean over layers of the mean over voxels of r / cc_max, per sample
        return np.array([np.mean([np.mean([np.corrcoef(p[r, v], responses[r, v])[0, 1] / cc_max[v] for v in voxels])
                                  for p in layers.values()]) for r in rows])
    ref = {m: samples(layers, [1, 3]) for m, layers in models.items()}
    assert (ref["pre"] < 0).all()
    change = 100 * (ref["tuned"] - ref["pre"]) / np.abs(ref["pre"])
    assert boot["rois"] == ["language", "auditory"] and (boot["n_boot"], boot["seed"]) == (200, 3)
    np.testing.assert_allclose(boot["change_vs_first_pct_ci95"]["tuned"]["language"],
                               np.percentile(change, [2.5, 97.5]), rtol=1e-9)
    assert boot["change_vs_first_pct_ci95"]["tuned"]["language"][0] > 100  # from below zero to above it
    diff = ref["tuned"] - ref["pre"]
    np.testing.assert_allclose(boot["difference_ci95"]["tuned - pre"]["language"], np.percentile(diff, [2.5, 97.5]),
                               rtol=1e-9)
    assert boot["share_of_samples_above"]["tuned - pre"]["language"] == 1.0
    assert boot["difference_ci95"]["same - pre"]["language"] == [0.0, 0.0]
    assert boot["share_of_samples_above"]["same - pre"]["language"] == 0.0  # a tie is not "above"
    np.testing.assert_allclose(boot["difference_ci95"]["tuned - pre"]["auditory"],
                               np.percentile(samples(models["tuned"], [0]) - samples(models["pre"], [0]), [2.5, 97.5]),
                               rtol=1e-9)
    assert "low_level_impact_difference_ci95" not in boot  # no folder kept residual predictions
    # residual predictions in one of a model's two upper-middle layers only: no impact intervals either
    part = [_bootstrap_folder(tmp_path / "part" / m, models[m], responses, cc_max, rois, residual_layers=(3,))
            for m in ("pre", "tuned")]
    assert "low_level_impact_difference_ci95" not in bootstrap_changes(part, ["pre", "tuned"], summaries[:2],
                                                                       ["language"], n_boot=20)
    full = [_bootstrap_folder(tmp_path / "full" / m, models[m], responses, cc_max, rois, residual_layers=(3, 4))
            for m in ("pre", "tuned")]
    with_impact = bootstrap_changes(full, ["pre", "tuned"], summaries[:2], ["language"], n_boot=20)
    # pre's alignment is negative in every sample: its impact is undefined there, and so is the interval
    assert with_impact["low_level_impact_undefined_samples"]["tuned - pre"]["language"] == 20
    assert np.isnan(with_impact["low_level_impact_difference_ci95"]["tuned - pre"]["language"]).all()
    # a model about as often above zero as below: undefined in some samples only, and still no interval (one over
    # the samples where its alignment happens to be positive would be conditioned on it)
    near_zero = {3: rng.standard_normal((t, 4)), 4: rng.standard_normal((t, 4))}
    tuned2 = {l: p + 0.1 * rng.standard_normal(p.shape) for l, p in models["tuned"].items()}
    full += [_bootstrap_folder(tmp_path / "full" / name, layers, responses, cc_max, rois, residual_layers=(3, 4))
             for name, layers in (("zero", near_zero), ("tuned2", tuned2))]
    some = bootstrap_changes(full[1:], ["tuned", "zero", "tuned2"], summaries[:3], ["language"], n_boot=20)
    assert 0 < some["low_level_impact_undefined_samples"]["zero - tuned"]["language"] < 20
    assert np.isnan(some["low_level_impact_difference_ci95"]["zero - tuned"]["language"]).all()
    assert np.isnan(some["low_level_impact_share_of_samples_above"]["zero - tuned"]["language"])
    # two models aligned in every sample: the interval, as before
    assert some["low_level_impact_undefined_samples"]["tuned2 - tuned"]["language"] == 0
    assert np.isfinite(some["low_level_impact_difference_ci95"]["tuned2 - tuned"]["language"]).all()
    from compare_results import _render_bootstrap
    lines = _render_bootstrap({**some, "rois": ["language"]}, ["tuned", "zero", "tuned2"])
    n_undefined = some["low_level_impact_undefined_samples"]["zero - tuned"]["language"]
    assert f"| zero | undefined in {n_undefined} of 20 samples (full alignment not positive) |" in lines
    assert any(line.startswith("| tuned2 | ") and " to " in line for line in lines[-2:])
    # a model whose predictions are constant: its impact is undefined (0 alignment) in every sample, so the share
    # of samples where it is above is unknown (NaN), not 0
    flat = _bootstrap_folder(tmp_path / "flat", {3: np.ones((t, 4)), 4: np.ones((t, 4))}, responses, cc_max, rois,
                             residual_layers=(3, 4))
    undefined = bootstrap_changes([full[0], flat], ["pre", "flat"], summaries[:2], ["language"], n_boot=20)
    assert np.isnan(undefined["low_level_impact_share_of_samples_above"]["flat - pre"]["language"])
    assert np.isnan(undefined["low_level_impact_difference_ci95"]["flat - pre"]["language"]).all()
    # other test data in one folder (responses, or the ROI's voxels): no intervals, and no shared ROI voxels
    other = _bootstrap_folder(tmp_path / "other", models["tuned"], responses + 1.0, cc_max, rois)
    assert "different voxels, responses" in bootstrap_changes([dirs[0], other], ["pre", "other"], summaries[:2],
                                                              ["language"])["skipped"]
    moved = _bootstrap_folder(tmp_path / "moved", models["tuned"], responses, cc_max,
                              {"language": np.array([0, 1, 2]), "auditory": np.array([0])})
    assert _named_roi_voxels([dirs[0], dirs[1]])["language"].tolist() == [1, 2, 3]
    assert _named_roi_voxels([dirs[0], moved]) == {}


def test_data_efficiency_table_adds_the_main_fit_as_all_stories_when_no_count_is_all():
    from compare_results import render_single
    layer = {"rois": {"language": {"cc_norm": 0.2, "r": 0.1}, "auditory": {"cc_norm": 0.4, "r": 0.3}}}
    summary = {"subject": "UTS01", "model": "m", "nc_floor": 0.1, "per_layer": {"3": layer}, "upper_middle_layers": [3],
               "upper_middle_mean": {"language": 0.2, "auditory": 0.4},
               "data_efficiency": {"n_train_stories": 4, "repeats": 3, "counts": [1, 2],
                                   "mean": {"language": [0.05, 0.1], "auditory": [0.1, 0.3]},
                                   "sd": {"language": [0.01, 0.02], "auditory": [0.03, 0.04]}}}
    table = render_single(summary).splitlines()
    start = table.index("| stories | language | auditory |")
    assert table[start + 2:] == ["| 1 | 0.050 ± 0.010 | 0.100 ± 0.030 |", "| 2 | 0.100 ± 0.020 | 0.300 ± 0.040 |",
                                 "| 4 (all) | 0.200 | 0.400 |"]  # the main fit: all 4 training stories
    summary["data_efficiency"].update(counts=[1, 4], mean={"language": [0.05, 0.2], "auditory": [0.1, 0.4]})
    table = render_single(summary).splitlines()
    assert table[-1] == "| 4 | 0.200 ± 0.020 | 0.400 ± 0.040 |" and not any("(all)" in line for line in table)
