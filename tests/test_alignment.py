"""alignment.py: the encoding pipeline recovers the miniature's planted structure; its formulas by hand."""

import numpy as np
import pytest

import alignment as al
from eval_utils import cc_norm, columnwise_correlation
from data_utils import ENCODING_TRAIN_STORIES, TEST_STORY, Ds003020
from voxel_selection import load_roi_file
from timing import trim_slice


def _truth_design(mini, data, kind):
    feats = np.load(mini / "ground_truth" / "features.npz")
    train = [s for s in ENCODING_TRAIN_STORIES if s in data.stories("UTS01")]
    per_story = {}
    for s in train + [TEST_STORY]:
        f = feats[f"{s}/{kind}"]
        per_story[s] = al.zscore(f[trim_slice(len(f), test=s == TEST_STORY)])
    return train, al.stack_design(per_story, train, TEST_STORY)


def test_planted_semantic_features_win_in_the_language_roi(mini, mini_root):
    data = Ds003020(mini_root)
    rois = load_roi_file(mini / "rois" / "UTS01.json")
    nc = np.load(mini / "subject_NCs" / "UTS01.npy")
    scores = {}
    for kind in ("semantic", "acoustic"):
        train, (x_tr, x_te) = _truth_design(mini, data, kind)
        y_tr = np.vstack([data.load_responses("UTS01", s) for s in train])
        y_te = data.load_responses("UTS01", TEST_STORY)[40:]
        res = al.fit_and_score(x_tr, y_tr, x_te, y_te, nc, 0.1)
        scores[kind] = al.roi_summary(res, {k: rois[k] for k in ("auditory", "language")})
    assert scores["semantic"]["language"]["r"] > scores["acoustic"]["language"]["r"] + 0.05
    assert scores["acoustic"]["auditory"]["r"] > scores["semantic"]["auditory"]["r"] + 0.05


def test_upper_middle_layers_and_impact():
    assert al.upper_middle_layers([2, 5, 7, 8, 10, 11, 12], 12) == [7, 8, 10]
    assert al.upper_middle_layers([1, 2], 2) == [2]
    # where none of the requested layers is upper-middle the summary reads another layer, and the log says so
    assert al.upper_middle_layers([1, 2, 3], 12) == [3]
    assert al.upper_middle_note([1, 2, 3], 12, "m") == ("note: --layers [1, 2, 3] holds none of m's upper-middle "
                                                        "layers ([7, 8, 9, 10] of 12); its upper-middle summary reads "
                                                        "layer 3 instead")
    assert "reads layer 12 instead" in al.upper_middle_note([1, 12], 12, "m")
    assert al.upper_middle_note([1, 10], 12, "m") is None and al.upper_middle_note(list(range(13)), 12, "m") is None
    assert al.upper_middle_note([1, 2], 2, "m") is None  # too shallow for the band: its top layer, as by default
    assert "([2] of 2)" in al.upper_middle_note([1], 2, "m") and al.upper_middle_note([3], 4, "m") is None
    assert al.low_level_impact(0.5, 0.4) == pytest.approx(20.0)
    assert al.relative_change(0.1, -0.2) == pytest.approx(150.0)  # up from a negative reference is a gain
    assert al.relative_change(0.3, 0.2) == pytest.approx(50.0) and np.isnan(al.relative_change(0.3, 0.0))
    assert np.isnan(al.low_level_impact(0.0, 0.1))
    # no alignment to explain: a negative full one gives NaN, not -47% for residuals that predict worse
    assert np.isnan(al.low_level_impact(-0.035, -0.0515)) and np.isnan(al.low_level_impact(np.nan, 0.1))
    np.testing.assert_allclose(al.low_level_impact(np.array([0.5, -0.5, 0.2]), np.array([0.4, -0.6, 0.3])),
                               [20.0, np.nan, -50.0])
    # the mean over layers is undefined where one layer's is (not the mean of the others: other layers than the
    # upper-middle mean beside it), in a bootstrap sample as in the summary
    assert al.upper_middle_impact([20.0, 10.0]) == pytest.approx(15.0)
    assert np.isnan(al.upper_middle_impact([20.0, np.nan]))
    full_, residual_ = np.array([[[-0.1, 0.4]], [[0.5, 0.5]]]), np.array([[[-0.2, 0.2]], [[0.4, 0.4]]])
    layers = al.bootstrap_low_level_impact(full_, residual_)  # (2 layers, 1 sample, 2 models)
    assert layers.shape == (1, 2) and np.isnan(layers[0, 0]) and layers[0, 1] == pytest.approx(35.0)
    w = al.wilcoxon_compare([0.5, 0.6, 0.55, 0.7, 0.65, 0.62], [0.4, 0.5, 0.5, 0.6, 0.55, 0.5])
    assert w["p_value"] < 0.05 and w["n"] == 6
    assert al.mean_sem([1.0, 3.0, np.nan]) == pytest.approx((2.0, 1.0))  # sd sqrt(2), 2 values: SEM 1
    assert np.isnan(al.mean_sem([4.0])[1]) and np.isnan(al.mean_sem([])[0])
    w = al.wilcoxon_compare([0.5, np.nan, 0.7], [0.4, 0.5, 0.6])  # a subject without a value drops out of the pair
    assert w["n"] == 2 and w["p_value"] == pytest.approx(0.5) and w["tuned_mean"] == pytest.approx(0.6)


