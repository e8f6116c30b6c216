import numpy as np
import pytest

from ridge import SCORES, bootstrap_ridge, chunked_holdout, ridge_predict


@pytest.mark.parametrize("n,p", [(200, 30), (40, 120)])  # primal and kernel paths
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_fixed_alpha_matches_sklearn_with_squared_penalty(n, p, backend):
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(0)
    x, y, xt = rng.normal(size=(n, p)), rng.normal(size=(n, 6)), rng.normal(size=(15, p))
    alphas = np.array([3.0, 3.0, 10.0, 10.0, 30.0, 30.0])
    pred = ridge_predict(x, y, xt, alphas, backend=backend)
    for a in (3.0, 10.0, 30.0):
        ref = Ridge(alpha=a ** 2, fit_intercept=False).fit(x, y).predict(xt)
        cols = alphas == a
        np.testing.assert_allclose(pred[:, cols], ref[:, cols], rtol=1e-3, atol=1e-4)


def test_per_voxel_alphas_follow_the_noise():
    rng = np.random.default_rng(1)
    n, p = 400, 40
    x = rng.normal(size=(n, p))
    w = rng.normal(size=(p, 2))
    y = np.column_stack([x @ w[:, 0] + 0.1 * rng.normal(size=n),      # clean: small alpha
                         x @ w[:, 1] * 0.05 + rng.normal(size=n)])    # noisy: large alpha
    res = bootstrap_ridge(x, y, x[:10], alphas=np.logspace(0, 3, 10))
    assert res.alphas[0] < res.alphas[1]
    assert res.scores.shape == (10, 2)


def test_edge_fraction_counts_grid_edges_among_voxels_that_vary():
    rng = np.random.default_rng(1)
    n, p = 400, 40
    x, w = rng.normal(size=(n, p)), rng.normal(size=(p, 2))
    alphas = np.logspace(0, 3, 10)
    y = np.column_stack([x @ w[:, 0] + 0.1 * rng.normal(size=n),      # clean: the smallest alpha
                         x @ w[:, 1] * 0.05 + rng.normal(size=n),     # noisy: an interior alpha here
                         rng.normal(size=n),                           # noise only
                         np.zeros(n)])                                 # a dead (NaN-filled) voxel
    res = bootstrap_ridge(x, y, x[:10], alphas=alphas)
    at_edge = np.isin(res.alphas, alphas[[0, -1]])
    assert at_edge[0] and not at_edge[1] and at_edge[3]  # the dead voxel lands on the lower edge...
    assert res.edge_fraction == pytest.approx(at_edge[:3].mean())  # ...and is not counted
    assert np.isnan(bootstrap_ridge(x, np.zeros((n, 2)), x[:10], alphas=alphas).edge_fraction)


@pytest.mark.parametrize("score", SCORES)
def test_numpy_and_torch_pick_the_same_alphas(score):
    rng = np.random.default_rng(2)
    x, xt = rng.normal(size=(150, 20)), rng.normal(size=(30, 20))
    y = x @ rng.normal(size=(20, 50)) * rng.uniform(0.01, 1, 50) + rng.normal(size=(150, 50))
    a = bootstrap_ridge(x, y, xt, backend="numpy", voxel_chunk=7, score=score)
    b = bootstrap_ridge(x, y, xt, backend="torch", score=score)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert np.mean(a.alphas == b.alphas) > 0.95
    np.testing.assert_allclose(a.predictions, b.predictions, atol=1e-3)


