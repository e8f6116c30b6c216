"""The miniature's generative model: the word embedding, the planted features, the simulated voxels, the files."""
import h5py
import numpy as np
import pytest

import make_demo_data as mdd
from data_utils import TEST_STORY


def test_word_embedding_puts_a_category_near_its_words_and_function_words_near_nothing(tmp_path):
    mdd.write_word_embedding(tmp_path / "english1000sm.hf5", np.random.default_rng(0))
    with h5py.File(tmp_path / "english1000sm.hf5", "r") as f:
        vectors, vocab = f["data"][:].T, [w.decode() for w in f["vocab"][:]]
    assert vocab == sorted(mdd.VOCABULARY) + mdd.function_words() and vectors.shape[1] == mdd.EMBEDDING_DIMS
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    category = [mdd.VOCABULARY.get(w) for w in vocab]
    content = np.array([c is not None for c in category])
    same = np.array([[a is not None and a == b for b in category] for a in category]) & ~np.eye(len(vocab), dtype=bool)
    # prototype (variance 1) + the word's own part (variance 0.25): cosine 1 / 1.25 within a category, ~0 across
    assert cos[same].mean() == pytest.approx(0.8, abs=0.01)
    across = np.outer(content, content) & ~same & ~np.eye(len(vocab), dtype=bool)
    assert abs(cos[across].mean()) < 0.01 and abs(cos[~content][:, content]).mean() < 0.05
    norms = np.linalg.norm(vectors, axis=1)  # a function word is the own part alone: sqrt(5) times shorter
    assert norms[content].mean() / norms[~content].mean() == pytest.approx(np.sqrt(5), rel=0.02)


def test_semantic_features_put_each_content_word_at_its_midpoint():
    words = [(10.0, 14.0, "bear"), (30.0, 30.4, "the"), (50.0, 51.0, "rain")]
    tr_times = np.arange(0.0, 70.0, 0.5)
    feats = mdd.semantic_features(words, tr_times)
    assert feats.shape == (len(tr_times), len(mdd.CATEGORY_NAMES))
    animal, weather = mdd.CATEGORY_NAMES.index("animal"), mdd.CATEGORY_NAMES.index("weather")
    assert tr_times[np.argmax(feats[:, animal])] == 12.0 and tr_times[np.argmax(feats[:, weather])] == 50.5
    others = [c for c in range(len(mdd.CATEGORY_NAMES)) if c not in (animal, weather)]
    assert np.abs(feats[:, others]).max() == 0.0  # "the" is no category
    assert np.abs(feats[np.abs(tr_times - 30.2) < 2][:, [animal, weather]]).max() < 1e-3


def test_ar1_noise_has_unit_variance_and_lag_one_correlation_rho():
    noise = mdd.ar1_noise(np.random.default_rng(0), (40000, 3), 0.3)
    assert noise.var(axis=0) == pytest.approx([1.0] * 3, abs=0.03)
    lag1 = [np.corrcoef(noise[1:, v], noise[:-1, v])[0, 1] for v in range(3)]
    assert lag1 == pytest.approx([0.3] * 3, abs=0.02)


