"""The formulas of the alignment evaluation, one implementation each (SPEC-methods.md §3).

Functions take arrays and return arrays; nothing here reads files. Used by the trainer, the evaluation, the
miniature generator and the tests alike. Shapes: time first (TRs or samples), then features or voxels.
"""
from __future__ import annotations

import numpy as np

DEFAULT_DELAYS = (1, 2, 3, 4)          # FIR delays in TRs


# ----------------------------------------------------------------------------------------------- basics
def zscore(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Z-score along `axis` (ddof 0); zero-variance columns become 0 instead of NaN. Returns float32/64 like x."""
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    mean = x.mean(axis=axis, keepdims=True, dtype=np.float64)
    std = x.std(axis=axis, keepdims=True, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1.0), 0.0)
    return out.astype(dtype, copy=False)


def columnwise_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of (T, V) arrays -> (V,); constant columns give 0."""
    a = zscore(np.asarray(a, dtype=np.float64))
    b = zscore(np.asarray(b, dtype=np.float64))
    return (a * b).mean(axis=0)


def weighted_columnwise_correlation(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of (T, V) arrays under row weights (n_sets, T) -> (n_sets, V).

    Row t counts weights[k, t] times in set k (a bootstrap sample's multiplicities); with all weights 1 it is
    `columnwise_correlation`. Constant columns give 0. Five (n_sets, T) @ (T, V) products, no resampled copies.
    """
    a, b, w = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(weights, np.float64)
    n = w.sum(axis=1, keepdims=True)
    mean_a, mean_b = (w @ a) / n, (w @ b) / n
    square_a, square_b = (w @ (a * a)) / n, (w @ (b * b)) / n
    var_a, var_b = square_a - mean_a ** 2, square_b - mean_b ** 2
    flat = (var_a <= 1e-12 * square_a) | (var_b <= 1e-12 * square_b)  # constant up to rounding
    cov = (w @ (a * b)) / n - mean_a * mean_b
    return np.where(flat, 0.0, cov / np.sqrt(np.where(flat, 1.0, var_a * var_b)))


# ----------------------------------------------------------------------------------------------- resampling
def lanczos_kernel(x: np.ndarray, window: int = 3) -> np.ndarray:
    """L(x) = a·sin(πx)·sin(πx/a)/(π²x²), L(0) = 1, 0 for |x| > a (a = `window` lobes)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    inside = np.abs(x) <= window
    xi = x[inside]
    with np.errstate(invalid="ignore", divide="ignore"):
        val = window * np.sin(np.pi * xi) * np.sin(np.pi * xi / window) / (np.pi ** 2 * xi ** 2)
    out[inside] = np.where(xi == 0, 1.0, val)
    return out


def lanczosinterp2d(data: np.ndarray, old_times: np.ndarray, new_times: np.ndarray, window: int = 3,
                    cutoff_mult: float = 1.0) -> np.ndarray:
    """Lanczos-downsample features sampled at `old_times` to `new_times` (the Huth-lab convention).

    Parameters
    ----------
    data : (n_old, F) features.
    old_times : (n_old,) seconds.
    new_times : (n_new,) seconds, e.g. `tr_times`.
    window : lobes of the kernel (3).
    cutoff_mult : the cutoff is `cutoff_mult / mean(diff(new_times))` (1/TR by default).

    Returns
    -------
    (n_new, F) = W @ data with W[i, j] = L(fc·(new_times[i] − old_times[j])); W is not normalised.
    """
    data = np.asarray(data)
    if data.ndim == 1:
        data = data[:, None]
    old_times, new_times = np.asarray(old_times, float), np.asarray(new_times, float)
    if len(old_times) != data.shape[0]:
        raise ValueError(f"lanczosinterp2d: {data.shape[0]} feature rows but {len(old_times)} old times")
    cutoff = cutoff_mult / np.mean(np.diff(new_times))
    weights = lanczos_kernel(cutoff * (new_times[:, None] - old_times[None, :]), window)
    return weights @ data


# ----------------------------------------------------------------------------------------------- delays
def make_delayed(stim: np.ndarray, delays=DEFAULT_DELAYS) -> np.ndarray:
    """FIR design: delayed copies of (T, F) features stacked as columns -> (T, F·len(delays)).

    A delay d > 0 shifts the features later in time (row t holds stim[t − d]); zeros are shifted in, no
    wrap-around. Negative delays shift earlier.
    """
    stim = np.asarray(stim)
    n_t, n_f = stim.shape
    out = np.zeros((n_t, n_f * len(delays)), dtype=stim.dtype)
    for i, d in enumerate(delays):
        block = out[:, i * n_f:(i + 1) * n_f]
        if d > 0:
            block[d:] = stim[:n_t - d]
        elif d < 0:
            block[:d] = stim[-d:]
        else:
            block[:] = stim
    return out


# ----------------------------------------------------------------------------------------------- noise ceiling
def noise_ceiling(repeats: np.ndarray) -> np.ndarray:
    """Schoppe et al. (2016) cc_max per voxel from repeated presentations.

    Parameters
    ----------
    repeats : (N, T, V) responses to the same stimulus; each repeat is z-scored per voxel here.

    Returns
    -------
    (V,) float64 in [0, 1): cc_max = 1/sqrt(1 + (TP/SP − 1)/N) with TP the mean over repeats of each
    repeat's temporal variance and SP = (N·Var(mean response) − TP)/(N − 1); non-finite or SP ≤ 0 -> 0.
    """
    repeats = np.asarray(repeats, dtype=np.float64)
    if repeats.ndim != 3:
        raise ValueError(f"noise_ceiling expects (repeats, TRs, voxels), found shape {repeats.shape}")
    n = repeats.shape[0]
    if n < 2:
        raise ValueError(f"noise_ceiling needs at least 2 repeats, found {n}")
    z = zscore(repeats, axis=1)
    total_power = z.var(axis=1).mean(axis=0)
    signal_power = (n * z.mean(axis=0).var(axis=0) - total_power) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cc_max = 1.0 / np.sqrt(1.0 + (total_power / signal_power - 1.0) / n)
    cc_max[~np.isfinite(cc_max) | (signal_power <= 0)] = 0.0
    return cc_max


def cc_norm(corr: np.ndarray, cc_max: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """Normalised alignment corr / cc_max where cc_max > floor, NaN elsewhere (never inf)."""
    corr, cc_max = np.asarray(corr, float), np.asarray(cc_max, float)
    out = np.full(np.broadcast(corr, cc_max).shape, np.nan)
    ok = np.isfinite(cc_max) & (cc_max > floor)
    out[ok] = (corr * np.ones_like(cc_max))[ok] / cc_max[ok]
    return out
