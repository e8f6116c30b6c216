"""Low-level speech features: hand-computed cases for the phone features and the mel-band energies, and the
residual model that regresses them out of model features."""
import zlib

import numpy as np
import pytest

from low_level import (ARTICULATORY_FEATURES, articulatory_features, articulatory_vector, mel_band_energy,
                       phone_ngram_features)


def test_articulatory_vectors_by_hand():
    def named(phone):
        return {f for f, on in zip(ARTICULATORY_FEATURES, articulatory_vector(phone)) if on}
    assert len(ARTICULATORY_FEATURES) == 22
    assert named("B") == {"bilabial", "stop", "voiced"}
    assert named("SH") == {"postalveolar", "fricative", "voiceless"}
    assert named("UW1") == named("uw0") == {"voiced", "back", "high", "rounded"}  # stress and case stripped
    assert named("sil") == set()  # silence and unknown labels: no features
    feats = articulatory_features(["B", "AH0"])
    assert feats.shape == (2, 22) and feats.dtype == np.float32
    assert articulatory_features([]).shape == (0, 22)
    # every phone the TextGrid check accepts has articulatory features (else it would pass the check as a phone and
    # contribute only zeros here)
    from textgrid_utils import ARPABET_PHONES
    assert {p for p in ARPABET_PHONES if articulatory_vector(p).any()} == ARPABET_PHONES and len(ARPABET_PHONES) == 39


def test_phone_ngram_features_hand_case():
    di = phone_ngram_features(["AH1", "B", "AH0"], 2, n_buckets=16)
    assert di.shape == (3, 16) and (di.sum(1) == 1).all()
    assert di[0, zlib.crc32(b"# AH") % 16] == 1 and di[1, zlib.crc32(b"AH B") % 16] == 1
    # stress does not matter; the same diphone lands in the same bucket wherever it occurs
    assert (phone_ngram_features(["B", "AH1"], 2, 16)[1] == phone_ngram_features(["B", "AH0"], 2, 16)[1]).all()
    tri = phone_ngram_features(["AH1", "B", "AH0"], 3, n_buckets=16)
    assert tri[0, zlib.crc32(b"# # AH") % 16] == 1 and tri[2, zlib.crc32(b"AH B AH") % 16] == 1


def test_mel_band_energy_frames_and_a_tone_in_its_band():
    rate = 16000
    t = np.arange(rate) / rate  # 1 s
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 6000 * t)
    times, e_low = mel_band_energy(low, rate, n_bands=8)
    # 25 ms windows (400 samples), 10 ms hop: 1 + (16000 - 400) // 160 frames, centred 12.5 ms after each start
    assert e_low.shape == (98, 8) and e_low.dtype == np.float32
    np.testing.assert_allclose(times[:2], [0.0125, 0.0225])
    _, e_high = mel_band_energy(high, rate, n_bands=8)
    assert np.median(e_low.argmax(1)) == 0 and np.median(e_high.argmax(1)) == 7  # lowest and highest band
    # power is quadratic in amplitude: doubling the signal adds log(4) where the tone dominates
    _, e_twice = mel_band_energy(2 * low, rate, n_bands=8)
    np.testing.assert_allclose(e_twice[:, 0] - e_low[:, 0], np.log(4), atol=1e-3)
    # shorter than one window: zero-padded to one frame
    times, e = mel_band_energy(low[:100], rate)
    assert e.shape == (1, 8) and times[0] == 0.0125


def test_residualize_removes_the_low_level_part_of_train_and_test_features():
    from alignment import residualize
    rng = np.random.default_rng(0)
    n_train, n_test = 600, 200
    low = rng.normal(size=(n_train + n_test, 4))
    own = rng.normal(size=(n_train + n_test, 3))      # what the model features carry beyond the low-level ones
    model = low @ rng.normal(0, 2, (4, 3)) + own
    res_train, res_test = residualize(model[:n_train], model[n_train:], low[:n_train], low[n_train:])
    assert res_train.shape == (n_train, 3) and res_test.shape == (n_test, 3)
    for res, rows in ((res_train, slice(0, n_train)), (res_test, slice(n_train, None))):
        with_low = np.corrcoef(res.T, low[rows].T)[:3, 3:]
        with_own = np.diag(np.corrcoef(res.T, own[rows].T)[:3, 3:])
        assert np.abs(with_low).max() < 0.15 and with_own.min() > 0.95
        np.testing.assert_allclose(res.mean(0), 0, atol=1e-6)  # z-scored
        np.testing.assert_allclose(res.std(0), 1, atol=1e-5)


