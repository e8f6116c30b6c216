import numpy as np
import pytest

from eval_utils import cc_norm, noise_ceiling


def test_hand_computed_case():
    # r1 = [1,2,3], r2 = [1,3,2]: z-scored y = mean has variance 0.75, TP = 1, SP = (2*0.75-1)/1 = 0.5,
    # cc_max = 1/sqrt(1 + (1/0.5 - 1)/2) = 1/sqrt(1.5)
    repeats = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0]])[:, :, None]
    assert noise_ceiling(repeats)[0] == pytest.approx(1 / np.sqrt(1.5))


@pytest.mark.parametrize("n_rep,signal_var,noise_var", [(10, 1.0, 4.0), (5, 0.5, 1.0), (3, 1.0, 0.25)])
def test_simulated_repeats_of_known_power(n_rep, signal_var, noise_var):
    rng = np.random.default_rng(0)
    t, v = 20000, 4
    signal = rng.normal(0, np.sqrt(signal_var), (t, v))
    repeats = signal + rng.normal(0, np.sqrt(noise_var), (n_rep, t, v))
    expected = 1 / np.sqrt(1 + noise_var / (signal_var * n_rep))
    np.testing.assert_allclose(noise_ceiling(repeats), expected, atol=0.01)


def test_each_repeat_is_z_scored_first_so_a_repeat_recorded_louder_changes_nothing():
    rng = np.random.default_rng(2)
    repeats = rng.normal(size=(300, 4)) + rng.normal(0, 1.0, (3, 300, 4))
    scaled = repeats * np.array([1.0, 10.0, 0.1])[:, None, None] + np.array([0.0, 5.0, -3.0])[:, None, None]
    np.testing.assert_allclose(noise_ceiling(scaled), noise_ceiling(repeats), rtol=1e-10)


def test_pure_noise_and_constant_voxels_give_zero_not_nan():
    rng = np.random.default_rng(1)
    repeats = rng.normal(size=(5, 3000, 50))
    repeats[:, :, 0] = 3.0  # constant voxel
    nc = noise_ceiling(repeats)
    assert np.all(np.isfinite(nc)) and nc[0] == 0.0
    assert np.mean(nc == 0) > 0.3 and nc.max() < 0.3  # SP <= 0 for about half of pure-noise voxels


def test_cc_norm_is_nan_below_the_floor_never_inf():
    out = cc_norm(np.array([0.3, 0.2, 0.1, 0.4, 0.05]), np.array([0.6, 0.0, 0.05, np.nan, 0.1]), floor=0.1)
    assert out[0] == pytest.approx(0.5)
    assert np.isnan(out[1:]).all()  # cc_max must exceed the floor: at the floor itself it is NaN too
    with pytest.raises(ValueError, match="at least 2 repeats"):
        noise_ceiling(np.zeros((1, 5, 2)))
