import numpy as np
import pytest

from eval_utils import (columnwise_correlation, lanczos_kernel, lanczosinterp2d, make_delayed,
                        weighted_columnwise_correlation, zscore)


def test_zscore_ddof0_and_constant_columns():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    np.testing.assert_allclose(zscore(x), [[-1.0, 0.0], [1.0, 0.0]])
    # float32 stays float32 (a 95k-voxel response matrix in float64 is twice the memory); integers give float64
    assert zscore(x.astype(np.float32)).dtype == np.float32 and zscore(np.array([[1], [3]])).dtype == np.float64


def test_lanczos_kernel_values():
    assert lanczos_kernel(np.array([0.0]))[0] == 1.0
    x = 0.5
    expected = 3 * np.sin(np.pi * x) * np.sin(np.pi * x / 3) / (np.pi ** 2 * x ** 2)
    assert lanczos_kernel(np.array([x]))[0] == pytest.approx(expected)
    np.testing.assert_allclose(lanczos_kernel(np.array([1.0, 2.0, -3.0, 3.5])), 0.0, atol=1e-12)


def test_lanczos_on_samples_at_the_new_times_is_identity():
    # old samples on the TR grid itself: every weight is L(integer) = 0 except L(0) = 1
    tr_times = np.arange(10) * 2.0 + 1.0
    data = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(lanczosinterp2d(data, tr_times, tr_times), data, atol=1e-12)


def test_lanczos_of_a_constant_sums_its_unnormalised_weights():
    # 10 Hz samples of a constant 1 -> each TR gets the sum of its kernel weights ≈ 20 (= rate / cutoff)
    old = np.arange(0, 100, 0.1)
    new = np.arange(20, 80, 2.0)
    out = lanczosinterp2d(np.ones((len(old), 1)), old, new)[:, 0]
    weights = lanczos_kernel((new[:, None] - old[None, :]) / 2.0).sum(1)
    np.testing.assert_allclose(out, weights)
    assert out.mean() == pytest.approx(20.0, rel=0.01)


def test_make_delayed_shifts_without_wraparound():
    x = np.arange(1, 5, dtype=float)[:, None]
    d = make_delayed(x, (1, 2))
    np.testing.assert_array_equal(d, [[0, 0], [1, 0], [2, 1], [3, 2]])
    np.testing.assert_array_equal(make_delayed(x, (-1,))[:, 0], [2, 3, 4, 0])
    # the features' dtype is kept: float64 values exact, float32 (half the memory at 95k voxels' scale) stays so
    fine = np.array([[1 + 1e-12], [2.0]])
    assert make_delayed(fine, (0,)).dtype == np.float64 and make_delayed(fine, (0,))[0, 0] == 1 + 1e-12
    assert make_delayed(fine.astype(np.float32), (1,)).dtype == np.float32


def test_lanczos_takes_one_feature_as_a_vector_and_names_a_row_count_mismatch():
    old, new = np.arange(0, 20, 0.5), np.arange(2, 18, 2.0)
    signal = np.sin(old)
    np.testing.assert_array_equal(lanczosinterp2d(signal, old, new), lanczosinterp2d(signal[:, None], old, new))
    with pytest.raises(ValueError, match="lanczosinterp2d: 40 feature rows but 39 old times"):
        lanczosinterp2d(signal, old[:-1], new)


def test_columnwise_correlation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    np.testing.assert_allclose(columnwise_correlation(a, b), [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(3)])


def test_weighted_correlation_equals_the_correlation_of_the_repeated_rows():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 4))
    b = rng.normal(size=(30, 4)) + 0.5 * a
    b[:, 3] = 2.0  # a constant column gives 0
    counts = rng.integers(0, 3, size=(5, 30)).astype(float)
    got = weighted_columnwise_correlation(a, b, counts)
    for k in range(5):
        rows = np.repeat(np.arange(30), counts[k].astype(int))
        np.testing.assert_allclose(got[k], columnwise_correlation(a[rows], b[rows]), atol=1e-12)
    np.testing.assert_allclose(weighted_columnwise_correlation(a, b, np.ones((1, 30)))[0], columnwise_correlation(a, b),
                               atol=1e-12)
    assert got[:, 3].tolist() == [0.0] * 5