def test_simulated_voxels_carry_their_types_features_through_the_hrf_at_delays_1_to_4():
    rng = np.random.default_rng(5)
    n_t, n_vox = 60, 40
    stories = {s: {"semantic": rng.normal(size=(n_t, 8)), "acoustic": rng.normal(size=(n_t, 8))} for s in ("a", TEST_STORY)}
    silent = {s: {k: np.zeros((n_t, 8)) for k in f} for s, f in stories.items()}
    sim = mdd.simulate_subject(np.random.default_rng(9), n_vox, stories, 3, TEST_STORY)
    # the same draws with silent stories: responses are then the noise alone (no signal to scale: no NaN)
    noise = mdd.simulate_subject(np.random.default_rng(9), n_vox, silent, 3, TEST_STORY)["responses"]
    types = sim["types"]
    assert np.bincount(types, minlength=4).tolist() == [12, 14, 4, 10]  # 30 / 35 / 10 / 25 % of 40 voxels
    language, acoustic = np.isin(types, [1, 2]), np.isin(types, [0, 2])
    assert np.all(sim["w_sem"][:, ~language] == 0) and np.all(sim["w_ac"][:, ~acoustic] == 0)
    assert np.all(sim["w_sem"][:, language] != 0) and np.all(sim["w_ac"][:, acoustic] != 0)  # mixed voxels: both
    assert np.abs(sim["w_sem"].sum(axis=0)).max() < 1e-12  # a voxel prefers some categories over others
    assert np.all(sim["snr"][types == 3] == 0) and np.all(sim["snr"][types != 3] > 0)
    assert {s: r.shape for s, r in sim["responses"].items()} == {"a": (1, n_t, n_vox), TEST_STORY: (3, n_t, n_vox)}

    def delayed_sum(x, weights):  # by hand: row t sums HRF[d - 1] * x[t - d] @ weights over delays d = 1..4
        z = (x - x.mean(axis=0)) / x.std(axis=0)
        out = np.zeros((n_t, n_vox))
        for d, h in zip((1, 2, 3, 4), (0.5, 1.0, 0.7, 0.3)):
            out[d:] += h * z[:n_t - d] @ weights
        return out
    signal = {s: delayed_sum(f["semantic"], sim["w_sem"]) + delayed_sum(f["acoustic"], sim["w_ac"])
              for s, f in stories.items()}
    scale = np.concatenate(list(signal.values())).std(axis=0)
    scale[scale == 0] = 1.0
    for s, responses in sim["responses"].items():
        expected = signal[s] / scale * np.sqrt(sim["snr"])
        assert np.allclose(responses - noise[s], expected[None], atol=1e-10), s
        assert np.all(responses[:, :, types == 3] == noise[s][:, :, types == 3])


def test_response_files_hold_z_scored_stories_and_the_test_story_the_mean_of_its_z_scored_repeats(mini_root):
    from eval_utils import zscore
    folder = mini_root / "derivative" / "preprocessed_data" / "UTS02"
    for path in sorted(folder.glob("*.hf5")):
        with h5py.File(path, "r") as f:
            data = f["data"][:]
            assert data.dtype == np.float64
            assert np.allclose(data.mean(axis=0), 0, atol=1e-9) and np.allclose(data.std(axis=0), 1), path.name
            if path.stem == TEST_STORY:
                repeats = f["individual_repeats"][:].astype(np.float64)
                assert np.allclose(repeats.mean(axis=1), 0, atol=1e-5) and np.allclose(repeats.std(axis=1), 1, atol=1e-5)
                assert np.allclose(data, zscore(repeats.mean(axis=0)), atol=1e-5)



def test_acoustic_features_are_band_energies_relative_to_the_story_so_loudness_does_not_count():
    rng = np.random.default_rng(3)
    t = np.arange(16000 * 20) / 16000
    wav = (0.1 * rng.standard_normal(len(t)) * (1.5 + np.sin(2 * np.pi * 0.2 * t))).astype(np.float32)
    tr_times = np.arange(1.0, 19.0, 2.0)
    quiet, loud = mdd.acoustic_features(wav, tr_times), mdd.acoustic_features(4 * wav, tr_times)
    assert quiet.shape == (len(tr_times), 8) and quiet.std() > 0.1  # the 5 s loudness cycle is there
    # 16x the power is a constant log(16) in every band: gone with the story's mean (float32 energies)
    np.testing.assert_allclose(loud, quiet, atol=1e-4 * np.abs(quiet).max())


def test_stories_end_in_silence_the_last_word_at_least_0_2_s_before_the_audio_ends(mini_root):
    from data_utils import Ds003020
    data = Ds003020(mini_root)
    for story, resp in data.respdict.items():
        words = data.words(story)
        assert 0.5 <= words.starts[0] and words.ends[-1] <= mdd.story_audio_seconds(resp) - 0.2, story
