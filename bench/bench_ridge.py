"""Ridge with per-voxel alphas: the toolkit's solver against the reference approach, same inputs, same thread count.

    python bench/bench_ridge.py                 # reduced size (CPU, ~1 min)
    python bench/bench_ridge.py --real          # 9,500 TRs x 3,072 features x 95,556 voxels
    python bench/bench_ridge.py --backend torch --device cuda --real

Baseline = the public reference's approach: float64, an SVD of the training design solved separately for
every alpha of every bootstrap. Toolkit = one eigendecomposition of the Gram matrix per bootstrap, all alphas
from it, float32, voxel chunks. Checks: identical chosen alphas, predictions within tolerance.
"""
from __future__ import annotations

import argparse

import numpy as np

from common import machine, max_rss_mb, measure, pin_threads, write_results

SIZES = {"reduced": dict(n_train=1500, n_test=250, p=768, v=4000), "real": dict(n_train=9500, n_test=291, p=3072, v=95556)}


def synthetic(n_train, n_test, p, v, seed=0):
    """Features with decaying spectrum and voxels with per-voxel SNR: alphas spread over the grid."""
    rng = np.random.default_rng(seed)
    scales = (1.0 / np.sqrt(1 + np.arange(p))).astype(np.float32)
    x = (rng.standard_normal((n_train + n_test, p), dtype=np.float32) * scales)
    snr = np.exp(rng.uniform(np.log(0.02), np.log(2.0), v)).astype(np.float32)
    y = np.empty((n_train + n_test, v), np.float32)
    for v0 in range(0, v, 10000):  # in voxel blocks: peak memory ~ y itself at 95k voxels
        block = x @ (rng.standard_normal((p, min(10000, v - v0)), dtype=np.float32) / np.sqrt(p))
        block *= np.sqrt(snr[v0:v0 + 10000]) / block.std(0)
        block += rng.standard_normal(block.shape, dtype=np.float32)
        y[:, v0:v0 + 10000] = block
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def reference_ridge(x_train, y_train, x_test, alphas, n_boots=3, chunk_len=20, holdout_fraction=0.25, seed=0):
    """Reference approach: float64, an SVD per (bootstrap, alpha); r2 on held-out chunks; refit per unique alpha."""
    from ridge import chunked_holdout
    rng = np.random.default_rng(seed)
    x64, y64 = x_train.astype(np.float64), y_train.astype(np.float64)
    n, v = y64.shape
    scores = np.zeros((len(alphas), v))
    for _ in range(n_boots):
        held = chunked_holdout(n, rng, chunk_len, holdout_fraction)
        keep = np.setdiff1d(np.arange(n), held)
        for ai, a in enumerate(alphas):
            u, s, vt = np.linalg.svd(x64[keep], full_matrices=False)
            wt = vt.T @ np.diag(s / (s ** 2 + a ** 2)) @ u.T @ y64[keep]
            pred = x64[held] @ wt
            resid = ((y64[held] - pred) ** 2).sum(0)
            total = ((y64[held] - y64[held].mean(0)) ** 2).sum(0)
            scores[ai] += (1 - resid / total) / n_boots
    best = np.argmax(scores, axis=0)
    chosen = np.asarray(alphas)[best]
    u, s, vt = np.linalg.svd(x64, full_matrices=False)
    pred = np.zeros((x_test.shape[0], v))
    for a in np.unique(chosen):
        idx = chosen == a
        pred[:, idx] = x_test.astype(np.float64) @ (vt.T @ np.diag(s / (s ** 2 + a ** 2)) @ u.T @ y64[:, idx])
    return chosen, pred


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true", help="real sizes (95,556 voxels; needs ~20 GB and a long time on CPU)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    p.add_argument("--device", default=None)
    p.add_argument("--voxel-chunks", type=int, nargs="+", default=[1000, 4000, 10000])
    p.add_argument("--skip-baseline", action="store_true", help="only the toolkit solver (the baseline is slow)")
    args = p.parse_args(argv)
    pin_threads(args.threads)
    from ridge import DEFAULT_ALPHAS, bootstrap_ridge
    size = SIZES["real" if args.real else "reduced"]
    x_tr, y_tr, x_te, y_te = synthetic(**size)
    rec = {"size": size, "machine": machine(args.threads), "backend": args.backend, "runs": {}}
    results = {}
    for chunk in args.voxel_chunks:
        key = f"toolkit_chunk{chunk}"
        with measure(rec["runs"], key):
            results[key] = bootstrap_ridge(x_tr, y_tr, x_te, DEFAULT_ALPHAS, voxel_chunk=chunk,
                                           backend=args.backend, device=args.device)
    best_key = min((k for k in rec["runs"]), key=lambda k: rec["runs"][k]["seconds"])
    ours = results[best_key]
    if not args.skip_baseline:
        with measure(rec["runs"], "reference_f64_svd_per_alpha"):
            ref_alphas, ref_pred = reference_ridge(x_tr, y_tr, x_te, DEFAULT_ALPHAS)
        rec["same_alphas_fraction"] = float(np.mean(ref_alphas == ours.alphas))
        rel = np.abs(ours.predictions - ref_pred).max() / np.abs(ref_pred).max()
        rec["max_relative_prediction_difference"] = float(rel)
        rec["speedup"] = rec["runs"]["reference_f64_svd_per_alpha"]["seconds"] / rec["runs"][best_key]["seconds"]
    rec["max_rss_mb"] = max_rss_mb()
    rec["alpha_edge_fraction"] = ours.edge_fraction
    lines = [f"### ridge, {size['n_train']} TRs x {size['p']} features x {size['v']} voxels, {args.threads} threads, "
             f"{args.backend}", "", "| solver | seconds | peak traced MB |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds']:.2f} | {v.get('peak_mb', float('nan')):.0f} |" for k, v in rec["runs"].items()]
    if "speedup" in rec:
        lines += ["", f"speed-up (best chunk vs reference): {rec['speedup']:.1f}x; identical alphas: "
                      f"{100 * rec['same_alphas_fraction']:.2f}% of voxels; max relative prediction difference "
                      f"{rec['max_relative_prediction_difference']:.1e}"]
    write_results("ridge_real" if args.real else "ridge", rec, "\n".join(lines) + "\n")
    if "same_alphas_fraction" in rec and rec["same_alphas_fraction"] < 0.99:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