def test_story_subsets_and_stories_to_match_hand_cases():
    train = [f"s{i}" for i in range(6)]
    draws = al.story_subsets(train, [2, 4, 6], repeats=3, seed=5)
    assert [n for n, _ in draws] == [2, 2, 2, 4, 4, 4, 6]  # all six stories: one draw
    for n, stories in draws:
        assert len(set(stories)) == n and stories == [s for s in train if s in stories]  # distinct, training order
    assert draws == al.story_subsets(train, [2, 4, 6], repeats=3, seed=5)  # the same draws for every model
    assert draws != al.story_subsets(train, [2, 4, 6], repeats=3, seed=6)
    assert len({tuple(s) for n, s in draws if n == 2}) > 1
    for bad in (0, 7):
        with pytest.raises(ValueError, match=f"{bad} training stories asked for; expected 1..6"):
            al.story_subsets(train, [bad], 3)
    counts, curve = [1, 2, 4], [0.1, 0.2, 0.3]
    assert al.stories_to_match(counts, curve, 0.25) == pytest.approx(2 * np.sqrt(2))  # halfway in log(stories)
    assert al.stories_to_match(counts, curve, 0.2) == pytest.approx(2.0)
    assert al.stories_to_match(counts, curve, 0.05) == 1.0  # above it from the first count: no extrapolation
    assert np.isnan(al.stories_to_match(counts, curve, 0.31)) and np.isnan(al.stories_to_match(counts, curve, np.nan))
    assert al.stories_to_match(counts, [0.1, 0.3, 0.2], 0.25) == pytest.approx(np.exp(np.log(2) * 0.75))  # first crossing


def test_low_level_groups_are_the_matching_columns_of_the_full_set():
    from timing import TRGrid
    rng = np.random.default_rng(0)
    grid = TRGrid(onsets=np.arange(40) * 2.0 - 10.0, tr=2.0)
    wav = rng.normal(size=16000 * 60).astype(np.float32)
    labels = list(rng.choice(["AA", "B", "S", "IY", "T", "N"], size=300))
    times = np.sort(rng.uniform(0, 60, size=300))
    full = al.low_level_features(wav, labels, times, grid, test=False)
    assert full.shape == (40 - 15, 16 + 22 + 64 + 64)
    np.testing.assert_array_equal(al.low_level_features(wav, labels, times, grid, test=False,
                                                        groups=("mel", "articulatory")), full[:, :38])
    # kept in LOW_LEVEL_GROUPS order whatever order they are asked in
    np.testing.assert_array_equal(al.low_level_features(wav, labels, times, grid, test=False,
                                                        groups=("triphones", "mel")),
                                  np.hstack([full[:, :16], full[:, -64:]]))
    no_phones = al.low_level_features(wav, [], np.zeros(0), grid, test=False, groups=("diphones",))
    assert no_phones.shape == (25, 64) and not no_phones.any()
    for bad in (("mel", "pitch"), ()):
        with pytest.raises(ValueError, match="expected one or more of"):
            al.low_level_features(wav, labels, times, grid, test=False, groups=bad)