def test_holdout_chunks_are_contiguous_quarter():
    held = chunked_holdout(400, np.random.default_rng(0), chunk_len=20, fraction=0.25)
    assert len(held) == 100 and len(np.unique(held)) == 100
    assert all(len(set(range(s, s + 20)) - set(held)) == 0 for s in held[::20])
    # 7 chunks (the last one 10 TRs): a quarter of 7 rounds to 2 chunks, not down to 1
    held = chunked_holdout(130, np.random.default_rng(0), chunk_len=20, fraction=0.25)
    starts = sorted(set(held // 20))
    assert len(starts) == 2 and len(held) == sum(min(20, 130 - 20 * c) for c in starts)
    # the last, shorter chunk is a candidate like the others (the Huth-lab code never holds it out)
    draws = [chunked_holdout(130, np.random.default_rng(s), chunk_len=20, fraction=0.25) for s in range(40)]
    assert any(set(range(120, 130)) <= set(h) for h in draws)


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="x_train has 5 rows but y_train has 4"):
        bootstrap_ridge(np.zeros((5, 2)), np.zeros((4, 1)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="x_test has 3 features but x_train has 2"):
        bootstrap_ridge(np.zeros((5, 2)), np.zeros((5, 1)), np.zeros((1, 3)))


@pytest.mark.parametrize("score", SCORES)
def test_alpha_scores_are_the_bootstrap_mean_of_held_out_scores_of_fits_without_the_held_out_rows(score):
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    rng = np.random.default_rng(3)
    n, p = 120, 8
    x = rng.normal(size=(n, p))
    y = x @ rng.normal(size=(p, 3)) + rng.normal(size=(n, 3))
    alphas = np.array([1.0, 10.0, 100.0])
    res = bootstrap_ridge(x, y, x[:5], alphas=alphas, n_boots=2, seed=7, score=score)
    draws = np.random.default_rng(7)  # the bootstraps' draws: same seed, in order
    expected = np.zeros((len(alphas), 3))
    for _ in range(2):
        held = chunked_holdout(n, draws)
        keep = np.setdiff1d(np.arange(n), held)
        for k, a in enumerate(alphas):
            pred = Ridge(alpha=a ** 2, fit_intercept=False).fit(x[keep], y[keep]).predict(x[held])
            if score == "r2":
                expected[k] += r2_score(y[held], pred, multioutput="raw_values") / 2
            elif score == "signed_sqrt_r2":  # the Huth-lab ridge_corr with use_corr=False, line for line
                resvar = (y[held] - pred).var(0)
                rsq = 1 - resvar / y[held].var(0)
                expected[k] += np.sqrt(np.abs(rsq)) * np.sign(rsq) / 2
            else:  # Pearson r of the held-out rows, each voxel on its own
                expected[k] += [np.corrcoef(pred[:, j], y[held, j])[0, 1] / 2 for j in range(3)]
    np.testing.assert_allclose(res.scores, expected, rtol=1e-4, atol=1e-5)


def test_pure_noise_never_gets_the_weakest_penalty():
    # more features than kept rows: a fit that saw the held-out rows would score R² near 1 at the weakest penalty
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(80, 200)), rng.normal(size=(80, 5))
    alphas = np.logspace(0, 3, 4)
    res = bootstrap_ridge(x, y, x[:5], alphas=alphas)
    assert (res.scores[0] < 0).all() and (res.alphas > alphas[0]).all()


def test_brain_evaluate_passes_the_alpha_criterion_to_every_fit_and_records_it(mini, tiny_models, tmp_path):
    import json

    import brain_evaluate
    alphas = {}
    for score in ("r2", "signed_sqrt_r2"):
        out = tmp_path / score
        assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--model-name",
                                    tiny_models["wav2vec2"], "--out", str(out), "--nc-dir", str(mini / "subject_NCs"),
                                    "--stride", "0.5", "--context", "3", "--layers", "2", "--no-progress",
                                    "--cache-dir", str(tmp_path / "cache"), "--ridge-score", score]) == 0
        assert json.loads((out / "config.json").read_text())["resolved"]["ridge"]["score"] == score
        alphas[score] = np.load(out / "layer_2.npz")["alphas"]
    # same features, bootstraps and grid: the criterion alone moves some voxels' alphas (the reference's signed
    # √R² of the mean-free residual is not a monotone transform of R² once averaged over bootstraps)
    assert 0 < np.mean(alphas["r2"] != alphas["signed_sqrt_r2"]) < 0.5
    # so --compare refuses to set one against the other (exit 2, nothing written)
    assert brain_evaluate.main(["--compare", str(tmp_path / "r2"), str(tmp_path / "signed_sqrt_r2"), "--out",
                                str(tmp_path / "c")]) == 2 and not (tmp_path / "c").exists()