def test_residualize_fits_the_training_rows_with_each_features_chosen_penalty():
    # 120 low-level columns on 160 training rows: a near-unpenalised fit would explain most of a feature that has
    # nothing to do with them; the held-out rows pick a strong penalty for it, and the training fit uses it too
    from alignment import residualize
    rng = np.random.default_rng(1)
    low = rng.normal(size=(200, 120))
    model = np.column_stack([rng.normal(size=200), low[:, :3] @ [1.0, -1.0, 0.5] + 0.1 * rng.normal(size=200)])
    res_train, _ = residualize(model[:160], model[160:], low[:160], low[160:])
    assert np.corrcoef(res_train[:, 0], model[:160, 0])[0, 1] > 0.95  # kept: nothing low-level to remove
    assert abs(np.corrcoef(res_train[:, 1], model[:160, 1])[0, 1]) < 0.5  # mostly removed


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_residualize_fits_train_and_test_rows_with_the_backend_and_precision_asked_for(backend):
    # both halves come from one fit per feature: with dtype float64 the training residuals equal the closed-form
    # ridge (penalty alpha²) at the chosen alphas up to the float32 the predictions are stored in (≤ 5e-7 here),
    # as the test residuals do; computed in float32 (the training half used to be, whatever was asked) they are
    # 2e-5 off
    import alignment as al
    from eval_utils import zscore
    from ridge import bootstrap_ridge
    rng = np.random.default_rng(2)
    base = rng.normal(size=(300, 6))  # three columns nearly spanned by the other three, as mel bands are
    low = np.column_stack([base[:, :3], base[:, :3] @ rng.normal(size=(3, 3)) + 0.1 * base[:, 3:]])
    model = low @ rng.normal(size=(6, 4)) + rng.normal(size=(300, 4))
    kwargs = {"backend": backend, "dtype": np.float64, "seed": 3}
    res_train, res_test = al.residualize(model[:240], model[240:], low[:240], low[240:], kwargs)
    alphas = bootstrap_ridge(low[:240], model[:240], low[240:], **{**kwargs, "alphas": al.RESIDUAL_ALPHAS,
                                                                   "score": al.RESIDUAL_SCORE}).alphas
    gram = low[:240].T @ low[:240]
    weights = np.column_stack([np.linalg.solve(gram + a ** 2 * np.eye(6), low[:240].T @ model[:240, j])
                               for j, a in enumerate(alphas)])
    np.testing.assert_allclose(res_train, zscore(model[:240] - low[:240] @ weights), rtol=0, atol=3e-6)
    np.testing.assert_allclose(res_test, zscore(model[240:] - low[240:] @ weights), rtol=0, atol=3e-6)


def test_mel_bands_use_a_hann_window_and_stop_at_fmax():
    t = np.arange(16000) / 16000
    floor = np.log(1e-6)
    # a 500 Hz tone off the 40 Hz bins: with a Hann window its leakage into the top band is ~ nothing (-13.8);
    # a rectangular window would leave ~ -7.9 there
    _, energy = mel_band_energy(np.sin(2 * np.pi * 500 * t).astype(np.float32), n_bands=8)
    assert energy[:, 0].mean() > 0 and energy[:, -1].mean() < floor + 1
    tone_6k = np.sin(2 * np.pi * 6000 * t).astype(np.float32)
    assert mel_band_energy(tone_6k, n_bands=8)[1].max() > 0
    assert mel_band_energy(tone_6k, n_bands=8, fmax=4000)[1].max() < floor + 1  # above fmax: in no band