def test_block_bootstrap_and_roi_cc_norm_samples():
    w = al.block_bootstrap_weights(23, block_trs=5, n_boot=200, seed=1)
    assert w.shape == (200, 23) and np.all(w.sum(axis=1) == 23)
    assert w.std(axis=0).min() > 0  # every row is sometimes left out or repeated
    assert np.all(al.block_bootstrap_weights(8, block_trs=8, n_boot=3) == 1)  # one block = the story itself
    short = al.block_bootstrap_weights(4, block_trs=10, n_boot=5)  # a block longer than the story: the story
    assert short.shape == (5, 4) and np.all(short == 1)
    rng = np.random.default_rng(0)
    y = rng.normal(size=(23, 6))
    good, bad = y + rng.normal(size=y.shape), rng.normal(size=y.shape)
    cc_max = np.array([0.9, 0.8, 0.1, 0.7, 0.6, 0.5])  # voxel 2 at the floor: left out, as roi_summary does
    ones = np.ones((1, 23))
    point = al.bootstrap_roi_cc_norm([[good], [bad, good]], y, cc_max, ones)
    r = columnwise_correlation(good, y)
    expect = al.roi_summary({"r": r, "cc_norm": cc_norm(r, cc_max)}, {"roi": np.arange(6)})["roi"]["cc_norm"]
    assert point[0, 0] == pytest.approx(expect)
    samples = al.bootstrap_roi_cc_norm([[good], [good], [bad]], y, cc_max, w)
    np.testing.assert_allclose(al.bootstrap_roi_cc_norm([[good], [good], [bad]], y, cc_max, w, voxel_chunk=2), samples,
                               atol=1e-12)  # voxels in chunks: the same means
    assert np.all(samples[:, 0] == samples[:, 1])  # paired: the same model gives a difference of exactly 0
    assert np.all(samples[:, 0] > samples[:, 2])


def test_bootstrap_low_level_impact_is_the_summary_formula_on_each_sample():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(40, 5))
    cc_max = np.array([0.9, 0.8, 0.7, 0.05, 0.6])
    full = [y + 0.5 * rng.normal(size=y.shape), y + 0.8 * rng.normal(size=y.shape)]  # two layers
    resid = [y + 2.0 * rng.normal(size=y.shape), y + 1.0 * rng.normal(size=y.shape)]

    def roi_mean(pred):
        r = columnwise_correlation(pred, y)
        return al.roi_summary({"r": r, "cc_norm": cc_norm(r, cc_max)}, {"roi": np.arange(5)})["roi"]["cc_norm"]
    # with the story itself as the one sample: the mean over layers of each layer's 100·(full − residual)/full
    expect = np.mean([al.low_level_impact(roi_mean(f), roi_mean(r)) for f, r in zip(full, resid)])

    def per_layer(models, weights):  # (n_layers, n_boot, n_models) samples, as compare_results takes them
        return np.array([al.bootstrap_roi_cc_norm([[m[l]] for m in models], y, cc_max, weights) for l in range(2)])
    ones = np.ones((1, 40))
    one = al.bootstrap_low_level_impact(per_layer([full, full], ones), per_layer([resid, full], ones))
    assert one.shape == (1, 2) and one[0, 0] == pytest.approx(expect) and one[0, 1] == pytest.approx(0.0, abs=1e-12)
    w = al.block_bootstrap_weights(40, block_trs=5, n_boot=50, seed=0)
    samples = al.bootstrap_low_level_impact(per_layer([full, full], w), per_layer([resid, resid], w))
    assert np.all(samples[:, 0] == samples[:, 1]) and samples[:, 0].std() > 0  # paired, and it varies


def test_story_features_are_sampled_at_tr_midpoints():
    from timing import simulated_tr_grid
    grid = simulated_tr_grid(60, tr=2.0)  # TR k: onset 2k − 10 s, midpoint 2k − 9 s
    times = np.arange(1, 1001) * 0.1       # feature rows every 100 ms, as the default --stride gives
    impulse = (np.abs(times - 31.5) < 1e-9).astype(float)[:, None]  # 0.75 TR into TR 20: nearest midpoint is TR 20's
    out = al.story_tr_features(times, impulse, grid, test=False)
    assert out.shape == (grid.n_tr - 15, 1)
    assert np.argmax(out[:, 0]) == 20 - 10  # row j of the trimmed grid is TR j + 10 (TR 21 if read at onsets)


def test_wilcoxon_compare_runs_no_test_on_identical_pairs():
    out = al.wilcoxon_compare([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])  # every difference 0: no ranks to test
    assert "p_value" not in out and out["n"] == 3 and out["tuned_mean"] == pytest.approx(0.4)


def test_design_matrices_take_the_delays_asked_for_on_train_and_test():
    rng = np.random.default_rng(0)
    per_story = {s: rng.normal(size=(n, 2)) for s, n in (("a", 8), ("b", 6), ("t", 5))}
    x_train, x_test = al.stack_design(per_story, ["a", "b"], "t", delays=[2, 5])
    assert x_train.shape == (14, 4) and x_test.shape == (5, 4)
    np.testing.assert_array_equal(x_test[2:, :2], per_story["t"][:3])   # delay 2: row i holds row i - 2
    np.testing.assert_array_equal(x_test[:, 2:], 0)                      # delay 5 reaches before the story


def test_roi_summary_averages_the_voxels_above_the_floor_and_counts_them():
    result = {"r": np.array([0.2, 0.4, 0.1, 0.3]), "cc_norm": np.array([0.5, np.nan, 0.3, np.nan])}
    out = al.roi_summary(result, {"roi": np.array([0, 1, 2]), "none": np.array([1, 3]), "empty": np.array([], int)})
    assert out["roi"] == {"cc_norm": pytest.approx(0.4), "r": pytest.approx(0.7 / 3), "n_voxels": 3,
                          "n_above_floor": 2}
    assert np.isnan(out["none"]["cc_norm"]) and out["none"]["n_above_floor"] == 0
    assert np.isnan(out["empty"]["r"]) and out["empty"]["n_voxels"] == 0


def test_undefined_rois_are_named_and_their_means_are_nan_without_a_warning():
    import warnings
    cc_max = np.array([0.05, 0.5, np.nan, 0.08])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would be one
        assert np.isnan(al.mean_defined([np.nan, np.nan])) and np.isnan(al.mean_defined([]))
        assert al.mean_defined([0.2, np.nan, 0.4]) == pytest.approx(0.3)
        notes = al.undefined_roi_notes({"ok": np.array([0, 1]), "quiet": np.array([0, 3]), "dead": np.array([2]),
                                        "empty": np.array([], int)}, cc_max, 0.1)
    assert notes == ["note: ROI 'quiet': none of its 2 voxels has a noise ceiling above --nc-floor 0.1 (max 0.080): "
                     "its cc_norm is NaN, its r is given",
                     "note: ROI 'dead': none of its 1 voxels has a noise ceiling above --nc-floor 0.1 (none finite): "
                     "its cc_norm is NaN, its r is given",
                     "note: ROI 'empty' holds no voxel: its summaries are NaN"]


def test_signed_change_cells():
    assert [al.signed_change(x) for x in (12.345, -0.04, 0.0, float("nan"), None)] == ["+12.3", "-0.0", "+0.0", "nan",
                                                                                        "nan"]
    assert al.signed_change(al.relative_change(0.2, 0.0)) == "nan"  # a first value of 0: no relative change


def test_upper_middle_mismatch_note_only_where_the_layers_differ():
    assert al.upper_middle_mismatch_note({"a": [7, 8], "b": [7, 8], "old": None}) is None
    note = al.upper_middle_mismatch_note({"a": [7, 8], "b": [8], "old": None})
    assert note.startswith("Note: these upper-middle means average different layers (a [7, 8]; b [8])")


def test_mel_features_do_not_depend_on_the_recording_gain():
    # a louder copy adds a constant to every log-mel band: z-scored per story, its features are the same
    from timing import TRGrid
    rng = np.random.default_rng(0)
    grid = TRGrid(onsets=np.arange(40) * 2.0 - 10.0, tr=2.0)
    t = np.arange(16000 * 60) / 16000
    wav = (rng.normal(size=len(t)) * (1 + 0.8 * np.sin(2 * np.pi * t / 7))).astype(np.float32)  # loudness varies
    quiet = al.low_level_features(wav, [], np.zeros(0), grid, test=False, groups=("mel",))
    loud = al.low_level_features(4 * wav, [], np.zeros(0), grid, test=False, groups=("mel",))
    np.testing.assert_allclose(loud, quiet, atol=1e-4)


def test_wilcoxon_compare_drops_each_pair_with_a_missing_value():
    tuned, pre = np.array([0.3, 0.4, np.nan, 0.5, 0.6]), np.array([0.2, 0.1, 0.3, np.nan, 0.4])
    out = al.wilcoxon_compare(tuned, pre)
    assert out["n"] == 3 and out["min_p_value"] == 0.25
    assert out["tuned_mean"] == pytest.approx(np.mean([0.3, 0.4, 0.6]))
    assert out["pretrained_mean"] == pytest.approx(np.mean([0.2, 0.1, 0.4]))
